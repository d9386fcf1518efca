"""Map-style datasets joining annotation rows (HF Datasets, memory-mapped Arrow) with clips from the store."""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable

import datasets
import torch
from torch.utils.data import Dataset

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
    ) -> None:
        self.rows = rows
        self.store = ClipStore(store_dir)
        self.num_frames = num_frames
        self.size = size
        self.train = train
        self.crop_scale_min = crop_scale_min
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New random frames and crops each epoch (train loaders are not persistent, so workers see this)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.rows[index])
        row["index"] = index
        # Seeded by (seed, epoch, row) rather than a worker's RNG stream, so the clip a row yields does not
        # depend on worker count or on batches skipped when resuming mid-epoch.
        rng = random.Random(f"{self.seed}-{self.epoch}-{index}") if self.train else None
        try:
            stored = self.store.num_frames(row["video"])
            indices = sample_frame_indices(stored, self.num_frames, self.train, rng)
            jpegs = self.store.read_frames(row["video"], indices)
            row["frames"] = decode_clip(jpegs, self.size, self.train, rng, self.crop_scale_min)
        except (OSError, ValueError, KeyError, IndexError) as error:
            logger.warning("skipping clip %r (row %d): %s", row["video"], index, error)
            row["error"] = f"{row['video']}: {type(error).__name__}: {error}"
        return row


def collate_clips(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack frames, keep other columns as lists, and report dropped samples under "errors"."""
    good = [sample for sample in samples if "error" not in sample]
    batch: dict[str, Any] = {"errors": [sample["error"] for sample in samples if "error" in sample]}
    if not good:
        batch["index"] = torch.empty(0, dtype=torch.long)
        return batch
    batch["frames"] = torch.stack([sample["frames"] for sample in good])
    batch["index"] = torch.tensor([sample["index"] for sample in good], dtype=torch.long)
    for key in good[0]:
        if key not in ("frames", "index"):
            batch[key] = [sample[key] for sample in good]
    return batch


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
