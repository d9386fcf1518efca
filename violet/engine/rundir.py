"""RunDir: the one place that knows what a run directory holds and where.

    OUT/config.json              the resolved config the run trained with
    OUT/model.safetensors        final weights (fp32, loadable without DeepSpeed)
    OUT/tokenizer/               the tokenizer the run used
    OUT/run.json                 metadata: run id, config hash, versions, processes, step, data, when
    OUT/README.md                a model card: task, data, metrics, how to load
    OUT/checkpoints/step_N/      resumable state (see checkpointer.py)
    OUT/train_log.jsonl          the logged scalars, one JSON object per logged step
    OUT/evaluation_choice.json   evaluation settings the run measured on held-out data (e.g. re-ranking depth)
    OUT/metrics_<split>.json     evaluation at the end of training
    OUT/.lock                    held while a process trains into the directory

Everything else (training, evaluation, inference) asks a RunDir for paths instead of spelling file names.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from violet.config import RunConfig, config_from_dict

# config.json's "format": 2 since retrieval reads objective.mlm_weight, 3 since qa-mc does (RunDir.load_config
# reads older runs).
CONFIG_FORMAT = 3
# The format from which each task's saved objective.mlm_weight means an MLM head; before it (and for a task not
# listed) the field held the unused 1.0 of pretraining and the run trained no MLM head.
MLM_WEIGHT_READ_SINCE = {"pretrain": 1, "retrieval": 2, "qa-mc": 3}


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (not a run, or in use by another process)."""


class RunDir:
    CONFIG = "config.json"
    WEIGHTS = "model.safetensors"
    TOKENIZER = "tokenizer"
    METADATA = "run.json"
    CHECKPOINTS = "checkpoints"
    TRAIN_LOG = "train_log.jsonl"
    EVALUATION_CHOICE = "evaluation_choice.json"
    LOCK = ".lock"
    MODEL_CARD = "README.md"
    TENSORBOARD = "tensorboard"  # Accelerate's tracker directory under the project dir

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ----- paths -----
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def weights_path(self) -> Path:
        return self.path / self.WEIGHTS

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / self.TOKENIZER

    @property
    def metadata_path(self) -> Path:
        return self.path / self.METADATA

    @property
    def model_card_path(self) -> Path:
        return self.path / self.MODEL_CARD

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def evaluation_choice_path(self) -> Path:
        return self.path / self.EVALUATION_CHOICE

    def metrics_path(self, split: str) -> Path:
        return self.path / f"metrics_{split}.json"

    def eval_path(self, task: str, split: str) -> Path:
        """Where evaluate.py writes its metrics for this run by default."""
        return self.path / f"eval_{task}_{split}.json"

    @property
    def owner(self) -> RunDir | None:
        """For a resumable `OUT/checkpoints/step_N` directory: the run it belongs to."""
        if self.path.parent.name == self.CHECKPOINTS and self.path.name.startswith("step_"):
            return RunDir(self.path.parent.parent)
        return None

    # ----- contents -----
    def load_config(self) -> RunConfig:
        if not self.config_path.exists() and self.owner is not None:  # a step saved before steps carried configs
            return self.owner.load_config()
        if not self.config_path.exists():
            raise RunDirError(f"{self.path} is not a violet run: {self.CONFIG} is missing")
        saved = json.loads(self.config_path.read_text())
        # Runs saved before model.text_pool existed read the text embedding at [CLS]; keep computing what they learned.
        saved.get("model", {}).setdefault("text_pool", "cls")
        saved_format = saved.pop("format", 1)
        if saved_format < MLM_WEIGHT_READ_SINCE.get(saved.get("task"), CONFIG_FORMAT + 1):
            saved.setdefault("objective", {})["mlm_weight"] = 0.0  # keep such a run without the head it never had
        return config_from_dict(saved)

    def save_config(self, config: RunConfig) -> None:
        write_text(self.config_path, json.dumps({"format": CONFIG_FORMAT, **config.to_dict()}, indent=2) + "\n")

    def evaluation_choice(self) -> dict[str, Any] | None:
        path = self.evaluation_choice_path
        if not path.exists() and self.owner is not None:
            return None  # chosen at the end of training: a step directory has none
        return json.loads(path.read_text()) if path.exists() else None

    def save_evaluation_choice(self, choice: dict[str, Any]) -> None:
        write_text(self.evaluation_choice_path, json.dumps(choice, indent=2) + "\n")

    def save_metadata(self, metadata: dict[str, Any]) -> None:
        write_text(self.metadata_path, json.dumps(metadata, indent=2, sort_keys=True) + "\n")

    def metadata(self) -> dict[str, Any]:
        return json.loads(self.metadata_path.read_text()) if self.metadata_path.exists() else {}

    def has_training_state(self) -> bool:
        """Anything a previous training run left: checkpoints or a train log."""
        return self.checkpoints_dir.exists() and any(self.checkpoints_dir.iterdir()) or self.train_log.exists()

    def clear_training_state(self) -> list[str]:
        """Remove what a previous run left (for --overwrite); only the names a run writes, never other files."""
        removed = []
        for name in (self.CHECKPOINTS, self.TENSORBOARD, self.TOKENIZER, "wandb"):
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)
                removed.append(name + "/")
        patterns = (self.TRAIN_LOG, self.WEIGHTS, self.METADATA, self.CONFIG, self.EVALUATION_CHOICE, self.MODEL_CARD,
                    "metrics_*.json",
                    "eval_*.json")
        for pattern in patterns:
            for path in self.path.glob(pattern):
                path.unlink()
                removed.append(path.name)
        return removed

    # ----- ownership -----
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold OUT/.lock for as long as a process trains into the directory; a second one is refused at once.

        An advisory flock: the kernel drops it when the holder dies, so a killed run never leaves a stale lock.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / self.LOCK, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunDirError(f"{self.path} is in use by {holder}; wait for it or choose another --output-dir") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            handle.flush()
            yield
        finally:
            handle.close()


def write_text(path: Path, text: str) -> None:
    """Write a small file atomically (temporary file, fsync, rename): a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
