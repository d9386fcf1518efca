"""Distributed inference helpers: run a function over a sharded loader and gather results by sample index.

Accelerate pads the last batches with repeated samples so every rank runs the same number of forwards (ZeRO-3
needs that); results are therefore de-duplicated by index and their count checked against the data set, so a
padded duplicate can never change a metric.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

_SHOW_PROGRESS = [False]  # off by default: library calls stay quiet unless an entry point or the Trainer asks


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """tqdm bars for the evaluation loops inside (main process only; quiet when stderr is not a terminal)."""
    before, _SHOW_PROGRESS[0] = _SHOW_PROGRESS[0], enabled
    try:
        yield
    finally:
        _SHOW_PROGRESS[0] = before


def _bar(accelerator: Accelerator, items: Any, what: str) -> Any:
    show = _SHOW_PROGRESS[0] and accelerator.is_main_process
    return tqdm(items, desc=what, leave=False, dynamic_ncols=True, disable=None if show else True)


@torch.no_grad()
def gather_by_index(
    accelerator: Accelerator,
    loader: Any,
    compute: Callable[[dict[str, Any]], dict[str, torch.Tensor]],
    expected: int,
    what: str,
) -> dict[str, torch.Tensor]:
    """Return compute()'s outputs for samples 0..expected-1, in index order, from every rank."""
    pieces: dict[str, list[torch.Tensor]] = defaultdict(list)
    errors: list[str] = []
    for batch in _bar(accelerator, loader, what):
        errors.extend(batch.get("errors", []))
        empty = torch.tensor([int(batch["index"].numel() == 0)], device=accelerator.device)
        if accelerator.num_processes > 1:  # decided together: under ZeRO-3 a rank skipping a forward hangs the rest
            empty = accelerator.reduce(empty, reduction="sum")
        if int(empty):
            raise RuntimeError(
                f"{what}: a whole evaluation batch was unreadable ({'; '.join(errors[-5:]) or 'on another rank'}); "
                "evaluation refuses to report metrics over a partial set. Check clip_store/failed.jsonl."
            )
        outputs = compute(batch)
        outputs = {name: value.detach() for name, value in outputs.items()}
        outputs["index"] = batch["index"]
        for name, value in outputs.items():
            padded = accelerator.pad_across_processes(value, dim=0, pad_index=-1 if name == "index" else 0)
            pieces[name].append(accelerator.gather(padded).cpu())
    errors = [error for rank_errors in gather_object([errors]) for error in rank_errors]
    if "index" not in pieces:
        raise RuntimeError(f"{what}: the evaluation loader produced no batches")
    index = torch.cat(pieces.pop("index"))
    first_seen: dict[int, int] = {}
    for position, sample in enumerate(index.tolist()):
        if sample >= 0 and sample not in first_seen:
            first_seen[sample] = position
    order = torch.tensor([first_seen[sample] for sample in sorted(first_seen)], dtype=torch.long)
    if len(first_seen) != expected or (expected and max(first_seen) != expected - 1):
        detail = "; ".join(sorted(set(errors))[:10]) or "no loader errors reported"
        raise RuntimeError(
            f"{what}: got results for {len(first_seen)} of {expected} samples ({detail}). "
            "Evaluation refuses to report metrics over a partial set."
        )
    return {name: torch.cat(parts)[order] for name, parts in pieces.items() if parts and parts[0].dim() > 0}


@torch.no_grad()
def run_sharded(
    accelerator: Accelerator, items: list[Any], batch_size: int, compute: Callable[[list[Any]], torch.Tensor]
) -> torch.Tensor:
    """Split `items` evenly across ranks (padding with repeats so ZeRO-3 ranks run equal forwards), apply
    `compute` in batches, and return the results for all items in order."""
    total = len(items)
    if total == 0:
        return torch.empty(0)
    per_rank = -(-total // accelerator.num_processes)
    padded = items + [items[-1]] * (per_rank * accelerator.num_processes - total)
    mine = padded[accelerator.process_index * per_rank : (accelerator.process_index + 1) * per_rank]
    starts = _bar(accelerator, range(0, len(mine), batch_size), "re-ranking")
    results = [compute(mine[start : start + batch_size]) for start in starts]
    local = torch.cat(results)
    return accelerator.gather(local).cpu()[:total]
