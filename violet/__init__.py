"""violet: video-language pretraining and fine-tuning (VIOLET / SimVTP family) on Accelerate + DeepSpeed.

`violet.load(RUN_DIR)` loads a trained run for inference (violet/api.py). It is imported on first use, so that
`import violet` (and every `python -m violet.x` tool) does not pay for torch, transformers and the decoders.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from violet.api import RunCapabilityError, TrainedModel, VideoFileError

__all__ = ["RunCapabilityError", "TrainedModel", "VideoFileError", "load"]
_LAZY = ("RunCapabilityError", "TrainedModel", "VideoFileError")


def load(run_dir: Any, device: Any = None) -> TrainedModel:
    """Load a run (an output directory of train.py) for inference; device None = CUDA when available.

    Returns a TrainedModel: encode_videos, encode_texts, score, answer (see violet/api.py)."""
    from violet.api import load as load_run

    return load_run(run_dir, device)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from violet import api

        return getattr(api, name)
    raise AttributeError(f"module 'violet' has no attribute {name!r}")
