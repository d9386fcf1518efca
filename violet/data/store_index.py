"""The clip store's lookup index: sorted, memory-mapped numpy columns compiled from index.jsonl.

index.jsonl stays the source of truth (append-only, crash-safe, readable). Parsing it at every open costs
~10 us per clip, minutes per process for WebVid-scale stores, so the writer compiles it when it closes into
``ROOT/lookup/``: one ``.npy`` file per column, rows sorted by the UTF-8 bytes of the video id, plus
``meta.json`` saying how many bytes of index.jsonl the columns cover. A reader memory-maps the columns
(opening is O(1), lookups O(log n), pages shared by every process through the page cache) and parses only the
lines appended after the covered prefix (a run that crashed before compiling), which override compiled rows.
"""
from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

INDEX_FILENAME = "index.jsonl"
LOOKUP_DIRNAME = "lookup"
LOOKUP_VERSION = 1
# name -> dtype of each per-row column; ids and frame lengths are ragged and stored as blob + starts.
ROW_COLUMNS = {"shard": np.int32, "offset": np.int64, "crc32": np.uint32, "line_offset": np.int64,
               "line_length": np.int32, "src_size": np.int64, "src_mtime_ns": np.int64}
UNKNOWN = -1  # src_size / src_mtime_ns of clips stored before they were recorded


@dataclass
class ClipLocation:
    """Where one clip's bytes are and how to check them."""

    video: str
    shard: str
    offset: int
    frame_lengths: list[int]
    crc32: int
    line_offset: int
    line_length: int
    src_size: int
    src_mtime_ns: int


def scan_index(root: Path, start: int = 0) -> Iterator[tuple[dict[str, Any], int, int]]:
    """Yield ``(entry, line_offset, line_length)`` for each complete line of index.jsonl from byte `start`.

    Entries whose bytes are not fully present in their shard (a shard lost or copied partially) are logged
    and skipped, so the writer re-extracts the clip and readers never serve it.
    """
    index_path = root / INDEX_FILENAME
    if not index_path.is_file():
        return
    shard_sizes: dict[str, int] = {}
    dropped = 0
    with index_path.open("rb") as index_file:
        index_file.seek(start)
        line_offset = start
        for raw_line in index_file:
            this_offset, line_offset = line_offset, line_offset + len(raw_line)
            if not raw_line.endswith(b"\n"):
                # Only the last line can lack its newline: a crash while appending it.
                logger.warning("%s: ignoring a truncated last line at byte %d (from an interrupted write)",
                               index_path, this_offset)
                break
            if not raw_line.strip():
                continue
            try:
                entry = json.loads(raw_line)
                shard, offset, total = entry["shard"], int(entry["offset"]), sum(entry["frame_lengths"])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{index_path}: corrupt index line at byte {this_offset} ({error}); "
                                 f"the store needs repair") from error
            if shard not in shard_sizes:
                shard_path = root / shard
                shard_sizes[shard] = shard_path.stat().st_size if shard_path.is_file() else -1
            if offset + total > shard_sizes[shard]:
                dropped += 1
                continue
            yield entry, this_offset, len(raw_line)
    if dropped:
        logger.warning("%s: ignored %d index entries whose shard bytes are missing", index_path, dropped)


def _location(entry: dict[str, Any], line_offset: int, line_length: int) -> ClipLocation:
    return ClipLocation(entry["video"], entry["shard"], int(entry["offset"]), list(entry["frame_lengths"]),
                        int(entry["crc32"]), line_offset, line_length, int(entry.get("src_size", UNKNOWN)),
                        int(entry.get("src_mtime_ns", UNKNOWN)))


class _SortedIds(Sequence[bytes]):
    """The sorted ids as a sequence view over one bytes blob, for ``bisect``."""

    def __init__(self, blob: np.ndarray, starts: np.ndarray) -> None:
        self.blob, self.starts = blob, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, row: int) -> bytes:  # type: ignore[override]
        return self.blob[self.starts[row]:self.starts[row + 1]].tobytes()


class StoreIndex:
    """Compiled columns (memory-mapped) plus the uncompiled tail of index.jsonl (in memory, usually empty)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        index_path = root / INDEX_FILENAME
        index_size = index_path.stat().st_size if index_path.is_file() else 0
        self.columns, self.shard_names, covered = _open_lookup(root, index_size)
        self.covered_bytes = covered
        self.ids = _SortedIds(self.columns["ids"], self.columns["id_starts"])
        # Lines after the compiled prefix: last wins, and they override compiled rows of the same id.
        self.tail: dict[str, ClipLocation] = {}
        for entry, line_offset, line_length in scan_index(root, covered):
            self.tail[entry["video"]] = _location(entry, line_offset, line_length)
        if len(self.tail) > 100_000:
            logger.warning("%s: %d clips are not in the compiled lookup index; opening a writer on the store "
                           "(e.g. re-running extraction) compiles them", root, len(self.tail))
        self.overridden = {row for video in self.tail if (row := self.compiled_row(video)) is not None}

    def __reduce__(self) -> tuple[type, tuple[Path]]:
        # Pickled (e.g. into spawned DataLoader workers) as its path: the receiver maps the same files again
        # instead of receiving a serialised copy of every column.
        return StoreIndex, (self.root,)

    # ---- lookups ----
    def compiled_row(self, video_id: str) -> int | None:
        key = video_id.encode("utf-8")
        row = bisect.bisect_left(self.ids, key)
        return row if row < len(self.ids) and self.ids[row] == key else None

    def locate(self, video_id: str) -> ClipLocation | None:
        found = self.tail.get(video_id)
        if found is not None:
            return found
        row = self.compiled_row(video_id)
        return None if row is None else self.location_of_row(row)

    def location_of_row(self, row: int) -> ClipLocation:
        c = self.columns
        lengths = c["frame_lengths"][c["frame_starts"][row]:c["frame_starts"][row + 1]].tolist()
        return ClipLocation(self.ids[row].decode("utf-8"), self.shard_names[int(c["shard"][row])],
                            int(c["offset"][row]), lengths, int(c["crc32"][row]), int(c["line_offset"][row]),
                            int(c["line_length"][row]), int(c["src_size"][row]), int(c["src_mtime_ns"][row]))

    def __len__(self) -> int:
        return len(self.ids) + len(self.tail) - len(self.overridden)

    def all_ids(self) -> list[str]:
        """Every id, sorted (builds a Python list: for tests and small stores)."""
        compiled = (self.ids[row].decode("utf-8") for row in range(len(self.ids)) if row not in self.overridden)
        return sorted([*compiled, *self.tail])

    def shards(self) -> list[str]:
        names = list(self.shard_names)
        names += sorted({loc.shard for loc in self.tail.values()} - set(names))
        return names

    def ids_in_shard(self, shard: str) -> list[str]:
        """Ids stored in one shard, in file order (the compiled rows of a shard are one slice of `by_shard`)."""
        found: list[tuple[int, str]] = []
        if shard in self.shard_names:
            number = self.shard_names.index(shard)
            starts = self.columns["shard_starts"]
            for row in self.columns["by_shard"][starts[number]:starts[number + 1]].tolist():
                if row not in self.overridden:
                    found.append((int(self.columns["offset"][row]), self.ids[row].decode("utf-8")))
        found += [(loc.offset, video) for video, loc in self.tail.items() if loc.shard == shard]
        return [video for _, video in sorted(found)]


def _open_lookup(root: Path, index_size: int) -> tuple[dict[str, np.ndarray], list[str], int]:
    """The compiled columns (memory-mapped) and how many bytes of index.jsonl they cover; empty if none."""
    lookup = root / LOOKUP_DIRNAME
    meta_path = lookup / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") == LOOKUP_VERSION and meta["covers_bytes"] <= index_size:
            # Plain ndarray views of the maps: np.memmap's own slicing costs microseconds per lookup step.
            columns = {name: np.load(lookup / f"{name}.npy", mmap_mode="r").view(np.ndarray)
                       for name in meta["columns"]}
            return columns, list(meta["shards"]), int(meta["covers_bytes"])
        logger.warning("%s does not match %s (rebuilt or replaced?); reading the index line by line",
                       lookup, INDEX_FILENAME)
    return _empty_columns(), [], 0


def _empty_columns() -> dict[str, np.ndarray]:
    columns = {name: np.zeros(0, dtype) for name, dtype in ROW_COLUMNS.items()}
    columns.update(ids=np.zeros(0, np.uint8), id_starts=np.zeros(1, np.int64), frame_lengths=np.zeros(0, np.int32),
                   frame_starts=np.zeros(1, np.int64), by_shard=np.zeros(0, np.int64),
                   shard_starts=np.zeros(1, np.int64))
    return columns


def write_lookup(root: Path, ids: Sequence[bytes], rows: dict[str, np.ndarray], frame_lengths: np.ndarray,
                 frame_starts: np.ndarray, shard_names: list[str], covers_bytes: int) -> None:
    """Write sorted-by-id columns to ROOT/lookup atomically (a staging directory renamed into place).

    `ids` must be sorted and unique; `rows` holds every ROW_COLUMNS column in that order; row i's frame lengths
    are ``frame_lengths[frame_starts[i]:frame_starts[i + 1]]``.
    """
    count = len(ids)
    id_lengths = np.fromiter((len(video) for video in ids), dtype=np.int64, count=count)
    columns = {name: np.ascontiguousarray(rows[name], dtype=dtype) for name, dtype in ROW_COLUMNS.items()}
    columns["ids"] = np.frombuffer(b"".join(ids), dtype=np.uint8)
    columns["id_starts"] = np.concatenate(([0], np.cumsum(id_lengths))).astype(np.int64)
    columns["frame_lengths"] = np.ascontiguousarray(frame_lengths, dtype=np.int32)
    columns["frame_starts"] = np.ascontiguousarray(frame_starts, dtype=np.int64)
    # Rows in file order, grouped by shard: a streaming reader takes one contiguous slice per shard.
    columns["by_shard"] = np.lexsort((columns["offset"], columns["shard"])).astype(np.int64)
    columns["shard_starts"] = np.searchsorted(columns["shard"][columns["by_shard"]],
                                              np.arange(len(shard_names) + 1)).astype(np.int64)
    staging = root / f".{LOOKUP_DIRNAME}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        for name, values in columns.items():
            np.save(staging / f"{name}.npy", values)
        meta = {"version": LOOKUP_VERSION, "covers_bytes": covers_bytes, "count": count, "shards": shard_names,
                "columns": sorted(columns)}
        (staging / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
        target = root / LOOKUP_DIRNAME
        retired = root / f".{LOOKUP_DIRNAME}.old-{uuid.uuid4().hex}"
        if target.exists():
            os.rename(target, retired)  # readers that mapped the old files keep them until they close
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def compile_lookup(root: Path) -> int:
    """Merge the uncompiled tail of index.jsonl into ROOT/lookup; returns the number of clips indexed.

    Called by the writer when it closes. Cost is O(n log n) in numpy plus O(tail) JSON parsing.
    """
    index = StoreIndex(root)
    index_path = root / INDEX_FILENAME
    covers = index_path.stat().st_size if index_path.is_file() else 0
    if not index.tail and (root / LOOKUP_DIRNAME).is_dir() and index.covered_bytes == covers:
        return len(index)
    shard_names = index.shards()
    shard_number = {name: number for number, name in enumerate(shard_names)}
    keep = np.ones(len(index.ids), dtype=bool)
    keep[list(index.overridden)] = False
    old_rows = np.flatnonzero(keep)
    c = index.columns
    new = sorted(index.tail.values(), key=lambda loc: loc.video.encode("utf-8"))
    ids = [index.ids[row] for row in old_rows.tolist()] + [loc.video.encode("utf-8") for loc in new]
    rows = {name: np.concatenate((np.asarray(c[name])[old_rows],
                                  np.array([_row_value(loc, name, shard_number) for loc in new], dtype=dtype)))
            for name, dtype in ROW_COLUMNS.items()}
    old_counts = (np.asarray(c["frame_starts"])[1:] - np.asarray(c["frame_starts"])[:-1])[old_rows]
    old_positions = np.repeat(np.asarray(c["frame_starts"])[old_rows], old_counts) + (
        np.arange(old_counts.sum()) - np.repeat(np.cumsum(old_counts) - old_counts, old_counts))
    lengths = np.concatenate((np.asarray(c["frame_lengths"])[old_positions].astype(np.int32),
                              np.array([n for loc in new for n in loc.frame_lengths], dtype=np.int32)))
    counts = np.concatenate((old_counts, [len(loc.frame_lengths) for loc in new])).astype(np.int64)
    # Old rows and new rows are each sorted; one stable argsort over the ids merges them.
    order = np.argsort(np.array(ids, dtype=object), kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    sorted_counts = counts[order]
    gather = np.repeat(starts[:-1][order], sorted_counts) + (
        np.arange(sorted_counts.sum()) - np.repeat(np.cumsum(sorted_counts) - sorted_counts, sorted_counts))
    write_lookup(root, [ids[i] for i in order.tolist()], {name: values[order] for name, values in rows.items()},
                 lengths[gather], np.concatenate(([0], np.cumsum(sorted_counts))), shard_names, covers)
    return len(ids)


def _row_value(loc: ClipLocation, name: str, shard_number: dict[str, int]) -> int:
    return shard_number[loc.shard] if name == "shard" else getattr(loc, name)
