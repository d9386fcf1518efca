"""Collate: clips stacked into a batch (handing a worker's batch buffer on without a copy), a task's text step
composed onto it, and the distinct videos of annotation rows."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
import torch
from torch.utils.data import default_collate

from violet.data.buffers import LeasedBatch, buffers_of_this_worker


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
    buffers = buffers_of_this_worker()
    lease = None
    if buffers is not None:
        storage = channels_last[0].untyped_storage()
        if frames is None:
            buffers.give_back(storage)
        else:
            lease = buffers.lease(storage)
    batch["frames"] = (default_collate(channels_last) if frames is None else frames).permute(0, 1, 4, 2, 3)
    batch["index"] = torch.tensor([sample["index"] for sample in good], dtype=torch.long)
    for key in good[0]:
        if key not in ("frames", "index"):
            batch[key] = [sample[key] for sample in good]
    if lease is not None:
        batch = LeasedBatch(batch)
        batch.lease = lease
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
