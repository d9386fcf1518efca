"""Pluggable MVM targets (pixels, HOG, VQ tokens from a tokenizer directory the test writes) and tube masking;
VQ tokenizers are read from JSON + safetensors only, so no file of one can run code."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from violet.config import ObjectiveConfig
from violet.models import VideoLanguageModel, preset
from violet.objectives import MVMTarget, hog_targets, load_image_tokenizer, tube_mask


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


def write_tokenizer(directory: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(directory / "model.safetensors"))
    return directory


BRIGHTNESS = {"stem": {"channels": 1, "kernel": 1}, "groups": [{"channels": 1, "blocks": 0, "pool": 4}],
              "head": {"kind": "linear", "vocab": 16}}


@pytest.fixture()
def tokenizer_dir(tmp_path):
    """A stand-in image tokenizer: 4x4 patches -> 16 codes, the one whose centre is nearest the mean brightness
    (logit_k = 2 c_k b - c_k^2 ranks codes as -(b - c_k)^2 does)."""
    centres = torch.linspace(0, 1, 16)
    return write_tokenizer(tmp_path / "tokenizer", BRIGHTNESS, {
        "stem.weight": torch.full((1, 3, 1, 1), 1 / 3), "stem.bias": torch.zeros(1),
        "head.weight": (2 * centres).view(16, 1, 1, 1), "head.bias": -centres ** 2})


def test_vq_targets_from_a_tokenizer_directory(tokenizer_dir):
    config = preset("simvtp-tiny")  # 8 px tokens x 2-frame tubelets
    objective = ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tokenizer_dir))
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
    with pytest.raises(FileNotFoundError, match="no such directory"):
        MVMTarget(ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tmp_path / "x")), config)
    (tmp_path / "old.pt").write_bytes(b"a TorchScript file")
    with pytest.raises(ValueError, match="is a file.*TorchScript .* not loaded"):
        MVMTarget(ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tmp_path / "old.pt")), config)
    with pytest.raises(ValueError, match="hog_cell=3"):
        MVMTarget(ObjectiveConfig(mvm_target="hog", hog_cell=3), dataclasses.replace(config))


def dalle_name(name: str) -> str:
    """DALL-E encoder state-dict name -> ours: the renaming docs/models.md gives for converting encoder.pkl."""
    name = name.replace("blocks.input.", "stem.").replace("blocks.output.conv.", "head.")
    name = re.sub(r"blocks\.group_(\d+)\.block_(\d+)\.", lambda m: f"groups.{int(m[1]) - 1}.{int(m[2]) - 1}.", name)
    name = re.sub(r"res_path\.conv_(\d+)\.", lambda m: f"convs.{int(m[1]) - 1}.", name.replace("id_path.", "skip."))
    return re.sub(r"\.w$", ".weight", re.sub(r"\.b$", ".bias", name))


def dalle_encoder(state: dict[str, torch.Tensor], images: torch.Tensor, groups: int, blocks: int) -> torch.Tensor:
    """DALL-E's dVAE encoder forward, written from its definition: map_pixels, a 7x7 input conv, groups of
    blocks (id_path + 1 / n_layers^2 * res_path) with 2x max-pooling between groups, ReLU and a 1x1 output conv."""
    def conv(x, prefix):
        weight = state[f"{prefix}.w"]
        return F.conv2d(x, weight, state[f"{prefix}.b"], padding=(weight.shape[-1] - 1) // 2)

    x = conv(0.8 * images + 0.1, "blocks.input")
    for g in range(1, groups + 1):
        for b in range(1, blocks + 1):
            prefix = f"blocks.group_{g}.block_{b}"
            residual = x
            for k in range(1, 5):
                residual = conv(F.relu(residual), f"{prefix}.res_path.conv_{k}")
            skip = conv(x, f"{prefix}.id_path") if f"{prefix}.id_path.w" in state else x
            x = skip + residual / (groups * blocks) ** 2
        if g < groups:
            x = F.max_pool2d(x, 2)
    return conv(F.relu(x), "blocks.output.conv")


def test_a_dalle_shaped_encoder_converted_by_renaming_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    width, vocab, shapes = 8, 32, {"blocks.input": (8, 3, 7), "blocks.output.conv": (32, 16, 1)}
    for g, (inputs, outputs) in enumerate(((8, 8), (8, 16)), start=1):
        for b in (1, 2):
            prefix, n_in = f"blocks.group_{g}.block_{b}", inputs if b == 1 else outputs
            hidden = outputs // 4
            convs = ((hidden, n_in, 3), (hidden, hidden, 3), (hidden, hidden, 3), (outputs, hidden, 1))
            shapes.update({f"{prefix}.res_path.conv_{k + 1}": shape for k, shape in enumerate(convs)})
            if n_in != outputs:
                shapes[f"{prefix}.id_path"] = (outputs, n_in, 1)
    state = {}
    for prefix, (outputs, inputs, kernel) in shapes.items():
        state[f"{prefix}.w"] = torch.randn(outputs, inputs, kernel, kernel) / (inputs * kernel * kernel) ** 0.5
        state[f"{prefix}.b"] = torch.randn(outputs) * 0.1
    config = {"input_scale": 0.8, "input_shift": 0.1, "residual_gain": 1 / 16, "stem": {"channels": width, "kernel": 7},
              "groups": [{"channels": 8, "blocks": 2, "pool": 2}, {"channels": 16, "blocks": 2}],
              "head": {"kind": "linear", "vocab": vocab}}
    directory = write_tokenizer(tmp_path / "dalle", config, {dalle_name(k): v.half() for k, v in state.items()})
    tokenizer = load_image_tokenizer(str(directory))
    images = torch.rand(2, 3, 16, 16)
    reference = dalle_encoder({k: v.half().float() for k, v in state.items()}, images, groups=2, blocks=2)
    with torch.no_grad():
        assert torch.allclose(tokenizer(images), reference, atol=1e-5)
    assert tokenizer(images).shape == (2, vocab, 8, 8) and tokenizer.spec.factor == 2


def test_a_codebook_head_picks_the_nearest_code(tmp_path):
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    directory = write_tokenizer(tmp_path / "vq", {"stem": {"channels": 3, "kernel": 1},
                                                  "head": {"kind": "codebook", "vocab": 3, "dim": 2}}, {
        "stem.weight": torch.eye(3).view(3, 3, 1, 1), "stem.bias": torch.zeros(3),
        "project.weight": torch.eye(3)[:2].view(2, 3, 1, 1), "project.bias": torch.zeros(2), "codebook": codes})
    images = torch.zeros(1, 3, 1, 3)
    images[0, :, 0, 1] = torch.tensor([0.9, 0.2, 0.0])  # red: nearest code 1
    images[0, :, 0, 2] = torch.tensor([0.1, 0.8, 0.0])  # green: nearest code 2
    with torch.no_grad():
        assert load_image_tokenizer(str(directory))(images).argmax(1).tolist() == [[[0, 1, 2]]]


def test_tokenizer_directories_that_do_not_match_are_clear_errors(tokenizer_dir):
    config = json.loads((tokenizer_dir / "config.json").read_text())
    (tokenizer_dir / "config.json").write_text(json.dumps({**config, "head": {"kind": "linear", "vocab": 17}}))
    with pytest.raises(ValueError, match=r"model.safetensors does not match .*wrong shapes \['head.weight"):
        load_image_tokenizer(str(tokenizer_dir))
    (tokenizer_dir / "config.json").write_text(json.dumps({**config, "stem": {"channel": 1}}))
    with pytest.raises(ValueError, match=r"config.json: 'stem': unknown key\(s\) \['channel'\]"):
        load_image_tokenizer(str(tokenizer_dir))
    (tokenizer_dir / "config.json").write_text(json.dumps({**config, "groups": [{"channels": 10 ** 12, "blocks": 1}]}))
    with pytest.raises(ValueError, match=r"'groups'\[0\]: 'channels' must be an integer in 1\.\.1048576"):
        load_image_tokenizer(str(tokenizer_dir))
    (tokenizer_dir / "config.json").write_text(json.dumps({**config, "groups": [{"channels": 1 << 20, "blocks": 9}]}))
    with pytest.raises(ValueError, match="does not match"):  # shapes are compared, never allocated (terabytes)
        load_image_tokenizer(str(tokenizer_dir))
    (tokenizer_dir / "config.json").write_text(json.dumps(config))
    data = (tokenizer_dir / "model.safetensors").read_bytes()
    (tokenizer_dir / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        load_image_tokenizer(str(tokenizer_dir))


class Payload:
    """Unpickling this runs a shell command: what a planted tokenizer file could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_file_of_a_tokenizer_directory_runs_code(tokenizer_dir, tmp_path):
    marker = tmp_path / "payload_ran"
    config = preset("simvtp-tiny")
    objective = ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tokenizer_dir))
    planted = {"pickle": pickle.dumps(Payload(marker))}
    torch.save({"weights": Payload(marker)}, tmp_path / "zip.pt")  # torch.save's zip layout, as .pt/.pt2 use
    planted["torch.save"] = (tmp_path / "zip.pt").read_bytes()
    for target in sorted(tokenizer_dir.iterdir()):
        original = target.read_bytes()
        for kind, payload in planted.items():
            target.write_bytes(payload)
            with pytest.raises(ValueError, match=target.name):  # refused, naming the file
                MVMTarget(objective, config)
            assert not marker.exists(), f"a {kind} payload in {target.name} was executed"
        target.write_bytes(original)
    for name in ("tokenizer.pt", "tokenizer.pt2", "data.pkl"):  # extra files are never opened
        (tokenizer_dir / name).write_bytes(planted["torch.save"])
    assert MVMTarget(objective, config).vocab == 16 and not marker.exists()
