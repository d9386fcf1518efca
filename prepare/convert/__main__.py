"""``python -m prepare.convert <dataset> --src DOWNLOADS --out DATA``: see docs/data.md."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from prepare.convert import CONVERTERS, Conversion, ConvertError
from prepare.convert.common import format_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prepare.convert",
        description="Convert a public data set's original annotation files to DATA/annotations/*.jsonl and "
                    "link its videos into DATA/videos. Then run `python -m prepare DATA`.")
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET",
                                     help=", ".join(CONVERTERS))
    for name, converter in CONVERTERS.items():
        sub = datasets.add_parser(name, help=converter.help, description=converter.help)
        sub.add_argument("--src", type=Path, required=True, help="folder with the downloaded annotation files")
        sub.add_argument("--out", type=Path, required=True, metavar="DATA", help="our data directory")
        sub.add_argument("--videos", type=Path, default=None,
                         help="folder with the downloaded videos (default: --src)")
        placement = sub.add_mutually_exclusive_group()
        placement.add_argument("--link", dest="copy", action="store_false",
                               help="symlink each video into DATA/videos (default)")
        placement.add_argument("--copy", dest="copy", action="store_true",
                               help="copy each video into DATA/videos (uses as much disk as the videos)")
        sub.set_defaults(copy=False)  # a store_false flag would otherwise make copying the default
        sub.add_argument("--val-fraction", type=float, default=0.0,
                         help="move this fraction of train videos (chosen by a hash of the path) to val")
        sub.add_argument("--strict", action="store_true",
                         help="fail, writing nothing, if any source row is malformed")
        if converter.add_arguments is not None:
            converter.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    converter = CONVERTERS[args.dataset]
    try:
        conversion = Conversion(args.dataset, args.src, args.videos or args.src, args.out, copy=args.copy,
                                val_fraction=args.val_fraction, index_by_stem=converter.index_by_stem)
        converter.run(conversion, args)
        if args.strict and conversion.skipped.get("malformed"):
            shown = "\n  ".join(conversion.examples["malformed"])
            raise ConvertError(f"--strict: {conversion.skipped['malformed']} malformed row(s); nothing written:"
                               f"\n  {shown}")
        summary = conversion.finish()
    except ConvertError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
