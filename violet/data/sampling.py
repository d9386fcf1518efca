"""Sampling and worker set-up of the map-style training loaders: the epoch-seeded shuffle and the worker memory
setting."""
from __future__ import annotations

import ctypes
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 64 * 1024


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
