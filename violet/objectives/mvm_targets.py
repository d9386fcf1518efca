"""Pluggable masked-visual-modelling targets, one per `objective.mvm_target`:

- `pixel`: per-patch-normalised pixels (MAE's norm_pix_loss), regression;
- `hog`: MaskFeat-style histograms of oriented gradients per cell, regression (VIOLETv2 found them as good as VQ);
- `vq`: discrete tokens from a frozen image tokenizer the user supplies as a local file (e.g. the DALL-E dVAE
  encoder VIOLET used, exported with TorchScript or torch.export), classification.

Every target covers the pixels under one output video token (tubelet x region x region) in the encoder's token
order (time-major, then rows, then columns). The tokenizer is held by the task, not by the trainable module, so
it stays out of the optimizer, DDP and ZeRO-3 partitioning.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

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


def load_image_tokenizer(path: str) -> torch.nn.Module:
    """A frozen tokenizer: float (N, 3, H, W) in [0, 1] -> logits (N, vocab, H/f, W/f). No pickles are loaded:
    `.pt2` files come from `torch.export.save`, anything else from `torch.jit.save`."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"objective.vq_tokenizer={path!r}: no such file")
    try:
        module = torch.export.load(str(file)).module() if file.suffix == ".pt2" else torch.jit.load(str(file),
                                                                                                    map_location="cpu")
    except Exception as error:
        raise ValueError(f"{file}: not a TorchScript (.pt) or torch.export (.pt2) image tokenizer ({error})") from error
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval() if hasattr(module, "eval") else module


class MVMTarget:
    """Computes targets from the uint8 frames and the loss of the MVM head's predictions at hidden tokens."""

    def __init__(self, objective: ObjectiveConfig, model: ModelConfig) -> None:
        self.kind = objective.mvm_target
        self.weight = objective.mvm_weight
        self.region, self.tubelet = model.video_region, model.tubelet
        self.cell, self.bins = objective.hog_cell, objective.hog_bins
        self.tokenizer: torch.nn.Module | None = None
        self.vocab, self.factor = 0, 0
        if self.kind not in ("pixel", "hog", "vq"):
            raise ValueError(f"objective.mvm_target must be pixel|hog|vq, got {self.kind!r}")
        if self.kind == "hog" and self.region % self.cell:
            raise ValueError(f"objective.hog_cell={self.cell} must divide the {self.region} px a video token covers")
        if self.kind == "vq":
            if not objective.vq_tokenizer:
                raise ValueError("objective.mvm_target=vq needs objective.vq_tokenizer=<local tokenizer file>")
            self.tokenizer = load_image_tokenizer(objective.vq_tokenizer)
            with torch.no_grad():
                probe = self.tokenizer(torch.zeros(1, 3, model.image_size, model.image_size))
            if probe.ndim != 4 or model.image_size % probe.shape[-1]:
                raise ValueError(f"{objective.vq_tokenizer}: expected logits (N, vocab, h, w), got {tuple(probe.shape)}")
            self.vocab, self.factor = probe.shape[1], model.image_size // probe.shape[-1]

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
