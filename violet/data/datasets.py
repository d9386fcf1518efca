"""Map-style datasets joining annotation rows (HF Datasets, memory-mapped Arrow) with clips from the store."""
from __future__ import annotations

import ctypes
import logging
import math
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import Dataset, Sampler, default_collate, get_worker_info

from violet.data.clip_store import ClipStore
from violet.data.video import decode_clip, sample_frame_indices

logger = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 64 * 1024
# Batches a worker may have out at once before it allocates one-off buffers: the DataLoader's prefetch (2 per
# worker by default) plus the batches the consumer holds (pin-memory copy, the step, Accelerate's one-ahead).
BUFFERS_PER_WORKER = 8


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
        buffers = _buffers_of_this_worker()
        if buffers is not None and all("error" in sample for sample in samples):
            buffers.give_back(frames.untyped_storage())  # nothing of it will reach the main process
        return samples

    def load_clip(self, video: str, rng: random.Random | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Sample, read and decode one clip: uint8 (T, 3, S, S), into `out` ((T, S, S, 3) memory) if given."""
        location = self.store.locate(video)
        indices = sample_frame_indices(len(location.frame_lengths), self.num_frames, self.train, rng)
        jpegs = self.store.read_frames(video, indices, location)
        return decode_clip(jpegs, self.size, self.train, rng, self.crop_scale_min, self.flip, out=out)


class _WorkerBatchBuffers:
    """A DataLoader worker's shared-memory batch buffers, reused once the main process has dropped them.

    A fresh shared-memory segment per batch costs the worker a page fault and a zero-filled page for every 4 KiB
    it writes (measured: ~0.3 ms of CPU per 224-px clip, a tenth of the work), and the main process a new
    mapping. `leases` (a small shared array) says which buffers are out: slot k holds the token of the batch
    buffer k went out with, until the main process sees that batch's storage freed and clears it
    (`_received_batch`). Only this worker writes tokens and only the main process clears delivered ones, so
    neither overwrites the other; a buffer is reused only after the main process let go of it. The array travels
    with the batches until the main process marks it known (its last element): every tensor in a batch costs
    ~0.7 ms of CPU per batch to pass (measured), a tenth of a 224-px batch's decode.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.leases = torch.zeros(BUFFERS_PER_WORKER + 1, dtype=torch.int64).share_memory_()
        self.buffers: list[torch.UntypedStorage | None] = [None] * BUFFERS_PER_WORKER
        # Tokens start at random, so a lease of an earlier worker process that had this pid never matches ours.
        self.tokens = int.from_bytes(os.urandom(6), "little")

    def take(self, nbytes: int) -> torch.UntypedStorage:
        leases = self.leases.tolist()
        for slot, buffer in enumerate(self.buffers):
            if leases[slot] == 0:
                if buffer is None or buffer.nbytes() != nbytes:
                    buffer = self.buffers[slot] = torch.UntypedStorage._new_shared(nbytes)
                self.tokens += 1
                self.leases[slot] = self.tokens
                return buffer
        return torch.UntypedStorage._new_shared(nbytes)  # every buffer is out: a one-off

    def lease(self, storage: torch.UntypedStorage) -> tuple[torch.Tensor | None, int, int, int] | None:
        """(lease array unless the main process knows it, pid, slot, token) of a pooled buffer about to leave."""
        for slot, buffer in enumerate(self.buffers):
            if buffer is not None and buffer.data_ptr() == storage.data_ptr():
                known = int(self.leases[BUFFERS_PER_WORKER]) == 1
                return None if known else self.leases, self.pid, slot, int(self.leases[slot])
        return None

    def give_back(self, storage: torch.UntypedStorage) -> None:
        """A taken buffer that will not be delivered (its batch was stacked elsewhere) is free again."""
        lease = self.lease(storage)
        if lease is not None:
            _, _, slot, _ = lease
            self.leases[slot] = 0


_worker_buffers: _WorkerBatchBuffers | None = None


def _buffers_of_this_worker() -> _WorkerBatchBuffers | None:
    global _worker_buffers
    if get_worker_info() is None:
        return None
    if _worker_buffers is None or _worker_buffers.pid != os.getpid():
        _worker_buffers = _WorkerBatchBuffers()
    return _worker_buffers


def batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor for a batch of decoded clips: in a DataLoader worker, a reused shared-memory
    buffer, which collate_clips then hands to the main process as the batch itself (no copy on the way)."""
    buffers = _buffers_of_this_worker()
    if buffers is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = buffers.take(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class _LeasedBatch(dict):
    """A worker's batch whose frames live in a pooled buffer: it unpickles in the main process as a plain dict,
    registering the buffer's lease so that the worker may reuse the buffer once the batch is dropped. Its
    "index" travels as a list and becomes a tensor in the main process (one tensor fewer to pass)."""

    lease: tuple[torch.Tensor | None, int, int, int]

    def __reduce__(self) -> tuple[Callable, tuple]:
        return _received_batch, ({**self, "index": self["index"].tolist()}, *self.lease)


_outstanding: list[tuple[StorageWeakRef, torch.Tensor, int, int]] = []
_lease_arrays: dict[int, torch.Tensor] = {}  # worker pid -> its lease array, in the main process
_outstanding_lock = threading.Lock()


def _received_batch(
    batch: dict[str, Any], leases: torch.Tensor | None, pid: int, slot: int, token: int,
) -> dict[str, Any]:
    batch["index"] = torch.tensor(batch["index"], dtype=torch.long)
    with _outstanding_lock:
        for entry in [entry for entry in _outstanding if entry[0].expired()]:
            _outstanding.remove(entry)
            _, entry_leases, entry_slot, entry_token = entry
            if int(entry_leases[entry_slot]) == entry_token:
                entry_leases[entry_slot] = 0
        if leases is not None:
            _lease_arrays[pid] = leases
            leases[BUFFERS_PER_WORKER] = 1  # known: later batches of this worker leave the array behind
        leases = _lease_arrays.get(pid)
        if leases is not None:  # else the buffer stays out and the worker allocates one-offs instead: safe
            _outstanding.append((StorageWeakRef(batch["frames"].untyped_storage()), leases, slot, token))
    return batch


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
    buffers = _buffers_of_this_worker()
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
        batch = _LeasedBatch(batch)
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
