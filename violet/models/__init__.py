"""Model code: transformer blocks, video encoders (ViT, Video Swin), the video-language model and its presets."""
from violet.models.presets import PRESETS, parameter_report, preset, preset_overrides
from violet.models.video_language import (
           KNOWN_HEADS,
           VideoLanguageModel,
           count_parameters,
)

__all__ = ["KNOWN_HEADS", "PRESETS", "VideoLanguageModel", "count_parameters", "parameter_report", "preset",
           "preset_overrides"]
