"""A sharded store of pre-extracted JPEG frames: one seek + one read per clip, no pickle.

Layout of a store directory ROOT::

    ROOT/store.json          {"format": "violet-clip-store", "version": 1, frames_per_video, short_side, jpeg_quality}
    ROOT/shard-00000.bin     concatenated JPEG bytes; every frame of a clip is contiguous
    ROOT/index.jsonl         one JSON object per stored clip (see ``ClipStoreWriter.add``)
    ROOT/lookup/             the same, compiled to sorted memory-mapped columns (see store_index.py)

Crash safety comes from the write order: a clip's bytes are written and fsynced
before its index line is appended, and every writer session starts a new shard.
A crash can therefore only leave unindexed bytes at the end of a shard or a
truncated last index line, both of which readers and writers ignore.

The reader memory-maps the compiled lookup columns (no Python object per clip), so
opening a store of millions of clips is instant and every DataLoader worker shares
the same pages instead of each parsing and holding its own copy of the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import zlib
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, Self

from violet.data.store_index import (
    INDEX_FILENAME,
    LOOKUP_DIRNAME,
    ClipLocation,
    StoreIndex,
    compile_lookup,
)

logger = logging.getLogger(__name__)

STORE_FORMAT = "violet-clip-store"
STORE_VERSION = 1
SETTINGS_FILENAME = "store.json"
LOCK_FILENAME = ".writer.lock"
SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.bin$")
JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"
# Shard handles kept open per process; beyond this the least recently used is closed
# (a store of thousands of shards would otherwise exceed the usual 1024 descriptor limit).
MAX_OPEN_FILES = 128
# Fields the writer computes itself; callers may not supply them in ``meta``.
COMPUTED_FIELDS = ("video", "shard", "offset", "frame_lengths", "crc32", "num_frames")
REQUIRED_META_FIELDS = ("width", "height", "src_fps", "src_frames", "duration", "frame_times", "decoder")

PathLike = str | os.PathLike[str]


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.bin"


def _read_settings(root: Path) -> dict[str, Any] | None:
    path = root / SETTINGS_FILENAME
    if not path.is_file():
        return None
    settings = json.loads(path.read_text(encoding="utf-8"))
    if settings.get("format") != STORE_FORMAT:
        raise ValueError(f"{path} is not a {STORE_FORMAT} settings file (format={settings.get('format')!r})")
    if settings.get("version") != STORE_VERSION:
        raise ValueError(f"{path}: unsupported clip store version {settings.get('version')!r}; "
                         f"this code reads version {STORE_VERSION}")
    return settings


class ClipStoreWriter:
    """Appends clips to a store; the single writer of a store (enforced with a lock file).

    Use as a context manager. ``add`` makes each clip durable before indexing it,
    so ``done_ids()`` after a crash lists exactly the clips that can be read back.
    """

    def __init__(self, root: PathLike, *, frames_per_video: int, short_side: int, jpeg_quality: int = 90,
                 shard_bytes: int = 1 << 30, fsync: bool = True) -> None:
        if frames_per_video < 1 or short_side < 1 or not 1 <= jpeg_quality <= 100 or shard_bytes < 1:
            raise ValueError(f"invalid clip store settings: frames_per_video={frames_per_video}, "
                             f"short_side={short_side}, jpeg_quality={jpeg_quality}, shard_bytes={shard_bytes}")
        self.root = Path(root)
        self.shard_bytes = shard_bytes
        self.fsync = fsync
        self.settings = {"format": STORE_FORMAT, "version": STORE_VERSION, "frames_per_video": frames_per_video,
                         "short_side": short_side, "jpeg_quality": jpeg_quality}
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / LOCK_FILENAME, "a")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"another ClipStoreWriter is writing to {self.root}; "
                               f"two writers would interleave index lines") from None
        try:
            self._check_or_write_settings()
            self._drop_truncated_index_tail()
            self._existing = StoreIndex(self.root)
        except BaseException:
            self._lock_file.close()
            raise
        self._added: dict[str, tuple[int, int]] = {}  # this session's clips -> (src_size, src_mtime_ns)
        existing = [int(m.group(1)) for p in self.root.iterdir() if (m := SHARD_PATTERN.match(p.name))]
        # A new shard number per session: old shards may end in unindexed garbage from a crash.
        self._next_shard_number = max(existing, default=-1) + 1
        self._shard_file: Any = None
        self._shard_name = ""
        self._index_file = open(self.root / INDEX_FILENAME, "ab")  # noqa: SIM115
        self._closed = False

    def _check_or_write_settings(self) -> None:
        existing = _read_settings(self.root)
        if existing is None:
            leftovers = [p.name for p in self.root.iterdir()
                         if p.name in (INDEX_FILENAME, LOOKUP_DIRNAME) or SHARD_PATTERN.match(p.name)]
            if leftovers:
                raise ValueError(f"{self.root} holds clip store files {sorted(leftovers)[:3]} but no "
                                 f"{SETTINGS_FILENAME}; refusing to guess its settings")
            tmp = self.root / f"{SETTINGS_FILENAME}.tmp"
            tmp.write_text(json.dumps(self.settings, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.root / SETTINGS_FILENAME)
            return
        differences = [f"{key}: store has {existing.get(key)!r}, requested {value!r}"
                       for key, value in self.settings.items() if existing.get(key) != value]
        if differences:
            raise ValueError(f"clip store {self.root} was created with different settings ("
                             + "; ".join(differences) + "). Use another store directory or the same settings; "
                             "mixing settings in one store is not allowed.")

    def _drop_truncated_index_tail(self) -> None:
        # Appending after a partial line would glue the next entry onto it and lose both.
        index_path = self.root / INDEX_FILENAME
        if not index_path.is_file():
            return
        with index_path.open("r+b") as index_file:
            end = index_file.seek(0, os.SEEK_END)
            position = end
            while position > 0:  # scan back from the end for the last newline
                chunk_start = max(0, position - (1 << 16))
                index_file.seek(chunk_start)
                chunk = index_file.read(position - chunk_start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    position = chunk_start + newline + 1
                    break
                position = chunk_start
            if position < end:
                logger.warning("%s: removing a truncated last line (%d bytes) left by an interrupted write",
                               index_path, end - position)
                index_file.truncate(position)

    def done_ids(self) -> set[str]:
        """Ids already stored (readable), including those added in this session (a Python set: small stores)."""
        return set(self._existing.all_ids()) | set(self._added)

    def stored_source(self, video_id: str) -> tuple[int, int] | None:
        """``(src_size, src_mtime_ns)`` recorded for a stored clip (-1 when unknown), or None if not stored.

        O(log n) on the compiled index: extraction asks this once per video instead of loading every id.
        """
        if video_id in self._added:
            return self._added[video_id]
        location = self._existing.locate(video_id)
        return None if location is None else (location.src_size, location.src_mtime_ns)

    def _open_next_shard(self) -> None:
        self._close_shard()
        self._shard_name = shard_name(self._next_shard_number)
        self._next_shard_number += 1
        # "xb": never append to (or clobber) an existing shard.
        self._shard_file = open(self.root / self._shard_name, "xb")  # noqa: SIM115

    def _close_shard(self) -> None:
        if self._shard_file is not None:
            self._shard_file.close()
            self._shard_file = None

    def add(self, video_id: str, jpegs: Sequence[bytes], meta: dict[str, Any]) -> dict[str, Any]:
        """Store one clip and return its index entry.

        ``meta`` must hold width, height, src_fps, src_frames, duration, frame_times
        (one per frame) and decoder; extra JSON-serialisable keys are kept in the entry.
        """
        if self._closed:
            raise RuntimeError(f"ClipStoreWriter for {self.root} is closed")
        if not isinstance(video_id, str) or not video_id:
            raise ValueError(f"video id must be a non-empty string, got {video_id!r}")
        if not jpegs:
            raise ValueError(f"{video_id}: no frames to store")
        if len(jpegs) > self.settings["frames_per_video"]:
            raise ValueError(f"{video_id}: {len(jpegs)} frames exceed the store's frames_per_video="
                             f"{self.settings['frames_per_video']}")
        for position, jpeg in enumerate(jpegs):
            if not isinstance(jpeg, bytes) or not jpeg.startswith(JPEG_START):
                raise ValueError(f"{video_id}: frame {position} is not JPEG bytes")
        missing = [key for key in REQUIRED_META_FIELDS if key not in meta]
        reserved = [key for key in COMPUTED_FIELDS if key in meta]
        if missing or reserved:
            raise ValueError(f"{video_id}: meta is missing {missing} / must not set computed fields {reserved}")
        if len(meta["frame_times"]) != len(jpegs):
            raise ValueError(f"{video_id}: {len(meta['frame_times'])} frame_times for {len(jpegs)} frames")

        clip_bytes = b"".join(jpegs)
        if self._shard_file is None or (self._shard_file.tell() > 0
                                        and self._shard_file.tell() + len(clip_bytes) > self.shard_bytes):
            self._open_next_shard()
        offset = self._shard_file.tell()
        try:
            self._shard_file.write(clip_bytes)
            self._shard_file.flush()
            if self.fsync:
                os.fsync(self._shard_file.fileno())
        except BaseException:
            # The shard may now end in a partial clip; continue in a fresh shard.
            self._close_shard()
            raise
        entry = {"video": video_id, "shard": self._shard_name, "offset": offset,
                 "frame_lengths": [len(jpeg) for jpeg in jpegs], "crc32": zlib.crc32(clip_bytes),
                 "num_frames": len(jpegs), **meta}
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        self._index_file.write(line)
        self._index_file.flush()
        self._added[video_id] = (int(meta.get("src_size", -1)), int(meta.get("src_mtime_ns", -1)))
        return entry

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_shard()
        self._index_file.flush()
        if self.fsync:
            os.fsync(self._index_file.fileno())
        self._index_file.close()
        try:
            compile_lookup(self.root)  # still under the lock: no other writer appends meanwhile
        finally:
            self._lock_file.close()  # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ClipStore:
    """Random-access reader of a clip store; safe to create before forking DataLoader workers."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        settings = _read_settings(self.root)
        if settings is None:
            raise FileNotFoundError(f"{self.root} is not a clip store (no {SETTINGS_FILENAME}); "
                                    f"create one with `python -m prepare.extract DATA`")
        self.settings = settings
        self.frames_per_video: int = settings["frames_per_video"]
        self.short_side: int = settings["short_side"]
        self._index = StoreIndex(self.root)
        self._handles: dict[str, int] = {}
        self._handles_pid = os.getpid()

    # ---- lookup -------------------------------------------------------------------------------
    def locate(self, video_id: str) -> ClipLocation:
        location = self._index.locate(video_id)
        if location is None:
            raise KeyError(f"video {video_id!r} is not in the clip store {self.root} "
                           f"({len(self)} videos; was it extracted, or did it fail? see failed.jsonl)")
        return location

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, str) and self._index.locate(video_id) is not None

    def ids(self) -> list[str]:
        return self._index.all_ids()

    def num_frames(self, video_id: str) -> int:
        return len(self.locate(video_id).frame_lengths)

    def meta(self, video_id: str) -> dict[str, Any]:
        """The clip's full index entry, re-read from index.jsonl (kept out of memory on purpose)."""
        location = self.locate(video_id)
        line = os.pread(self._fd(INDEX_FILENAME), location.line_length, location.line_offset)
        entry = json.loads(line)
        if entry.get("video") != video_id:
            raise RuntimeError(f"{self.root / INDEX_FILENAME} changed since it was loaded "
                               f"(expected {video_id!r} at byte {location.line_offset}); reopen the ClipStore")
        return entry

    # ---- reading ------------------------------------------------------------------------------
    def _fd(self, filename: str) -> int:
        if os.getpid() != self._handles_pid:
            # Forked child: it holds copies of the parent's descriptors; close the copies, open its own.
            self._close_handles()
            self._handles_pid = os.getpid()
        fd = self._handles.pop(filename, None)
        if fd is None:
            if len(self._handles) >= MAX_OPEN_FILES:  # least recently used first: dicts keep insertion order
                os.close(self._handles.pop(next(iter(self._handles))))
            fd = os.open(self.root / filename, os.O_RDONLY)
        self._handles[filename] = fd  # (re)inserted last = most recently used
        return fd

    def _close_handles(self) -> None:
        handles, self._handles = self._handles, {}
        for fd in handles.values():
            os.close(fd)

    def read_frames(self, video_id: str, indices: Sequence[int] | None = None,
                    location: ClipLocation | None = None) -> list[bytes]:
        """JPEG bytes of the requested frames (all by default), in the requested order.

        One ``pread`` covers the contiguous range from the first to the last requested frame. `location`, from
        ``locate(video_id)``, saves a second lookup when the caller already has it.
        """
        location = location or self.locate(video_id)
        lengths = location.frame_lengths
        count = len(lengths)
        wanted = list(range(count)) if indices is None else [int(i) for i in indices]
        for index in wanted:
            if not 0 <= index < count:
                raise IndexError(f"frame index {index} out of range for video {video_id!r} with {count} frames")
        if not wanted:
            return []
        starts = list(accumulate(lengths, initial=0))  # byte offset of each frame within the clip
        first, last = min(wanted), max(wanted)
        size = starts[last + 1] - starts[first]
        shard = location.shard
        data = os.pread(self._fd(shard), size, location.offset + starts[first])
        if len(data) != size:
            raise OSError(f"short read of video {video_id!r} from {shard}: {len(data)} of {size} bytes; "
                          f"run ClipStore.verify()")
        base = starts[first]
        return [data[starts[i] - base:starts[i + 1] - base] for i in wanted]

    # ---- shard-sequential access (streaming) --------------------------------------------------
    def shards(self) -> list[str]:
        return self._index.shards()

    def ids_in_shard(self, shard: str) -> list[str]:
        """Ids stored in one shard, in file order, so a streaming reader reads it front to back."""
        return self._index.ids_in_shard(shard)

    # ---- integrity ----------------------------------------------------------------------------
    def verify(self, video_id: str | None = None) -> list[str]:
        """Check shard bounds, crc32 and JPEG markers; return one message per problem (empty = fine)."""
        video_ids = [video_id] if video_id is not None else [v for s in self.shards() for v in self.ids_in_shard(s)]
        problems: list[str] = []
        for video in video_ids:
            location = self.locate(video)
            shard_path = self.root / location.shard
            end = location.offset + sum(location.frame_lengths)
            if not shard_path.is_file():
                problems.append(f"{video}: shard {location.shard} is missing")
                continue
            if end > shard_path.stat().st_size:
                problems.append(f"{video}: bytes {location.offset}..{end} lie beyond the end of {location.shard}")
                continue
            frames = self.read_frames(video)
            if zlib.crc32(b"".join(frames)) != location.crc32:
                problems.append(f"{video}: crc32 mismatch in {location.shard} at offset {location.offset}")
            bad = [i for i, jpeg in enumerate(frames) if not (jpeg.startswith(JPEG_START) and jpeg.endswith(JPEG_END))]
            if bad:
                problems.append(f"{video}: frames {bad} lack JPEG start/end markers")
        return problems

    # ---- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        self._close_handles()
        self._handles_pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # descriptors are per process; reopened lazily
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._handles_pid = os.getpid()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: os may already be gone
            self.close()

    def __repr__(self) -> str:
        return f"ClipStore({str(self.root)!r}, videos={len(self)}, shards={len(self.shards())})"
