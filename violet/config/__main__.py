"""Print the config a run would use, without training or reading data.

    python -m violet.config --task T [--model M] [--config x.yaml] [--init RUN] [section.key=value ...]
    python -m violet.config --list-keys

Takes the same config flags as train.py, so a train.py command line can be checked by swapping the command; the
config is built by the same `violet.runtime.build_config`. An entry point: the only module of violet.config that
imports the rest of violet.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import yaml

from violet.config.errors import ConfigError
from violet.config.keys import format_keys, list_keys
from violet.engine.rundir import RunDirError
from violet.models import PRESETS
from violet.runtime import build_config
from violet.tasks import TASKS, get_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m violet.config", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)  # --out must not silently mean --output-dir
    parser.add_argument("--task", choices=sorted(TASKS), help="required unless --list-keys")
    parser.add_argument("--model", choices=sorted(PRESETS),
                        help="model preset (default tiny; with --init: the checkpoint's)")
    parser.add_argument("--config", help="YAML file with config sections (model, data, train, objective, eval)")
    parser.add_argument("--init", help="a run directory to fine-tune from: its architecture replaces the preset")
    parser.add_argument("--data", default="", help="only recorded as data.data_dir; not read or checked here")
    parser.add_argument("--output-dir", default="")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--format", choices=("json", "yaml"),
                        help="output format (default: json; with --list-keys a table)")
    parser.add_argument("--list-keys", action="store_true",
                        help="print every key with its type, default and description instead")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 model.width=256")
    return parser


def resolve(args: argparse.Namespace) -> str:
    """The resolved config of `args`, formatted; raises ConfigError / RunDirError for the user to fix."""
    config = build_config(
        get_task(args.task), model=args.model, config_file=args.config, dotted=args.overrides,
        flags={"train": {"max_steps": args.max_steps, "batch_size": args.batch_size}},
        init=args.init or "", data_dir=args.data, output_dir=args.output_dir, resume=args.resume,
    )
    if args.format == "yaml":
        return yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip()
    return config.to_json()


def describe_keys(form: str | None) -> str:
    keys = list_keys()
    if form is None:
        return format_keys(keys)
    rows = [dataclasses.asdict(key) for key in keys]
    return json.dumps(rows, indent=2) if form == "json" else yaml.safe_dump(rows, sort_keys=False).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # dotted overrides may come before or after flags
    if args.list_keys:
        print(describe_keys(args.format))
        return 0
    if not args.task:
        parser.error("--task is required (or --list-keys)")
    try:
        print(resolve(args))
    except (ConfigError, RunDirError) as error:  # the user's to fix: the message, no traceback
        raise SystemExit(f"config error: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
