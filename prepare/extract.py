"""Extract N uniformly spaced frames per video into a clip store.

    python -m prepare.extract DATA [--frames 16] [--short-side 256] [--quality 90]
                                   [--workers N] [--timeout 900] [--strict] [--store DIR]

Decoding runs in a "spawn" process pool: decord must never be opened in the parent (it
deadlocks in forked children), and a decoder that segfaults or hangs on a hostile file only
takes its worker down. The parent is the single ClipStoreWriter, so a run can be interrupted
and resumed. Every video either lands in the store with frames that really are distinct
positions of it, or is listed in STORE/failed.jsonl with a one-line reason: frames are never
repeated to pad a short video, and decord's silent fault tolerance (a neighbouring frame
returned for an unreadable one) is caught and answered by decoding with PyAV.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from prepare.layout import PathLike, default_store_dir, videos_dir
from violet.data.clip_store import ClipStoreWriter

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".avi", ".gif", ".mkv", ".mov", ".m4v"})
# Images become 1-frame clips, as VIOLET mixes CC3M images with videos.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# A source frame above this many pixels is refused before decoding: 16 frames of it would need gigabytes.
DEFAULT_MAX_PIXELS = 8192 * 8192
# A file whose decodable frames fall short of what its stream declares by more than this
# is a truncated download or badly corrupt; its frames would not span the captioned video.
MIN_DECODABLE_FRACTION = 0.9
DEFAULT_TIMEOUT_S = 900
SUMMARY_FAILURES_SHOWN = 20
CRASH_REASON = "decoder process crashed"
DECODER_LOG_FILENAME = "decoder_stderr.log"
DecodeFn = Callable[..., tuple[list[bytes], dict[str, Any]]]
Span = tuple[float, float]  # (start, end) seconds of a segment of a longer video


@dataclass(frozen=True)
class ExtractionTask:
    """One clip to extract: a whole video (span None), a segment of one, or an image."""

    video_id: str
    path: Path
    span: Span | None = None


class VideoDecodeError(Exception):
    """A video cannot be extracted; the message is the one-line reason reported to the user."""


class ExtractionError(RuntimeError):
    """The run as a whole failed (--strict with failures, or no video could be stored)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


# ---- helpers shared by the parent and the workers ---------------------------------------------
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


def find_videos(root: Path) -> list[tuple[str, Path]]:
    """(id, path) of every video or image file under `root`, sorted by id; ids use forward slashes.

    Ids must be valid UTF-8 to be JSON-encoded into the index: os.walk turns undecodable bytes
    of a file name into lone surrogates, which are replaced here (the path stays exact).
    """
    found: list[tuple[str, Path]] = []
    visited_dirs: set[tuple[int, int]] = set()
    for directory, subdirs, filenames in os.walk(root, followlinks=True):
        status = os.stat(directory)
        if (status.st_dev, status.st_ino) in visited_dirs:  # a symlink loop
            subdirs[:], filenames = [], []
        visited_dirs.add((status.st_dev, status.st_ino))
        for filename in filenames:
            if os.path.splitext(filename)[1].lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
                path = Path(directory) / filename
                video_id = path.relative_to(root).as_posix()
                found.append((video_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), path))
    return sorted(found)


def _short(error: BaseException, limit: int = 200) -> str:
    """One line of an exception message, without decord's "[hh:mm:ss] /src/file.cc:123:" prefixes."""
    text = str(error).strip() or type(error).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: |\[Errno -?\d+\] ", "", text.splitlines()[0])
    if not isinstance(error, VideoDecodeError):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- worker side: decode, resize and JPEG-encode one video -------------------------------------
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


def _decode_image(path: str, short_side: int) -> _DecodedClip:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # phone photos: EXIF orientation, as viewers show them
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise VideoDecodeError(f"not a readable image ({_short(error).replace(path, os.path.basename(path))})") from None
    return _DecodedClip(images=[_resize(image, short_side)], frame_times=[0.0], src_frames=1, src_fps=0.0,
                        duration=0.0, src_width=image.width, src_height=image.height, decoder="image")


def _check_resolution(path: str, max_pixels: int) -> None:
    """Refuse a video whose frames exceed `max_pixels` before any frame is decoded (header only)."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return  # the decoders give the precise reason
            context = container.streams.video[0].codec_context
            width, height = context.width, context.height
    except av.error.FFmpegError:
        return
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
        return _encode(_decode_image(path, short_side), quality)
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


def _init_worker(stderr_log: str | None) -> None:
    # decord and FFmpeg print straight to file descriptor 2, bypassing Python logging; one
    # line per hostile file would shred the progress bar, so workers write them to a log.
    if stderr_log:
        log_fd = os.open(stderr_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log_fd, 2)
        os.close(log_fd)


def _run_with_time_limit(decode: DecodeFn, timeout_s: int, path: str, frames: int, short_side: int,
                         quality: int, options: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    # SIG_DFL terminates the worker even when it is stuck inside C code (a Python
    # handler would never run there); the parent then sees a crashed pool.
    if timeout_s > 0:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(timeout_s)
    try:
        return decode(path, frames, short_side, quality, **options)
    finally:
        if timeout_s > 0:
            signal.alarm(0)


# ---- parent side: the pool, crash recovery, the store, the summary -----------------------------
def _decode_all(tasks: Sequence[ExtractionTask | tuple[str, Path]], *, frames: int, short_side: int, quality: int,
                workers: int, timeout_s: int, decode: DecodeFn = extract_video, stderr_log: Path | None = None,
                options: dict[str, Any] | None = None,
                ) -> Iterator[tuple[str, tuple[list[bytes], dict[str, Any]] | None, str | None]]:
    """Yield ``(video_id, (jpegs, meta) or None, failure reason or None)`` as workers finish.

    When a worker dies, every in-flight video is a suspect: after recreating the pool the
    suspects run one at a time, so only the video that really kills a worker is failed.
    """
    pending = deque(task if isinstance(task, ExtractionTask) else ExtractionTask(*task) for task in tasks)
    suspects: deque[ExtractionTask] = deque()
    max_in_flight = 2 * workers  # bounded, so finished clips never pile up in memory
    context = multiprocessing.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                   initargs=(str(stderr_log) if stderr_log else None,))

    pool = new_pool()
    in_flight: dict[Future, tuple[ExtractionTask, bool]] = {}

    def submitted(queue: deque[ExtractionTask], isolated: bool) -> bool:
        task = queue.popleft()
        task_options = {**(options or {}), **({"span": task.span} if task.span is not None else {})}
        try:
            future = pool.submit(_run_with_time_limit, decode, timeout_s, str(task.path), frames, short_side, quality,
                                 task_options)
        except BrokenProcessPool:  # a worker died between tasks: not this video's fault
            queue.appendleft(task)
            return False
        in_flight[future] = (task, isolated)
        return True

    try:
        while pending or suspects or in_flight:
            pool_broke = False
            if suspects:
                if not in_flight:
                    pool_broke = not submitted(suspects, isolated=True)
            else:
                while pending and len(in_flight) < max_in_flight and not pool_broke:
                    pool_broke = not submitted(pending, isolated=False)
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED) if in_flight else (set(), set())
            for future in finished:
                task, isolated = in_flight.pop(future)
                video_id = task.video_id
                error = future.exception()
                if isinstance(error, BrokenProcessPool):
                    pool_broke = True
                    if isolated:
                        yield video_id, None, (f"{CRASH_REASON} (segfault, out of memory, or over the "
                                               f"{timeout_s} s time limit)")
                    else:
                        suspects.append(task)
                elif error is not None:
                    yield video_id, None, _short(error)
                else:
                    yield video_id, future.result(), None
            if pool_broke:
                suspects.extend(task for task, _ in in_flight.values())
                in_flight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                logger.warning("a decoder process crashed; retrying %d in-flight videos one at a time", len(suspects))
                pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_atomically(path: Path, text: str) -> None:
    path.with_name(path.name + ".tmp").write_text(text, encoding="utf-8")
    os.replace(path.with_name(path.name + ".tmp"), path)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [(f"frame extraction: {summary['done']} done ({summary.get('changed', 0)} changed since stored), "
              f"{summary['skipped']} skipped (already stored), {summary['failed']} failed, "
              f"{summary['videos_per_s']:.2f} videos/s -> {summary['store']} (decoder messages: {DECODER_LOG_FILENAME})")]
    for failure in summary["failures"][:SUMMARY_FAILURES_SHOWN]:
        lines.append(f"  failed: {failure['video']}: {failure['reason']}")
    if summary["failed"] > SUMMARY_FAILURES_SHOWN:
        lines.append(f"  ... and {summary['failed'] - SUMMARY_FAILURES_SHOWN} more in {summary['store']}/failed.jsonl")
    return "\n".join(lines)


def _plan(videos: list[tuple[str, Path]], segments: dict[str, tuple[str, Span]]
          ) -> tuple[list[ExtractionTask], list[dict[str, str]]]:
    """Tasks for every file and every annotated segment; ids claimed twice are failures of the later path."""
    tasks: list[ExtractionTask] = []
    duplicates: list[dict[str, str]] = []
    path_of: dict[str, Path] = {}
    for video_id, path in videos:
        if video_id in path_of:
            # Two file names that differ only in bytes which are not UTF-8 map to one id.
            duplicates.append({"video": video_id, "reason": f"duplicate id: {path.name!r} maps to the same id as "
                                                            f"{path_of[video_id].name!r}, which was kept"})
            continue
        path_of[video_id] = path
        tasks.append(ExtractionTask(video_id, path))
    for clip_id, (video_id, span) in sorted(segments.items()):
        if video_id in path_of:  # rows of unknown videos are reported by the annotation step
            tasks.append(ExtractionTask(clip_id, path_of[video_id], span))
    return tasks, duplicates


def extract(data_dir: PathLike, *, frames: int = 16, short_side: int = 256, quality: int = 90,
            workers: int | None = None, strict: bool = False, store_dir: PathLike | None = None,
            timeout_s: int = DEFAULT_TIMEOUT_S, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Extract every video and image under DATA/videos, and every segment the annotations name (rows with
    start/end seconds), into the clip store; returns (and writes) the summary.

    A clip already stored is skipped unless its source file's size or modification time changed since (then
    it is extracted again and the new entry replaces the old). Raises FileNotFoundError when there are no
    videos, and ExtractionError (after writing the summary) when ``strict`` and some video failed, or when no
    video could be stored at all.
    """
    from prepare.annotations import (
        find_segments,  # imported here: it pulls in HF datasets
    )

    source = videos_dir(data_dir)
    store = Path(store_dir) if store_dir is not None else default_store_dir(data_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"no videos directory: {source} does not exist")
    videos = find_videos(source)
    if not videos:
        raise FileNotFoundError(f"no videos found under {source} (extensions: "
                                f"{', '.join(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS))})")
    workers = max(1, workers or os.cpu_count() or 1)
    tasks, failures = _plan(videos, find_segments(data_dir))

    decoders: Counter[str] = Counter()
    started = time.monotonic()
    with ClipStoreWriter(store, frames_per_video=frames, short_side=short_side, jpeg_quality=quality) as writer:
        todo, changed, source_of = [], 0, {}
        for task in tasks:
            status = task.path.stat()
            current = (status.st_size, status.st_mtime_ns)
            stored = writer.stored_source(task.video_id)
            if stored is not None and stored in (current, (-1, -1)):  # (-1, -1): stored before this was recorded
                continue
            changed += stored is not None
            todo.append(task)
            source_of[task.video_id] = current
        skipped = len(tasks) - len(todo)
        logger.info("%d clips found, %d already in %s, %d to extract (%d changed since)", len(tasks), skipped,
                    store, len(todo), changed)
        stderr_log = store / DECODER_LOG_FILENAME
        stderr_log.write_bytes(b"")  # messages of this run only, like failed.jsonl
        options = {"max_pixels": max_pixels} if max_pixels != DEFAULT_MAX_PIXELS else {}
        results = _decode_all(todo, frames=frames, short_side=short_side, quality=quality, workers=workers,
                              timeout_s=timeout_s, stderr_log=stderr_log, options=options)
        with contextlib.closing(results), logging_redirect_tqdm(), \
                tqdm(total=len(todo), unit="video", desc="extracting", dynamic_ncols=True) as progress:
            for video_id, result, reason in results:
                if result is None:
                    failures.append({"video": video_id, "reason": reason or "unknown error"})
                else:
                    jpegs, meta = result
                    size, mtime_ns = source_of[video_id]
                    writer.add(video_id, jpegs, {**meta, "src_size": size, "src_mtime_ns": mtime_ns})
                    decoders[meta["decoder"]] += 1
                progress.update(1)
                progress.set_postfix(failed=len(failures), refresh=False)
    elapsed = time.monotonic() - started
    done = sum(decoders.values())
    failures.sort(key=lambda failure: failure["video"])
    summary: dict[str, Any] = {
        "done": done, "skipped": skipped, "changed": changed, "failed": len(failures), "failures": failures,
        "segments": sum(task.span is not None for task in tasks),
        "videos_per_s": round((done + len(failures)) / elapsed, 3) if elapsed > 0 else 0.0,
        "frames_per_video": frames, "short_side": short_side, "jpeg_quality": quality,
        "decoders": dict(decoders), "elapsed_s": round(elapsed, 3), "store": str(store),
    }
    _write_atomically(store / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    failed_path = store / "failed.jsonl"
    _write_atomically(failed_path, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
    print(format_summary(summary))
    if failures and strict:
        raise ExtractionError(f"--strict: {len(failures)} of {len(tasks)} clips failed; see {failed_path}", summary)
    if failures and done == 0 and skipped == 0:
        raise ExtractionError(f"every video failed ({len(failures)}); see {failed_path}", summary)
    return summary


def _int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high or 'inf'}, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prepare.extract",
                                     description="Extract uniformly spaced JPEG frames of DATA/videos.")
    parser.add_argument("data_dir", metavar="DATA", type=Path)
    parser.add_argument("--frames", type=_int_between(1), default=16, help="frames stored per video (default 16)")
    parser.add_argument("--short-side", type=_int_between(1), default=256,
                        help="downscale so the shorter side is this (never upscales; default 256)")
    parser.add_argument("--quality", type=_int_between(1, 100), default=90, help="JPEG quality (default 90)")
    parser.add_argument("--workers", type=_int_between(1), default=None, help="decoder processes (default: all cores)")
    parser.add_argument("--timeout", type=_int_between(1), default=DEFAULT_TIMEOUT_S,
                        help=f"seconds one video may take before its decoder is killed (default {DEFAULT_TIMEOUT_S})")
    parser.add_argument("--max-pixels", type=_int_between(1), default=DEFAULT_MAX_PIXELS,
                        help=f"refuse videos with more pixels per frame (default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any video failed")
    parser.add_argument("--store", type=Path, default=None, help="clip store directory (default DATA/clip_store)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        extract(args.data_dir, frames=args.frames, short_side=args.short_side, quality=args.quality,
                workers=args.workers, strict=args.strict, store_dir=args.store, timeout_s=args.timeout,
                max_pixels=args.max_pixels)
    except (ExtractionError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished videos are stored; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    # Run through the importable module, not __main__, so the functions the spawn
    # workers unpickle resolve to prepare.extract.
    from prepare.extract import main as _main

    sys.exit(_main())
