"""Answer a question about one video with a qa-mc run (choose among --options) or a qa-oe run (open-ended).

    python -m violet.answer --checkpoint RUN VIDEO "what moves first?" [--options a b c d] [--json]

Multiple choice prints every option with its probability and marks the chosen one; open-ended prints the most
likely answers of the run's answer vocabulary with their probabilities.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any


def format_answer(result: dict[str, Any], options: Sequence[str] | None) -> str:
    if options is not None:
        return "\n".join(f"{'*' if i == result['choice'] else ' '} {i}  {p:.3f}  {option}"
                         for i, (option, p) in enumerate(zip(options, result["probabilities"])))
    return "\n".join(f"{entry['probability']:.3f}  {entry['answer']}" for entry in result["answers"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m violet.answer", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a qa-mc or qa-oe run directory of train.py")
    parser.add_argument("video", help="a video or image file")
    parser.add_argument("question")
    parser.add_argument("--options", nargs="+", default=None, help="answer options (multiple choice)")
    parser.add_argument("--top-k", type=int, default=5, help="open-ended: answers to show (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # --options may come before or after the positionals
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Imported after parsing: --help and usage errors need none of the model code.
    from violet.api import RunCapabilityError, VideoFileError, load
    from violet.engine.rundir import RunDirError

    try:
        result = load(args.checkpoint, args.device).answer(args.video, args.question, args.options, args.top_k)
    except (VideoFileError, RunCapabilityError, RunDirError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"video": args.video, "question": args.question, **result}, indent=2))
    else:
        print(format_answer(result, args.options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
