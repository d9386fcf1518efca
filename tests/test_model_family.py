"""The VIOLET / SimVTP model family: published sizes, the presets CLI, Video Swin attention, SimVTP's visible-only
encoder, and the model interface every preset keeps (modes, heads, grad checkpointing, weight-decay lists)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from violet.models import (
    PRESETS,
    VideoLanguageModel,
    parameter_report,
    preset,
    preset_overrides,
)
from violet.models.__main__ import main as models_main
from violet.models.video_swin import SDPAWindowAttention3d
from violet.objectives import tube_mask

PUBLISHED = {  # (preset, group, published count): Video Swin-B/S, ViT-B/16, BERT-base
    ("violet-base", "video_encoder", 88e6), ("violet-small", "video_encoder", 50e6),
    ("violet-base", "text_fusion", 110e6), ("violet-small", "text_fusion", 110e6),
    ("simvtp-base", "video_encoder", 86e6),
}


@pytest.mark.parametrize(("name", "group", "published"), sorted(PUBLISHED))
def test_base_presets_match_published_backbones(name, group, published):
    count = parameter_report(name)[group]
    assert abs(count - published) / published < 0.02, f"{name} {group}: {count / 1e6:.1f}M vs {published / 1e6:.0f}M"


def test_presets_cli_prints_every_preset(capsys):
    models_main(["--json"])
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == set(PRESETS) and {"tiny", "violet-tiny", "simvtp-tiny"} <= set(rows)
    for row in rows.values():
        assert row["total"] == row["video_encoder"] + row["text_fusion"] + row["heads"]
    assert rows["simvtp-base"]["shared_encoder"] == 1 and rows["violet-base"]["shared_encoder"] == 0
    assert 87e6 < rows["violet-base"]["video_backbone"] < 88.5e6  # torchvision swin3d_b minus its classifier


def test_preset_overrides_carry_paper_settings():
    assert preset_overrides("simvtp-base", "pretrain")["objective"] == {"mvm_ratio": 0.9, "mlm_prob": 0.75}
    assert preset_overrides("violet-base", "pretrain")["data"]["num_frames"] == 4
    assert preset_overrides("violet-base", "retrieval")["data"]["num_frames"] == 5
    assert preset_overrides("tiny", "qa-oe") == {"model": {"patch_size": 4, "tubelet": 4}}  # no frames or objective
    # for every task ...
    assert preset_overrides("tiny", "pretrain") == {  # ... only its per-task settings (docs/models.md)
        "model": {"patch_size": 4, "tubelet": 4}, "objective": {"vtm_weight": 0.0, "mvm_weight": 0.0},
        "train": {"epochs": 32}}
    assert preset_overrides("tiny", "pretrain", architecture=False) == {
        "objective": {"vtm_weight": 0.0, "mvm_weight": 0.0}, "train": {"epochs": 32}}
    assert preset("tiny") == dataclasses.replace(PRESETS["tiny"].model)  # tiny is unchanged
    with pytest.raises(KeyError, match="available"):
        preset_overrides("violet-huge", "pretrain")


@pytest.mark.parametrize("shift", [[0, 0, 0], [1, 2, 2]])
def test_sdpa_window_attention_equals_torchvision(shift):
    torch.manual_seed(0)
    reference = ShiftedWindowAttention3d(32, [2, 4, 4], shift, num_heads=4)
    ours = SDPAWindowAttention3d(32, [2, 4, 4], shift, num_heads=4)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 6, 10, 32)  # not a multiple of the window: exercises padding
    assert torch.allclose(ours(x), reference(x), atol=1e-5)


def _inputs(config, batch=2, frames=4):
    video = torch.randint(0, 256, (batch, frames, 3, config.image_size, config.image_size), dtype=torch.uint8)
    ids = torch.randint(1000, 2000, (batch, 6))
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return video, ids, mask


@pytest.mark.parametrize("name", ["violet-tiny", "simvtp-tiny"])
def test_tiny_twins_run_every_mode_and_train_every_parameter(name):
    config = preset(name)
    torch.manual_seed(0)
    model = VideoLanguageModel(config, 3000, ["vtc", "vtm", "mlm", "mvm"])
    frames, ids, mask = _inputs(config)
    video = model("video", frames=frames)
    steps, per_step = 2, (config.image_size // config.video_region) ** 2
    assert video["tokens"].shape == (2, steps * per_step, config.width)
    hidden = tube_mask(2, steps, per_step, 0.75, torch.device("cpu"), torch.Generator().manual_seed(0))
    masked = model("video", frames=frames, mvm_mask=hidden)
    text = model("text", ids=ids, mask=mask)
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[:, 1] = True
    fused = model("fusion", text_tokens=text["tokens"], text_mask=mask, video_tokens=masked["tokens"],
                  mlm_positions=positions, mvm_positions=hidden)
    assert fused["mvm_pred"].shape == (int(hidden.sum()), 3 * config.tubelet * config.video_region ** 2)
    loss = video["embed"].sum() + text["embed"].sum() + video["logit_scale"].sum()
    loss = loss + sum(value.float().sum() for value in fused.values())
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []


def test_simvtp_encoder_runs_on_visible_tubes_only():
    config = preset("simvtp-tiny")
    model = VideoLanguageModel(config, 3000, ["vtc", "vtm", "mlm", "mvm"])
    lengths = []
    model.fusion.blocks[0].register_forward_hook(lambda module, args, output: lengths.append(args[0].shape[1]))
    frames, _, _ = _inputs(config)
    steps, per_step = 2, (config.image_size // config.patch_size) ** 2
    hidden = tube_mask(2, steps, per_step, 0.9, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert torch.equal(hidden.view(2, steps, per_step)[:, 0], hidden.view(2, steps, per_step)[:, 1])  # tubes
    model("video", frames=frames, mvm_mask=hidden)
    assert lengths == [steps * (per_step - round(0.9 * per_step))]
    assert 0.08 < lengths[0] / (steps * per_step) < 0.11
    model("video", frames=frames)  # evaluation: every tube
    assert lengths[-1] == steps * per_step


@pytest.mark.parametrize("name", ["violet-tiny", "simvtp-tiny"])
def test_grad_checkpointing_gives_same_gradients(name):
    config = preset(name)
    torch.manual_seed(0)
    plain = VideoLanguageModel(config, 3000, ["vtc", "mvm"])
    checkpointed = VideoLanguageModel(dataclasses.replace(config, grad_checkpointing=True), 3000, ["vtc", "mvm"])
    checkpointed.load_state_dict(plain.state_dict())
    frames, _, _ = _inputs(config)
    for model in (plain, checkpointed):
        model.train()
        model("video", frames=frames)["embed"].sum().backward()
    for (name_a, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name_a


def test_weight_decay_lists_cover_new_modules():
    swin = VideoLanguageModel(preset("violet-tiny"), 3000, ["vtc", "mlm", "mvm"]).no_weight_decay()
    assert "video.backbone.features.0.0.attn.relative_position_bias_table" in swin
    assert {"video.mask_token", "video.spatial_pos", "heads.vtc.logit_scale"} <= swin
    assert "video.backbone.features.0.0.attn.qkv.weight" not in swin
    mae = VideoLanguageModel(preset("simvtp-tiny"), 3000, ["mvm"]).no_weight_decay()
    assert "heads.mvm.mask_token" in mae and "fusion.blocks.0.mlp.0.weight" not in mae


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="decoder_depth"):
        dataclasses.replace(preset("violet-tiny"), decoder_depth=2)
    with pytest.raises(ValueError, match="image_size"):
        dataclasses.replace(preset("violet-tiny"), image_size=60)
    model = VideoLanguageModel(preset("simvtp-tiny"), 3000, ["vtc"])
    with pytest.raises(ValueError, match="same number"):
        uneven = torch.zeros(2, 128, dtype=torch.bool)
        uneven[0, :3] = True
        model("video", frames=_inputs(preset("simvtp-tiny"))[0], mvm_mask=uneven)
