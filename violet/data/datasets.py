"""Map-style datasets joining annotation rows (HF Datasets, memory-mapped Arrow) with clips from the store."""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.utils.data import Dataset

from violet.data.buffers import batch_buffer, buffers_of_this_worker
from violet.data.clip_store import ClipStore
from violet.data.video import decode_clip, sample_frame_indices

logger = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """Row i -> {"index": i, "video": id, "frames": uint8 (T, 3, S, S), <the row's other columns>}.

    Rows stay in Arrow so workers share them through the page cache instead of each holding a Python copy.
    An unreadable clip yields {"index": i, "error": "..."} so the collate function can drop and count it:
    a run skips and logs bad clips (up to a limit) instead of crashing or silently repeating frames.
    """

    def __init__(
        self,
        rows: datasets.Dataset,
        store_dir: str | Path,
        num_frames: int,
        size: int,
        train: bool,
        crop_scale_min: float = 1.0,
        seed: int = 0,
        flip: bool = False,
    ) -> None:
        self.rows = rows
        self.store = ClipStore(store_dir)
        self.num_frames = num_frames
        self.size = size
        self.train = train
        self.crop_scale_min = crop_scale_min
        self.seed = seed
        self.flip = flip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch used for keys that arrive without one (map-style loaders without an EpochShuffleSampler).

        Persistent DataLoader workers hold their own copy of the dataset and never see this call: training
        loaders therefore pass the epoch inside each key, as ``(epoch, index)`` from EpochShuffleSampler.
        """
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[int | tuple[int, int]]) -> list[dict[str, Any]]:
        """A batch of samples; the DataLoader calls this with a whole batch of keys, so the annotation rows come
        out of Arrow in one take instead of one formatted row at a time."""
        pairs = [key if isinstance(key, tuple) else (self.epoch, key) for key in keys]
        columns = self.rows[[index for _, index in pairs]]
        # Every clip of the batch is decoded into its slot of one buffer (shared memory in a worker), which
        # collate_clips then hands on as the batch: no per-clip arrays, no stacking copy.
        frames = batch_buffer((len(pairs), self.num_frames, self.size, self.size, 3))
        samples = []
        for position, (epoch, index) in enumerate(pairs):
            row = {name: values[position] for name, values in columns.items()}
            row["index"] = index
            # Seeded by (seed, epoch, row) rather than a worker's RNG stream, so the clip a row yields does not
            # depend on worker count or on batches skipped when resuming mid-epoch.
            rng = random.Random(f"{self.seed}-{epoch}-{index}") if self.train else None
            try:
                row["frames"] = self.load_clip(row["video"], rng, out=frames[position])
            except (OSError, ValueError, KeyError, IndexError) as error:
                logger.warning("skipping clip %r (row %d): %s", row["video"], index, error)
                row["error"] = f"{row['video']}: {type(error).__name__}: {error}"
            samples.append(row)
        buffers = buffers_of_this_worker()
        if buffers is not None and all("error" in sample for sample in samples):
            buffers.give_back(frames.untyped_storage())  # nothing of it will reach the main process
        return samples

    def load_clip(self, video: str, rng: random.Random | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Sample, read and decode one clip: uint8 (T, 3, S, S), into `out` ((T, S, S, 3) memory) if given."""
        location = self.store.locate(video)
        indices = sample_frame_indices(len(location.frame_lengths), self.num_frames, self.train, rng)
        jpegs = self.store.read_frames(video, indices, location)
        return decode_clip(jpegs, self.size, self.train, rng, self.crop_scale_min, self.flip, out=out)
