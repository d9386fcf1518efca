"""Model presets: `tiny` for tests and CPU demos, `base` at the papers' widths (faithful backbones: issue #5)."""
from __future__ import annotations

import dataclasses

from violet.config import ModelConfig

PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(preset="tiny"),
    "small": ModelConfig(
        preset="small", width=384, heads=6, video_depth=6, text_depth=4, fusion_depth=4,
        image_size=224, patch_size=16, tubelet=2, max_frames=16, max_text_len=40, embed_dim=256,
    ),
    "base": ModelConfig(
        preset="base", width=768, heads=12, video_depth=12, text_depth=6, fusion_depth=12,
        image_size=224, patch_size=16, tubelet=2, max_frames=16, max_text_len=40, embed_dim=256,
    ),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; available: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
