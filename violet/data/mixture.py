"""Pretraining on several corpora at once: video-text and image-text (images as 1-frame clips, as VIOLET mixed
CC3M with WebVid) with per-corpus weights.

Every batch comes from one corpus, so frame counts never mix inside a batch; all ranks draw the same corpus for
the same step (the draw is made per group of `world_size` consecutive batches, and Accelerate deals one batch of
each group to each rank), so cross-rank gathers see equal shapes. The draw depends only on (seed, epoch, step),
so a resumed run that skips its first batches sees the same corpora in the same order.

Spec (`data.corpora`): comma-separated `DIR=WEIGHT` or `DIR=WEIGHT@FRAMES`, each DIR prepared with
`python -m prepare DIR`; the run's own `--data` corpus takes part with weight 1 and `data.num_frames`.
Example: `data.corpora=/data/cc3m=0.5@1` -> 2/3 of the batches from --data, 1/3 from CC3M as 1-frame clips.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from violet.data.datasets import ClipDataset


@dataclass(frozen=True)
class CorpusSpec:
    data_dir: Path
    weight: float
    num_frames: int


def parse_corpora(spec: str, default_frames: int) -> list[CorpusSpec]:
    """`DIR=WEIGHT[@FRAMES],...` -> specs; errors name the offending entry."""
    corpora = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        path, _, rest = entry.rpartition("=")
        weight_text, _, frames_text = rest.partition("@")
        try:
            weight = float(weight_text)
            frames = int(frames_text) if frames_text else default_frames
        except ValueError:
            raise ValueError(f"data.corpora entry {entry!r}: expected DIR=WEIGHT or DIR=WEIGHT@FRAMES") from None
        if not path or weight <= 0 or frames < 1:
            raise ValueError(f"data.corpora entry {entry!r}: needs a directory, a weight > 0 and frames >= 1")
        corpora.append(CorpusSpec(Path(path), weight, frames))
    return corpora


class CorpusMixture(Dataset):
    """Several ClipDatasets behind keys `(epoch, corpus, row)`. Clips shorter than `min_frames` (images) are
    repeated in time to `min_frames` (the tubelet), i.e. a static video, which is what inflated 2D weights expect."""

    def __init__(self, datasets: list[ClipDataset], names: list[str], min_frames: int) -> None:
        if len(datasets) != len(names) or not datasets:
            raise ValueError("a mixture needs one name per corpus and at least one corpus")
        self.datasets, self.names, self.min_frames = datasets, names, min_frames
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def sizes(self) -> list[int]:
        return [len(dataset) for dataset in self.datasets]

    def __len__(self) -> int:
        return sum(self.sizes())

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, corpus, index = key
        sample = self.datasets[corpus][(epoch, index)]
        # Ids are per corpus: two corpora may both have "train/00001.mp4", which VTC must not treat as one clip.
        sample["video"] = f"{self.names[corpus]}:{sample['video']}"
        frames = sample.get("frames")
        if frames is not None and frames.shape[0] < self.min_frames:
            repeats = -(-self.min_frames // frames.shape[0])
            sample["frames"] = frames.repeat(repeats, 1, 1, 1)[: self.min_frames]
        return sample


class CorpusBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Whole batches from one corpus at a time, the corpus drawn with the given weights.

    An epoch has as many batches as all corpora hold together (each corpus reshuffled when its rows run out).
    Reads the epoch from the mixture, which the Trainer (and Accelerate's loader) set each epoch.
    """

    def __init__(self, mixture: CorpusMixture, weights: list[float], batch_size: int, seed: int,
                 world_size: int = 1) -> None:
        sizes = mixture.sizes()
        small = [name for name, size in zip(mixture.names, sizes) if size < batch_size]
        if small:
            raise ValueError(f"corpora with fewer rows than one batch of {batch_size}: {', '.join(small)}")
        self.mixture, self.batch_size, self.seed, self.world_size = mixture, batch_size, seed, world_size
        self.drop_last = True  # every batch is full (Accelerate's shard wrapper reads these two attributes)
        self.weights = torch.tensor(weights, dtype=torch.double)
        groups = sum(size // batch_size for size in sizes) // world_size
        if groups == 0:
            raise ValueError(f"fewer than {world_size} batches of {batch_size} in all corpora together")
        self.num_batches = groups * world_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch = self.mixture.epoch
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        sizes = self.mixture.sizes()
        orders = [torch.randperm(size, generator=generator).tolist() for size in sizes]
        cursors = [0] * len(sizes)
        for _ in range(self.num_batches // self.world_size):
            corpus = int(torch.multinomial(self.weights, 1, generator=generator))
            for _ in range(self.world_size):
                if cursors[corpus] + self.batch_size > sizes[corpus]:  # this corpus ran out: reshuffle it
                    orders[corpus] = torch.randperm(sizes[corpus], generator=generator).tolist()
                    cursors[corpus] = 0
                rows = orders[corpus][cursors[corpus]: cursors[corpus] + self.batch_size]
                cursors[corpus] += self.batch_size
                yield [(epoch, corpus, row) for row in rows]
