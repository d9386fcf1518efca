"""Model code: transformer blocks, the video-language model and its presets."""
from violet.models.presets import PRESETS, preset
from violet.models.video_language import KNOWN_HEADS, VideoLanguageModel, count_parameters

__all__ = ["KNOWN_HEADS", "PRESETS", "VideoLanguageModel", "count_parameters", "preset"]
