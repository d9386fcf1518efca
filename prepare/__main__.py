"""``python -m prepare DATA``: extract frames into the clip store, then prepare annotations.

Annotations are checked against the clip store, so extraction must run first;
rows whose video failed to extract are dropped (and counted) by the
annotation step rather than failing the whole run, unless ``--strict``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from prepare.annotations import (
    DEFAULT_ANSWER_TOP_K,
    AnnotationError,
    format_summary,
    positive_int,
    prepare_annotations,
)
from violet.data.layout import videos_dir


def _count(value: Any) -> int:
    """extract() reports counts; accept a list/dict of items too, to be tolerant."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return len(value)


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be in 1..100, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prepare",
        description="Extract video frames into DATA/clip_store, then validate DATA/annotations "
                    "and write Hugging Face datasets to DATA/hf.",
    )
    parser.add_argument("data_dir", metavar="DATA", type=Path)
    parser.add_argument("--frames", type=positive_int, default=16, help="frames stored per video")
    parser.add_argument("--short-side", type=positive_int, default=256, help="resize frames to this short side")
    parser.add_argument("--quality", type=_quality, default=90, help="JPEG quality of stored frames")
    parser.add_argument("--workers", type=positive_int, default=None, help="extraction processes (default: auto)")
    parser.add_argument("--max-pixels", type=positive_int, default=None,
                        help="refuse videos and images with more pixels per frame (default: prepare.extract's, 8192x8192)")
    parser.add_argument("--answer-top-k", type=positive_int, default=DEFAULT_ANSWER_TOP_K,
                        help="size of the open-ended answer vocabulary, from the train split")
    parser.add_argument("--strict", action="store_true",
                        help="fail on any extraction failure or invalid annotation row")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    # Imported lazily: extraction pulls in video decoding libraries that the
    # annotation-only entry point (python -m prepare.annotations) never needs.
    extraction_module = importlib.import_module("prepare.extract")
    try:
        extraction = extraction_module.extract(
            args.data_dir,
            frames=args.frames,
            short_side=args.short_side,
            quality=args.quality,
            workers=args.workers,
            strict=args.strict,
            **({"max_pixels": args.max_pixels} if args.max_pixels else {}),
        )
    except Exception as error:  # noqa: BLE001 - extract() raises for strict failures and unusable inputs
        print(f"error: frame extraction failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1

    done = _count(extraction.get("done"))
    skipped = _count(extraction.get("skipped"))
    failed = _count(extraction.get("failed"))
    extraction_line = f"frame extraction: {done} extracted, {skipped} already stored, {failed} failed"
    if args.strict and failed:
        print(extraction_line)
        print(f"error: --strict: {failed} video(s) failed extraction; annotations not prepared", file=sys.stderr)
        return 1
    if done + skipped == 0:
        print(extraction_line)
        print(f"error: no video is in the clip store after extraction; check {videos_dir(args.data_dir)}",
              file=sys.stderr)
        return 1

    datasets.disable_progress_bars()  # one bar per split drowns the summary table
    try:
        annotation_summary = prepare_annotations(
            args.data_dir, answer_top_k=args.answer_top_k, strict=args.strict
        )
    except AnnotationError as error:
        print(extraction_line)
        print(f"error: {error}", file=sys.stderr)
        return 1

    print("== summary ==")
    print(extraction_line)
    if failed:
        print(f"warning: {failed} video(s) failed extraction; their annotation rows are counted as missing_video")
    print(format_summary(annotation_summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
