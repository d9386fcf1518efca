"""Frame sampling and JPEG decoding for clips read from the clip store; output is uint8 (T, 3, S, S).

Decoding uses simplejpeg (libjpeg-turbo) and asks it for the smallest DCT-domain scale (1/8 ... 8/8) that
still covers the crop at the output size, so a 256-px stored frame feeding a 64-px model is decoded at
1/4 size instead of decoded in full and thrown away. Cropping, resizing and flipping then run on uint8
tensors, one call for the whole clip.
"""
from __future__ import annotations

import itertools
import math
import random
import threading

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F


def sample_frame_indices(num_stored: int, num_frames: int, train: bool, rng: random.Random | None = None) -> list[int]:
    """Split the stored frames into `num_frames` equal segments and take one frame from each.

    Training takes a random frame per segment (a different clip every epoch); evaluation takes each segment's
    middle, so results are deterministic. A clip with fewer stored frames than asked (an image, a very short
    video) is stretched by nearest-index resampling, the same as sampling a slow video at a higher rate.
    """
    if num_stored < 1:
        raise ValueError("a clip with no stored frames cannot be sampled")
    edges = [num_stored * segment / num_frames for segment in range(num_frames + 1)]  # np.linspace, minus overhead
    indices = []
    for start, end in itertools.pairwise(edges):
        if train and rng is not None and int(end) - int(start) > 1:
            indices.append(rng.randrange(int(start), int(end)))
        else:
            indices.append(min(num_stored - 1, int((start + end) / 2)))
    return indices


def crop_box(width: int, height: int, train: bool, rng: random.Random | None, scale_min: float) -> tuple[float, ...]:
    """A square box (left, top, right, bottom) to crop: the centre square for evaluation, a random square of
    random area scale in [scale_min, 1] of the largest square for training.

    One box serves every frame of the clip, so motion is preserved.
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


class _Scratch(threading.local):
    """Growing decode buffers per thread, reused for every clip.

    Random crops change the DCT scale, so decoded frames change size from clip to clip; fresh arrays of varying
    sizes fragment the worker's heap until its memory has grown by hundreds of MB (and with the worker's fixed
    mmap threshold each fresh array costs page faults). Decoding into reused buffers keeps a worker's memory
    flat. Callers copy out of them (the crop or resize does) before the next clip.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        size = math.prod(shape)
        if self.buffers.get(name, np.empty(0)).size < size:
            self.buffers[name] = np.empty(size, dtype=np.uint8)
        return self.buffers[name][:size].reshape(shape)


_scratch = _Scratch()


def _decode_one(data: bytes, position: int, min_width: int, min_height: int, buffer: np.ndarray) -> np.ndarray:
    try:
        return simplejpeg.decode_jpeg(data, "RGB", min_width=min_width, min_height=min_height, buffer=buffer)
    except ValueError as error:
        raise ValueError(f"frame {position} is not a decodable JPEG ({error})") from None


def _first_frame_size(jpegs: list[bytes]) -> tuple[int, int]:
    """(height, width) of frame 0 from its header; a clear error for an empty clip or undecodable bytes."""
    if not jpegs:
        raise ValueError("no frames to decode")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(jpegs[0])
    except ValueError as error:
        raise ValueError(f"frame 0 is not a decodable JPEG ({error})") from None
    return height, width


def decode_frames(
    jpegs: list[bytes], min_width: int = 0, min_height: int = 0, *, reuse: bool = False, out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode JPEG frames of one clip into uint8 (T, H, W, 3), DCT-downscaled as far as the minimum size allows.

    With `out` (a C-contiguous uint8 array), frames whose decoded shape is exactly `out.shape` are decoded
    straight into it (no copy) and `out` is returned; otherwise, and without `out`, the result is a new array,
    or with `reuse` this thread's scratch buffer, overwritten by the next call.
    Raises ValueError (naming the frame) for bytes that are not a decodable JPEG, or frames of different sizes.
    """
    height, width = _first_frame_size(jpegs)
    # Frame 0 tells the decoded size (DCT scales only shrink, so the full size bounds it); later frames then go
    # straight into their slot of the clip array.
    first = _decode_one(jpegs[0], 0, min_width, min_height, _scratch.array("first", (height * width * 3,)))
    shape = (len(jpegs), *first.shape)
    if out is not None and out.shape == shape:
        frames = out
    else:
        frames = _scratch.array("clip", shape) if reuse else np.empty(shape, dtype=np.uint8)
    frames[0] = first
    for position in range(1, len(jpegs)):
        frame = _decode_one(jpegs[position], position, min_width, min_height, frames[position])
        if frame.shape != shape[1:]:
            raise ValueError(f"frame {position} decodes to {frame.shape[:2]}, frame 0 to {shape[1:3]}")
    return frames


def decode_clip(
    jpegs: list[bytes], size: int, train: bool, rng: random.Random | None = None, scale_min: float = 1.0,
    flip: bool = False, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode JPEG frames into uint8 (T, 3, size, size), channels-last in memory, with one crop (and, if `flip`,
    one mirror) per clip.

    `out`, if given, is a C-contiguous uint8 (T, size, size, 3) tensor (a slot of a batch buffer) that receives
    the clip; the result is then its (T, 3, size, size) view. When the DCT-scaled frame is already the crop at
    the output size (a centre crop of a square frame whose scale lands on `size`), frames are decoded straight
    into it. `flip` mirrors half of the training clips left-right; it is off by default because captions and
    answers that say "left" or "right" would then lie.
    """
    height, width = _first_frame_size(jpegs)
    if out is None:
        out = torch.empty((len(jpegs), size, size, 3), dtype=torch.uint8)
    elif out.shape != (len(jpegs), size, size, 3) or out.dtype != torch.uint8 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous uint8 ({len(jpegs)}, {size}, {size}, 3) tensor, got "
                         f"{out.dtype} {tuple(out.shape)}")
    target = out.numpy()
    left, top, right, bottom = crop_box(width, height, train, rng, scale_min)
    # The smallest decode in which the crop still spans `size` pixels: libjpeg-turbo scales by k/8.
    zoom = size / (right - left)
    whole_frame = (left, top, right, bottom) == (0, 0, width, height)
    frames = decode_frames(jpegs, min_width=math.ceil(width * zoom), min_height=math.ceil(height * zoom), reuse=True,
                           out=target if whole_frame else None)
    if frames is not target:
        scale_x, scale_y = frames.shape[2] / width, frames.shape[1] / height
        x0, y0 = int(left * scale_x), int(top * scale_y)
        x1 = max(x0 + 1, min(frames.shape[2], round(right * scale_x)))
        y1 = max(y0 + 1, min(frames.shape[1], round(bottom * scale_y)))
        crop = frames[:, y0:y1, x0:x1]  # (T, h, w, 3), a view into the scratch buffer
        if crop.shape[1:3] == (size, size):
            np.copyto(target, crop)
        else:
            # uint8 in, uint8 out, channels-last in and out: torch's vectorised antialiased bilinear path.
            resized = F.interpolate(torch.from_numpy(crop).permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                                    antialias=True, align_corners=False)
            out.copy_(resized.permute(0, 2, 3, 1))
    if flip and train and rng is not None and rng.random() < 0.5:
        out.copy_(out.flip(2))
    # Returned as the (T, 3, S, S) view of (T, S, S, 3) memory: channels stay last. Transposing to channels-first
    # here cost ~30 % of the JPEG decode itself (measured); the collate keeps this layout, and the model's first
    # strided op (on the GPU, when there is one) absorbs it.
    return out.permute(0, 3, 1, 2)
