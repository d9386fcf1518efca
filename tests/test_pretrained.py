"""Pretrained initialisation from local files: every format is built here with random weights, saved, loaded
into our model and checked to compute what the source model computes (nothing is downloaded)."""
from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import timm
import torch
from torch import nn
from torchvision.models.video.swin_transformer import SwinTransformer3d
from transformers import BertConfig, BertModel, VideoMAEConfig, VideoMAEModel

from violet.models import VideoLanguageModel, preset
from violet.models.pretrained import (
    apply_pretrained_init,
    detect_video_format,
    read_state_dict,
)
from violet.models.video_vit import IMAGENET_MEAN, IMAGENET_STD


def normalised(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, 3, H, W) -> what image/video models expect, as our model normalises internally."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    return (frames.float() / 255 - mean) / std


def static_video(size: int, frames: int = 4) -> torch.Tensor:
    image = torch.randint(0, 256, (2, 1, 3, size, size), dtype=torch.uint8)
    return image.expand(2, frames, 3, size, size).contiguous()


def build(config, heads=("vtc",), vocab=3000):
    torch.manual_seed(1)  # a different random init than the source models
    model = VideoLanguageModel(config, vocab, heads).eval()
    reports = apply_pretrained_init(model)
    return model, reports


def test_timm_vit_inflated_static_video_gives_image_features(tmp_path):
    image_model = timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
        class_token=False, global_pool="avg", fc_norm=False, num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
    ).eval()
    torch.save(image_model.state_dict(), tmp_path / "vit.pth")
    config = dataclasses.replace(preset("tiny"), image_size=32, patch_size=8, width=64, heads=4, video_depth=2,
                                 tubelet=2, video_init=str(tmp_path / "vit.pth"))
    model, reports = build(config)
    assert reports["video"]["format"] == "timm_vit" and reports["video"]["unexpected"] == []
    frames = static_video(32)
    with torch.no_grad():
        ours = model.video(frames)  # (B, 2 steps x 16 patches, D)
        expected = image_model.forward_features(normalised(frames)[:, 0])
    assert torch.allclose(ours[:, :16], expected, atol=1e-4) and torch.allclose(ours[:, 16:], expected, atol=1e-4)


def test_timm_vit_report_names_unused_and_missing_keys(tmp_path):
    image_model = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                    embed_dim=64, depth=1, num_heads=4, num_classes=7)
    torch.save({"model": image_model.state_dict()}, tmp_path / "vit.pth")
    config = dataclasses.replace(preset("tiny"), image_size=32, patch_size=8, width=64, heads=4, video_depth=2,
                                 tubelet=2, video_init=str(tmp_path / "vit.pth"))
    _, reports = build(config)
    assert {"cls_token", "head.weight", "head.bias"} <= set(reports["video"]["unexpected"])
    assert "video.encoder.blocks.1.attn.qkv.weight" in reports["video"]["missing"]  # checkpoint has 1 block
    assert "video.spatial_pos" in reports["video"]["loaded"]


def test_timm_swin_inflated_static_video_gives_image_features(tmp_path):
    image_model = timm.models.swin_transformer.SwinTransformer(
        img_size=64, patch_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=0,
    ).eval()
    torch.save(image_model.state_dict(), tmp_path / "swin.pth")
    model, reports = build(dataclasses.replace(preset("violet-tiny"), video_init=str(tmp_path / "swin.pth")))
    assert reports["video"]["format"] == "timm_swin" and reports["video"]["missing"] == []
    frames = static_video(64)
    with torch.no_grad():
        ours = model.video.backbone_features(frames)  # (B, T'=2, 8, 8, 64)
        expected = image_model.forward_features(normalised(frames)[:, 0])  # (B, 8, 8, 64)
    assert torch.allclose(ours[:, 0], expected, atol=1e-4) and torch.allclose(ours[:, 1], expected, atol=1e-4)


def test_torchvision_swin3d_state_dict_loads_exactly(tmp_path):
    reference = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                                  window_size=[2, 4, 4], stochastic_depth_prob=0.0, num_classes=5).eval()
    torch.save(reference.state_dict(), tmp_path / "swin3d.pth")
    model, reports = build(dataclasses.replace(preset("violet-tiny"), video_init=str(tmp_path / "swin3d.pth")))
    assert reports["video"]["format"] == "torchvision_swin3d"
    assert reports["video"]["unexpected"] == ["head.bias", "head.weight"] and reports["video"]["missing"] == []
    frames = torch.randint(0, 256, (2, 4, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        ours = model.video.backbone_features(frames)
        video = normalised(frames).permute(0, 2, 1, 3, 4)
        expected = reference.norm(reference.features(reference.patch_embed(video)))
    assert torch.allclose(ours, expected, atol=1e-4)


def _videomae(tmp_path):
    config = VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=64,
                            num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, qv_bias=True,
                            use_mean_pooling=False, layer_norm_eps=1e-5)
    torch.manual_seed(0)
    reference = VideoMAEModel(config).eval()
    for name, parameter in reference.named_parameters():  # qv biases start at zero: make them count
        if name.endswith("bias"):
            nn.init.normal_(parameter, std=0.1)
    reference.save_pretrained(tmp_path / "hf_videomae")
    ours = dataclasses.replace(preset("simvtp-tiny"), image_size=32)  # shared ViT: the fusion stack encodes video
    return reference, ours


def _compare_videomae(model, reference):
    frames = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        ours = model.fusion(model.video(frames))
        expected = reference(pixel_values=normalised(frames)).last_hidden_state
    assert torch.allclose(ours, expected, atol=1e-4)


def test_hf_videomae_checkpoint_loads_exactly(tmp_path):
    reference, config = _videomae(tmp_path)
    model, reports = build(dataclasses.replace(config, video_init=str(tmp_path / "hf_videomae")))
    assert reports["video"]["format"] == "videomae" and reports["video"]["missing"] == []
    _compare_videomae(model, reference)


def test_original_videomae_keys_load_exactly(tmp_path):
    """The MCG-NJU VideoMAE layout (timm names, q_bias/v_bias, `encoder.` prefix, wrapped in {"model": ...})."""
    reference, config = _videomae(tmp_path)
    state = reference.state_dict()
    original = {"encoder.patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
                "encoder.patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
                "encoder.norm.weight": state["layernorm.weight"], "encoder.norm.bias": state["layernorm.bias"],
                "decoder.head.weight": torch.zeros(3, 3), "mask_token": torch.zeros(1, 1, 8)}
    for i in range(2):
        hf, new = f"encoder.layer.{i}.", f"encoder.blocks.{i}."
        original[new + "attn.qkv.weight"] = torch.cat(
            [state[f"{hf}attention.attention.{p}.weight"] for p in ("query", "key", "value")])
        original[new + "attn.q_bias"] = state[f"{hf}attention.attention.query.bias"]
        original[new + "attn.v_bias"] = state[f"{hf}attention.attention.value.bias"]
        pairs = {"attn.proj": "attention.output.dense", "norm1": "layernorm_before", "norm2": "layernorm_after",
                 "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
        for ours_name, hf_name in pairs.items():
            for leaf in ("weight", "bias"):
                original[f"{new}{ours_name}.{leaf}"] = state[f"{hf}{hf_name}.{leaf}"]
    torch.save({"model": original}, tmp_path / "videomae.pth")
    assert detect_video_format(read_state_dict(tmp_path / "videomae.pth")) == "videomae"
    model, reports = build(dataclasses.replace(config, video_init=str(tmp_path / "videomae.pth")))
    assert {"decoder.head.weight", "mask_token"} <= set(reports["video"]["unexpected"])
    _compare_videomae(model, reference)


def test_bert_weights_make_the_fusion_stack_compute_bert(tmp_path):
    bert = BertModel(BertConfig(vocab_size=3000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=256, max_position_embeddings=64)).eval()
    bert.save_pretrained(tmp_path / "bert")
    model, reports = build(dataclasses.replace(preset("violet-tiny"), text_init=str(tmp_path / "bert")))
    assert reports["text"]["missing"] == [] and reports["text"]["unexpected"] == ["pooler.dense.bias",
                                                                                  "pooler.dense.weight"]
    ids = torch.randint(1000, 2000, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        ours = model.fusion(model.text(ids, mask), key_padding_mask=mask)
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = mask.bool()
    assert torch.allclose(ours[valid], expected[valid], atol=1e-4)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="do not exist"):
        build(dataclasses.replace(preset("violet-tiny"), video_init=str(tmp_path / "nope.pth")))
    torch.save({"something.else": torch.zeros(2)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="unrecognised video checkpoint"):
        build(dataclasses.replace(preset("violet-tiny"), video_init=str(tmp_path / "odd.pth")))
    wide = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=48, depths=[2, 2], num_heads=[2, 4],
                             window_size=[2, 4, 4], num_classes=5)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(ValueError, match="shapes differ.*patch_embed"):
        build(dataclasses.replace(preset("violet-tiny"), video_init=str(tmp_path / "wide.pth")))
    bert = BertModel(BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                intermediate_size=256))
    bert.save_pretrained(tmp_path / "small_vocab")
    with pytest.raises(ValueError, match="vocabulary has 500"):
        build(dataclasses.replace(preset("violet-tiny"), text_init=str(tmp_path / "small_vocab")))
