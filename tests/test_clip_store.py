"""ClipStoreWriter / ClipStore: round trip, integrity checks, crash recovery, settings, forked workers."""
from __future__ import annotations

import io
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from violet.data import clip_store
from violet.data.clip_store import ClipStore, ClipStoreWriter

SETTINGS = {"frames_per_video": 4, "short_side": 32}


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def clip(seed: int, frames: int = 4) -> list[bytes]:
    return [jpeg(((seed * 50 + i * 60) % 256, (seed * 30) % 256, (i * 70) % 256)) for i in range(frames)]


def meta(frames: int) -> dict:
    return {"width": 24, "height": 16, "src_fps": 25.0, "src_frames": 100, "duration": 4.0,
            "frame_times": [i * 0.5 for i in range(frames)], "decoder": "decord"}


def write_store(root: Path, clips: dict[str, list[bytes]], **kwargs) -> None:
    with ClipStoreWriter(root, **SETTINGS, **kwargs) as writer:
        for video_id, jpegs in clips.items():
            writer.add(video_id, jpegs, meta(len(jpegs)))


@pytest.fixture()
def clips() -> dict[str, list[bytes]]:
    return {"b/two.mp4": clip(2), "a/one.mp4": clip(1, frames=3), "vidéo ünï 名前.webm": clip(3)}


def test_round_trip(tmp_path: Path, clips: dict[str, list[bytes]]) -> None:
    write_store(tmp_path, clips)
    store = ClipStore(tmp_path)
    assert len(store) == 3
    assert store.ids() == sorted(clips)
    assert "a/one.mp4" in store and "missing.mp4" not in store and 3 not in store
    for video_id, jpegs in clips.items():
        assert store.read_frames(video_id) == jpegs
        assert store.num_frames(video_id) == len(jpegs)
    assert store.read_frames("b/two.mp4", [3, 0, 2]) == [clips["b/two.mp4"][i] for i in (3, 0, 2)]
    assert store.read_frames("b/two.mp4", [1]) == [clips["b/two.mp4"][1]]
    entry = store.meta("vidéo ünï 名前.webm")
    assert entry["video"] == "vidéo ünï 名前.webm" and entry["shard"] == "shard-00000.bin"
    assert entry["frame_lengths"] == [len(j) for j in clips["vidéo ünï 名前.webm"]]
    assert entry["crc32"] == zlib.crc32(b"".join(clips["vidéo ünï 名前.webm"]))
    assert entry["num_frames"] == 4 and entry["frame_times"] == [0.0, 0.5, 1.0, 1.5]
    assert store.verify() == []
    settings = json.loads((tmp_path / "store.json").read_text())
    assert settings == {"format": "violet-clip-store", "version": 1, "frames_per_video": 4, "short_side": 32,
                        "jpeg_quality": 90}


def test_errors_name_the_video_and_store(tmp_path: Path, clips: dict[str, list[bytes]]) -> None:
    write_store(tmp_path, clips)
    store = ClipStore(tmp_path)
    with pytest.raises(KeyError, match="nope.mp4") as error:
        store.read_frames("nope.mp4")
    assert str(tmp_path) in str(error.value)
    with pytest.raises(IndexError, match="a/one.mp4"):
        store.read_frames("a/one.mp4", [3])
    with pytest.raises(IndexError):
        store.read_frames("a/one.mp4", [-1])
    with pytest.raises(FileNotFoundError, match="not a clip store"):
        ClipStore(tmp_path / "elsewhere")


def test_verify_detects_a_flipped_byte(tmp_path: Path, clips: dict[str, list[bytes]]) -> None:
    write_store(tmp_path, clips)
    entry = ClipStore(tmp_path).meta("b/two.mp4")
    shard = tmp_path / entry["shard"]
    data = bytearray(shard.read_bytes())
    data[entry["offset"] + entry["frame_lengths"][0] + 40] ^= 0xFF  # inside frame 1
    shard.write_bytes(bytes(data))
    store = ClipStore(tmp_path)
    problems = store.verify()
    assert len(problems) == 1 and "b/two.mp4" in problems[0] and "crc32" in problems[0]
    assert store.verify("a/one.mp4") == []


def test_writer_validates_its_input(tmp_path: Path) -> None:
    with ClipStoreWriter(tmp_path, **SETTINGS) as writer:
        with pytest.raises(ValueError, match="not JPEG"):
            writer.add("x.mp4", [b"not a jpeg"], meta(1))
        with pytest.raises(ValueError, match="exceed"):
            writer.add("x.mp4", clip(0, frames=5), meta(5))
        with pytest.raises(ValueError, match="missing"):
            writer.add("x.mp4", clip(0), {"width": 1})
        with pytest.raises(ValueError, match="frame_times"):
            writer.add("x.mp4", clip(0), meta(2))
        with pytest.raises(RuntimeError, match="another ClipStoreWriter"):
            ClipStoreWriter(tmp_path, **SETTINGS)
    assert len(ClipStore(tmp_path)) == 0


def test_mismatched_settings_raise(tmp_path: Path, clips: dict[str, list[bytes]]) -> None:
    write_store(tmp_path, clips)
    with pytest.raises(ValueError, match="short_side: store has 32, requested 64"):
        ClipStoreWriter(tmp_path, frames_per_video=4, short_side=64)
    with pytest.raises(ValueError, match="jpeg_quality"):
        ClipStoreWriter(tmp_path, **SETTINGS, jpeg_quality=80)
    with ClipStoreWriter(tmp_path, **SETTINGS) as writer:  # same settings: fine, and the lock was released
        assert writer.done_ids() == set(clips)


def test_resume_after_a_crash(tmp_path: Path, clips: dict[str, list[bytes]]) -> None:
    write_store(tmp_path, clips)
    # A crash mid-video: its bytes (partly) in the shard, its index line half written.
    with (tmp_path / "shard-00000.bin").open("ab") as shard:
        shard.write(b"\xff\xd8 garbage of an unindexed clip")
    with (tmp_path / "index.jsonl").open("ab") as index:
        index.write(b'{"video": "c/crashed.mp4", "shard": "shard-00000.bin", "off')
    store = ClipStore(tmp_path)
    assert store.ids() == sorted(clips) and store.verify() == []

    with ClipStoreWriter(tmp_path, **SETTINGS) as writer:
        assert writer.done_ids() == set(clips)
        writer.add("c/crashed.mp4", clip(9), meta(4))
    assert sorted(p.name for p in tmp_path.glob("shard-*.bin")) == ["shard-00000.bin", "shard-00001.bin"]
    lines = (tmp_path / "index.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["video"] for line in lines][-1] == "c/crashed.mp4"  # every line parses
    store = ClipStore(tmp_path)
    assert store.meta("c/crashed.mp4")["shard"] == "shard-00001.bin"
    assert store.read_frames("c/crashed.mp4") == clip(9)
    assert len(store) == 4 and store.verify() == []


def test_entries_whose_bytes_are_missing_are_ignored(tmp_path: Path, clips: dict[str, list[bytes]]) -> None:
    write_store(tmp_path, clips)
    lost = {"video": "lost.mp4", "shard": "shard-00042.bin", "offset": 0, "frame_lengths": [10], "crc32": 0,
            "num_frames": 1, **meta(1)}
    with (tmp_path / "index.jsonl").open("a") as index:
        index.write(json.dumps(lost) + "\n")
    assert "lost.mp4" not in ClipStore(tmp_path)
    with ClipStoreWriter(tmp_path, **SETTINGS) as writer:
        assert "lost.mp4" not in writer.done_ids()


def test_last_entry_wins_and_shards_roll_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one_clip_bytes = len(b"".join(clip(0)))
    with ClipStoreWriter(tmp_path, **SETTINGS, shard_bytes=int(one_clip_bytes * 2.5)) as writer:
        for seed in range(5):
            writer.add(f"v{seed}.mp4", clip(seed), meta(4))
        writer.add("v0.mp4", clip(7), meta(4))  # re-extracted: the later entry wins
    store = ClipStore(tmp_path)
    assert len(store) == 5 and store.read_frames("v0.mp4") == clip(7)
    assert store.shards() == ["shard-00000.bin", "shard-00001.bin", "shard-00002.bin"]
    assert store.ids_in_shard("shard-00000.bin") == ["v1.mp4"]  # v0's first copy is superseded
    assert store.ids_in_shard("shard-00002.bin") == ["v4.mp4", "v0.mp4"]  # file order, not name order
    assert all(os.path.getsize(tmp_path / s) <= one_clip_bytes * 2.5 for s in store.shards())
    assert store.verify() == []
    monkeypatch.setattr(clip_store, "MAX_OPEN_FILES", 2)  # least recently used shards get closed
    store.close()
    for seed in (1, 2, 4, 3, 1):
        assert store.read_frames(f"v{seed}.mp4", [2]) == [clip(seed)[2]]
    assert len(store._handles) == 2


class _StoreDataset(Dataset):
    def __init__(self, store: ClipStore) -> None:
        self.store, self.ids = store, store.ids()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[str, int, int, int]:
        video_id = self.ids[index]
        crc = zlib.crc32(b"".join(self.store.read_frames(video_id)))
        return video_id, crc, os.getpid(), self.store._handles_pid


def test_forked_dataloader_workers_reopen_files(tmp_path: Path) -> None:
    clips = {f"v{seed:02d}.mp4": clip(seed) for seed in range(12)}
    write_store(tmp_path, clips)
    store = ClipStore(tmp_path)
    assert store.read_frames("v00.mp4") == clips["v00.mp4"]  # the parent opened a shard before forking
    loader = DataLoader(_StoreDataset(store), batch_size=3, num_workers=2, multiprocessing_context="fork",
                        collate_fn=lambda batch: batch)
    rows = [row for batch in loader for row in batch]
    assert {video_id: crc for video_id, crc, _, _ in rows} == {
        video_id: zlib.crc32(b"".join(jpegs)) for video_id, jpegs in clips.items()}
    worker_pids = {pid for _, _, pid, _ in rows}
    assert os.getpid() not in worker_pids and len(worker_pids) == 2
    assert all(pid == handles_pid for _, _, pid, handles_pid in rows)
    assert store.read_frames("v01.mp4") == clips["v01.mp4"]  # the parent's handles still work

    clone = pickle.loads(pickle.dumps(store))
    assert clone.read_frames("v05.mp4", [1, 2]) == clips["v05.mp4"][1:3] and clone.ids() == store.ids()


def test_crash_before_the_first_index_line_completed(tmp_path: Path) -> None:
    write_store(tmp_path, {})
    (tmp_path / "index.jsonl").write_bytes(b'{"video": "half')
    assert len(ClipStore(tmp_path)) == 0
    write_store(tmp_path, {"v.mp4": clip(1)})
    assert (tmp_path / "index.jsonl").read_bytes().startswith(b'{"video":"v.mp4"')
    assert ClipStore(tmp_path).read_frames("v.mp4") == clip(1)
