"""Shared-memory batch buffers of DataLoader workers, and the lease protocol that lets a worker reuse one.

A worker decodes a whole batch of clips into one buffer (ClipDataset), collate hands that buffer on as the batch
(violet/data/collate.py), and the main process gives the buffer back once it drops the batch.
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import get_worker_info

# Batches a worker may have out at once before it allocates one-off buffers: the DataLoader's prefetch (2 per
# worker by default) plus the batches the consumer holds (pin-memory copy, the step, Accelerate's one-ahead).
BUFFERS_PER_WORKER = 8


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


def buffers_of_this_worker() -> _WorkerBatchBuffers | None:
    """This DataLoader worker's buffer pool (made on first use in each worker process); None in the main process."""
    global _worker_buffers
    if get_worker_info() is None:
        return None
    if _worker_buffers is None or _worker_buffers.pid != os.getpid():
        _worker_buffers = _WorkerBatchBuffers()
    return _worker_buffers


def batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor for a batch of decoded clips: in a DataLoader worker, a reused shared-memory
    buffer, which collate_clips then hands to the main process as the batch itself (no copy on the way)."""
    buffers = buffers_of_this_worker()
    if buffers is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = buffers.take(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class LeasedBatch(dict):
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
