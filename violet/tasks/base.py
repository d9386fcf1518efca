"""The Task interface: what differs between pretraining, retrieval and QA, and nothing else.

A task owns its annotation kind, the heads it needs, its datasets and collate, one training step returning
(loss, logs) and an evaluation returning a metrics dict. The Trainer owns everything shared.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from violet.config import RunConfig
from violet.data.collate import make_collate
from violet.data.datasets import ClipDataset
from violet.data.layout import default_store_dir
from violet.data.prepared import load_prepared
from violet.data.sampling import EpochShuffleSampler, steady_memory_worker_init
from violet.data.streaming import StreamingClipDataset, StreamingLoader
from violet.distributed import gather_by_index
from violet.models import VideoLanguageModel


class Task:
    name: str = ""
    annotation_kind: str = ""  # captions | qa_mc | qa_oe: which prepared DatasetDict the task reads
    heads: tuple[str, ...] = ()
    # Task-specific defaults, applied over the dataclass defaults and under preset/YAML/CLI (see config.py).
    defaults: dict[str, Any] = {}
    # Applied over `defaults` when the run starts from a trained model (--init): fine-tuning keeps what it was
    # given rather than training from scratch again (same precedence otherwise).
    init_defaults: dict[str, Any] = {}
    supports_zero_shot: bool = False

    def __init__(self, config: RunConfig, tokenizer: Any) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.data_dir = Path(config.data.data_dir)
        self.splits = load_prepared(self.data_dir, self.annotation_kind)
        self.store_dir = default_store_dir(self.data_dir)
        special = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
        self.special_ids = torch.tensor(special, dtype=torch.long)
        # Draws made for the whole global batch (e.g. VTM negatives): seeded alike on every rank so that all
        # ranks draw the same numbers and each keeps its rows. Per-sample draws use the Trainer's per-rank one.
        self.global_generator = torch.Generator().manual_seed(config.train.seed)

    # ----- data -----
    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split]) > 0

    def require_split(self, split: str) -> Any:
        if not self.has_split(split):
            available = ", ".join(f"{name} ({len(rows)})" for name, rows in self.splits.items()) or "none"
            raise FileNotFoundError(
                f"task {self.name!r} needs the {split!r} split of {self.annotation_kind} in {self.data_dir}, "
                f"which has: {available}"
            )
        return self.splits[split]

    def clip_dataset(
        self, rows: Any, train: bool, num_frames: int | None = None, store_dir: Path | None = None
    ) -> ClipDataset:
        """Clips of `rows` from this task's clip store (or `store_dir`, another corpus's) with the run's settings."""
        data = self.config.data
        return ClipDataset(
            rows, store_dir or self.store_dir, num_frames or data.num_frames, self.config.model.image_size, train,
            crop_scale_min=data.crop_scale_min if data.train_augment else 1.0, seed=self.config.train.seed,
            flip=data.horizontal_flip,
        )

    def train_dataset(self) -> Dataset:
        return self.clip_dataset(self.train_rows(), train=self.config.data.train_augment)

    def train_rows(self) -> Any:
        return self.require_split("train")

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, collate: Callable) -> DataLoader:
        """Training loaders shuffle (by seed and epoch) and drop the last partial batch. Their workers persist
        across epochs: the epoch reaches them inside each sampled key, not through the dataset object."""
        workers = self.config.data.num_workers
        sampler = EpochShuffleSampler(len(dataset), self.config.train.seed) if shuffle else None
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=workers,
            pin_memory=torch.cuda.is_available(), drop_last=shuffle, persistent_workers=shuffle and workers > 0,
            worker_init_fn=steady_memory_worker_init,
        )

    def train_loader(self) -> DataLoader | StreamingLoader:
        collate = make_collate(self.text_fields)
        if self.config.data.streaming:
            return self.streaming_train_loader(collate)
        return self.loader(self.train_dataset(), self.config.train.batch_size, True, collate)

    def streaming_train_loader(self, collate: Callable) -> StreamingLoader:
        """Shard-sequential training data split across ranks and workers; it saves and restores its own position."""
        data = self.config.data
        dataset = StreamingClipDataset(
            self.train_rows(), self.store_dir, data.num_frames, self.config.model.image_size, data.train_augment,
            batch_size=self.config.train.batch_size, collate=collate, num_workers=data.num_workers,
            shuffle_buffer=data.shuffle_buffer, crop_scale_min=data.crop_scale_min if data.train_augment else 1.0,
            seed=self.config.train.seed, flip=data.horizontal_flip,
        )
        return StreamingLoader(dataset, num_workers=data.num_workers, pin_memory=torch.cuda.is_available())

    def prepare_training(self) -> None:
        """Load what only training needs, before the first batch (evaluation and violet.load never call it)."""

    def text_fields(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Tokenize/label a collated batch (runs in DataLoader workers)."""
        raise NotImplementedError

    def predict_rows(
        self, accelerator: Accelerator, rows: Any, compute: Callable[[dict[str, Any]], dict[str, torch.Tensor]],
        what: str,
    ) -> dict[str, torch.Tensor]:
        """Run `compute` over every row of an evaluation split (clips + this task's text fields), sharded
        across processes, and return its outputs for all rows in order."""
        loader = accelerator.prepare(
            self.loader(self.clip_dataset(rows, train=False, num_frames=self.eval_num_frames()),
                        self.config.train.eval_batch_size, False, make_collate(self.text_fields))
        )
        return gather_by_index(accelerator, loader, compute, len(rows), what)

    def eval_num_frames(self) -> int:
        return self.config.eval.num_frames or self.config.data.num_frames

    # ----- model -----
    def num_answers(self) -> int:
        return 0

    def build_model(self) -> VideoLanguageModel:
        return VideoLanguageModel(self.config.model, len(self.tokenizer), self.heads, self.num_answers())

    def save_artifacts(self, out_dir: Path) -> None:
        """Files evaluation needs besides weights (e.g. the answer vocabulary)."""

    # ----- steps -----
    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def evaluate(self, model: Any, accelerator: Accelerator, split: str, predictions: bool = False,
                 top_k: int = 10) -> dict[str, Any]:
        """Metrics of `split`. With `predictions`, the dict also holds "predictions": one dict per row of the
        split, in row order, built from the very outputs the metrics are computed from (so they always
        agree), each ranked list or answer list cut at `top_k`. The Trainer never asks for them."""
        raise NotImplementedError

    def tune_evaluation(self, model: Any, accelerator: Accelerator) -> dict[str, Any] | None:
        """At the end of training: choose evaluation settings by measuring them on held-out data (never the
        test split), set them in the config the run saves, and return what was measured (None: nothing to
        choose)."""
        return None

    def visuals(self, model: Any, accelerator: Accelerator) -> dict[str, dict[str, Any]]:
        """What the model does on a few fixed clips, for the trackers: {"images": {tag: uint8 (H, W, 3)}, "text":
        {tag: markdown}}. Called on every process in eval mode without gradients; must not use any training random
        stream. The default shows each clip's frames with the task's prediction (tasks/visuals.py)."""
        from violet.tasks.visuals import finetune_visuals

        return finetune_visuals(self, model, accelerator.device)
