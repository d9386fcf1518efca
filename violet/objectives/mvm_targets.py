"""Pluggable masked-visual-modelling targets, one per `objective.mvm_target`:

- `pixel`: per-patch-normalised pixels (MAE's norm_pix_loss), regression;
- `hog`: MaskFeat-style histograms of oriented gradients per cell, regression (VIOLETv2 found them as good as VQ);
- `vq`: discrete tokens from a frozen image tokenizer the user supplies as a local directory: a JSON config naming
  a convolutional encoder defined here (DALL-E's dVAE encoder, which VIOLET used, is one such config) and its
  weights as safetensors, classification. Nothing in that directory can run code: TorchScript and torch.export
  files are refused, because loading them unpickles (torch.export) or running them executes (TorchScript) what
  the file's author wrote.

Every target covers the pixels under one output video token (tubelet x region x region) in the encoder's token
order (time-major, then rows, then columns). The tokenizer is held by the task, not by the trainable module, so
it stays out of the optimizer, DDP and ZeRO-3 partitioning.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import safe_open
from torch import nn

from violet.config import ModelConfig, ObjectiveConfig
from violet.objectives.mvm import mvm_loss, pixel_targets


def hog_targets(frames: torch.Tensor, region: int, tubelet: int, cell: int, bins: int) -> torch.Tensor:
    """uint8 (B, T, 3, H, W) -> (B, T/tubelet * (H/region) * (W/region), tubelet * (region/cell)^2 * 3 * bins).

    Sobel gradients per colour channel, unsigned orientation binned, magnitudes summed per cell; each token's
    vector is L2-normalised so bright and dark regions weigh alike.
    """
    images = frames.flatten(0, 1).float() / 255.0  # (B*T, 3, H, W)
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=images.device)
    weight = torch.stack([sobel, sobel.T])[:, None].repeat(3, 1, 1, 1)  # (gx, gy) for each channel
    gradients = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), weight, groups=3)
    gx, gy = gradients[:, 0::2], gradients[:, 1::2]
    magnitude = torch.hypot(gx, gy)
    angle = torch.remainder(torch.atan2(gy, gx), math.pi)
    index = (angle / math.pi * bins).long().clamp(max=bins - 1)
    histogram = torch.zeros(*magnitude.shape[:2], bins, *magnitude.shape[2:], device=images.device)
    histogram.scatter_(2, index[:, :, None], magnitude[:, :, None])
    cells = F.avg_pool2d(histogram.flatten(1, 2), cell) * cell * cell  # (B*T, 3*bins, H/cell, W/cell)
    per_side = region // cell
    features = rearrange(
        cells, "(b t pt) k (h ch) (w cw) -> b (t h w) (pt ch cw k)", b=frames.shape[0], pt=tubelet, ch=per_side,
        cw=per_side,
    )
    return F.normalize(features, dim=-1)


TOKENIZER_CONFIG = "config.json"  # the files of a tokenizer directory (objective.vq_tokenizer=DIR)
TOKENIZER_WEIGHTS = "model.safetensors"
MAX_TOKENIZER_SIZE = 1 << 20  # any width, vocabulary or kernel of a tokenizer config


@dataclass(frozen=True)
class TokenizerGroup:
    channels: int
    blocks: int
    hidden: int  # width inside each block's residual branch
    pool: int  # max-pool factor after the group's blocks (1: none)


@dataclass(frozen=True)
class TokenizerSpec:
    """The architecture a tokenizer's config.json describes (docs/models.md has DALL-E's)."""

    stem_channels: int
    stem_kernel: int
    groups: tuple[TokenizerGroup, ...]
    head: str  # "linear": ReLU then a 1x1 conv to logits (DALL-E); "codebook": minus squared distance to each code
    vocab: int
    dim: int  # codebook head only: the width of the codes, which a 1x1 conv projects the features to
    input_scale: float = 1.0  # the encoder sees scale * x + shift (DALL-E's map_pixels: 0.8 and 0.1)
    input_shift: float = 0.0
    residual_gain: float = 1.0  # multiplies every block's residual branch (DALL-E: 1 / number_of_blocks ** 2)

    @property
    def factor(self) -> int:
        return math.prod(group.pool for group in self.groups)


def _object(value: object, keys: set[str], where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - keys)
    if unknown:  # a misspelt key would otherwise silently build another architecture
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(keys)}")
    return value


def _number(table: dict, key: str, where: str, default: object = None, minimum: float = 1,
            integer: bool = True) -> int | float:
    value = table.get(key, default)
    numeric = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    # The bound keeps every tensor's element count within int64, so shapes can be built and compared.
    if not numeric or not math.isfinite(value) or value < minimum or (integer and value > MAX_TOKENIZER_SIZE):
        wanted = f"an integer in {minimum}..{MAX_TOKENIZER_SIZE}" if integer else "a finite number"
        raise ValueError(f"{where}: {key!r} must be {wanted}, got {value!r}")
    return value


def read_tokenizer_spec(file: Path) -> TokenizerSpec:
    """Parse and check config.json; every error names the file and the key."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested too deeply to parse
        raise ValueError(f"{file}: not a JSON tokenizer config ({type(error).__name__}: {str(error)[:200]})") from None
    where = str(file)
    _object(config, {"stem", "groups", "head", "input_scale", "input_shift", "residual_gain"}, where)
    stem = _object(config.get("stem"), {"channels", "kernel"}, f"{where}: 'stem'")
    kernel = _number(stem, "kernel", f"{where}: 'stem'", default=3)
    if kernel % 2 == 0:
        raise ValueError(f"{where}: 'stem' 'kernel' must be odd (same padding), got {kernel}")
    width = _number(stem, "channels", f"{where}: 'stem'")
    if not isinstance(config.get("groups", []), list):
        raise ValueError(f"{where}: 'groups' must be a list")
    groups = []
    for position, raw in enumerate(config.get("groups", [])):
        place = f"{where}: 'groups'[{position}]"
        group = _object(raw, {"channels", "blocks", "hidden", "pool"}, place)
        channels, blocks = _number(group, "channels", place), _number(group, "blocks", place, 1, minimum=0)
        if blocks == 0 and channels != width:
            raise ValueError(f"{place}: a group without blocks cannot change the width ({width} -> {channels})")
        groups.append(TokenizerGroup(channels, blocks, _number(group, "hidden", place, max(1, channels // 4)),
                                     _number(group, "pool", place, 1)))
        width = channels
    head = _object(config.get("head"), {"kind", "vocab", "dim"}, f"{where}: 'head'")
    kind = head.get("kind", "linear")
    if kind not in ("linear", "codebook"):
        raise ValueError(f"{where}: 'head' 'kind' must be linear|codebook, got {kind!r}")
    return TokenizerSpec(
        stem_channels=_number(stem, "channels", where), stem_kernel=kernel, groups=tuple(groups), head=kind,
        vocab=_number(head, "vocab", f"{where}: 'head'", minimum=2),
        dim=_number(head, "dim", f"{where}: 'head'", width) if kind == "codebook" else 0,
        **{key: float(_number(config, key, where, default, -math.inf, integer=False))
           for key, default in (("input_scale", 1.0), ("input_shift", 0.0), ("residual_gain", 1.0))})


class TokenizerBlock(nn.Module):
    """DALL-E's encoder block: skip (a 1x1 conv when the width changes) + gain * the residual branch
    (ReLU-conv3x3 three times, then ReLU-conv1x1)."""

    def __init__(self, inputs: int, outputs: int, hidden: int, gain: float) -> None:
        super().__init__()
        self.skip = nn.Conv2d(inputs, outputs, 1) if inputs != outputs else nn.Identity()
        self.convs = nn.ModuleList([nn.Conv2d(inputs, hidden, 3, padding=1), nn.Conv2d(hidden, hidden, 3, padding=1),
                                    nn.Conv2d(hidden, hidden, 3, padding=1), nn.Conv2d(hidden, outputs, 1)])
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        for conv in self.convs:
            residual = conv(F.relu(residual))
        return self.skip(x) + self.gain * residual


class ImageTokenizer(nn.Module):
    """float (N, 3, H, W) in [0, 1] -> logits (N, vocab, H / factor, W / factor), built from a TokenizerSpec."""

    def __init__(self, spec: TokenizerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.stem = nn.Conv2d(3, spec.stem_channels, spec.stem_kernel, padding=spec.stem_kernel // 2)
        self.groups = nn.ModuleList()
        width = spec.stem_channels
        for group in spec.groups:
            self.groups.append(nn.ModuleList(
                TokenizerBlock(width if index == 0 else group.channels, group.channels, group.hidden,
                               spec.residual_gain) for index in range(group.blocks)))
            width = group.channels
        if spec.head == "linear":
            self.head = nn.Conv2d(width, spec.vocab, 1)
        else:
            self.project = nn.Conv2d(width, spec.dim, 1)
            self.codebook = nn.Parameter(torch.empty(spec.vocab, spec.dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images * self.spec.input_scale + self.spec.input_shift)
        for group, blocks in zip(self.spec.groups, self.groups):
            for block in blocks:
                x = block(x)
            if group.pool > 1:
                x = F.max_pool2d(x, group.pool)
        if self.spec.head == "linear":
            return self.head(F.relu(x))
        z = self.project(x)
        distance = ((z * z).sum(1, keepdim=True) - 2 * torch.einsum("ndhw,kd->nkhw", z, self.codebook)
                    + (self.codebook * self.codebook).sum(1)[None, :, None, None])
        return -distance


def _read_tokenizer_weights(file: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The tensors of `file`, which must hold exactly the names and shapes the config's architecture has."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (the tokenizer's weights, a safetensors file)")
    try:
        with safe_open(str(file), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            state = {name: handle.get_tensor(name).float() for name in shapes if name in expected}
    except Exception as error:  # safetensors' own error type: truncated, or not safetensors at all
        raise ValueError(f"{file}: not a readable safetensors file ({str(error)[:200]})") from None
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    wrong = [f"{name}: {shapes[name]} vs {expected[name]}" for name in expected
             if name in shapes and shapes[name] != expected[name]]
    if missing or unexpected or wrong:
        raise ValueError(f"{file} does not match the architecture of its {TOKENIZER_CONFIG}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    return state


def load_image_tokenizer(path: str) -> ImageTokenizer:
    """A frozen tokenizer from a directory holding config.json (the architecture) and model.safetensors."""
    directory = Path(path)
    if directory.is_file():
        raise ValueError(f"objective.vq_tokenizer={path!r} is a file; a tokenizer is a directory with "
                         f"{TOKENIZER_CONFIG} and {TOKENIZER_WEIGHTS}. TorchScript (.pt) and torch.export (.pt2) "
                         "files are not loaded: loading or running them executes code from the file "
                         "(docs/models.md shows how to convert one)")
    if not directory.is_dir():
        raise FileNotFoundError(f"objective.vq_tokenizer={path!r}: no such directory")
    spec = read_tokenizer_spec(directory / TOKENIZER_CONFIG)
    with torch.device("meta"):  # shapes only: a config naming huge widths allocates nothing before the check
        module = ImageTokenizer(spec)
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    module.load_state_dict(_read_tokenizer_weights(directory / TOKENIZER_WEIGHTS, expected), strict=True, assign=True)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()

class MVMTarget:
    """Computes targets from the uint8 frames and the loss of the MVM head's predictions at hidden tokens."""

    def __init__(self, objective: ObjectiveConfig, model: ModelConfig) -> None:
        self.kind = objective.mvm_target
        self.weight = objective.mvm_weight
        self.region, self.tubelet = model.video_region, model.tubelet
        self.cell, self.bins = objective.hog_cell, objective.hog_bins
        self.tokenizer: ImageTokenizer | None = None
        self.vocab, self.factor = 0, 0
        if self.kind not in ("pixel", "hog", "vq"):
            raise ValueError(f"objective.mvm_target must be pixel|hog|vq, got {self.kind!r}")
        if self.kind == "hog" and self.region % self.cell:
            raise ValueError(f"objective.hog_cell={self.cell} must divide the {self.region} px a video token covers")
        if self.kind == "vq":
            if not objective.vq_tokenizer:
                raise ValueError("objective.mvm_target=vq needs objective.vq_tokenizer=<local tokenizer directory>")
            self.tokenizer = load_image_tokenizer(objective.vq_tokenizer)
            self.vocab, self.factor = self.tokenizer.spec.vocab, self.tokenizer.spec.factor

    @property
    def output_dim(self) -> int:
        """Outputs per video token the MVM head must produce."""
        if self.kind == "pixel":
            return 3 * self.tubelet * self.region ** 2
        if self.kind == "hog":
            return self.tubelet * (self.region // self.cell) ** 2 * 3 * self.bins
        return self.tubelet * self.vocab  # one token per frame of the tubelet (see `targets`)

    @torch.no_grad()
    def targets(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[1] % self.tubelet:
            raise ValueError(f"MVM needs a frame count divisible by tubelet={self.tubelet}, got {frames.shape[1]}")
        if self.kind == "pixel":
            return pixel_targets(frames, self.region, self.tubelet)
        if self.kind == "hog":
            return hog_targets(frames, self.region, self.tubelet, self.cell, self.bins)
        # VQ: frames resized so the tokenizer's grid equals the video-token grid (one token per frame and token).
        grid = frames.shape[-1] // self.region
        images = frames.flatten(0, 1).float() / 255.0
        images = F.interpolate(images, size=(grid * self.factor,) * 2, mode="bilinear", antialias=True,
                               align_corners=False)
        self.tokenizer = self.tokenizer.to(images.device)
        ids = self.tokenizer(images).argmax(dim=1)  # (B*T, grid, grid)
        return rearrange(ids, "(b t pt) h w -> b (t h w) pt", b=frames.shape[0], pt=self.tubelet)

    def loss(self, prediction: torch.Tensor, frames: torch.Tensor, positions: torch.Tensor) -> dict:
        """prediction: (num_hidden, output_dim) at `positions` (bool (B, N)), in `targets[positions]` order."""
        targets = self.targets(frames)
        if self.kind != "vq":
            return mvm_loss(prediction, targets, positions, self.weight)
        logits = prediction.float().view(-1, self.vocab)
        labels = targets[positions].reshape(-1)
        return {"mvm": self.weight * F.cross_entropy(logits, labels),
                "mvm_acc": (logits.argmax(dim=-1) == labels).float().mean().detach()}
