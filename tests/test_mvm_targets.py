"""Pluggable MVM targets (pixels, HOG, VQ tokens from a tokenizer file the test writes) and tube masking."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from violet.config import ObjectiveConfig
from violet.models import VideoLanguageModel, preset
from violet.objectives import MVMTarget, hog_targets, tube_mask


def test_tube_mask_hides_the_same_patches_at_every_step():
    mask = tube_mask(3, 4, 49, 0.9, torch.device("cpu"), torch.Generator().manual_seed(0)).view(3, 4, 49)
    assert (mask == mask[:, :1]).all()
    assert mask[:, 0].sum(dim=1).tolist() == [44] * 3  # round(0.9 * 49)
    assert not torch.equal(mask[0, 0], mask[1, 0])
    assert tube_mask(1, 1, 4, 1.0, torch.device("cpu"))[0].sum() == 3  # always one visible patch


def test_hog_responds_to_edge_orientation():
    frames = torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8)
    frames[..., :, 8:] = 255  # a vertical edge: horizontal gradient, orientation bin 0
    features = hog_targets(frames, region=16, tubelet=2, cell=8, bins=9)
    assert features.shape == (1, 1, 2 * 4 * 3 * 9)
    bins = features.view(2, 2, 2, 3, 9).sum(dim=(0, 1, 2, 3))  # (time, cell rows, cell cols, channel, bin)
    assert bins.argmax() == 0 and bins[1:].sum() < 1e-6
    assert torch.allclose(features.norm(dim=-1), torch.ones(1, 1))
    horizontal = frames.transpose(-1, -2).contiguous()
    rotated = hog_targets(horizontal, 16, 2, 8, 9).view(2, 2, 2, 3, 9).sum(dim=(0, 1, 2, 3))
    assert rotated.argmax() == 4  # vertical gradient: 90 degrees, the middle of 9 bins over 180


class PatchTokenizer(nn.Module):
    """A stand-in image tokenizer: 4x4 patches -> logits over 16 codes, picked by mean brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        self.register_buffer("centres", torch.linspace(0, 1, 16).view(1, 16, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        brightness = self.pool(images.mean(dim=1, keepdim=True))
        return -(brightness - self.centres).abs() * 100


@pytest.fixture()
def tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.pt"
    torch.jit.save(torch.jit.script(PatchTokenizer()), str(path))
    return path


def test_vq_targets_from_a_tokenizer_file(tokenizer_file):
    config = preset("simvtp-tiny")  # 8 px tokens x 2-frame tubelets
    objective = ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tokenizer_file))
    target = MVMTarget(objective, config)
    assert (target.vocab, target.factor, target.output_dim) == (16, 4, 2 * 16)
    frames = torch.zeros(2, 4, 3, 64, 64, dtype=torch.uint8)
    frames[:, 2:] = 255  # second tubelet bright
    ids = target.targets(frames)
    assert ids.shape == (2, 2 * 64, 2)
    assert (ids[:, :64] == 0).all() and (ids[:, 64:] == 15).all()
    model = VideoLanguageModel(config, 3000, ["mvm"], mvm_output_dim=target.output_dim)
    # the tokenizer is frozen and is not part of the trainable module
    assert not any(p.requires_grad for p in target.tokenizer.parameters())
    assert not any(name.startswith("tokenizer") for name, _ in model.named_parameters())
    positions = torch.zeros(2, 128, dtype=torch.bool)
    positions[:, 64:70] = True
    perfect = torch.full((12, 2, 16), -20.0)
    perfect[..., 15] = 20.0
    terms = target.loss(perfect.view(12, 32), frames, positions)
    assert terms["mvm"] < 1e-6 and terms["mvm_acc"] == 1.0
    assert target.loss(torch.zeros(12, 32), frames, positions)["mvm"] == pytest.approx(torch.log(torch.tensor(16.)))


def test_target_dims_match_the_heads():
    for name, kind, dim in (("violet-tiny", "hog", 2 * 1 * 3 * 9), ("violet-tiny", "pixel", 3 * 2 * 64),
                            ("simvtp-tiny", "hog", 2 * 1 * 3 * 9)):
        config = preset(name)
        target = MVMTarget(ObjectiveConfig(mvm_target=kind), config)
        assert target.output_dim == dim
        frames = torch.randint(0, 256, (1, 4, 3, 64, 64), dtype=torch.uint8)
        assert target.targets(frames).shape == (1, 2 * 64, dim)


def test_bad_target_settings_are_clear_errors(tmp_path):
    config = preset("violet-tiny")
    with pytest.raises(ValueError, match="pixel\\|hog\\|vq"):
        MVMTarget(ObjectiveConfig(mvm_target="depth"), config)
    with pytest.raises(ValueError, match="vq_tokenizer"):
        MVMTarget(ObjectiveConfig(mvm_target="vq"), config)
    with pytest.raises(FileNotFoundError, match="no such file"):
        MVMTarget(ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tmp_path / "x.pt")), config)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt: not a TorchScript"):
        MVMTarget(ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tmp_path / "junk.pt")), config)
    with pytest.raises(ValueError, match="hog_cell=3"):
        MVMTarget(ObjectiveConfig(mvm_target="hog", hog_cell=3), dataclasses.replace(config))
