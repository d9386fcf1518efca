"""Extract N uniformly spaced frames per video (and per annotated segment, and per image) into a clip store.

    python -m prepare.extract DATA [--frames 16] [--short-side 256] [--quality 90] [--workers N]
                                   [--timeout 900] [--max-pixels N] [--strict] [--store DIR]

Decoding itself is in violet/data/decode.py. A resumed run skips stored clips whose source file kept its size and
modification time, and extracts again those whose file was replaced.

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
import json
import logging
import multiprocessing
import os
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

from violet.data.decode import (  # noqa: F401 - _decode_with_* and output_size are re-exported for tests and callers
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    Span,
    VideoDecodeError,
    _decode_with_decord,
    _decode_with_pyav,
    _short,
    extract_video,
    output_size,
    uniform_frame_indices,
)
from prepare.atomic import write_text_atomically
from violet.data.layout import PathLike, default_store_dir, videos_dir
from violet.data.clip_store import ClipStoreWriter

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".avi", ".gif", ".mkv", ".mov", ".m4v"})
# IMAGE_EXTENSIONS (from prepare.decode) are found too: images become 1-frame clips, as VIOLET mixes CC3M in.
DEFAULT_TIMEOUT_S = 900
SUMMARY_FAILURES_SHOWN = 20
CRASH_REASON = "decoder process crashed"
DECODER_LOG_FILENAME = "decoder_stderr.log"
DecodeFn = Callable[..., tuple[list[bytes], dict[str, Any]]]


@dataclass(frozen=True)
class ExtractionTask:
    """One clip to extract: a whole video (span None), a segment of one, or an image."""

    video_id: str
    path: Path
    span: Span | None = None


class ExtractionError(RuntimeError):
    """The run as a whole failed (--strict with failures, or no video could be stored)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


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
        # Applies to images as to videos (extract_video checks both); passed only when set, so decode functions
        # without the option keep working.
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
    write_text_atomically(store / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    failed_path = store / "failed.jsonl"
    write_text_atomically(failed_path, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
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
                        help=f"refuse videos and images with more pixels per frame (default {DEFAULT_MAX_PIXELS})")
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
