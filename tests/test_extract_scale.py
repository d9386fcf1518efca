"""Extraction at scale: a 1 M-clip compiled index opens instantly, merges appended lines, and resume notices
replaced source files."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from test_clip_store import clip, meta
from test_extract import palette_index, write_video

from prepare.extract import extract
from violet.data.clip_store import ClipStore, ClipStoreWriter
from violet.data.store_index import (
    ROW_COLUMNS,
    StoreIndex,
    write_lookup,
)

MILLION = 1_000_000
FRAMES = 16


def synthetic_store(root: Path, count: int) -> None:
    """A store whose compiled lookup indexes `count` clips of 16 frames in 4 shards (sparse files)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "store.json").write_text(json.dumps({"format": "violet-clip-store", "version": 1, "frames_per_video": 16,
                                                 "short_side": 256, "jpeg_quality": 90}))
    (root / "index.jsonl").write_bytes(b"")
    ids = [f"webvid/{i:07d}.mp4".encode() for i in range(count)]  # already sorted
    rows = {name: np.zeros(count, dtype) for name, dtype in ROW_COLUMNS.items()}
    rows["shard"] = (np.arange(count) % 4).astype(np.int32)
    rows["offset"] = (np.arange(count) // 4) * FRAMES * 1000
    rows["crc32"] = np.arange(count, dtype=np.uint32)
    rows["src_size"] = np.arange(count) + 10_000
    rows["src_mtime_ns"] = np.arange(count) * 7
    shards = [f"shard-{n:05d}.bin" for n in range(4)]
    for shard in shards:
        with open(root / shard, "wb") as handle:
            handle.truncate(count // 4 * FRAMES * 1000 + 1)  # sparse: no disk used
    write_lookup(root, ids, rows, np.full(count * FRAMES, 1000, np.int32),
                 np.arange(count + 1, dtype=np.int64) * FRAMES, shards, covers_bytes=0)


def anonymous_memory_mib() -> float:
    """Heap memory of this process (RssAnon): memory-mapped index pages are page cache and not counted."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return psutil.Process().memory_info().rss / 2**20


def test_a_million_clips_open_and_look_up_in_milliseconds(tmp_path: Path) -> None:
    synthetic_store(tmp_path, MILLION)
    rss_before = anonymous_memory_mib()
    started = time.perf_counter()
    store = ClipStore(tmp_path)
    opened_s = time.perf_counter() - started
    assert len(store) == MILLION
    started = time.perf_counter()
    for i in range(0, MILLION, 997):
        location = store.locate(f"webvid/{i:07d}.mp4")
        assert (location.shard, location.offset, location.crc32) == (f"shard-{i % 4:05d}.bin", i // 4 * 16000, i)
        assert location.frame_lengths == [1000] * FRAMES and location.src_size == i + 10_000
    lookups_s = (time.perf_counter() - started) / (MILLION // 997 + 1)
    assert "webvid/0999999.mp4" in store and "webvid/1000000.mp4" not in store
    rss_growth_mib = anonymous_memory_mib() - rss_before
    # Memory-mapped columns: opening reads a few pages, not 1 M Python objects (~1 KB each before).
    assert opened_s < 0.5 and lookups_s < 2e-4 and rss_growth_mib < 40, (opened_s, lookups_s, rss_growth_mib)
    # The streaming reader's per-shard slice, in file order.
    first = store.ids_in_shard("shard-00001.bin")[:3]
    assert first == ["webvid/0000001.mp4", "webvid/0000005.mp4", "webvid/0000009.mp4"]


def test_appended_lines_override_compiled_rows_and_compile_merges(tmp_path: Path) -> None:
    count = 200_000
    synthetic_store(tmp_path, count)
    # A writer session appends (a new clip, and a re-extraction of an existing id), then compiles on close.
    with ClipStoreWriter(tmp_path, frames_per_video=16, short_side=256, fsync=False) as writer:
        assert writer.stored_source("webvid/0000007.mp4") == (10_007, 49)
        assert writer.stored_source("new/clip.mp4") is None
        writer.add("new/clip.mp4", clip(1), {**meta(4), "src_size": 5, "src_mtime_ns": 6})
        writer.add("webvid/0000007.mp4", clip(2), {**meta(4), "src_size": 1, "src_mtime_ns": 2})
        mid = StoreIndex(tmp_path)  # before compiling: the two lines are the uncompiled tail
        assert len(mid) == count + 1 and len(mid.tail) == 2
        started = time.perf_counter()
    compile_s = time.perf_counter() - started
    store = ClipStore(tmp_path)
    assert len(store) == count + 1 and not store._index.tail
    assert store.read_frames("new/clip.mp4") == clip(1) and store.read_frames("webvid/0000007.mp4") == clip(2)
    assert store.locate("webvid/0000007.mp4").src_size == 1
    assert store.locate("webvid/0000008.mp4").frame_lengths == [1000] * FRAMES
    assert compile_s < 10, compile_s
    assert store.verify("new/clip.mp4") == []


def test_a_replaced_video_is_extracted_again(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    write_video(videos / "kept.mp4", 32, 32, 6)
    write_video(videos / "replaced.mp4", 32, 32, 6)
    first = extract(tmp_path, frames=4, short_side=32, workers=1)
    assert first["done"] == 2
    before = palette_index(ClipStore(tmp_path / "clip_store").read_frames("replaced.mp4", [0])[0])
    # Same name, different content (frames start later in the palette), and a different size/mtime.
    write_video(videos / "replaced.mp4", 32, 32, 9)
    os.utime(videos / "replaced.mp4", ns=(1, 1))
    second = extract(tmp_path, frames=4, short_side=32, workers=1)
    assert (second["done"], second["changed"], second["skipped"]) == (1, 1, 1)
    store = ClipStore(tmp_path / "clip_store")
    assert store.meta("replaced.mp4")["src_frames"] == 9 and store.meta("replaced.mp4")["src_mtime_ns"] == 1
    # Uniform picks: frames 0, 2, 3, 5 of the old 6-frame video; 1, 3, 5, 7 of the new 9-frame one.
    assert (before, palette_index(store.read_frames("replaced.mp4", [0])[0])) == (0, 1)
    third = extract(tmp_path, frames=4, short_side=32, workers=1)
    assert (third["done"], third["skipped"]) == (0, 2)


@pytest.mark.parametrize("stored", [None, (-1, -1)])
def test_clips_stored_before_sizes_were_recorded_are_kept(tmp_path: Path, stored: tuple[int, int] | None) -> None:
    with ClipStoreWriter(tmp_path, frames_per_video=4, short_side=32, fsync=False) as writer:
        extra = {} if stored is None else {"src_size": stored[0], "src_mtime_ns": stored[1]}
        writer.add("old.mp4", clip(1), {**meta(4), **extra})
    with ClipStoreWriter(tmp_path, frames_per_video=4, short_side=32, fsync=False) as writer:
        assert writer.stored_source("old.mp4") == (-1, -1)
