"""Every config key with its type, default and the comment that describes it (`python -m violet.config --list-keys`).

The descriptions are read from the comments in sections.py, so the listing and the source cannot drift apart.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
from dataclasses import dataclass
from typing import Any

from violet.config import sections
from violet.config.sections import RunConfig


@dataclass(frozen=True)
class Key:
    name: str  # dotted, e.g. train.lr
    type: str
    default: Any
    comment: str


def list_keys() -> list[Key]:
    """Top-level keys first, then each section's keys in declaration order."""
    comments = _field_comments()
    keys, nested = [], []
    for field in dataclasses.fields(RunConfig):
        default = _default(field)
        if dataclasses.is_dataclass(default):
            nested.append((field.name, default))
        else:
            keys.append(Key(field.name, str(field.type), default, comments.get(("RunConfig", field.name), "")))
    for section, instance in nested:
        owner = type(instance).__name__
        for field in dataclasses.fields(instance):
            keys.append(Key(f"{section}.{field.name}", str(field.type), getattr(instance, field.name),
                            comments.get((owner, field.name), "")))
    return keys


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment on the field's line, else the comment block right above it."""
    try:
        source = inspect.getsource(sections)
    except OSError:  # installed without sources (only .pyc): list the keys without descriptions
        return {}
    trailing, full_line = _comments(source)
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                text = trailing.get(statement.lineno) or _block_above(full_line, statement.lineno)
                found[(node.name, statement.target.id)] = text
    return found


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """Comments by line number: those after code on their line, and those alone on their line."""
    trailing, full_line = {}, {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = not token.line[: token.start[1]].strip()
            (full_line if alone else trailing)[token.start[0]] = token.string.lstrip("#").strip()
    return trailing, full_line


def _block_above(full_line: dict[int, str], line: int) -> str:
    """The full-line comments directly above `line`; a heading like `# --- family ---` ends the block."""
    block = []
    line -= 1
    while line in full_line and not full_line[line].startswith("---"):
        block.insert(0, full_line[line])
        line -= 1
    return " ".join(block)


def format_keys(keys: list[Key]) -> str:
    """One line per key: name, type, default (as it would be written in YAML), description."""
    width = max(len(key.name) for key in keys)
    lines = []
    for key in keys:
        default = yaml_scalar(key.default)
        lines.append(f"{key.name:<{width}}  {key.type:<5}  {default:<22}  {key.comment}".rstrip())
    return "\n".join(lines)


def yaml_scalar(value: Any) -> str:
    """How the value is written in a config file or a dotted override: text quoted, booleans lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)
