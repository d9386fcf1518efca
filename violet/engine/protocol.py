"""What the Trainer needs from a task, and nothing more.

The engine knows this protocol, not the tasks: `violet.tasks` implements it (tasks/base.py), and a new task never
touches the engine. Structural typing keeps the arrow one-way: nothing here imports a task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from torch import nn


class TrainableTask(Protocol):
    name: str
    annotation_kind: str  # which prepared annotation kind the task reads (for messages)
    heads: tuple[str, ...]
    tokenizer: Any  # saved into the run directory next to the weights
    # Draws made for the whole global batch (e.g. VTM negatives) use one stream shared by every rank; the Trainer
    # checkpoints it so a resumed run draws the same numbers.
    global_generator: torch.Generator

    def train_loader(self) -> Any: ...

    def train_rows(self) -> Any: ...

    def build_model(self) -> nn.Module: ...

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator
                      ) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def has_split(self, split: str) -> bool: ...

    def evaluate(self, model: Any, accelerator: Accelerator, split: str) -> dict[str, Any]: ...

    def tune_evaluation(self, model: Any, accelerator: Accelerator) -> dict[str, Any] | None: ...

    def save_artifacts(self, out_dir: Path) -> None: ...

    # {"images": {tag: uint8 (H, W, 3)}, "text": {tag: markdown}} for a few fixed clips; the Trainer calls it on
    # every process (model in eval mode, no gradients, training RNG state restored after) and logs it on the main one.
    def visuals(self, model: Any, accelerator: Accelerator) -> dict[str, dict[str, Any]]: ...
