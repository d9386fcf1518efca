"""Streaming training data: rows read in clip-store shard order, split across ranks and DataLoader workers.

For corpora larger than RAM or local disk (WebVid-2M, HowTo100M-scale) random access per clip turns into
random reads all over the shards. Here every epoch:

1. the rows are grouped by the shard that holds their clip, in file order (computed once, from the
   memory-mapped lookup index; no worker parses the store index),
2. the shard groups are shuffled with a seed from (seed, epoch) and concatenated,
3. the first ``batches_per_rank * batch_size * world`` rows are cut into one contiguous range per rank and,
   inside it, one contiguous run of whole batches per worker, so each worker reads a few shards front to back
   and every rank yields exactly the same number of batches (no rank waits for another at the last step),
4. each worker passes its rows through a seeded shuffle buffer (of row indices, so it costs no memory for
   clips) and collates full batches itself.

Each row is seen once per epoch; the at most ``batch_size * world - 1`` rows left over by step 3 differ from
epoch to epoch, as with ``drop_last``. The position (epoch, batches consumed per rank) is a ``state_dict``
that the Trainer saves with each checkpoint; resuming regenerates the same row order and skips the batches
already consumed without reading their clips.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from violet.data.datasets import ClipDataset
from violet.data.sampling import steady_memory_worker_init

logger = logging.getLogger(__name__)


def shard_grouped_rows(videos: list[str], store: Any) -> tuple[np.ndarray, np.ndarray]:
    """Row indices sorted by (shard, offset in shard) of their clip, and where each shard's group starts.

    Rows whose clip is missing form a last group: reading them fails, and the training loop skips them.
    """
    shard_number = {name: number for number, name in enumerate(store.shards())}
    position: dict[str, tuple[int, int]] = {}
    shard_of = np.empty(len(videos), dtype=np.int64)
    offset_of = np.empty(len(videos), dtype=np.int64)
    for row, video in enumerate(videos):
        if video not in position:
            try:
                location = store.locate(video)
                position[video] = (shard_number[location.shard], location.offset)
            except KeyError:
                position[video] = (len(shard_number), 0)
        shard_of[row], offset_of[row] = position[video]
    order = np.lexsort((np.arange(len(videos)), offset_of, shard_of))
    boundaries = np.flatnonzero(np.diff(shard_of[order])) + 1
    return order, np.concatenate(([0], boundaries, [len(videos)])).astype(np.int64)


def shuffle_buffer(items: list[int], size: int, rng: random.Random) -> Iterator[int]:
    """A windowed shuffle: each output is a random pick among the next `size` items (WebDataset-style)."""
    buffer: list[int] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = rng.randrange(size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


def round_robin_counts(sizes: list[int], consumed: int) -> list[int]:
    """How many batches each worker had delivered after `consumed` batches of a DataLoader.

    A DataLoader over an IterableDataset takes batches from its workers in turn, skipping exhausted ones.
    """
    counts = [0] * len(sizes)
    while consumed > 0:
        progressed = False
        for worker, size in enumerate(sizes):
            if consumed and counts[worker] < size:
                counts[worker] += 1
                consumed -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"position {consumed} is past the end of the epoch ({sum(sizes)} batches)")
    return counts


class StreamingClipDataset(IterableDataset):
    """Yields collated batches of `batch_size` rows (see the module docstring for the order)."""

    def __init__(
        self, rows: datasets.Dataset, store_dir: str | Path, num_frames: int, size: int, train: bool, *,
        batch_size: int, collate: Callable[[list[dict[str, Any]]], dict[str, Any]], num_workers: int,
        shuffle_buffer: int = 2048, crop_scale_min: float = 1.0, seed: int = 0, flip: bool = False,
        rank: int | None = None, world_size: int | None = None,
    ) -> None:
        if rank is None or world_size is None:
            state = PartialState()
            rank, world_size = state.process_index, state.num_processes
        self.clips = ClipDataset(rows, store_dir, num_frames, size, train, crop_scale_min, seed, flip)
        self.batch_size, self.collate, self.seed = batch_size, collate, seed
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.order, self.group_starts = shard_grouped_rows(rows["video"], self.clips.store)
        self.batches_per_rank = len(rows) // (batch_size * world_size)
        self.epoch = 0
        self.batches_consumed = 0  # by this rank in this epoch; counted in the main process by StreamingLoader

    # ---- the epoch's plan (pure functions of seed, epoch, rank, worker) ----
    def epoch_order(self, epoch: int) -> np.ndarray:
        groups = np.random.default_rng([self.seed, epoch]).permutation(len(self.group_starts) - 1)
        return np.concatenate([self.order[self.group_starts[g]:self.group_starts[g + 1]] for g in groups]
                              or [np.zeros(0, np.int64)])

    def worker_batch_counts(self) -> list[int]:
        workers = max(1, self.num_workers)
        return [(w + 1) * self.batches_per_rank // workers - w * self.batches_per_rank // workers
                for w in range(workers)]

    def worker_batches(self, epoch: int, worker: int) -> list[list[int]]:
        """The row indices of each batch one worker of this rank produces in `epoch`, in order."""
        workers = max(1, self.num_workers)
        rank_rows = self.batches_per_rank * self.batch_size
        first_batch = worker * self.batches_per_rank // workers
        count = self.worker_batch_counts()[worker]
        start = self.rank * rank_rows + first_batch * self.batch_size
        rows = self.epoch_order(epoch)[start:start + count * self.batch_size].tolist()
        rng = random.Random(f"{self.seed}-{epoch}-{self.rank}-{worker}")
        mixed = list(shuffle_buffer(rows, self.shuffle_buffer, rng))
        return [mixed[b * self.batch_size:(b + 1) * self.batch_size] for b in range(count)]

    def __len__(self) -> int:
        """Rows of one epoch over all ranks (a DataLoader over it reports global batches, as map-style ones)."""
        return self.batches_per_rank * self.batch_size * self.world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        # A snapshot: in a worker this is the copy made when the epoch's iterator started.
        skip = round_robin_counts(self.worker_batch_counts(), self.batches_consumed)[worker]
        epoch = self.epoch
        for batch_rows in self.worker_batches(epoch, worker)[skip:]:
            yield self.collate(self.clips.__getitems__([(epoch, row) for row in batch_rows]))

    # ---- position ----
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.batches_consumed = epoch, 0

    def layout(self) -> dict[str, int]:
        return {"world_size": self.world_size, "num_workers": max(1, self.num_workers),
                "batch_size": self.batch_size, "rows": len(self.order), "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed, **self.layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        saved = {key: state.get(key) for key in self.layout()}
        if saved != self.layout():
            # The row-to-worker plan depends on these; a different split would repeat or miss rows.
            logger.warning("streaming position saved with %s, now %s: restarting epoch %d from its start",
                           saved, self.layout(), self.epoch)
            self.batches_consumed = 0
        else:
            self.batches_consumed = int(state["batches_consumed"])


def _no_collate(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # the dataset collates whole batches in its workers


class StreamingLoader:
    """A DataLoader over a StreamingClipDataset that counts consumed batches and puts them on the device.

    It is not passed through ``accelerator.prepare``: Accelerate would shard (or dispatch) an IterableDataset
    a second time, and the dataset already splits rows across ranks itself.
    """

    def __init__(self, dataset: StreamingClipDataset, num_workers: int, pin_memory: bool = False,
                 device: torch.device | None = None) -> None:
        self.dataset = dataset
        self.pin_memory = pin_memory
        self.device = device if device is not None else PartialState().device
        # Not persistent: each epoch's workers must receive the dataset's new epoch and position.
        self.loader = DataLoader(dataset, batch_size=None, collate_fn=_no_collate, num_workers=num_workers,
                                 pin_memory=pin_memory, worker_init_fn=steady_memory_worker_init)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.dataset.batches_per_rank * self.dataset.world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.dataset.batches_consumed += 1
            yield send_to_device(batch, self.device, non_blocking=self.pin_memory)
