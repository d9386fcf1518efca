"""Frame sampling and JPEG decoding for clips read from the clip store; output is uint8 (T, 3, S, S)."""
from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image


def sample_frame_indices(num_stored: int, num_frames: int, train: bool, rng: random.Random | None = None) -> list[int]:
    """Split the stored frames into `num_frames` equal segments and take one frame from each.

    Training takes a random frame per segment (a different clip every epoch); evaluation takes each segment's
    middle, so results are deterministic. A clip with fewer stored frames than asked (an image, a very short
    video) is stretched by nearest-index resampling, the same as sampling a slow video at a higher rate.
    """
    if num_stored < 1:
        raise ValueError("a clip with no stored frames cannot be sampled")
    edges = np.linspace(0, num_stored, num_frames + 1)
    indices = []
    for start, end in zip(edges[:-1], edges[1:]):
        if train and rng is not None and int(end) - int(start) > 1:
            indices.append(rng.randrange(int(start), int(end)))
        else:
            indices.append(min(num_stored - 1, int((start + end) / 2)))
    return indices


def crop_box(width: int, height: int, train: bool, rng: random.Random | None, scale_min: float) -> tuple[float, ...]:
    """A square box to crop: the centre square for evaluation, a random square of random scale for training.

    One box serves every frame of the clip, so motion is preserved. No flips: "left"/"right" in captions
    would become wrong.
    """
    side = min(width, height)
    if train and rng is not None:
        side = side * (rng.uniform(scale_min, 1.0) ** 0.5)
        left = rng.uniform(0, width - side)
        top = rng.uniform(0, height - side)
    else:
        left = (width - side) / 2
        top = (height - side) / 2
    return (left, top, left + side, top + side)


def decode_clip(
    jpegs: list[bytes], size: int, train: bool, rng: random.Random | None = None, scale_min: float = 1.0
) -> torch.Tensor:
    """Decode JPEG frames into uint8 (T, 3, size, size) with one shared crop."""
    frames = []
    box = None
    for data in jpegs:
        image = Image.open(io.BytesIO(data))
        # DCT-domain downscaling: libjpeg decodes at 1/2, 1/4 or 1/8 size when that still covers `size`.
        image.draft("RGB", (size, size))
        image = image.convert("RGB")
        if box is None:
            box = crop_box(image.width, image.height, train, rng, scale_min)
        frames.append(np.asarray(image.resize((size, size), Image.BILINEAR, box=box)))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
