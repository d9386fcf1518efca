"""Typed run configuration: nested dataclasses, YAML files and dotted CLI overrides.

Precedence (later wins): dataclass defaults < the task's defaults < the model preset < `--config x.yaml`
< the CLI flags of train.py (`--batch-size`, `--max-steps`, ...) < dotted overrides (`train.lr=1e-4`).
The resolved config is printed and saved with every run so a result can always be traced to its settings.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import SchedulerType


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names the key and what is allowed."""


@dataclass
class ModelConfig:
    """Sizes of the video encoder, text encoder and cross-modal fusion; defaults are the `tiny` preset."""

    preset: str = "tiny"
    width: int = 128  # one width for all three transformers, as VIOLET/SimVTP share the token space
    heads: int = 4
    mlp_ratio: float = 4.0
    video_depth: int = 2
    text_depth: int = 2
    fusion_depth: int = 2
    image_size: int = 64
    patch_size: int = 8
    tubelet: int = 2  # frames per space-time patch (2: a token sees motion; 1 gave chance-level motion QA)
    max_frames: int = 8  # size of the temporal position table
    max_text_len: int = 48
    embed_dim: int = 128  # contrastive (VTC) projection size
    # How the text's contrastive embedding is read from its encoder: "mean" over the real tokens, or the "cls"
    # position. A randomly initialised text stack learns far faster from the mean (measured in
    # docs/benchmarks.md, "Learning"); a stack initialised from BERT may keep its [CLS].
    text_pool: str = "mean"
    dropout: float = 0.0
    # Linear layers: > 0 = truncated normal with this std (BERT / ViT use 0.02 at width 768); 0 = PyTorch's
    # fan-in default. At width 128 the 0.02 init left the tiny model learning ~5x less per step (see
    # docs/benchmarks.md, "Learning"), so small presets keep PyTorch's default and the paper sizes keep 0.02.
    init_std: float = 0.0
    grad_checkpointing: bool = False
    tokenizer: str = ""  # a local directory with a BERT vocab; "" = the uncased vocab shipped in violet/assets
    # --- model family (docs/models.md) ---
    video_encoder: str = "vit"  # vit: tubelet ViT | swin: Video Swin (3D shifted windows, torchvision layout)
    video_pos: str = "learned"  # vit only: learned (factorised space + time) | sincos (VideoMAE's fixed joint table)
    norm_first: bool = True  # False: BERT's post-norm blocks for text/fusion (VIOLET's fusion starts from BERT)
    swin_embed_dim: int = 96  # Video Swin stage-1 width; the last stage is embed_dim * 2^(stages-1)
    swin_depths: str = "2,2,6,2"  # blocks per stage (comma-separated)
    swin_heads: str = "3,6,12,24"
    swin_window: str = "8,7,7"  # time, height, width of the attention window in tokens
    drop_path: float = 0.0  # Video Swin stochastic depth (0.1 in the Kinetics recipe; 0 keeps tests deterministic)
    # MAE-style masked visual modelling (SimVTP): > 0 = masked tubes never enter the encoder, a decoder of this
    # depth reconstructs them; 0 = VIOLET-style mask tokens in the encoder and a linear MVM head on fusion outputs.
    decoder_depth: int = 0
    decoder_width: int = 384
    decoder_heads: int = 6
    # Pretrained initialisation from local files, applied when the model is built (violet/models/pretrained.py).
    video_init: str = ""  # timm ViT/Swin (2D, inflated), torchvision Swin3D, Video Swin or VideoMAE checkpoint
    text_init: str = ""  # a local directory `transformers.BertModel.from_pretrained` reads

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"model.width={self.width} must be divisible by model.heads={self.heads}")
        if self.video_encoder not in ("vit", "swin"):
            raise ValueError(f"model.video_encoder must be vit|swin, got {self.video_encoder!r}")
        if self.text_pool not in ("mean", "cls"):
            raise ValueError(f"model.text_pool must be mean|cls, got {self.text_pool!r}")
        if self.video_pos not in ("learned", "sincos"):
            raise ValueError(f"model.video_pos must be learned|sincos, got {self.video_pos!r}")
        if self.video_encoder == "swin":
            if self.decoder_depth:
                raise ValueError("model.decoder_depth > 0 (MAE-style MVM) needs video_encoder=vit: Swin needs the full grid")
            if not len(self.swin_depths_list) == len(self.swin_heads_list) >= 1 or len(self.swin_window_list) != 3:
                raise ValueError("model.swin_depths and swin_heads need one entry per stage; swin_window three")
            if self.image_size % self.video_region:
                raise ValueError(f"model.image_size={self.image_size} must be a multiple of {self.video_region} "
                                 "(patch_size x 2^(stages-1) for Video Swin)")
        if self.decoder_depth and self.decoder_width % self.decoder_heads:
            raise ValueError("model.decoder_width must be divisible by model.decoder_heads")
        if self.video_depth == 0 and self.video_encoder == "vit" and self.fusion_depth == 0:
            raise ValueError("model.video_depth=0 encodes video with the fusion stack, so fusion_depth must be > 0")
        if self.image_size % self.patch_size:
            raise ValueError(f"model.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        if self.max_frames % self.tubelet:
            raise ValueError(f"model.max_frames={self.max_frames} must be a multiple of tubelet={self.tubelet}")

    @staticmethod
    def _ints(text: str) -> list[int]:
        return [int(part) for part in text.split(",") if part.strip()]

    @property
    def swin_depths_list(self) -> list[int]:
        return self._ints(self.swin_depths)

    @property
    def swin_heads_list(self) -> list[int]:
        return self._ints(self.swin_heads)

    @property
    def swin_window_list(self) -> list[int]:
        return self._ints(self.swin_window)

    @property
    def video_region(self) -> int:
        """Pixels (per side) one output video token covers: the patch, times Swin's patch merging."""
        if self.video_encoder == "swin":
            return self.patch_size * 2 ** (len(self.swin_depths_list) - 1)
        return self.patch_size

    @property
    def hidden_size(self) -> int:
        """Read by Accelerate to fill DeepSpeed's "auto" bucket sizes."""
        return self.width


@dataclass
class DataConfig:
    data_dir: str = ""
    num_frames: int = 8  # frames per clip fed to the model (sampled from the frames kept in the clip store)
    num_workers: int = 2
    train_augment: bool = True  # random resized crop
    crop_scale_min: float = 0.6
    horizontal_flip: bool = False  # off: mirrored clips would make "left"/"right" in captions and answers lie
    max_bad_samples: int = 100  # training skips unreadable clips, logs each, and stops past this many
    # Streaming: read the clip store shard by shard (rows split across ranks and workers, a shuffle buffer,
    # a position saved in checkpoints) instead of random access; for corpora larger than RAM or local disk.
    streaming: bool = False
    shuffle_buffer: int = 2048  # rows mixed in each worker's shuffle window (streaming only)
    # Pretraining on several corpora at once: "DIR=WEIGHT[@FRAMES],..." added to --data (weight 1); one corpus per
    # batch, drawn by weight (e.g. CC3M images as 1-frame clips next to WebVid videos). See violet/data/mixture.py.
    corpora: str = ""

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.num_workers < 0 or self.shuffle_buffer < 1:
            raise ValueError(f"data.num_frames={self.num_frames} and data.shuffle_buffer={self.shuffle_buffer} "
                             f"must be >= 1, data.num_workers={self.num_workers} >= 0")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"data.crop_scale_min must be in (0, 1], got {self.crop_scale_min}")


@dataclass
class TrainConfig:
    batch_size: int = 32  # per device
    eval_batch_size: int = 64
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_ratio: float = 0.05
    # A transformers schedule name (transformers.SchedulerType), e.g. cosine, linear, constant_with_warmup
    lr_schedule: str = "constant_with_warmup"
    epochs: int = 10
    max_steps: int = 0  # > 0 overrides epochs
    grad_clip: float = 1.0  # max gradient norm; <= 0 = no clipping
    mixed_precision: str = "auto"  # auto = bf16 on GPUs that support it, fp32 on CPU
    seed: int = 0
    log_every: int = 10
    save_every: int = 100  # optimizer steps between resumable checkpoints
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0 = evaluate on the val split (when present) only at the end
    compile: bool = False

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"train.mixed_precision must be auto|no|bf16|fp16, got {self.mixed_precision!r}")
        schedules = [kind.value for kind in SchedulerType]  # what transformers.get_scheduler accepts
        if self.lr_schedule not in schedules:
            raise ValueError(f"train.lr_schedule must be one of {'|'.join(schedules)}, got {self.lr_schedule!r}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.batch_size and train.grad_accum must be >= 1")
        # Impossible values would otherwise train nothing (or diverge at once) and still export a model.
        for key, value, low in (("lr", self.lr, 0.0), ("epochs", self.epochs, 0), ("eval_batch_size",
                                                                                    self.eval_batch_size, 0)):
            if not value > low:
                raise ValueError(f"train.{key} must be > {low}, got {value}")
        if self.max_steps < 0:
            raise ValueError(f"train.max_steps must be >= 1 (or 0: use train.epochs), got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0 or self.weight_decay < 0:
            raise ValueError(f"train.warmup_ratio must be in [0, 1) and train.weight_decay >= 0, got "
                             f"{self.warmup_ratio} and {self.weight_decay}")


@dataclass
class ObjectiveConfig:
    """Loss weights and masking; a task uses the terms it needs and ignores the rest."""

    mlm_weight: float = 1.0
    mvm_weight: float = 1.0
    vtm_weight: float = 1.0
    vtc_weight: float = 1.0
    mlm_prob: float = 0.15
    mvm_ratio: float = 0.3  # fraction of video patches replaced by a mask token for MVM
    vtm_hard_negatives: bool = True  # sample VTM negatives from VTC similarities, as ALBEF/VIOLET do
    # With model.decoder_depth > 0 (SimVTP) mvm_ratio is the fraction of tubes hidden from the encoder (0.9).
    mvm_target: str = "pixel"  # pixel (per-patch-normalised) | hog (MaskFeat-style) | vq (frozen image tokenizer)
    hog_bins: int = 9  # orientation bins per HOG cell
    hog_cell: int = 8  # HOG cell size in pixels; must divide the region one video token covers
    vq_tokenizer: str = ""  # mvm_target=vq: a TorchScript (.pt/.ts) or torch.export (.pt2) image tokenizer file
    # "global": negatives drawn from the whole global batch (world-size invariant: 2 ranks x B == 1 rank x 2B;
    # gathers token tensors across ranks). "local": from this rank's batch only (ALBEF; no token gather).
    vtm_negatives: str = "global"
    answer_top_k: int = 0  # 0 = the answer vocabulary prepared with the data


@dataclass
class EvalConfig:
    split: str = "test"
    rerank_k: int = 16  # retrieval: re-rank the top-k per query with the VTM head; 0 = dual encoder only; -1 = all
    num_frames: int = 0  # 0 = same as data.num_frames


@dataclass
class RunConfig:
    task: str = "pretrain"
    output_dir: str = ""
    init: str = ""  # checkpoint directory to initialise weights from (fine-tuning)
    resume: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field's declared type, failing with the key's name."""
    if isinstance(annotation, str):
        annotation = eval_annotation(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected a boolean, got {value!r}")
    if annotation is str and isinstance(value, bool):
        raise ValueError(f"{key}: YAML read {value!r} as a boolean (yes/no/on/off); quote it, e.g. '\"no\"'")
    if annotation in (int, float, str):
        try:
            if key.endswith("rerank_k") and str(value).strip().lower() == "all":
                return -1  # re-rank every pair, as VIOLET evaluated
            if annotation is int and isinstance(value, str):
                value = float(value) if any(c in value for c in ".eE") else value  # "1e3" and "2.0" are ints
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return annotation(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected {annotation.__name__}, got {value!r}") from None
    return value


_ANNOTATIONS = {"int": int, "float": float, "str": str, "bool": bool}


def eval_annotation(name: str) -> Any:
    """Resolve the string annotations produced by `from __future__ import annotations` (only plain types used)."""
    if name not in _ANNOTATIONS:
        raise TypeError(f"unsupported config field type {name!r}")
    return _ANNOTATIONS[name]


def _section_fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def apply_overrides(config: Any, overrides: dict[str, Any], prefix: str = "") -> None:
    """Set nested fields from a (possibly nested) dict; unknown keys raise instead of being ignored."""
    fields = _section_fields(config)
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise KeyError(f"unknown config key {dotted!r}; known keys here: {known}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{dotted} is a section; set its fields, e.g. {dotted}.<field>=...")
            apply_overrides(current, value, prefix=f"{dotted}.")
        else:
            setattr(config, key, _coerce(value, fields[key].type, dotted))
    if hasattr(config, "__post_init__"):
        config.__post_init__()  # re-validate after edits


def parse_dotted(items: list[str]) -> dict[str, Any]:
    """Turn ["train.lr=1e-4", "model.width=256"] into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        # Kept as text: the field's declared type converts it (YAML would turn `no` into False).
        node[parts[-1]] = _unquote(raw.strip())
    return nested


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def load_yaml(path: str | Path) -> dict[str, Any]:
    with open(path) as handle:
        loaded = yaml.safe_load(handle) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a config file must be a mapping of sections")
    return loaded


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved by `to_dict` (used when loading checkpoints)."""
    config = RunConfig()
    apply_overrides(config, data)
    return config


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(config.to_json() + "\n")
