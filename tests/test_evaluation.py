"""Distributed-evaluation helpers in one process: results come back in index order, padded duplicates never
count twice, partial sets and unreadable batches refuse to produce metrics."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from violet.distributed import gather_by_index, run_sharded


@pytest.fixture(scope="module")
def accelerator() -> Accelerator:
    return Accelerator(cpu=True)


def batches(*indices: list[int], errors: dict[int, list[str]] | None = None) -> list[dict]:
    errors = errors or {}
    return [{"index": torch.tensor(index, dtype=torch.long), "errors": errors.get(n, [])}
            for n, index in enumerate(indices)]


def double(batch: dict) -> dict[str, torch.Tensor]:
    return {"value": batch["index"].float() * 2}


def test_results_are_ordered_by_index_and_duplicates_dropped(accelerator):
    # The last batch repeats samples 0 and 3, as Accelerate's even-batch padding does.
    out = gather_by_index(accelerator, batches([2, 1], [3, 4], [0, 3, 0]), double, 5, "toy")
    assert out["value"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_a_partial_set_is_refused(accelerator):
    with pytest.raises(RuntimeError, match="got results for 3 of 4 samples"):
        gather_by_index(accelerator, batches([0, 1], [2]), double, 4, "toy")


def test_an_unreadable_batch_names_the_clip(accelerator):
    loader = batches([0, 1], [], errors={1: ["v7.mp4: OSError: truncated"]})
    with pytest.raises(RuntimeError, match="v7.mp4: OSError: truncated"):
        gather_by_index(accelerator, loader, double, 3, "toy")


def test_run_sharded_keeps_item_order(accelerator):
    items = list(range(7))
    out = run_sharded(accelerator, items, 3, lambda chunk: torch.tensor(chunk, dtype=torch.float) + 0.5)
    assert out.tolist() == [i + 0.5 for i in items]
