"""Resumable checkpoints (Accelerate save_state) and final weights (safetensors + config + tokenizer).

Resumable state lives in OUT/checkpoints/step_N; a `COMPLETE` marker is written last, so a run killed while
saving never resumes from a half-written directory. Final weights are one safetensors file that loads
without DeepSpeed. Loading is strict about everything except the heads a task does not use, and always
prints what was missing or unexpected (GUIDE §5.12).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from violet.config import RunConfig, config_from_dict

logger = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER_DIR = "tokenizer"


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Finished resumable checkpoints, oldest first."""
    root = output_dir / "checkpoints"
    if not root.exists():
        return []
    done = [path for path in root.glob("step_*") if (path / COMPLETE).exists()]
    return sorted(done, key=lambda path: int(path.name.split("_")[1]))


def mark_complete(path: Path, step: int) -> None:
    (path / COMPLETE).write_text(json.dumps({"step": step}))


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    for old in checkpoint_dirs(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def load_run_config(checkpoint_dir: Path) -> RunConfig:
    path = checkpoint_dir / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{checkpoint_dir} is not a violet checkpoint: {CONFIG} is missing")
    return config_from_dict(json.loads(path.read_text()))


def _resize_table(table: torch.Tensor, target: torch.Size, name: str) -> torch.Tensor:
    """Interpolate a position table saved for another frame count or resolution (explicit, and logged)."""
    logger.warning("interpolating %s from %s to %s", name, tuple(table.shape), tuple(target))
    if name.endswith("spatial_pos"):  # (1, 1, g*g, D): bicubic over the 2-D grid
        old, new = int(table.shape[2] ** 0.5), int(target[2] ** 0.5)
        grid = table.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(target).to(table.dtype)
    series = table.reshape(1, table.shape[1], -1).permute(0, 2, 1).float()  # temporal (1, T, 1, D): linear
    series = F.interpolate(series, size=target[1], mode="linear", align_corners=False)
    return series.permute(0, 2, 1).reshape(target).to(table.dtype)


def load_weights(model: nn.Module, checkpoint_dir: Path, required_heads: tuple[str, ...] = ()) -> dict:
    """Load OUT/model.safetensors into `model`; returns {"missing": [...], "unexpected": [...]}.

    Missing backbone keys or missing `required_heads` raise. Extra heads (e.g. MLM when fine-tuning from a
    pretraining checkpoint) and missing task heads that are not required (new heads) are reported.
    """
    path = checkpoint_dir / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"no {WEIGHTS} in {checkpoint_dir}")
    state = load_file(str(path))
    own = model.state_dict()
    for name in ("video.spatial_pos", "video.temporal_pos"):
        if name in state and name in own and state[name].shape != own[name].shape:
            state[name] = _resize_table(state[name], own[name].shape, name)
    mismatched = [n for n in state if n in own and state[n].shape != own[n].shape]
    if mismatched:
        details = ", ".join(f"{n}: {tuple(state[n].shape)} vs {tuple(own[n].shape)}" for n in mismatched[:5])
        raise ValueError(f"{path}: shapes differ from the model built from the config ({details})")
    result = model.load_state_dict(state, strict=False)
    tied = {"heads.mlm.decoder.weight"}  # tied to the word embeddings; safetensors stores it once
    missing = [key for key in result.missing_keys if key not in tied]
    backbone_missing = [key for key in missing if not key.startswith("heads.")]
    head_missing = sorted({key.split(".")[1] for key in missing if key.startswith("heads.")})
    if backbone_missing:
        raise KeyError(f"{path} lacks backbone weights: {backbone_missing[:10]}")
    lacking = [head for head in head_missing if head in required_heads]
    if lacking:
        raise KeyError(f"{path} has no trained {', '.join(lacking)} head; fine-tune that task first")
    if head_missing:
        logger.warning("new (randomly initialised) heads not in %s: %s", checkpoint_dir, ", ".join(head_missing))
    if result.unexpected_keys:
        unused = sorted({key.split(".")[1] if key.startswith("heads.") else key for key in result.unexpected_keys})
        logger.warning("weights in %s not used by this task: %s", checkpoint_dir, ", ".join(unused))
    return {"missing": missing, "unexpected": list(result.unexpected_keys)}
