"""Drawing a task's visuals in the middle of training without changing the training that follows.

The task draws with its own fixed-seed generator; this wrapper also saves and restores every random stream a
library call could touch (Python, NumPy, torch CPU and CUDA), puts the model in eval mode without gradients and
back, so a run with visuals trains bit for bit like one without (tests/test_resume.py checks resumes with them on).
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from violet.engine.protocol import TrainableTask


@contextlib.contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    python, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy_state)


def draw_visuals(task: TrainableTask, model: Any, accelerator: Accelerator) -> dict[str, Any]:
    """The task's visuals; every process runs the model (ZeRO-3 gathers need all ranks)."""
    was_training = model.training
    model.eval()
    try:
        with isolated_rng(accelerator.device), torch.no_grad(), accelerator.autocast():
            visuals = task.visuals(model, accelerator)
    finally:
        model.train(was_training)
    return visuals or {}
