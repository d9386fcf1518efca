"""The config sections as dataclasses: every key, its type and default, and the checks on its value.

The comments next to a field (or the comment block just above it) are what `python -m violet.config --list-keys`
prints for that key, so they describe the setting for a user.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from transformers import SchedulerType

from violet.config.errors import ConfigError


@dataclass
class ModelConfig:
    """Sizes of the video encoder, text encoder and cross-modal fusion; defaults are the `tiny` preset."""

    preset: str = "tiny"  # the --model preset this architecture started from (a label: --model chooses the preset)
    width: int = 128  # one width for all three transformers, as VIOLET/SimVTP share the token space
    heads: int = 4  # attention heads; width must be divisible by them
    mlp_ratio: float = 4.0  # MLP hidden size = width x mlp_ratio
    video_depth: int = 2  # video encoder blocks (0: the fusion stack encodes video, as SimVTP)
    text_depth: int = 2  # text encoder blocks (0: the fusion stack encodes text alone, as VIOLET and SimVTP)
    fusion_depth: int = 2  # cross-modal blocks over [text; video]
    image_size: int = 64  # pixels per side of the frames the model sees
    patch_size: int = 8  # pixels per side of one patch (ViT) or of Swin's first stage (tiny retrieval: 4, presets.py)
    tubelet: int = 2  # frames per space-time patch (2: a token sees motion; 1 gave chance-level motion QA)
    max_frames: int = 8  # size of the temporal position table
    max_text_len: int = 48  # text tokens per caption or question; longer ones are truncated
    embed_dim: int = 128  # contrastive (VTC) projection size
    # How the text's contrastive embedding is read from its encoder: "mean" over the real tokens, or the "cls"
    # position. A randomly initialised text stack learns far faster from the mean (measured in
    # docs/benchmarks.md, "Learning"); a stack initialised from BERT may keep its [CLS].
    text_pool: str = "mean"
    # The clip's contrastive embedding: the mean over its tokens (1), or the means over this many consecutive
    # stretches of time, concatenated before the projection, so the embedding keeps what happened first and what
    # later (a mean over all tokens leaves the order of events to what each token happens to encode). 2 gave no
    # gain on the tuning worlds' val splits (docs/benchmarks.md, "Ablations"), so every preset keeps 1.
    video_pool_segments: int = 1
    # "mean" over the clip's tokens (or its segments, above), or "attention": a learned query attends over all
    # tokens (SigLIP's pooling head), so the few tokens where a small thing moves can outweigh the background. It
    # lowered val accuracy on the tuning worlds (docs/benchmarks.md, "Ablations"), so every preset keeps the mean.
    video_pool: str = "mean"
    dropout: float = 0.0  # attention and MLP dropout in every transformer block
    # The contrastive temperature the model starts from (CLIP's 0.07), and whether training learns it (as CLIP and
    # VIOLET do) or keeps it fixed. Starting at 0.03 lost on the tuning worlds' val splits (docs/benchmarks.md,
    # "Ablations"); in runs of a few hundred steps the learned value moves little (0.070 -> ~0.065).
    temperature: float = 0.07
    learn_temperature: bool = True
    # Linear layers: > 0 = truncated normal with this std (BERT / ViT use 0.02 at width 768); 0 = PyTorch's
    # fan-in default. At width 128 the 0.02 init left the tiny model learning ~5x less per step (see
    # docs/benchmarks.md, "Learning"), so small presets keep PyTorch's default and the paper sizes keep 0.02.
    init_std: float = 0.0
    grad_checkpointing: bool = False  # recompute block activations in the backward pass: less memory, more compute
    tokenizer: str = ""  # a local directory with a BERT vocab; "" = the uncased vocab shipped in violet/assets
    # --- model family (docs/models.md) ---
    video_encoder: str = "vit"  # vit: tubelet ViT | swin: Video Swin (3D shifted windows, torchvision layout)
    video_pos: str = "learned"  # vit only: learned (factorised space + time) | sincos (VideoMAE's fixed joint table)
    norm_first: bool = True  # False: BERT's post-norm blocks for text/fusion (VIOLET's fusion starts from BERT)
    swin_embed_dim: int = 96  # Video Swin stage-1 width; the last stage is embed_dim * 2^(stages-1)
    swin_depths: str = "2,2,6,2"  # blocks per stage (comma-separated)
    swin_heads: str = "3,6,12,24"  # attention heads per stage (comma-separated)
    swin_window: str = "8,7,7"  # time, height, width of the attention window in tokens
    drop_path: float = 0.0  # Video Swin stochastic depth (0.1 in the Kinetics recipe; 0 keeps tests deterministic)
    # MAE-style masked visual modelling (SimVTP): > 0 = masked tubes never enter the encoder, a decoder of this
    # depth reconstructs them; 0 = VIOLET-style mask tokens in the encoder and a linear MVM head on fusion outputs.
    decoder_depth: int = 0
    decoder_width: int = 384  # MAE decoder width (decoder_depth > 0)
    decoder_heads: int = 6  # MAE decoder attention heads (decoder_depth > 0)
    # Pretrained initialisation from local files, applied when the model is built (violet/models/pretrained.py).
    video_init: str = ""  # timm ViT/Swin (2D, inflated), torchvision Swin3D, Video Swin or VideoMAE checkpoint
    text_init: str = ""  # a local directory `transformers.BertModel.from_pretrained` reads

    def __post_init__(self) -> None:
        # Sizes first: the divisibility checks below would otherwise fail with a ZeroDivisionError.
        for key in ("width", "heads", "image_size", "patch_size", "tubelet", "max_frames", "max_text_len", "embed_dim",
                    "swin_embed_dim", "decoder_width", "decoder_heads", "video_pool_segments"):
            _at_least(f"model.{key}", getattr(self, key), 1)
        for key in ("video_depth", "text_depth", "fusion_depth", "decoder_depth", "dropout", "init_std", "drop_path"):
            _at_least(f"model.{key}", getattr(self, key), 0)
        if not 0.01 <= self.temperature <= 1.0:  # the learned scale is clamped at 100 = 1 / 0.01 (models/)
            raise ConfigError(f"model.temperature must be in [0.01, 1], got {self.temperature}")
        if self.width % self.heads:
            raise ConfigError(f"model.width={self.width} must be divisible by model.heads={self.heads}")
        _one_of("model.video_encoder", self.video_encoder, ("vit", "swin"))
        _one_of("model.text_pool", self.text_pool, ("mean", "cls"))
        _one_of("model.video_pool", self.video_pool, ("mean", "attention"))
        if self.video_pool == "attention" and self.video_pool_segments > 1:
            raise ConfigError("model.video_pool=attention pools the whole clip: it needs model.video_pool_segments=1")
        _one_of("model.video_pos", self.video_pos, ("learned", "sincos"))
        if self.video_encoder == "swin":
            self._check_swin()
        if self.decoder_depth and self.decoder_width % self.decoder_heads:
            raise ConfigError("model.decoder_width must be divisible by model.decoder_heads")
        if self.video_depth == 0 and self.video_encoder == "vit" and self.fusion_depth == 0:
            raise ConfigError("model.video_depth=0 encodes video with the fusion stack, so fusion_depth must be > 0")
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        if self.max_frames % self.tubelet:
            raise ConfigError(f"model.max_frames={self.max_frames} must be a multiple of tubelet={self.tubelet}")

    def _check_swin(self) -> None:
        if self.decoder_depth:
            raise ConfigError("model.decoder_depth > 0 (MAE-style MVM) needs model.video_encoder=vit: Swin needs "
                              "the full token grid")
        if not len(self.swin_depths_list) == len(self.swin_heads_list) >= 1 or len(self.swin_window_list) != 3:
            raise ConfigError("model.swin_depths and model.swin_heads need one entry per stage (e.g. '2,2,6,2'); "
                              "model.swin_window three (time, height, width)")
        if self.image_size % self.video_region:
            raise ConfigError(f"model.image_size={self.image_size} must be a multiple of {self.video_region} "
                              "(patch_size x 2^(stages-1) for Video Swin)")

    @staticmethod
    def _ints(text: str, key: str) -> list[int]:
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"model.{key} must be comma-separated whole numbers, got {text!r}") from None

    @property
    def swin_depths_list(self) -> list[int]:
        return self._ints(self.swin_depths, "swin_depths")

    @property
    def swin_heads_list(self) -> list[int]:
        return self._ints(self.swin_heads, "swin_heads")

    @property
    def swin_window_list(self) -> list[int]:
        return self._ints(self.swin_window, "swin_window")

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
    data_dir: str = ""  # set by --data: a directory prepared with `python -m prepare DATA`
    num_frames: int = 8  # frames per clip fed to the model (sampled from the frames kept in the clip store)
    num_workers: int = 2  # DataLoader worker processes per rank
    train_augment: bool = True  # random resized crop
    crop_scale_min: float = 0.6  # smallest crop (fraction of the frame's area) of the random resized crop
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
        for key, low in (("num_frames", 1), ("num_workers", 0), ("shuffle_buffer", 1), ("max_bad_samples", 0)):
            _at_least(f"data.{key}", getattr(self, key), low)
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ConfigError(f"data.crop_scale_min must be in (0, 1], got {self.crop_scale_min}")


@dataclass
class TrainConfig:
    batch_size: int = 32  # per device
    eval_batch_size: int = 64  # per device, for evaluation
    grad_accum: int = 1  # batches per optimizer step
    lr: float = 5e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.05  # AdamW weight decay (not on biases, norms and embeddings)
    warmup_ratio: float = 0.05  # fraction of the optimizer steps spent warming the learning rate up
    # A transformers schedule name (transformers.SchedulerType), e.g. cosine, linear, constant_with_warmup
    lr_schedule: str = "constant_with_warmup"
    epochs: int = 10  # passes over the train split when max_steps is 0
    max_steps: int = 0  # > 0 overrides epochs
    grad_clip: float = 1.0  # max gradient norm; <= 0 = no clipping
    mixed_precision: str = "auto"  # auto = bf16 on GPUs that support it, fp32 on CPU
    seed: int = 0  # seeds Python, NumPy and torch; the same on every rank
    log_every: int = 10  # optimizer steps between log lines and TensorBoard points
    save_every: int = 100  # optimizer steps between resumable checkpoints
    keep_checkpoints: int = 2  # resumable checkpoints kept in output_dir; older ones are deleted
    eval_every: int = 0  # 0 = evaluate on the val split (when present) only at the end
    compile: bool = False
    # Experiment trackers (docs/monitoring.md): tensorboard | wandb (`pip install .[wandb]`) | all (both) | none.
    # train_log.jsonl is written either way.
    log_with: str = "tensorboard"
    # Optimizer steps between visuals of a few fixed clips (pretraining: masked input, reconstruction, MLM
    # predictions; fine-tuning: predictions); they are drawn once more at the end of every run. 0 = at the end only.
    visual_every: int = 100
    visual_samples: int = 2  # fixed clips (the first of the val split, else of train) the visuals show; 0 = none
    progress: bool = True  # tqdm progress bars on the main process (quiet anyway when stderr is not a terminal)

    def __post_init__(self) -> None:
        _one_of("train.mixed_precision", self.mixed_precision, ("auto", "no", "bf16", "fp16"))
        _one_of("train.log_with", self.log_with, ("tensorboard", "wandb", "all", "none"))
        # What transformers.get_scheduler accepts, read from transformers so the list cannot go stale.
        _one_of("train.lr_schedule", self.lr_schedule, tuple(kind.value for kind in SchedulerType))
        # Impossible values would otherwise train nothing (or diverge at once) and still export a model.
        for key in ("batch_size", "grad_accum", "epochs", "eval_batch_size"):
            _at_least(f"train.{key}", getattr(self, key), 1)
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.max_steps < 0:
            raise ConfigError(f"train.max_steps must be >= 1 (or 0: use train.epochs), got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _at_least("train.weight_decay", self.weight_decay, 0)
        _at_least("train.visual_every", self.visual_every, 0)
        _at_least("train.visual_samples", self.visual_samples, 0)


@dataclass
class ObjectiveConfig:
    """Loss weights and masking; a task uses the terms it needs and ignores the rest."""

    mlm_weight: float = 1.0  # masked language modelling (pretraining; retrieval's default: 0); 0 = no MLM pass
    mvm_weight: float = 1.0  # masked visual modelling; 0 = no masked video pass (the tiny preset's pretraining)
    vtm_weight: float = 1.0  # weight of video-text matching (retrieval: 0 = no VTM head, no re-ranking)
    vtc_weight: float = 1.0  # weight of video-text contrastive learning
    mlm_prob: float = 0.15  # fraction of text tokens masked for MLM
    # How many rows of each batch (per rank) the masked-language pass fuses and predicts (with MVM in pretraining,
    # the joint masked pass); 0 = all. That fused pass costs about as much as the video pass, so fewer rows buy more
    # steps in the same time (the first rows: batches are shuffled).
    mlm_rows: int = 0
    # Retrieval and qa-mc: > 0 adds each clip altered in time as a negative for its own caption, so the embeddings
    # must keep the order of events (and, reversed, the direction of motion); 0 = off
    temporal_weight: float = 0.0
    # swap = the two halves swapped | reverse = the clip played backwards (each a second video pass) | segments =
    # the segment means in the other order (needs model.video_pool_segments >= 2; no second pass)
    temporal_negative: str = "swap"
    # How many rows of each batch (per rank) the temporal term uses; 0 = all. The second video pass costs about as
    # much as the first, so fewer rows buy back most of the step time (the first rows: batches are shuffled).
    temporal_rows: int = 0
    # Retrieval and qa-mc: > 0 pairs each training clip with one more text about it from the data set's other
    # annotation kinds (a caption, a question with its answer; train splits only) in a second contrastive term:
    # more supervision per clip for a text pass (violet/tasks/companions.py); 0 = off
    companion_weight: float = 0.0
    # Fraction of video tokens hidden for MVM: replaced by a mask token (VIOLET), or with model.decoder_depth > 0
    # (SimVTP) the fraction of tubes the encoder never sees (0.9).
    mvm_ratio: float = 0.3
    vtm_hard_negatives: bool = True  # sample VTM negatives from VTC similarities, as ALBEF/VIOLET do
    mvm_target: str = "pixel"  # pixel (per-patch-normalised) | hog (MaskFeat-style) | vq (frozen image tokenizer)
    hog_bins: int = 9  # orientation bins per HOG cell
    hog_cell: int = 8  # HOG cell size in pixels; must divide the region one video token covers
    vq_tokenizer: str = ""  # mvm_target=vq: a tokenizer directory (config.json + model.safetensors, docs/models.md)
    # "global": negatives drawn from the whole global batch (world-size invariant: 2 ranks x B == 1 rank x 2B;
    # gathers token tensors across ranks). "local": from this rank's batch only (ALBEF; no token gather).
    vtm_negatives: str = "global"
    answer_top_k: int = 0  # 0 = the answer vocabulary prepared with the data
    # qa-oe: "classifier" = a linear head over the answer vocabulary on the fused question + video pass;
    # "text" = each "question answer" text of the vocabulary scored against the video by the dual encoder
    # (no fused pass; a step encodes questions x answers short texts); "auto" = text for small vocabularies.
    # The run records its choice. The field default stays "classifier": runs saved before the option had one.
    answer_scoring: str = "classifier"

    def __post_init__(self) -> None:
        # Checked here as well as where they are used, so a typo fails when the config is made, not mid-setup.
        _one_of("objective.mvm_target", self.mvm_target, ("pixel", "hog", "vq"))
        _one_of("objective.vtm_negatives", self.vtm_negatives, ("global", "local"))
        _one_of("objective.answer_scoring", self.answer_scoring, ("auto", "classifier", "text"))
        _one_of("objective.temporal_negative", self.temporal_negative, ("swap", "reverse", "segments"))
        for key in ("mlm_weight", "mvm_weight", "vtm_weight", "vtc_weight", "temporal_weight", "temporal_rows",
                    "companion_weight", "mlm_rows", "answer_top_k"):
            _at_least(f"objective.{key}", getattr(self, key), 0)
        for key in ("mlm_prob", "mvm_ratio"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"objective.{key} must be in [0, 1), got {getattr(self, key)}")


@dataclass
class EvalConfig:
    split: str = "test"  # the split evaluate.py scores (its --split)
    rerank_k: int = 16  # retrieval: re-rank the top-k per query with the VTM head; 0 = dual encoder only; -1 = all
    num_frames: int = 0  # 0 = same as data.num_frames

    def __post_init__(self) -> None:
        _at_least("eval.rerank_k", self.rerank_k, -1)
        _at_least("eval.num_frames", self.num_frames, 0)


@dataclass
class RunConfig:
    task: str = "pretrain"  # set by --task
    output_dir: str = ""  # set by --output-dir: checkpoints, logs and the saved config
    init: str = ""  # checkpoint directory to initialise weights from (fine-tuning)
    resume: bool = False  # set by --resume: continue from the latest checkpoint in output_dir
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be {'|'.join(allowed)}, got {value!r}")


def _at_least(key: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")
