"""Model weights on disk: the exported safetensors file and loading it into a model.

The export is one fp32 safetensors file that loads without DeepSpeed, checked against the live model before it
is written. Loading is strict about everything except the heads a task does not use, and always reports what was
missing or unexpected; position tables saved for another frame count or resolution are interpolated explicitly.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from violet.models.sharding import load_into, tensor_shapes

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)
WEIGHTS = "model.safetensors"  # the file name inside a run directory or an exported step
ZERO_TAG = "pytorch_model"  # the sub-directory Accelerate's save_state gives the DeepSpeed engine's files
# Parameters tied to another one (the MLM decoder shares the word embeddings): stored once, re-tied on load.
TIED_ALIASES = frozenset({"heads.mlm.decoder.weight"})


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


COMPILED_PREFIX = "_orig_mod."  # what torch.compile's wrapper adds to every parameter name


def plain_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter names as the plain model has them, also when the state came from a torch.compile'd model."""
    return {name.replace(COMPILED_PREFIX, "", 1) if name.startswith(COMPILED_PREFIX) else name: tensor
            for name, tensor in state.items()}


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The weights of a run directory (its export) or of a resumable `checkpoints/step_N` directory: the model file
    Accelerate saved there, or the fp32 master weights rebuilt from a DeepSpeed ZeRO checkpoint."""
    path = directory / WEIGHTS
    if not path.exists() and (directory / ZERO_TAG).is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=ZERO_TAG)
        return {name: tensor.float() for name, tensor in state.items()}, directory / ZERO_TAG
    if not path.exists():
        raise FileNotFoundError(f"no {WEIGHTS} (nor a DeepSpeed {ZERO_TAG}/ checkpoint) in {directory}")
    try:
        return plain_names(load_file(str(path))), path
    except Exception as error:  # safetensors says "incomplete metadata" or similar for a truncated file
        raise ValueError(f"{path} cannot be read ({error}); it is truncated or not a safetensors file: export it "
                         "again (train.py --resume on the run) or use one of its checkpoints/step_N") from None


def load_weights(model: nn.Module, checkpoint_dir: Path, required_heads: tuple[str, ...] = ()) -> dict:
    """Load CHECKPOINT_DIR/model.safetensors into `model`; returns {"missing": [...], "unexpected": [...]}.

    Missing backbone keys or missing `required_heads` raise. Extra heads (e.g. MLM when fine-tuning from a
    pretraining checkpoint) and missing task heads that are not required (new heads) are reported.
    """
    state, path = read_weights(Path(checkpoint_dir))
    own = tensor_shapes(model)  # also right for a model ZeRO-3 partitioned while it was built
    for name in ("video.spatial_pos", "video.temporal_pos"):
        if name in state and name in own and state[name].shape != own[name]:
            state[name] = _resize_table(state[name], own[name], name)
    mismatched = [n for n in state if n in own and state[n].shape != own[n]]
    if mismatched:
        details = ", ".join(f"{n}: {tuple(state[n].shape)} vs {tuple(own[n])}" for n in mismatched[:5])
        raise ValueError(f"{path}: shapes differ from the model built from the config ({details})")
    missing_keys, unexpected_keys = load_into(model, state)
    missing = [key for key in missing_keys if key not in TIED_ALIASES]
    backbone_missing = [key for key in missing if not key.startswith("heads.")]
    head_missing = sorted({key.split(".")[1] for key in missing if key.startswith("heads.")})
    if backbone_missing:
        raise KeyError(f"{path} lacks backbone weights: {backbone_missing[:10]}")
    lacking = [head for head in head_missing if head in required_heads]
    if lacking:
        raise KeyError(f"{path} has no trained {', '.join(lacking)} head; fine-tune that task first")
    if head_missing:
        logger.warning("new (randomly initialised) heads not in %s: %s", checkpoint_dir, ", ".join(head_missing))
    if unexpected_keys:
        unused = sorted({key.split(".")[1] if key.startswith("heads.") else key for key in unexpected_keys})
        logger.warning("weights in %s not used by this task: %s", checkpoint_dir, ", ".join(unused))
    return {"missing": missing, "unexpected": list(unexpected_keys)}


def export_weights(accelerator: Accelerator, model: nn.Module, target: Path, zero_checkpoint: Path | None) -> None:
    """Write `target` (a model.safetensors path): full fp32 weights that load with no DeepSpeed at all.

    Under DeepSpeed the fp32 master weights are rebuilt from the ZeRO checkpoint just saved (the module itself
    may hold bf16 copies or, under ZeRO-3, empty partitions). Every export is checked against the live model's
    names, shapes and parameter count, so an empty or partial file fails here instead of at evaluation.
    """
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type.name == "DEEPSPEED":
        if zero_checkpoint is None:
            raise ValueError("a DeepSpeed export needs the ZeRO checkpoint directory saved by save_state")
        state = None
        if accelerator.is_main_process:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(zero_checkpoint), tag=ZERO_TAG)
    else:
        state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        state = plain_names(state)
        state = {name: tensor.detach().float().cpu().contiguous() if tensor.is_floating_point() else tensor.cpu()
                 for name, tensor in state.items() if name not in TIED_ALIASES}
        verify_export(state, unwrapped)
        partial = target.with_name(f".{target.name}.partial")
        save_file(state, str(partial))  # then renamed: a kill mid-write never leaves a truncated export
        partial.chmod(0o666 & ~_umask())  # safetensors writes 0600; a shared run directory must stay readable
        partial.replace(target)
    accelerator.wait_for_everyone()


def live_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Full shapes of the model's saved tensors, also when ZeRO-3 has partitioned them (param.ds_shape)."""
    shapes = {}
    for name, tensor in plain_names(model.state_dict(keep_vars=True)).items():
        shapes[name] = tuple(getattr(tensor, "ds_shape", tensor.shape))
    return {name: shape for name, shape in shapes.items() if name not in TIED_ALIASES}


def verify_export(state: dict[str, torch.Tensor], model: nn.Module) -> None:
    expected = live_shapes(model)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [f"{name}: {tuple(state[name].shape)} vs {expected[name]}" for name in expected
             if name in state and tuple(state[name].shape) != expected[name]]
    if missing or extra or wrong:
        raise RuntimeError(
            f"exported weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"wrong shapes {wrong[:5]}; the resumable checkpoints are intact"
        )
    count = sum(tensor.numel() for tensor in state.values())
    logger.info("exported %d tensors, %.2fM values", len(state), count / 1e6)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask
