"""Model presets: `tiny` for tests and CPU demos; the VIOLET and SimVTP families at the papers' sizes, each with a
tiny twin that runs the same code paths on a CPU (docs/models.md).

A preset is a ModelConfig plus the few run settings the paper ties to the architecture (frames per clip,
masking ratios); `preset_overrides` hands those to the config builder at the preset's precedence level, so
`--config` files and dotted overrides still win.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from violet.config import ModelConfig

PRETRAIN_HEADS = ("vtc", "vtm", "mlm", "mvm")


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    summary: str
    pretrain_frames: int = 0  # data.num_frames for --task pretrain (0 = leave the default)
    downstream_frames: int = 0  # data.num_frames for the other tasks
    objective: dict[str, Any] = field(default_factory=dict)  # e.g. SimVTP's 90 % tube / 75 % text masking
    # Settings per task, as config sections (task -> section -> values), for a run built from the preset: what one
    # task learns best with can cost another its step budget (see the tiny preset). With --init the checkpoint's
    # architecture wins, so the "model" section is left out then; the other sections still apply.
    task_settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)  # parameter counts of the published backbones


_BERT_BASE = {"width": 768, "heads": 12, "mlp_ratio": 4.0, "max_text_len": 40, "embed_dim": 256, "init_std": 0.02}
_VIOLET = {"video_encoder": "swin", "text_depth": 0, "fusion_depth": 12, "norm_first": False, "image_size": 224,
           "patch_size": 4, "tubelet": 2, "max_frames": 8, "swin_window": "8,7,7", "drop_path": 0.1, **_BERT_BASE}
_SIMVTP = {"video_depth": 0, "text_depth": 0, "fusion_depth": 12, "image_size": 224, "patch_size": 16, "tubelet": 2,
           "max_frames": 16, "video_pos": "sincos", "decoder_depth": 4, "decoder_width": 384, "decoder_heads": 6,
           **_BERT_BASE}
_SIMVTP_OBJECTIVE = {"mvm_ratio": 0.9, "mlm_prob": 0.75}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        ModelConfig(preset="tiny"), "separate ViT / text / fusion stacks, width 128, 64 px (tests, CPU)",
        # Retrieval, qa-oe and pretraining: 4 x 4 x 4 tubelets (512 tokens). With 8-pixel patches retrieval confused
        # the shapes of 13-pixel things (val t2v R@1 42.8 -> 52.2 on the tuning worlds); qa-oe affords them since it
        # scores answers by the dual encoder (no fused pass per question); pretraining affords them without its VTM
        # pairs (half of its step at 512 tokens) and without MVM (a second, masked pass through the video encoder),
        # in 32 epochs: zero-shot val R@1 36.7 (2 x 8 x 8, all four losses, 35 epochs) -> 41.1 (no VTM, 25 epochs)
        # -> 56.7 (VTC + MLM, 32 epochs); a retrieval run fine-tuned from it inherits the tubelets. Retrieval from
        # scratch is that same recipe (val R@1 52.2 with VTC alone, 40 epochs -> 56.7 with MLM; 30 epochs, 57.2 on
        # the pretraining curve at the same step, keep it under 10 minutes). qa-mc the same way: options scored by
        # the dual encoder (no fused VTM pass per option, which at 512 tokens cost ~2.5x the step), with MLM over
        # the correct answer text fused with the clip, 30 epochs: val accuracy 56.1 +- 12.6 (2 x 8 x 8 + VTM, 20
        # epochs; worst world 41.7) -> 57.8 +- 1.9 (worst 56.7); without MLM those tubelets gave 50.0
        # (docs/benchmarks.md, "Ablations"). Retrieval runs its MLM pass over half of each batch (16 rows of 32):
        # the time it saves buys 40 epochs instead of 30 for about a sixth more time, and retrieval is short of
        # training (it ranks its own training captions no better than val's): val R@1 57.2 +- 3.5 (58.3, 60.0,
        # 53.3) -> 59.4 +- 6.9 (61.7, 65.0, 51.7) in 485-496 s.
        task_settings={
            "retrieval": {"model": {"patch_size": 4, "tubelet": 4}, "objective": {"mlm_weight": 1.0, "mlm_rows": 16},
                          "train": {"epochs": 40}},
            "qa-oe": {"model": {"patch_size": 4, "tubelet": 4}},
            # qa-mc also contrasts each correct answer text with its clip played backwards (the direction of motion;
            # objective.temporal_negative=reverse) on 4 rows of each batch of 16, in 24 epochs: val 57.8 +- 1.9 ->
            # 63.9 +- 7.5, no world lower, at the default's step budget (a reversed pass over the whole batch cost
            # 1.7x a step and did not fit 10 minutes; benchmarks/step_cost.py). Held-out test: 56.1 -> 55.0, a tie
            # (docs/benchmarks.md).
            "qa-mc": {"model": {"patch_size": 4, "tubelet": 4},
                      "objective": {"vtm_weight": 0.0, "mlm_weight": 1.0, "temporal_weight": 1.0,
                                    "temporal_negative": "reverse", "temporal_rows": 4},
                      "train": {"epochs": 24}},
            "pretrain": {"model": {"patch_size": 4, "tubelet": 4},
                         "objective": {"vtm_weight": 0.0, "mvm_weight": 0.0}, "train": {"epochs": 32}},
        },
    ),
    "small": Preset(
        ModelConfig(preset="small", width=384, heads=6, video_depth=6, text_depth=4, fusion_depth=4, image_size=224,
                    patch_size=16, tubelet=2, max_frames=16, max_text_len=40, embed_dim=256),
        "separate stacks, width 384, 224 px, 16x16 patches x 2-frame tubelets",
    ),
    "base": Preset(
        ModelConfig(preset="base", width=768, heads=12, video_depth=12, text_depth=6, fusion_depth=12, image_size=224,
                    patch_size=16, tubelet=2, max_frames=16, max_text_len=40, embed_dim=256, init_std=0.02),
        "separate stacks, width 768, 224 px, 16x16 patches x 2-frame tubelets",
    ),
    "violet-base": Preset(
        ModelConfig(preset="violet-base", swin_embed_dim=128, swin_depths="2,2,18,2", swin_heads="4,8,16,32",
                    **_VIOLET),
        "VIOLET: Video Swin-B (2x4x4 patches, 8x7x7 windows) + BERT-base embeddings and 12 post-norm fusion layers",
        pretrain_frames=4, downstream_frames=5, published={"video_encoder": 88e6, "text_fusion": 110e6},
    ),
    "violet-small": Preset(
        ModelConfig(preset="violet-small", swin_embed_dim=96, swin_depths="2,2,18,2", swin_heads="3,6,12,24",
                    **_VIOLET),
        "VIOLET with Video Swin-S",
        pretrain_frames=4, downstream_frames=5, published={"video_encoder": 50e6, "text_fusion": 110e6},
    ),
    "violet-tiny": Preset(
        ModelConfig(preset="violet-tiny", **{**_VIOLET, "width": 64, "heads": 4, "fusion_depth": 2, "image_size": 64,
                                             "swin_embed_dim": 32, "swin_depths": "2,2", "swin_heads": "2,4",
                                             "swin_window": "2,4,4", "drop_path": 0.0, "max_text_len": 32, "init_std": 0.0,
                                             "embed_dim": 64}),
        "VIOLET's code paths at CPU size: 2-stage Video Swin (width 32/64), 2 post-norm fusion layers, 64 px",
        pretrain_frames=4, downstream_frames=4,
    ),
    "simvtp-base": Preset(
        ModelConfig(preset="simvtp-base", **_SIMVTP),
        "SimVTP: one ViT-B/16 (2x16x16 tubelets, VideoMAE sin-cos positions) for video, text and joint passes; "
        "MAE decoder depth 4 width 384",
        pretrain_frames=16, downstream_frames=16, objective=_SIMVTP_OBJECTIVE, published={"video_encoder": 86e6},
    ),
    "simvtp-tiny": Preset(
        ModelConfig(preset="simvtp-tiny", **{**_SIMVTP, "width": 64, "heads": 4, "fusion_depth": 2, "image_size": 64,
                                             "patch_size": 8, "max_frames": 8, "decoder_depth": 1,
                                             "decoder_width": 32, "decoder_heads": 2, "max_text_len": 32, "init_std": 0.0,
                                             "embed_dim": 64}),
        "SimVTP's code paths at CPU size: shared width-64 ViT, 8x8 patches x 2 frames, 1-layer decoder, 64 px",
        pretrain_frames=4, downstream_frames=4, objective=_SIMVTP_OBJECTIVE,
    ),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; available: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name].model)


def preset_overrides(name: str, task: str, architecture: bool = True) -> dict[str, dict[str, Any]]:
    """Run settings that come with a preset, as config sections (applied at the preset's precedence).

    `architecture=False` leaves out the per-task model settings: a run fine-tuned from a checkpoint (--init) keeps
    the checkpoint's architecture."""
    entry = PRESETS.get(name)
    if entry is None:
        raise KeyError(f"unknown model preset {name!r}; available: {', '.join(PRESETS)}")
    overrides: dict[str, dict[str, Any]] = {}
    frames = entry.pretrain_frames if task == "pretrain" else entry.downstream_frames
    if frames:
        overrides["data"] = {"num_frames": frames}
    if entry.objective:
        overrides["objective"] = dict(entry.objective)
    for section, values in entry.task_settings.get(task, {}).items():
        if section != "model" or architecture:
            overrides[section] = {**overrides.get(section, {}), **values}
    return overrides


def parameter_report(name: str, vocab_size: int = 30522) -> dict[str, int]:
    """Parameter counts of a preset built with the pretraining heads on the meta device (instant, no memory).

    `video_encoder` counts what encodes video: for SimVTP the shared ViT (its stack is the fusion stack), so the
    shared stack is not counted again in `text_fusion`.
    """
    from violet.models.video_language import VideoLanguageModel, count_parameters

    with torch.device("meta"):
        model = VideoLanguageModel(dataclasses.replace(preset(name), video_init="", text_init=""), vocab_size,
                                   PRETRAIN_HEADS)
    video = count_parameters(model.video)
    fusion = count_parameters(model.fusion)
    text = count_parameters(model.text) + count_parameters(model.modality)
    shared = not model.video_has_encoder
    report = {
        "video_encoder": video + (fusion if shared else 0),
        "text_fusion": text + (0 if shared else fusion),
        # The MLM decoder weight is the word-embedding table (tied): counted once, with the text side.
        "heads": count_parameters(model) - count_parameters(model.video) - fusion - text,
        "total": count_parameters(model),
        "shared_encoder": int(shared),
    }
    if hasattr(model.video, "backbone"):
        report["video_backbone"] = count_parameters(model.video.backbone)
    return report
