"""Reading source files row by row, so that rows fail one at a time: the readers of the downloaded CSV/TSV,
text and JSON files the converters use, and the JSON row parser prepare.annotations uses too.

A single hostile row must never stop a whole preparation. `json.loads` raises RecursionError (not a
JSONDecodeError) for a value nested a few thousand levels deep, and accepts lone surrogates ("\\ud800"),
which parse fine but fail much later, when a UTF-8 writer (Arrow, a JSONL file) meets them; bytes that are
not UTF-8 stop a strict whole-file decode. So files are decoded with surrogateescape, every parsed row is
checked for surrogates, and a JSON list is split into its entries by an iterative scan (nesting costs no
recursion there) so that each entry is parsed, and can fail, on its own, with its line.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
# Everything up to the next bracket or comma outside a string (strings are skipped whole), then that character;
# or a quote that opens a string never closed; or the end of the text.
_STRUCTURE = re.compile(r'[^"\[\]{},]*(?:' + _STRING + r'[^"\[\]{},]*)*(?:([\[\]{},])|(")|\Z)', re.S)
# Raw surrogates (bytes that were not UTF-8) or a \u escape of one: only then are parsed entries walked for them.
_MAYBE_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")
_KEY = re.compile(r"(" + _STRING + r")\s*:\s*", re.S)
_SPACE = re.compile(r"\s*")
_LATER_LINE = re.compile(r"\n\s*\S")  # text on a line after the first: entries need their line numbers


class ConvertError(Exception):
    """A problem with the downloaded files as a whole (missing file, wrong columns); nothing is written."""


@dataclass(frozen=True)
class Row:
    """One line of a tabular source file, with where it came from."""

    where: str
    values: dict[str, str]


class RowError(ValueError):
    """One row cannot be used; str() is the reason. `column` is where JSON parsing stopped (0: unknown)."""

    def __init__(self, reason: str, column: int = 0) -> None:
        super().__init__(reason)
        self.column = column


def surrogate_reason(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # what surrogateescape made of a byte that is not UTF-8
        return f"not valid UTF-8 (byte 0x{code - 0xDC00:02x})"
    return f"not valid Unicode: lone surrogate {char!r} (half of a \\u escape pair)"


def text_problem(value: Any) -> str | None:
    """Why `value` (parsed JSON, a string, a list of cells) cannot be written as UTF-8: its first surrogate."""
    stack = [value]
    while stack:  # iterative: the depth is whatever the parser accepted
        item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return surrogate_reason(found.group())
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


def parse_json(text: str) -> Any:
    """`json.loads` for one row: RowError for invalid JSON, nesting too deep to parse, or a lone surrogate."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RowError(f"invalid JSON: {error.msg}", error.colno if error.lineno == 1 else 0) from None
    except RecursionError:
        raise RowError("invalid JSON: nested too deeply to parse") from None
    problem = text_problem(value)
    if problem:
        raise RowError(problem)
    return value


def text_lines(path: Path, label: str) -> Iterator[tuple[str, str, str]]:
    """(where, line, problem) for each non-blank line of a text file; problem is '' for a usable line."""
    text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield f"{label}:{number}", line, text_problem(line) or ""


@dataclass(frozen=True)
class Entry:
    """One entry of a JSON list: its place (``file:line [index]``) and its value, or why it has none."""

    where: str
    value: Any = None
    problem: str = ""


class _Lines:
    """Line numbers of increasing offsets into one text, counted as the scan moves on (never from the start)."""

    def __init__(self, text: str) -> None:
        self.text, self.offset, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _split(text: str, start: int) -> tuple[list[tuple[int, int]], int]:
    """Spans of the items of the list or object that opens at text[start], and the offset after it closes."""
    depth, spans, begin = 0, [], start + 1
    for match in _STRUCTURE.finditer(text, start):
        char = match.group(1)
        if char is None:
            if match.group(2):
                raise ValueError(f"{_line_of(text, match.start(2))}: invalid JSON: a string is never closed")
            break  # the end of the text
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                if spans or text[begin:match.start(1)].strip():
                    spans.append((_SPACE.match(text, begin).end(), match.start(1)))
                return spans, match.end()
        elif depth == 1:  # a comma between two items of this container
            spans.append((_SPACE.match(text, begin).end(), match.start(1)))
            begin = match.end()
    raise ValueError(f"{_line_of(text, start)}: invalid JSON: this {'list' if text[start] == '[' else 'object'} "
                     "is never closed (a truncated download?)")


def _entry(text: str, span: tuple[int, int], where: str) -> Entry:
    try:
        return Entry(where, parse_json(text[span[0]:span[1]]))
    except RowError as error:
        return Entry(where, problem=str(error))


def _layout(text: str, start: int) -> list[tuple[int, int]] | dict[str, tuple[int, int] | list[tuple[int, int]]]:
    """Where each entry lies: spans of the top-level list's items, or per member of a top-level object the span
    of its value, or of each item when the value is a list."""
    spans, end = _split(text, start)
    if _SPACE.match(text, end).end() != len(text):
        raise ValueError(f"{_line_of(text, end)}: invalid JSON: extra data after the top-level value")
    if text[start] == "[":
        return spans
    members: dict[str, tuple[int, int] | list[tuple[int, int]]] = {}
    for span in spans:
        key = _KEY.match(text, span[0])
        if key is None or key.end() > span[1]:
            raise ValueError(f"{_line_of(text, span[0])}: invalid JSON: expected '\"name\": value' in the object")
        value = key.end()
        members[json.loads(key.group(1))] = _split(text, value)[0] if text[value] == "[" else (value, span[1])
    return members


def json_entries(text: str, label: str) -> list[Entry] | dict[str, list[Entry] | Entry]:
    """The entries of the JSON list in `text`, or for a top-level object each member's value (a list's items
    as entries too), placed as ``label:line [index]``. A file that parses as a whole (the usual case) is parsed
    once and only scanned for lines when it has several; otherwise each entry is parsed, and fails, on its own.
    Raises ValueError("LINE: reason") when the text as a whole is not one list or object."""
    start = _SPACE.match(text).end()
    if start == len(text) or text[start] not in "[{":
        raise ValueError(f"{_line_of(text, start)}: expected a JSON list or object")
    try:
        whole, parsed = json.loads(text), True
    except (ValueError, RecursionError):
        whole, parsed = None, False
    layout = _layout(text, start) if not parsed or _LATER_LINE.search(text, start) else None
    check = not parsed or _MAYBE_SURROGATE.search(text) is not None
    lines = _Lines(text)

    def entry(place: str, value: Any, span: tuple[int, int] | None) -> Entry:
        where = f"{label}:{lines.at(span[0]) if span else 1} [{place}]"
        if not parsed:
            return _entry(text, span, where)
        problem = text_problem(value) if check else None
        return Entry(where, problem=problem) if problem else Entry(where, value)

    def items(prefix: str, values: list | None, spans: list | None) -> list[Entry]:
        count = len(values) if parsed else len(spans)
        return [entry(f"{prefix}{i}", values[i] if parsed else None, spans[i] if spans else None)
                for i in range(count)]

    if text[start] == "[":
        return items("", whole, layout)
    members: dict[str, list[Entry] | Entry] = {}
    for key in whole if parsed else layout:
        value, where = whole[key] if parsed else None, layout[key] if layout else None
        place = key.encode("utf-8", "backslashreplace").decode("utf-8")  # a key is printed, never written raw
        members[key] = items(f"{place} ", value, where) if isinstance(value if parsed else where, list) \
            else entry(place, value, where)
    return members


def read_table(path: Path, src: Path, *, delimiter: str, columns: Sequence[str] | None = None,
               required: Sequence[str] = (), quoting: int = csv.QUOTE_MINIMAL) -> Iterator[Row | tuple[str, str]]:
    """Rows of a CSV/TSV file as :class:`Row`, or ``(where, problem)`` for a row with the wrong width.

    ``columns`` names the fields of a header-less file; otherwise the first line is the header and
    must contain every name in ``required`` (a missing one is a :class:`ConvertError`).
    Tab-separated releases (TGIF-QA, LSMDC) contain bare quotes inside sentences, hence
    ``quoting=csv.QUOTE_NONE`` for them.
    """
    label = display_path(path, src)
    # surrogateescape: a byte that is not UTF-8 fails its own row (below), not the whole file's decode.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        if columns is None:
            header = next(reader, None)
            if header is None:
                raise ConvertError(f"{label} is empty")
            names = [name.strip() for name in header]
            missing = [name for name in required if name not in names]
            if missing:
                raise ConvertError(f"{label}:1: header {names} lacks column(s) {missing}")
        else:
            names = list(columns)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over csv.field_size_limit(); the reader goes on after it
                yield f"{label}:{reader.line_num}", f"unreadable row ({error})"
                continue
            where = f"{label}:{reader.line_num}"
            if not any(cell.strip() for cell in cells):
                continue
            problem = text_problem(cells) or (f"expected {len(names)} fields ({delimiter!r}-separated), got "
                                              f"{len(cells)}" if len(cells) != len(names) else "")
            if problem:
                yield where, problem
                continue
            yield Row(where, dict(zip(names, cells)))


def read_json_entries(path: Path, src: Path) -> list[Entry] | dict[str, list[Entry] | Entry]:
    """The entries of a downloaded JSON list (or of each list in a top-level object), each parsed on its own
    and placed as ``file:line [index]``: a bad entry is one skipped row. ConvertError when the file as a whole
    is not such a list or object (truncated, another format)."""
    label = display_path(path, src)
    try:
        return json_entries(path.read_text(encoding="utf-8-sig", errors="surrogateescape"), label)
    except ValueError as error:
        raise ConvertError(f"{label}:{error}") from None


def option_index(text: str, count: int, first: int = 0) -> int | None:
    """The 0-based option a source's answer column names (numbered from `first`), None unless it is one:
    only ASCII digits count ('²'.isdigit() is true, and int() of 5,000 digits raises)."""
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6 or not first <= int(text) < first + count:
        return None
    return int(text) - first


def display_path(path: Path, src: Path) -> str:
    try:
        return path.relative_to(src).as_posix()
    except ValueError:
        return str(path)


def clean_text(value: Any) -> str:
    """Collapse whitespace; non-strings become '' so the caller reports them as empty."""
    return " ".join(value.split()) if isinstance(value, str) else ""
