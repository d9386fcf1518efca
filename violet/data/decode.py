"""Decode one video (decord, PyAV when decord cannot), image or segment into resized JPEG frames.

Two callers decode with exactly this code, so that their pixels agree: prepare.extract's worker processes, which
fill the clip store, and violet.api, which embeds raw files with a trained model (JPEG round trip included, at the
store's quality, because that is what the model saw in training). Every clip either comes out as frames that
really are distinct positions of the source, upright (phone videos' display rotation applied, as decord does) and
resized to the store's short side, or raises VideoDecodeError with a one-line reason for failed.jsonl.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".avi", ".gif", ".mkv", ".mov", ".m4v"})  # as prepare.extract finds
# What `python -m prepare` stores when not told otherwise (its --frames, --short-side and --quality defaults):
# runs trained before run.json recorded the store's settings are decoded with these (tests/test_api.py checks them).
PREPARE_DEFAULTS = {"frames_per_video": 16, "short_side": 256, "jpeg_quality": 90}
# A source frame above this many pixels is refused before decoding: 16 frames of it would need gigabytes.
DEFAULT_MAX_PIXELS = 8192 * 8192
# A file whose decodable frames fall short of what its stream declares by more than this
# is a truncated download or badly corrupt; its frames would not span the captioned video.
MIN_DECODABLE_FRACTION = 0.9
Span = tuple[float, float]  # (start, end) seconds of a segment of a longer video


class VideoDecodeError(Exception):
    """A video cannot be extracted; the message is the one-line reason reported to the user."""


def uniform_frame_indices(available: int, wanted: int) -> list[int]:
    """The middle frame of each of `wanted` equal segments of [0, available); all frames if fewer."""
    if available <= wanted:
        return list(range(available))
    return [int((segment + 0.5) * available / wanted) for segment in range(wanted)]


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Size with the shorter side equal to `short_side`, aspect kept; never upscales."""
    shorter = min(width, height)
    if shorter <= short_side:
        return width, height
    scale = short_side / shorter
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def _short(error: BaseException, limit: int = 200) -> str:
    """One line of an exception message, without decord's "[hh:mm:ss] /src/file.cc:123:" prefixes."""
    text = str(error).strip() or type(error).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: |\[Errno -?\d+\] ", "", text.splitlines()[0])
    if not isinstance(error, VideoDecodeError):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _DecodedClip:
    images: list[Any]  # PIL images, already resized
    frame_times: list[float]
    src_frames: int
    src_fps: float
    duration: float
    src_width: int
    src_height: int
    decoder: str
    decode_errors: int = 0


def _resize(image: Any, short_side: int) -> Any:
    from PIL import Image

    size = output_size(image.width, image.height, short_side)
    image = image.convert("RGB")
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def _in_span(times: Sequence[float | None], span: Span | None) -> list[int]:
    """Positions of the frames whose start time lies in [start, end) of the span (all frames without one)."""
    if span is None:
        return list(range(len(times)))
    inside = [i for i, t in enumerate(times) if t is not None and span[0] <= t < span[1]]
    if not inside:
        last = max((t for t in times if t is not None), default=0.0)
        raise VideoDecodeError(f"segment {span[0]:g}-{span[1]:g} s holds no frame (frames start from 0 to {last:g} s)")
    return inside


def _decode_with_decord(path: str, frames: int, short_side: int, span: Span | None = None) -> _DecodedClip:
    import decord
    import numpy as np
    from PIL import Image

    decord.logging.set_level(decord.logging.QUIET)  # its failures reach us as exceptions
    # fault_tol: raise instead of silently returning a neighbouring frame for an unreadable one.
    # One thread: parallelism comes from the process pool.
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, fault_tol=1e-9)
    count = len(reader)
    if count <= 0:
        raise VideoDecodeError("decord reports 0 frames")
    candidates = _in_span(reader.get_frame_timestamp(list(range(count)))[:, 0].tolist(), span) if span else None
    indices = uniform_frame_indices(count, frames) if candidates is None else [
        candidates[i] for i in uniform_frame_indices(len(candidates), frames)]
    batch = reader.get_batch(indices).asnumpy()
    if batch.ndim != 4 or batch.shape[0] != len(indices) or batch.shape[3] != 3 or 0 in batch.shape:
        raise VideoDecodeError(f"decord returned an unusable batch of shape {batch.shape} for {len(indices)} frames")
    repeats = [indices[i] for i in range(1, len(indices)) if np.array_equal(batch[i], batch[i - 1])]
    if repeats:
        # Either a static video or decord repeating a frame it could not decode; PyAV tells them apart.
        raise VideoDecodeError(f"decord returned identical frames at positions {repeats[:5]}")
    times = reader.get_frame_timestamp(indices)
    end_of_last = float(reader.get_frame_timestamp([count - 1])[0][1])
    return _DecodedClip(
        images=[_resize(Image.fromarray(frame), short_side) for frame in batch],
        frame_times=[round(float(start), 6) for start in times[:, 0]],
        src_frames=count, src_fps=float(reader.get_avg_fps()), duration=end_of_last,
        src_width=int(batch.shape[2]), src_height=int(batch.shape[1]), decoder="decord")


@dataclass
class _PyAVPass:
    kept: dict[int, tuple[Any, float | None]]  # position -> (resized image, time in s)
    decodable: int
    errors: int
    last_error: str
    size: tuple[int, int]  # (width, height) of the source frames
    last_time: float | None  # start of the last decodable frame, in seconds
    times: list[float | None]  # start of every decodable frame, in seconds


def _pyav_pass(path: str, wanted: set[int], short_side: int) -> _PyAVPass:
    """Decode every frame sequentially, keeping the resized images at `wanted` positions.

    Corrupt packets are skipped (the decoder resynchronises at the next keyframe) and a
    demuxer error ends the pass early; positions count frames that actually decoded.
    """
    import av

    result = _PyAVPass({}, 0, 0, "", (0, 0), None, [])

    def take(decoded: Sequence[Any]) -> None:
        for frame in decoded:
            result.size = (frame.width, frame.height)
            if result.decodable in wanted:
                image = frame.to_image()
                if frame.rotation:  # phone video: display-matrix rotation, counter-clockwise (decord applies it too)
                    image = image.rotate(frame.rotation, expand=True)
                result.kept[result.decodable] = (_resize(image, short_side), frame.time)
            result.decodable += 1
            result.last_time = frame.time
            result.times.append(frame.time)

    with av.open(path) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):  # ends with an empty packet that flushes the decoder
                try:
                    take(packet.decode())
                except av.error.FFmpegError as error:
                    result.errors += 1
                    result.last_error = _short(error)
        except av.error.FFmpegError as error:
            result.errors += 1
            result.last_error = _short(error)
            with contextlib.suppress(av.error.FFmpegError):  # the stream is already known to be broken
                take(stream.codec_context.decode(None))
    return result


def _decode_span_with_pyav(path: str, frames: int, short_side: int, span: Span) -> _DecodedClip:
    """A segment: one pass to learn every frame's time, a second to keep the chosen frames."""
    timing = _pyav_pass(path, set(), short_side)
    if timing.decodable == 0:
        raise VideoDecodeError(f"no decodable frames{': ' + timing.last_error if timing.last_error else ''}")
    inside = _in_span(timing.times, span)
    positions = [inside[i] for i in uniform_frame_indices(len(inside), frames)]
    decoded = _pyav_pass(path, set(positions), short_side)
    if any(p not in decoded.kept for p in positions):
        raise VideoDecodeError(f"decoding is not repeatable ({timing.decodable} then {decoded.decodable} frames)")
    fps = (timing.decodable - 1) / timing.last_time if timing.last_time else 0.0
    return _DecodedClip(
        images=[decoded.kept[p][0] for p in positions], frame_times=[round(float(decoded.kept[p][1] or 0.0), 6)
                                                                     for p in positions],
        src_frames=timing.decodable, src_fps=fps, duration=round(float(timing.last_time or 0.0), 6),
        src_width=decoded.size[0], src_height=decoded.size[1], decoder="pyav", decode_errors=decoded.errors)


def _decode_with_pyav(path: str, frames: int, short_side: int, span: Span | None = None) -> _DecodedClip:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            raise VideoDecodeError(f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        declared = int(stream.frames or 0)
        if not declared and stream.duration and stream.time_base and fps:
            declared = round(float(stream.duration * stream.time_base) * fps)
        # Container duration includes audio, so it is only a guess to sample with, never a check.
        guess = declared or (round(container.duration / av.time_base * fps) if container.duration and fps else 0)
    if span is not None:
        return _decode_span_with_pyav(path, frames, short_side, span)

    if guess <= 0:
        guess = _pyav_pass(path, set(), short_side).decodable  # count by decoding
    decoded = _pyav_pass(path, set(uniform_frame_indices(guess, frames)), short_side)
    if decoded.decodable == 0:
        detail = f": {decoded.last_error}" if decoded.last_error else ""
        raise VideoDecodeError(f"no decodable frames{detail}")
    if declared and decoded.decodable < MIN_DECODABLE_FRACTION * declared:
        raise VideoDecodeError(f"truncated or corrupt: only {decoded.decodable} of {declared} declared frames "
                               f"decode ({decoded.errors} errors, last: {decoded.last_error or 'early end'})")
    if decoded.decodable != guess:
        # The sampled positions assumed the wrong length: sample again over what really decodes.
        guess = decoded.decodable
        decoded = _pyav_pass(path, set(uniform_frame_indices(guess, frames)), short_side)
        if decoded.decodable != guess:
            raise VideoDecodeError(f"decoding is not repeatable ({guess} then {decoded.decodable} frames)")
    positions = uniform_frame_indices(guess, frames)

    def seconds(time_s: float | None, position: int) -> float:  # frames without a timestamp: assume constant rate
        return round(float(time_s), 6) if time_s is not None else round(position / fps, 6) if fps else 0.0

    frame_times = [seconds(decoded.kept[p][1], p) for p in positions]
    end_of_last = seconds(decoded.last_time, guess - 1) + (1 / fps if fps else 0.0)
    return _DecodedClip(
        images=[decoded.kept[p][0] for p in positions], frame_times=frame_times, src_frames=guess,
        src_fps=fps, duration=round(end_of_last, 6),
        src_width=decoded.size[0], src_height=decoded.size[1], decoder="pyav", decode_errors=decoded.errors)


def _decode_image(path: str, short_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> _DecodedClip:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:  # reads the header only: the size is known before any pixel is decoded
            _refuse_over(opened.width, opened.height, max_pixels)
            image = ImageOps.exif_transpose(opened)  # phone photos: EXIF orientation, as viewers show them
            image.load()
    except Image.DecompressionBombError as error:  # Pillow's own hard limit, checked in open() before ours
        over = f"--max-pixels {max_pixels}" if max_pixels < 2 * (Image.MAX_IMAGE_PIXELS or 0) else "Pillow's limit"
        raise VideoDecodeError(f"resolution exceeds {over} ({_short(error)})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise VideoDecodeError(f"not a readable image ({_short(error).replace(path, os.path.basename(path))})") from None
    return _DecodedClip(images=[_resize(image, short_side)], frame_times=[0.0], src_frames=1, src_fps=0.0,
                        duration=0.0, src_width=image.width, src_height=image.height, decoder="image")


def _check_resolution(path: str, max_pixels: int) -> None:
    """Refuse a video whose frames exceed `max_pixels` before any frame is decoded (header only); images are
    checked the same way in `_decode_image`."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return  # the decoders give the precise reason
            context = container.streams.video[0].codec_context
            width, height = context.width, context.height
    except av.error.FFmpegError:
        return
    _refuse_over(width, height, max_pixels)


def _refuse_over(width: int, height: int, max_pixels: int) -> None:
    """The one refusal for videos and images alike, so both are reported the same way."""
    if width * height > max_pixels:
        raise VideoDecodeError(f"resolution {width}x{height} exceeds --max-pixels {max_pixels} "
                               f"(decoding {width * height * 3 // 2**20} MiB per frame)")


def extract_video(path: str, frames: int, short_side: int, quality: int, span: Span | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[bytes], dict[str, Any]]:
    """Decode, resize and JPEG-encode `frames` uniformly spaced frames: ``(jpegs, meta)`` for the store.

    `span` (start, end seconds) restricts the frames to a segment; an image file gives a 1-frame clip.
    Runs inside a worker process. Raises VideoDecodeError with a one-line reason.
    """
    if os.path.getsize(path) == 0:
        raise VideoDecodeError("empty file (0 bytes)")
    # Reasons are reported next to the video id: the full path in them only adds noise.
    name = os.path.basename(path)
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return _encode(_decode_image(path, short_side, max_pixels), quality)
    _check_resolution(path, max_pixels)
    try:
        clip = _decode_with_decord(path, frames, short_side, span)
    except Exception as decord_error:  # noqa: BLE001 - any decord failure is answered by trying PyAV
        decord_reason = _short(decord_error).replace(path, name)
        try:
            clip = _decode_with_pyav(path, frames, short_side, span)
        except VideoDecodeError as pyav_error:
            if str(pyav_error).startswith(("no video stream", "truncated")):
                raise  # PyAV's verdict is definite; decord's message would add nothing
            raise VideoDecodeError(f"decord: {decord_reason}; pyav: {_short(pyav_error)}") from None
        except Exception as pyav_error:  # noqa: BLE001 - reported as this video's failure
            pyav_reason = _short(pyav_error).replace(path, name)
            raise VideoDecodeError(f"decord: {decord_reason}; pyav: {pyav_reason}") from None
        logger.debug("%s: decord failed (%s); decoded with PyAV", path, decord_reason)
    jpegs, meta = _encode(clip, quality)
    if span is not None:
        meta["segment"] = [span[0], span[1]]
    return jpegs, meta


def _encode(clip: _DecodedClip, quality: int) -> tuple[list[bytes], dict[str, Any]]:
    jpegs = []
    for image in clip.images:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    width, height = clip.images[0].size
    meta = {"width": width, "height": height, "src_fps": round(clip.src_fps, 6), "src_frames": clip.src_frames,
            "duration": round(clip.duration, 6), "frame_times": clip.frame_times, "decoder": clip.decoder,
            "src_width": clip.src_width, "src_height": clip.src_height, "decode_errors": clip.decode_errors}
    return jpegs, meta


def extract_array(video: Any, frames: int, short_side: int, quality: int) -> tuple[list[bytes], dict[str, Any]]:
    """`extract_video` for decoded frames, uint8 (T, H, W, 3) RGB: the same uniform positions, resize and JPEG."""
    from PIL import Image

    count = int(video.shape[0])
    if count < 1:
        raise VideoDecodeError("no frames (the array's first dimension is 0)")
    positions = uniform_frame_indices(count, frames)
    clip = _DecodedClip(
        images=[_resize(Image.fromarray(video[p]), short_side) for p in positions],
        frame_times=[float(p) for p in positions], src_frames=count, src_fps=0.0, duration=0.0,
        src_width=int(video.shape[2]), src_height=int(video.shape[1]), decoder="array")
    return _encode(clip, quality)


def video_duration(path: str) -> float | None:
    """Seconds of the first video stream from the container header (no decoding); 0 for an image, None if unknown."""
    import av

    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return 0.0
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else None
    except av.error.FFmpegError:
        return None  # the decoders report the precise reason


def window_spans(duration: float | None, length: float, stride: float) -> list[Span | None]:
    """(start, end) seconds of the windows cut from a video: one of `length` s every `stride` s, and a last one
    ending at the end so the tail is never dropped. [None] (one clip over the whole video, what prepare stores)
    when the video is no longer than one window or its length is unknown."""
    if length <= 0 or stride <= 0:
        raise ValueError(f"window length and stride must be > 0 seconds, got {length} and {stride}")
    if not duration or duration <= length:
        return [None]
    starts, start = [], 0.0
    while start + length < duration:
        starts.append(start)
        start += stride
    starts.append(duration - length)
    return [(round(begin, 6), round(begin + length, 6)) for begin in starts]


def frame_windows(count: int, fps: float, length: float, stride: float) -> list[tuple[int, int]]:
    """`window_spans` for decoded frames at `fps`: (first, end) frame positions of each window."""
    spans = window_spans(count / fps, length, stride)
    if spans == [None]:
        return [(0, count)]
    return [(math.floor(begin * fps + 1e-6), min(count, math.ceil(end * fps - 1e-6))) for begin, end in spans]
