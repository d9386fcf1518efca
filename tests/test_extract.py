"""prepare.extract on real (tiny) H.264 / GIF videos written with PyAV, plus hostile files."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from prepare.extract import (CRASH_REASON, _decode_all, _decode_with_decord, _decode_with_pyav, extract, main,
                             uniform_frame_indices)
from violet.data.clip_store import ClipStore

# 27 colours 128 levels apart: every frame is identifiable after H.264, GIF palettes and JPEG.
PALETTE = [(r, g, b) for r in (0, 128, 255) for g in (0, 128, 255) for b in (0, 128, 255)]
FPS = 10
GOOD = {  # id -> (width, height, frames)
    "colours.mp4": (64, 48, 20),
    "tall.mov": (48, 96, 12),
    "tiny.mp4": (24, 16, 10),
    "three.mp4": (64, 48, 3),
    "anim.gif": (64, 48, 10),
    "dir with space/vidéo ünï 名前.MP4": (64, 48, 12),
}
HOSTILE = ["broken/truncated.mp4", "broken/truncated_faststart.mp4", "broken/empty.mp4", "broken/notes.mp4",
           "broken/audio_only.mp4"]
FRAMES, SHORT_SIDE = 8, 32


def write_video(path: Path, width: int, height: int, frames: int, *, static: bool = False,
                options: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    is_gif = path.suffix == ".gif"
    container_format = {".gif": "gif", ".mov": "mov", ".mkv": "matroska"}.get(path.suffix.lower(), "mp4")
    with av.open(str(path), "w", format=container_format, options=options or {}) as container:
        stream = container.add_stream("gif" if is_gif else "libx264", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb8" if is_gif else "yuv420p"
        for index in range(frames):
            pixels = np.empty((height, width, 3), np.uint8)
            pixels[:] = PALETTE[0 if static else index % len(PALETTE)]
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def palette_index(jpeg: bytes) -> int:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    centre = np.asarray(image)[image.height // 2, image.width // 2].astype(int)
    return int(np.argmin([np.abs(centre - np.array(colour)).sum() for colour in PALETTE]))


def run_main(argv: list[str]) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("data")
    videos = data / "videos"
    for video_id, (width, height, frames) in GOOD.items():
        write_video(videos / video_id, width, height, frames)
    whole = (videos / "colours.mp4").read_bytes()
    write_video(videos / "static.mp4", 64, 48, 20, static=True)
    (videos / "broken").mkdir()
    (videos / "broken/truncated.mp4").write_bytes(whole[: len(whole) // 2])  # index (moov) at the end: lost
    # Index first, so the first half of the frames still decode: a typical interrupted download.
    write_video(data / "faststart.mp4", 64, 48, 100, options={"movflags": "faststart"})
    faststart = (data / "faststart.mp4").read_bytes()
    (videos / "broken/truncated_faststart.mp4").write_bytes(faststart[: len(faststart) // 2])
    (videos / "broken/empty.mp4").write_bytes(b"")
    (videos / "broken/notes.mp4").write_text("these are my notes, not a video\n" * 20)
    write_audio_only(videos / "broken/audio_only.mp4")
    (videos / "README.txt").write_text("not a video extension: ignored")
    argv = [str(data), "--frames", str(FRAMES), "--short-side", str(SHORT_SIDE), "--workers", "2"]
    first_code, first_output = run_main(argv)
    first_summary = json.loads((data / "clip_store/summary.json").read_text())
    first_failed = (data / "clip_store/failed.jsonl").read_text()
    second_code, second_output = run_main(argv + ["--strict"])
    return {"data": data, "store": ClipStore(data / "clip_store"), "first": (first_code, first_output, first_summary),
            "first_failed": first_failed, "second": (second_code, second_output),
            "second_summary": json.loads((data / "clip_store/summary.json").read_text())}


def test_good_videos_stored_and_hostile_ones_reported(runs: dict[str, Any]) -> None:
    code, output, summary = runs["first"]
    assert code == 0
    assert (summary["done"], summary["skipped"], summary["failed"]) == (len(GOOD) + 1, 0, len(HOSTILE))
    assert runs["store"].ids() == sorted([*GOOD, "static.mp4"])
    assert runs["store"].verify() == []
    reasons = {failure["video"]: failure["reason"] for failure in summary["failures"]}
    assert sorted(reasons) == sorted(HOSTILE)
    assert reasons["broken/empty.mp4"] == "empty file (0 bytes)"
    assert reasons["broken/audio_only.mp4"].startswith("no video stream")
    assert reasons["broken/truncated_faststart.mp4"].startswith("truncated or corrupt: only ")
    for video_id in ("broken/truncated.mp4", "broken/notes.mp4"):  # both decoders tried, both reasons given
        assert "decord:" in reasons[video_id] and "pyav:" in reasons[video_id]
    failed_lines = [json.loads(line) for line in runs["first_failed"].splitlines()]
    assert {line["video"]: line["reason"] for line in failed_lines} == reasons
    for video_id in HOSTILE:
        assert f"{video_id}: {reasons[video_id]}" in output
    assert summary["frames_per_video"] == FRAMES and summary["short_side"] == SHORT_SIDE
    assert summary["videos_per_s"] > 0


def test_frames_are_uniform_segment_middles(runs: dict[str, Any]) -> None:
    store: ClipStore = runs["store"]
    expected = [1, 3, 6, 8, 11, 13, 16, 18]
    assert uniform_frame_indices(20, FRAMES) == expected
    assert [palette_index(jpeg) for jpeg in store.read_frames("colours.mp4")] == expected
    entry = store.meta("colours.mp4")
    assert entry["decoder"] == "decord" and entry["src_frames"] == 20 and entry["src_fps"] == FPS
    assert entry["frame_times"] == pytest.approx([i / FPS for i in expected])
    assert entry["duration"] == pytest.approx(2.0)
    unicode_id = "dir with space/vidéo ünï 名前.MP4"
    assert [palette_index(j) for j in store.read_frames(unicode_id)] == uniform_frame_indices(12, FRAMES)


def test_short_videos_are_not_padded(runs: dict[str, Any]) -> None:
    store: ClipStore = runs["store"]
    assert store.num_frames("three.mp4") == 3
    assert [palette_index(jpeg) for jpeg in store.read_frames("three.mp4")] == [0, 1, 2]


def test_gif_decoded_with_pyav(runs: dict[str, Any]) -> None:
    store: ClipStore = runs["store"]
    assert store.meta("anim.gif")["decoder"] == "pyav"  # decord rejects GIF metadata
    assert [palette_index(jpeg) for jpeg in store.read_frames("anim.gif")] == uniform_frame_indices(10, FRAMES)


def test_static_video_is_stored_after_pyav_confirms_it(runs: dict[str, Any]) -> None:
    # decord's identical frames could be its silent fault tolerance; PyAV decodes every frame to be sure.
    store: ClipStore = runs["store"]
    assert store.meta("static.mp4")["decoder"] == "pyav" and store.num_frames("static.mp4") == FRAMES


def test_pyav_fallback_picks_the_same_frames_as_decord(tmp_path: Path) -> None:
    # Matroska declares no frame count, so PyAV samples from a duration guess and checks it by decoding.
    write_video(tmp_path / "clip.mkv", 64, 48, 21)
    by_pyav = _decode_with_pyav(str(tmp_path / "clip.mkv"), FRAMES, SHORT_SIDE)
    by_decord = _decode_with_decord(str(tmp_path / "clip.mkv"), FRAMES, SHORT_SIDE)
    expected = uniform_frame_indices(21, FRAMES)
    for clip in (by_pyav, by_decord):
        assert [palette_index(jpeg_of(image)) for image in clip.images] == expected
        assert clip.src_frames == 21 and clip.frame_times == pytest.approx([i / FPS for i in expected])


def jpeg_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_resized_to_short_side_keeping_aspect_never_upscaled(runs: dict[str, Any]) -> None:
    store: ClipStore = runs["store"]
    for video_id, size in {"colours.mp4": (43, 32), "tall.mov": (32, 64), "tiny.mp4": (24, 16)}.items():
        entry = store.meta(video_id)
        assert (entry["width"], entry["height"]) == size
        assert Image.open(io.BytesIO(store.read_frames(video_id, [0])[0])).size == size
        assert (entry["src_width"], entry["src_height"]) == GOOD[video_id][:2]


def test_second_run_skips_done_videos_and_strict_fails(runs: dict[str, Any]) -> None:
    code, output = runs["second"]
    summary = runs["second_summary"]
    assert code == 1  # --strict, and the hostile files fail again
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, len(GOOD) + 1, len(HOSTILE))
    assert f"{len(GOOD) + 1} skipped" in output
    assert len(ClipStore(runs["data"] / "clip_store")) == len(GOOD) + 1


def test_no_videos_or_only_failures_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert str(tmp_path / "videos") in capsys.readouterr().err
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos/empty.webm").write_bytes(b"")
    assert main([str(tmp_path), "--workers", "1"]) == 1
    assert "every video failed" in capsys.readouterr().err


def test_store_settings_must_match(runs: dict[str, Any], tmp_path: Path) -> None:
    shutil.copytree(runs["data"] / "clip_store", tmp_path / "store")
    with pytest.raises(ValueError, match="short_side"):
        extract(runs["data"], frames=FRAMES, short_side=64, workers=1, store_dir=tmp_path / "store")


CRASHING_DECODER = textwrap.dedent('''
    import os, signal, time
    from prepare.extract import extract_video

    def decode(path, frames, short_side, quality):
        name = os.path.basename(path)
        if name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if name.startswith("hang"):
            time.sleep(600)
        return extract_video(path, frames, short_side, quality)
''')


def test_crashing_or_hanging_decoder_fails_only_its_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The decoder lives in a real module so that spawned workers can import it.
    (tmp_path / "crashing_decoder.py").write_text(CRASHING_DECODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    from crashing_decoder import decode  # type: ignore[import-not-found]

    names = ["a_good.mp4", "crash.mp4", "hang.mp4", "z_good.mp4"]
    for name in names:
        write_video(tmp_path / name, 32, 32, 6)
    tasks = [(name, tmp_path / name) for name in names]
    results = {video_id: (result, reason) for video_id, result, reason in
               _decode_all(tasks, frames=4, short_side=32, quality=90, workers=2, timeout_s=2, decode=decode)}
    assert sorted(results) == names
    for name in ("crash.mp4", "hang.mp4"):
        assert results[name][0] is None and results[name][1].startswith(CRASH_REASON)
    for name in ("a_good.mp4", "z_good.mp4"):
        jpegs, meta = results[name][0]
        assert results[name][1] is None and len(jpegs) == 4 and meta["decoder"] == "decord"
