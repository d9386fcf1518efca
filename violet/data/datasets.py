"""Map-style datasets joining annotation rows (HF Datasets, memory-mapped Arrow) with clips from the store."""
from __future__ import annotations

import ctypes
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from violet.data.clip_store import ClipStore
from violet.data.video import clip_buffer, decode_clip, sample_frame_indices

logger = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 64 * 1024


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
        frames = clip_buffer((len(pairs), self.num_frames, self.size, self.size, 3))
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
        return samples

    def load_clip(self, video: str, rng: random.Random | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Sample, read and decode one clip: uint8 (T, 3, S, S), into `out` ((T, S, S, 3) memory) if given."""
        location = self.store.locate(video)
        indices = sample_frame_indices(len(location.frame_lengths), self.num_frames, self.train, rng)
        jpegs = self.store.read_frames(video, indices, location)
        return decode_clip(jpegs, self.size, self.train, rng, self.crop_scale_min, self.flip, out=out)


def steady_memory_worker_init(worker_id: int) -> None:
    """DataLoader `worker_init_fn` that keeps a worker's memory flat over epochs (glibc only; no-op elsewhere).

    glibc raises its mmap threshold each time a large block is freed, after which clip-sized buffers come from
    the heap and fragment it: measured, each worker grew by ~25 MB per epoch for several epochs. A fixed
    threshold returns such buffers to the OS when freed (worker memory measured flat, see docs/benchmarks.md).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


class EpochShuffleSampler(Sampler):
    """Shuffles row indices with a permutation seeded by (seed, epoch) and yields ``(epoch, index)`` keys.

    The sampler runs in the main process, so the epoch reaches persistent workers inside each key; and the
    order depends only on (seed, epoch), so every rank draws the same permutation (Accelerate then gives each
    rank its slice of the batches) and a resumed run skipping the first batches sees the same order.
    """

    def __init__(self, num_rows: int, seed: int = 0) -> None:
        self.num_rows = num_rows
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        epoch = self.epoch
        for index in torch.randperm(self.num_rows, generator=generator).tolist():
            yield epoch, index


def collate_clips(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack frames, keep other columns as lists, and report dropped samples under "errors"."""
    good = [sample for sample in samples if "error" not in sample]
    batch: dict[str, Any] = {"errors": [sample["error"] for sample in samples if "error" in sample]}
    if not good:
        batch["index"] = torch.empty(0, dtype=torch.long)
        return batch
    # Clips from decode_clip are channels-last in memory, and the batch is handed out as the (B, T, 3, S, S) view
    # of (B, T, S, S, 3) memory (every consumer reads it through strides or reshape).
    channels_last = [sample["frames"].permute(0, 2, 3, 1) for sample in good]
    frames = _consecutive_slots(channels_last)
    batch["frames"] = (default_collate(channels_last) if frames is None else frames).permute(0, 1, 4, 2, 3)
    batch["index"] = torch.tensor([sample["index"] for sample in good], dtype=torch.long)
    for key in good[0]:
        if key not in ("frames", "index"):
            batch[key] = [sample[key] for sample in good]
    return batch


def _consecutive_slots(clips: list[torch.Tensor]) -> torch.Tensor | None:
    """The (B, ...) tensor whose consecutive slots these contiguous clips are (ClipDataset decodes a batch into
    one buffer), or None if they are not, e.g. after a bad clip left a gap. Otherwise default_collate stacks
    them, straight into shared memory inside a worker."""
    first = clips[0]
    storage, step = first.untyped_storage(), first.numel()
    for position, clip in enumerate(clips):
        if (not clip.is_contiguous() or clip.shape != first.shape
                or clip.untyped_storage().data_ptr() != storage.data_ptr()
                or clip.storage_offset() != first.storage_offset() + position * step):
            return None
    return first.new_empty(0).set_(storage, first.storage_offset(), (len(clips), *first.shape))


def make_collate(tokenize_batch: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
    """Compose the generic clip collate with a task's text/label step (run in the DataLoader workers)."""

    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_clips(samples)
        if "frames" in batch:
            batch.update(tokenize_batch(batch))
        return batch

    return collate


def unique_videos(rows: datasets.Dataset) -> tuple[datasets.Dataset, torch.Tensor]:
    """A one-column dataset of the distinct videos (first-seen order) and, per row, its video's position."""
    order: dict[str, int] = {}
    row_to_video = [order.setdefault(video, len(order)) for video in rows["video"]]
    return datasets.Dataset.from_dict({"video": list(order)}), torch.tensor(row_to_video, dtype=torch.long)
