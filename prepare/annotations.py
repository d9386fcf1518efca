"""Validate user annotations and convert them to Hugging Face datasets.

``python -m prepare.annotations DATA`` reads ``DATA/annotations/{kind}_{split}.jsonl``
for every kind/split that exists, drops rows that are malformed (not UTF-8, not JSON,
nested too deeply, a lone surrogate, a missing or mistyped field) or whose video
is not in the clip store (reporting each with ``path:line: reason``), builds the
open-ended answer vocabulary from the train split, and writes one
``datasets.DatasetDict`` per kind to ``DATA/hf/{kind}`` plus ``summary.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from prepare.atomic import remove_leftovers, replace_dir_atomically, write_json_atomically
from prepare.convert.rows import RowError, parse_json
from violet.data.prepared import load_answer_vocab, load_prepared  # noqa: F401 - readers live there, re-exported
from violet.data.layout import (
    ANNOTATION_SUFFIX,
    ANNOTATIONS_DIRNAME,
    ANSWER_VOCAB_FILENAME,
    KINDS,
    SPLITS,
    SUMMARY_FILENAME,
    PathLike,
    annotation_path,
    annotations_dir,
    default_hf_dir,
    default_store_dir,
    normalize_video_id,
    segment_clip_id,
    store_index_path,
)
from violet.data.clip_store import ClipStore

DEFAULT_ANSWER_TOP_K = 1000
MAX_INVALID_EXAMPLES = 50
MAX_MISSING_VIDEO_EXAMPLES = 5
OOV_ANSWER_ID = -1

_STRING = datasets.Value("string")
_INT32 = datasets.Value("int32")
# Explicit features: empty or all-ASCII columns must not change type between runs.
FEATURES: dict[str, datasets.Features] = {
    "captions": datasets.Features({"video": _STRING, "caption": _STRING, "line": _INT32}),
    "qa_mc": datasets.Features({"video": _STRING, "question": _STRING, "options": datasets.List(_STRING),
                                "answer": _INT32, "line": _INT32}),
    "qa_oe": datasets.Features({"video": _STRING, "question": _STRING, "answer": _STRING,
                                "answer_id": _INT32, "line": _INT32}),
}


class AnnotationError(Exception):
    """A problem the user has to fix; the CLI prints it and exits 1."""


class InvalidRow(ValueError):
    """One annotation row is unusable; the message says why."""


_JSON_TYPE_NAMES = {type(None): "null", bool: "bool", int: "int", float: "float",
                    str: "string", list: "list", dict: "object"}


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _require(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise InvalidRow(f"missing required field {name!r}")
    return row[name]


def _require_string(row: dict[str, Any], name: str) -> str:
    """A non-blank string, returned unstripped."""
    value = _require(row, name)
    if not isinstance(value, str):
        raise InvalidRow(f"{name!r} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise InvalidRow(f"{name!r} is empty")
    return value


def _require_text(row: dict[str, Any], name: str) -> str:
    return _require_string(row, name).strip()


def _require_video(row: dict[str, Any]) -> str:
    # Not stripped: a file name may legitimately end in a space, and the
    # clip store keys on the exact relative path.
    value = _require_string(row, "video")
    unified = value.replace("\\", "/")
    if unified.startswith("/") or ".." in unified.split("/"):
        raise InvalidRow(f"'video' {value!r} must be a path relative to videos/")
    video_id = normalize_video_id(value)
    if not video_id:
        raise InvalidRow(f"'video' {value!r} names no file")
    return video_id


def _parse_segment(row: dict[str, Any]) -> tuple[float, float] | None:
    """Optional "start"/"end" seconds: the row is about that segment of its video (DiDeMo, ActivityNet)."""
    if "start" not in row and "end" not in row:
        return None
    bounds = []
    for name in ("start", "end"):
        value = _require(row, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRow(f"{name!r} must be a number of seconds, got {_json_type(value)} {value!r}")
        bounds.append(float(value))
    start, end = bounds
    if start < 0 or end <= start:
        raise InvalidRow(f"segment start={start:g} end={end:g} must satisfy 0 <= start < end")
    return start, end


def find_segments(data_dir: PathLike) -> dict[str, tuple[str, tuple[float, float]]]:
    """Clip id -> (video id, (start, end)) for every valid annotation row with a segment, any kind and split.

    Extraction calls this to cut those clips; invalid rows are skipped here and reported by the annotation step.
    """
    segments: dict[str, tuple[str, tuple[float, float]]] = {}
    for kind in KINDS:
        for split in SPLITS:
            path = annotation_path(data_dir, kind, split)
            if not path.is_file():
                continue
            with path.open("rb") as annotation_file:
                for raw_line in annotation_file:
                    if b'"start"' not in raw_line and b'"end"' not in raw_line:
                        continue  # most rows: no JSON parsing needed
                    try:  # parse_json: a row nested too deeply raises RowError here, not RecursionError
                        row = parse_json(raw_line.decode("utf-8").strip().removeprefix("\ufeff"))
                        span = _parse_segment(row) if isinstance(row, dict) else None
                        if span is not None:
                            video = _require_video(row)
                            segments[segment_clip_id(video, *span)] = (video, span)
                    except (ValueError, InvalidRow):
                        continue
    return segments


def _parse_caption(row: dict[str, Any]) -> dict[str, Any]:
    return {"video": _require_video(row), "caption": _require_text(row, "caption")}


def _parse_qa_mc(row: dict[str, Any]) -> dict[str, Any]:
    video = _require_video(row)
    question = _require_text(row, "question")
    options = _require(row, "options")
    if not isinstance(options, list):
        raise InvalidRow(f"'options' must be a list of strings, got {_json_type(options)}")
    if len(options) < 2:
        raise InvalidRow(f"'options' needs at least 2 entries, got {len(options)}")
    clean_options = []
    for position, option in enumerate(options):
        if not isinstance(option, str):
            raise InvalidRow(f"'options'[{position}] must be a string, got {_json_type(option)}")
        if not option.strip():
            raise InvalidRow(f"'options'[{position}] is empty")
        clean_options.append(option.strip())
    answer = _require(row, "answer")
    # bool is a subclass of int in Python; true/false in JSON is a data bug.
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise InvalidRow(f"'answer' must be an int (index into 'options'), got {_json_type(answer)}")
    if not 0 <= answer < len(clean_options):
        raise InvalidRow(f"'answer' {answer} out of range for {len(clean_options)} options")
    return {"video": video, "question": question, "options": clean_options, "answer": answer}


def _parse_qa_oe(row: dict[str, Any]) -> dict[str, Any]:
    video = _require_video(row)
    question = _require_text(row, "question")
    answer = _require_text(row, "answer").lower()
    return {"video": video, "question": question, "answer": answer}


ROW_PARSERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "captions": _parse_caption, "qa_mc": _parse_qa_mc, "qa_oe": _parse_qa_oe}


@dataclass
class SplitFile:
    """What reading one annotation file produced."""

    kind: str
    split: str
    relative_path: str
    sha256: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0
    invalid_messages: list[str] = field(default_factory=list)
    missing_video: int = 0
    missing_video_examples: list[str] = field(default_factory=list)
    duplicates: int = 0  # rows identical to an earlier row of the file: kept, but reported
    duplicate_examples: list[str] = field(default_factory=list)
    oov: int | None = None

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "path": self.relative_path, "sha256": self.sha256, "rows_read": self.rows_read,
            "kept": len(self.rows), "invalid": len(self.invalid_messages), "missing_video": self.missing_video,
            "missing_video_examples": self.missing_video_examples,
            "duplicates": self.duplicates, "duplicate_examples": self.duplicate_examples,
        }
        if self.kind == "qa_oe":
            stats["oov"] = self.oov
        return stats


def stored_video_ids(store_dir: PathLike) -> set[str]:
    """Ids of the videos present in the clip store (read from its index.jsonl)."""
    index_path = store_index_path(store_dir)
    if not index_path.is_file():
        raise FileNotFoundError(f"clip store index {index_path} not found; "
                                f"extract frames first with `python -m prepare DATA`")
    video_ids: set[str] = set()
    with index_path.open("rb") as index_file:
        for raw_line in index_file:
            try:
                entry = json.loads(raw_line)
            except ValueError:
                # The extractor appends as it goes; a crash can leave a
                # truncated last line, which just means that clip is not stored.
                continue
            if isinstance(entry, dict) and isinstance(entry.get("video"), str) and entry["video"]:
                video_ids.add(normalize_video_id(entry["video"]))
    return video_ids


def read_annotation_file(path: Path, kind: str, split: str, video_ids: Container[str]) -> SplitFile:
    """Read, validate and filter one ``{kind}_{split}.jsonl`` file.

    A row with "start"/"end" seconds refers to the clip of that segment (``segment_clip_id``). Rows identical
    to an earlier row are kept (QA sets repeat questions on purpose) but reported as ``file:line``.
    """
    result = SplitFile(kind, split, f"{ANNOTATIONS_DIRNAME}/{path.name}")
    parse_row = ROW_PARSERS[kind]
    first_line_of: dict[bytes, int] = {}  # digest of a parsed row -> its first line
    hasher = hashlib.sha256()
    with path.open("rb") as annotation_file:
        for line_number, raw_line in enumerate(annotation_file, start=1):
            hasher.update(raw_line)
            if not raw_line.strip():
                continue
            result.rows_read += 1
            try:
                try:
                    text = raw_line.decode("utf-8").strip()
                except UnicodeDecodeError as error:
                    raise InvalidRow(f"not valid UTF-8 ({error.reason} at byte {error.start})") from None
                if line_number == 1:
                    text = text.removeprefix("\ufeff")  # editors on Windows add a BOM
                try:  # also refuses nesting too deep to parse and lone surrogates, which Arrow cannot write
                    row = parse_json(text)
                except RowError as error:
                    raise InvalidRow(f"{error} at column {error.column}" if error.column else str(error)) from None
                if not isinstance(row, dict):
                    raise InvalidRow(f"expected a JSON object, got {_json_type(row)}")
                record = parse_row(row)
                span = _parse_segment(row)
                if span is not None:
                    record["video"] = segment_clip_id(record["video"], *span)
            except InvalidRow as problem:
                result.invalid_messages.append(f"{result.relative_path}:{line_number}: {problem}")
                continue
            if record["video"] not in video_ids:
                result.missing_video += 1
                if len(result.missing_video_examples) < MAX_MISSING_VIDEO_EXAMPLES:
                    result.missing_video_examples.append(record["video"])
                continue
            digest = hashlib.blake2b(json.dumps(record, sort_keys=True).encode("utf-8"), digest_size=16).digest()
            first = first_line_of.setdefault(digest, line_number)
            if first != line_number:
                result.duplicates += 1
                if len(result.duplicate_examples) < MAX_MISSING_VIDEO_EXAMPLES:
                    result.duplicate_examples.append(f"{result.relative_path}:{line_number}: same as line {first}")
            record["line"] = line_number
            result.rows.append(record)
    result.sha256 = hasher.hexdigest()
    return result


def build_answer_vocab(answers: Iterable[str], top_k: int) -> list[str]:
    """The ``top_k`` most frequent answers; ties broken alphabetically so reruns agree."""
    counts = Counter(answers)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [answer for answer, _ in ranked[:top_k]]


def _to_dataset(kind: str, rows: list[dict[str, Any]]) -> datasets.Dataset:
    columns = {name: [row[name] for row in rows] for name in FEATURES[kind]}
    return datasets.Dataset.from_dict(columns, features=FEATURES[kind])


def _unrecognised_annotation_files(data_dir: Path) -> list[str]:
    directory = annotations_dir(data_dir)
    if not directory.is_dir():
        return []
    expected = {annotation_path(data_dir, kind, split).name for kind in KINDS for split in SPLITS}
    return sorted(p.name for p in directory.glob(f"*{ANNOTATION_SUFFIX}") if p.name not in expected)


def prepare_annotations(data_dir: PathLike, *, store_dir: PathLike | None = None, out_dir: PathLike | None = None,
                        answer_top_k: int = DEFAULT_ANSWER_TOP_K, strict: bool = False) -> dict[str, Any]:
    """Validate all annotation files and write the prepared datasets; returns the summary.

    Raises AnnotationError when there is nothing to prepare, the clip store is
    missing, or (with ``strict``) any row is invalid; nothing is written then.
    """
    if answer_top_k < 1:
        raise ValueError(f"answer_top_k must be >= 1, got {answer_top_k}")
    data_dir = Path(data_dir)
    store_dir = Path(store_dir) if store_dir is not None else default_store_dir(data_dir)
    out_dir = Path(out_dir) if out_dir is not None else default_hf_dir(data_dir)
    warnings: list[str] = []

    present = {kind: [s for s in SPLITS if annotation_path(data_dir, kind, s).is_file()] for kind in KINDS}
    missing_files = {kind: [s for s in SPLITS if s not in present[kind]] for kind in KINDS}
    unrecognised = _unrecognised_annotation_files(data_dir)
    if unrecognised:
        warnings.append(f"ignored {', '.join(unrecognised)} in {annotations_dir(data_dir)}: expected "
                        f"names like captions_train.jsonl, qa_mc_val.jsonl, qa_oe_test.jsonl")
    if not any(present.values()):
        where = annotations_dir(data_dir)
        detail = "does not exist" if not where.is_dir() else "contains none of them"
        hint = f" (found {', '.join(unrecognised)})" if unrecognised else ""
        raise AnnotationError(f"no annotation files found: expected {{captions,qa_mc,qa_oe}}_"
                              f"{{train,val,test}}.jsonl in {where}, which {detail}{hint}")

    try:
        # The store's memory-mapped lookup answers membership for millions of clips without a Python set.
        video_ids: Container[str] = ClipStore(store_dir) if (store_dir / "store.json").is_file() \
            else stored_video_ids(store_dir)
    except FileNotFoundError as error:
        raise AnnotationError(str(error)) from None

    # Read and validate everything before writing anything, so --strict (or a
    # crash) never leaves a partial output behind.
    split_files = {
        kind: {split: read_annotation_file(annotation_path(data_dir, kind, split), kind, split, video_ids)
               for split in present[kind]}
        for kind in KINDS
    }
    invalid_messages = [m for kind in KINDS for f in split_files[kind].values() for m in f.invalid_messages]
    if strict and invalid_messages:
        shown = "\n  ".join(invalid_messages[:MAX_INVALID_EXAMPLES])
        more = len(invalid_messages) - MAX_INVALID_EXAMPLES
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise AnnotationError(f"--strict: {len(invalid_messages)} invalid annotation row(s); "
                              f"nothing written:\n  {shown}{tail}")

    answer_vocab: list[str] | None = None
    if present["qa_oe"]:
        train_file = split_files["qa_oe"].get("train")
        if train_file is None:
            warnings.append("qa_oe has no train split: the answer vocabulary is empty, every answer_id is -1")
        train_answers = [row["answer"] for row in train_file.rows] if train_file else []
        answer_vocab = build_answer_vocab(train_answers, answer_top_k)
        vocab_index = {answer: position for position, answer in enumerate(answer_vocab)}
        for split_file in split_files["qa_oe"].values():
            for row in split_file.rows:
                row["answer_id"] = vocab_index.get(row["answer"], OOV_ANSWER_ID)
            split_file.oov = sum(row["answer_id"] == OOV_ANSWER_ID for row in split_file.rows)

    dataset_dicts: dict[str, datasets.DatasetDict] = {}
    for kind in KINDS:
        splits = {}
        for split, split_file in split_files[kind].items():
            if split_file.rows:
                splits[split] = _to_dataset(kind, split_file.rows)
            else:
                # An empty split would only make training or evaluation fail later.
                warnings.append(f"{kind}/{split}: no rows kept, split not written")
        if splits:
            dataset_dicts[kind] = datasets.DatasetDict(splits)

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path = out_dir / ANSWER_VOCAB_FILENAME
    if answer_vocab is not None:
        write_json_atomically(vocab_path, answer_vocab)
    elif vocab_path.exists():
        vocab_path.unlink()
        warnings.append(f"removed stale {vocab_path} (no qa_oe annotations now)")
    for kind in KINDS:
        remove_leftovers(out_dir, kind)
        target = out_dir / kind
        if kind in dataset_dicts:
            replace_dir_atomically(target, lambda staging, kind=kind: dataset_dicts[kind].save_to_disk(staging))
        elif target.exists():
            # Leaving an old dataset would make load_prepared() return data
            # that no longer matches the annotations or this summary.
            shutil.rmtree(target)
            warnings.append(f"removed stale {target} (no {kind} rows now)")

    summary: dict[str, Any] = {
        "data_dir": str(data_dir.resolve()), "store_dir": str(store_dir.resolve()),
        "out_dir": str(out_dir.resolve()), "stored_videos": len(video_ids),
        "kinds": {kind: {split: f.stats() for split, f in split_files[kind].items()} for kind in KINDS},
        "written": {kind: list(dataset_dicts[kind]) for kind in dataset_dicts},
        "missing_files": missing_files,
        "source_sha256": {f.relative_path: f.sha256 for kind in KINDS for f in split_files[kind].values()},
        "invalid_total": len(invalid_messages), "invalid_examples": invalid_messages[:MAX_INVALID_EXAMPLES],
        "answer_top_k": answer_top_k, "answer_vocab_size": None if answer_vocab is None else len(answer_vocab),
        "warnings": warnings,
    }
    write_json_atomically(out_dir / SUMMARY_FILENAME, summary)
    return summary


def describe_missing(missing_files: dict[str, list[str]]) -> list[str]:
    """Readable lines such as "no val split for captions, qa_mc, qa_oe"."""
    absent_kinds = [kind for kind in KINDS if len(missing_files.get(kind, ())) == len(SPLITS)]
    lines = [f"no annotation files for {', '.join(absent_kinds)}"] if absent_kinds else []
    for split in SPLITS:
        kinds = [k for k in KINDS if k not in absent_kinds and split in missing_files.get(k, ())]
        if kinds:
            lines.append(f"no {split} split for {', '.join(kinds)}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    header = ("kind", "split", "read", "kept", "invalid", "missing_video", "oov")
    table = [header]
    for kind, splits in summary["kinds"].items():
        for split, stats in splits.items():
            oov = stats.get("oov")
            table.append((kind, split, *(str(stats[k]) for k in ("rows_read", "kept", "invalid", "missing_video")),
                          "-" if oov is None else str(oov)))
    widths = [max(len(row[col]) for row in table) for col in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if col < 2 else cell.rjust(w) for col, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    lines += [f"missing: {line}" for line in describe_missing(summary["missing_files"])]
    for kind, splits in summary["kinds"].items():
        for split, stats in splits.items():
            if stats.get("duplicates"):
                lines.append(f"{kind}/{split}: {stats['duplicates']} row(s) repeat an earlier row (kept; e.g. "
                             f"{'; '.join(stats['duplicate_examples'][:2])})")
            if stats["missing_video"]:
                lines.append(f"{kind}/{split}: {stats['missing_video']} row(s) dropped, video not in clip store "
                             f"(e.g. {', '.join(stats['missing_video_examples'])})")
    if summary["invalid_total"]:
        shown = summary["invalid_examples"]
        lines.append(f"invalid rows dropped: {summary['invalid_total']} (first {len(shown)}):")
        lines += [f"  {message}" for message in shown]
    if summary["answer_vocab_size"] is not None:
        lines.append(f"qa_oe answer vocabulary: {summary['answer_vocab_size']} answers "
                     f"(top-k {summary['answer_top_k']}, from train)")
    lines += [f"warning: {warning}" for warning in summary["warnings"]]
    lines.append(f"wrote {summary['out_dir']}")
    return "\n".join(lines)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prepare.annotations",
                                     description="Validate DATA/annotations/*.jsonl and write Hugging Face datasets.")
    parser.add_argument("data_dir", metavar="DATA", type=Path)
    parser.add_argument("--store", type=Path, default=None, help="clip store directory (default DATA/clip_store)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default DATA/hf)")
    parser.add_argument("--answer-top-k", type=positive_int, default=DEFAULT_ANSWER_TOP_K,
                        help="size of the open-ended answer vocabulary, from the train split")
    parser.add_argument("--strict", action="store_true", help="fail (writing nothing) on any invalid row")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()  # one bar per split drowns the summary table
    try:
        summary = prepare_annotations(args.data_dir, store_dir=args.store, out_dir=args.out,
                                      answer_top_k=args.answer_top_k, strict=args.strict)
    except AnnotationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
