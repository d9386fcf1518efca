"""What every converter shares: finding the downloaded files (read with row locations by rows.py),
resolving each row's video on disk, placing the videos under DATA/videos, and writing the
annotation files atomically with a summary of what was kept and what was skipped and why.

A converter only parses its own format and calls :meth:`Conversion.add` once per output row
(or :meth:`Conversion.skip` for a row it cannot use); :meth:`Conversion.finish` does the rest.
Rows are never silently dropped: each skip is counted under a reason with its ``file:line``. A row that
fails in a way no converter foresaw (bad UTF-8, a lone surrogate, nesting too deep to parse, a value of
the wrong type) is one malformed row too, never the end of the conversion (see rows.py).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prepare.atomic import write_json_atomically, write_jsonl_atomically
from prepare.convert.rows import (  # noqa: F401 - the readers are re-exported for the converters
    ConvertError,
    Entry,
    Row,
    clean_text,
    display_path,
    option_index,
    read_json_entries,
    read_table,
    text_problem,
)
from violet.data.layout import (
    KINDS,
    SPLITS,
    PathLike,
    annotation_path,
    annotations_dir,
    videos_dir,
)

# Media suffixes a converter looks for when the annotation names a file that was re-encoded
# after download (a TGIF .gif kept as .mp4, a DiDeMo .mov as .mp4).
MEDIA_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".gif", ".3gp", ".mpg",
                                     ".mpeg", ".wmv", ".flv", ".jpg", ".jpeg", ".png", ".webp")
MAX_EXAMPLES_PER_REASON = 5
SUMMARY_PREFIX = "convert_"
SOURCE_SEARCH_DEPTH = 3


def find_source(src: Path, *names: str, required: bool = True) -> Path | None:
    """The first of ``names`` found directly in ``src`` or in its sub-folders (up to
    ``SOURCE_SEARCH_DEPTH`` deep).

    Downloads unpack into sub-folders with release-specific names (``msrvtt_data/``,
    ``MSRVTT/annotation/``), so the user points at the download root and we look; the depth
    limit keeps the search cheap when the same folder holds millions of videos.
    """
    for name in names:
        if (src / name).is_file():
            return src / name
    found: dict[str, list[Path]] = {name: [] for name in names}
    for directory, subdirs, filenames in os.walk(src):
        if len(Path(directory).relative_to(src).parts) >= SOURCE_SEARCH_DEPTH:
            subdirs[:] = []
        for name in set(filenames) & found.keys():
            found[name].append(Path(directory) / name)
    for name in names:
        matches = sorted(found[name])
        if len(matches) > 1:
            listed = ", ".join(str(path) for path in matches[:4])
            raise ConvertError(f"{name} found {len(matches)} times under {src} ({listed}); "
                               f"point --src at the folder that holds the one to use")
        if matches:
            return matches[0]
    if required:
        raise ConvertError(f"none of {', '.join(names)} found under {src}")
    return None


class VideoFinder:
    """Finds an annotation's media file under the videos root.

    Each candidate is a path relative to the root; the same stem with another media suffix
    also counts. When ``index_by_stem`` is on, a miss falls back to a one-time walk of the
    root that maps file stems to paths (releases unpack into differently named folders);
    web-scale corpora turn it off and rely on their known layout.
    """

    def __init__(self, root: Path, *, index_by_stem: bool = True) -> None:
        self.root = root
        self.index_by_stem = index_by_stem
        self._by_stem: dict[str, list[str]] | None = None

    def find(self, candidates: Sequence[str]) -> tuple[str | None, str]:
        """(path relative to root, '') when found, else (None, why not)."""
        for candidate in candidates:
            relative = Path(candidate)
            variants = (relative, *(relative.with_suffix(ext) for ext in MEDIA_EXTENSIONS)) if relative.name \
                else (relative,)
            for variant in variants:
                if _is_file(self.root / variant):
                    return variant.as_posix(), ""
        if self.index_by_stem:
            stems = {Path(candidate).stem for candidate in candidates}
            matches = sorted({path for stem in stems for path in self._stem_index().get(stem, [])})
            if len(matches) == 1:
                return matches[0], ""
            if matches:
                return None, f"ambiguous: {len(matches)} files named like {candidates[0]!r} ({', '.join(matches[:3])})"
        return None, f"{candidates[0]!r} not found under {self.root}"

    def _stem_index(self) -> dict[str, list[str]]:
        if self._by_stem is None:
            self._by_stem = defaultdict(list)
            for directory, _, filenames in os.walk(self.root, followlinks=True):
                for filename in filenames:
                    if os.path.splitext(filename)[1].lower() in MEDIA_EXTENSIONS:
                        relative = (Path(directory) / filename).relative_to(self.root).as_posix()
                        self._by_stem[os.path.splitext(filename)[0]].append(relative)
        return self._by_stem


def _unsafe_media(media: Sequence[str]) -> tuple[None, str, str] | None:
    """(None, why, "malformed") when a candidate is not text or points outside --videos (it would be linked
    there from DATA/videos), else None."""
    for candidate in media:
        problem = text_problem(candidate)
        parts = candidate.replace("\\", "/").split("/")
        if problem or os.path.isabs(candidate) or ".." in parts or "\0" in candidate:
            return None, problem or f"video path {candidate!r} must be relative to --videos, without '..'", "malformed"
    return None


def _is_file(path: Path) -> bool:
    """Path.is_file, also False for a name the file system refuses to look up (too long, and such)."""
    try:
        return path.is_file()
    except OSError as error:
        if error.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
            return False
        raise


def held_out_for_val(video: str, fraction: float) -> bool:
    """Stable choice of validation videos: the same video always lands on the same side,
    so all captions of a video stay together and reruns agree."""
    digest = hashlib.sha1(video.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


@dataclass
class Conversion:
    """Collects the rows of one conversion run and writes them out (see module docstring)."""

    dataset: str
    src: Path
    videos_root: Path
    data_dir: Path
    copy: bool = False
    val_fraction: float = 0.0
    index_by_stem: bool = True
    rows: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    warnings: list[str] = field(default_factory=list)
    _media: dict[str, Path] = field(default_factory=dict)
    _finder: VideoFinder | None = None
    _found: dict[tuple[str, ...], tuple[str | None, str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.src, self.videos_root, self.data_dir = Path(self.src), Path(self.videos_root), Path(self.data_dir)
        if not self.src.is_dir():
            raise ConvertError(f"--src {self.src} is not a directory")
        if not self.videos_root.is_dir():
            raise ConvertError(f"--videos {self.videos_root} is not a directory")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConvertError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        self._finder = VideoFinder(self.videos_root, index_by_stem=self.index_by_stem)

    def source(self, *names: str, required: bool = True) -> Path | None:
        return find_source(self.src, *names, required=required)

    def skip(self, where: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples[reason]) < MAX_EXAMPLES_PER_REASON:
            # Escaped: a place or detail quoting bad text must not make the summary unwritable.
            self.examples[reason].append(f"{where}: {detail}".encode("utf-8", "backslashreplace").decode("utf-8"))

    def parsed(self, entries: list[Entry]) -> list[Entry]:
        """The JSON entries that parsed; each one that did not is skipped as malformed, with its place and why."""
        for entry in entries:
            if entry.problem:
                self.skip(entry.where, "malformed", entry.problem)
        return [entry for entry in entries if not entry.problem]

    @contextlib.contextmanager
    def row(self, where: str) -> Iterator[None]:
        """Wrap the handling of one source row: an error it raises skips that row as malformed, with its place
        and the error, and the conversion goes on (a whole-file problem is a ConvertError, which passes)."""
        try:
            yield
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as error:
            self.skip(where, "malformed", f"{type(error).__name__}: {str(error)[:200]}")

    def add(self, kind: str, split: str, row: dict[str, Any], *, where: str, media: Sequence[str]) -> bool:
        """Queue one output row; ``media`` lists where its file may lie, relative to --videos.
        Returns False (and counts the skip) when no such file exists."""
        if kind not in KINDS or split not in SPLITS:
            raise RuntimeError(f"unknown kind/split {kind}/{split}")  # a converter bug, not a bad row
        problem = text_problem(list(row.values()))  # caught here, not when the annotation file is written
        if problem:
            self.skip(where, "malformed", problem)
            return False
        key = tuple(media)
        if key not in self._found:  # each distinct candidate list is checked and looked up once
            self._found[key] = _unsafe_media(media) or (*self._finder.find(media), "missing_video")
        relative, problem, reason = self._found[key]
        if relative is None:
            self.skip(where, reason, problem)
            return False
        if split == "train" and self.val_fraction and held_out_for_val(relative, self.val_fraction):
            split = "val"
        self._media[relative] = self.videos_root / relative
        self.rows[(kind, split)].append({"video": relative, **row})
        return True

    def finish(self) -> dict[str, Any]:
        """Place the videos, then write every annotation file atomically; returns the summary."""
        if not self.rows:
            raise ConvertError(f"{self.dataset}: no usable rows ({self._skip_text()}); nothing written")
        self._check_split_overlap()
        self._check_extractable()
        placed = place_media(self._media, videos_dir(self.data_dir), copy=self.copy, data_dir=self.data_dir)
        annotations_dir(self.data_dir).mkdir(parents=True, exist_ok=True)
        summary_path = annotations_dir(self.data_dir) / f"{SUMMARY_PREFIX}{self.dataset}.json"
        previous = _previously_written(summary_path)
        written = []
        for (kind, split), rows in sorted(self.rows.items()):
            path = annotation_path(self.data_dir, kind, split)
            write_jsonl_atomically(path, rows)
            written.append(path.name)
        for name in sorted(previous - set(written)):
            # Our own earlier output (e.g. a val split from an earlier --val-fraction) would
            # otherwise be prepared next to files it no longer matches.
            (annotations_dir(self.data_dir) / name).unlink(missing_ok=True)
            self.warnings.append(f"removed {name}, written by an earlier {self.dataset} conversion but not by this one")
        summary = {
            "dataset": self.dataset, "src": str(self.src.resolve()), "videos": str(self.videos_root.resolve()),
            "placement": "copy" if self.copy else "symlink", "written": written,
            "rows": {f"{kind}_{split}": len(rows) for (kind, split), rows in sorted(self.rows.items())},
            "videos_placed": placed, "skipped": dict(self.skipped), "skipped_examples": dict(self.examples),
            "warnings": self.warnings,
        }
        write_json_atomically(summary_path, summary)
        return summary

    def _check_split_overlap(self) -> None:
        for kind in KINDS:
            by_split = {split: {row["video"] for row in self.rows.get((kind, split), [])} for split in SPLITS}
            for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
                shared = by_split[first] & by_split[second]
                if shared:
                    self.warnings.append(f"{kind}: {len(shared)} video(s) are in both {first} and {second} "
                                         f"(e.g. {min(shared)})")

    def _check_extractable(self) -> None:
        # Imported here: the converters themselves never decode anything.
        from prepare.extract import VIDEO_EXTENSIONS

        suffixes = Counter(Path(relative).suffix.lower() for relative in self._media)
        for suffix, count in sorted(suffixes.items()):
            if suffix not in VIDEO_EXTENSIONS:
                self.warnings.append(f"{count} file(s) are {suffix or 'without suffix'}, which `python -m prepare` "
                                     f"does not extract ({', '.join(sorted(VIDEO_EXTENSIONS))}); their rows will "
                                     f"be dropped there as missing_video unless re-encoded")

    def _skip_text(self) -> str:
        return ", ".join(f"{count} {reason}" for reason, count in self.skipped.items()) or "the sources held no rows"


def _previously_written(summary_path: Path) -> set[str]:
    try:
        return set(json.loads(summary_path.read_text(encoding="utf-8")).get("written", []))
    except (OSError, ValueError, AttributeError):
        return set()


def place_media(media: dict[str, Path], target_root: Path, *, copy: bool, data_dir: Path) -> dict[str, int]:
    """Make ``target_root/<relative>`` point at (or, with ``copy``, hold) each source file.

    Symlinks are absolute and swapped in atomically; a destination that already is the right
    link or copy is left alone, so reruns are cheap. A real file that is not the source is
    never overwritten: that is an error naming it.
    """
    counts = Counter()
    target_root = Path(target_root)
    for relative, source in sorted(media.items()):
        destination = target_root / relative
        source = source.resolve()
        if destination.resolve() == source:  # already a link to it, or the source already lives in DATA/videos
            counts["already_in_place"] += 1
            continue
        if destination.exists() and not destination.is_symlink():
            same_copy = copy and destination.stat().st_size == source.stat().st_size
            if same_copy:
                counts["already_in_place"] += 1
                continue
            raise ConvertError(f"{destination} exists and is not {'a copy of' if copy else 'a link to'} {source}; "
                               f"move it away or use another --out than {data_dir}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.with_name(f".{destination.name}.tmp-{uuid.uuid4().hex}")
        try:
            if copy:
                shutil.copy2(source, staging)
            else:
                os.symlink(source, staging)
            os.replace(staging, destination)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        counts["copied" if copy else "linked"] += 1
    return dict(counts)


def format_summary(summary: dict[str, Any], data_dir: PathLike) -> str:
    lines = [f"{summary['dataset']}: converted from {summary['src']}"]
    width = max(len(name) for name in summary["rows"])
    lines += [f"  {name.ljust(width)}  {count:>9} rows" for name, count in summary["rows"].items()]
    placed = ", ".join(f"{count} {how.replace('_', ' ')}" for how, count in sorted(summary["videos_placed"].items()))
    lines.append(f"videos under {videos_dir(data_dir)}: {placed or 'none'} (from {summary['videos']})")
    skipped = summary["skipped"]
    if skipped:
        lines.append(f"skipped {sum(skipped.values())} row(s):")
        for reason, count in sorted(skipped.items()):
            lines.append(f"  {reason}: {count}")
            lines += [f"    {example}" for example in summary["skipped_examples"].get(reason, [])]
    lines += [f"warning: {warning}" for warning in summary["warnings"]]
    lines.append(f"wrote {', '.join(summary['written'])} in {annotations_dir(data_dir)}")
    lines.append(f"next: python -m prepare {data_dir}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Converter:
    """One public data set (or one task of it): its CLI name, its own options, and its parser."""

    name: str
    help: str
    run: Callable[[Conversion, argparse.Namespace], None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    # Web-scale corpora have a known layout and millions of files: no stem index walk.
    index_by_stem: bool = True
