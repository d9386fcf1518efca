"""Atomic writes for everything preparation produces: readers (and a re-run after a crash) see the old complete
file or directory or the new one, never a half-written one. Staging names start with "." and carry a random
suffix so concurrent writers and leftovers of killed runs never collide with real outputs."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _staging_name(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex}"


def write_text_atomically(path: Path, text: str) -> None:
    staging = _staging_name(path, "tmp")
    try:
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, value: Any) -> None:
    write_text_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomically(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomically(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def replace_dir_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write into a sibling staging directory, then swap it in with renames."""
    # Not tempfile.mkdtemp: its 0700 mode would survive the rename and hide the result from other users of a
    # shared DATA directory.
    staging = _staging_name(target, "tmp")
    staging.mkdir()
    try:
        write(staging)
        if target.exists():
            retired = _staging_name(target, "old")
            os.rename(target, retired)
            os.rename(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_leftovers(out_dir: Path, name: str) -> None:
    """Staging/retired copies of `name` left behind by an interrupted earlier run."""
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for leftover in out_dir.glob(pattern):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
