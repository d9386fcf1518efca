"""Hostile inputs not covered by test_extract.py, plus images and annotated segments, in one extraction run.

Each hostile file is either stored correctly (1-frame video, 4K frames, variable frame rate, rotated phone video,
unicode/space paths) or reported by path with a reason and counted (an image that is not one, a resolution over
--max-pixels, two file names that map to one id); nothing else is lost.
"""
from __future__ import annotations

import io
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from test_extract import PALETTE, palette_index, write_video

from prepare.annotations import prepare_annotations
from prepare.extract import extract
from violet.data.layout import annotation_path, segment_clip_id
from violet.data.clip_store import ClipStore

FRAMES, SHORT_SIDE = 6, 32
VFR_TIMES = [0.0, 0.1, 0.15, 0.9, 1.0, 2.5, 2.6, 4.0]  # seconds: bursts and gaps, as phones record


def write_vfr(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=100)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 100)
        for index, seconds in enumerate(VFR_TIMES):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), PALETTE[index], np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(seconds * 100), Fraction(1, 100)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_rotated(path: Path, options: dict[str, str] | None = None) -> None:
    """Landscape 64x32 frames, red left half and blue right half, with a 90 degree display rotation."""
    with av.open(str(path), "w", format="mp4", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)
        pixels = np.zeros((32, 64, 3), np.uint8)
        pixels[:, :32], pixels[:, 32:] = (255, 0, 0), (0, 0, 255)
        for _ in range(8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def image_bytes(colour: tuple[int, int, int], fmt: str, size: tuple[int, int] = (80, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("hostile")
    videos = data / "videos"
    write_video(videos / "one_frame.mp4", 48, 32, 1)
    write_video(videos / "huge_4k.mp4", 3840, 2160, 2)
    write_video(videos / "refused_8k.mp4", 7680, 4320, 1)
    write_vfr(videos / "vfr.mp4")
    write_rotated(videos / "phone_rotated.mp4")
    write_video(videos / "long.mp4", 32, 32, 40)  # 10 fps: frame i starts at i / 10 s and shows PALETTE[i % 27]
    write_video(videos / "spaces and ünïcødé/clip (1) 名前.mp4", 32, 32, 8)
    (videos / "images").mkdir()
    (videos / "images/photo.jpg").write_bytes(image_bytes((255, 0, 0), "JPEG"))
    (videos / "images/drawing.png").write_bytes(image_bytes((0, 255, 0), "PNG"))
    (videos / "images/web.webp").write_bytes(image_bytes((0, 0, 255), "WEBP"))
    (videos / "images/not_an_image.jpg").write_text("plain text")
    # Two names that are not UTF-8 map to the same id ("twin\ufffd.mp4"); the second is reported.
    for raw in (b"twin\xff.mp4", b"twin\xfe.mp4"):
        write_video(Path(os.fsdecode(bytes(videos) + b"/" + raw)), 32, 32, 4)
    rows = [
        {"video": "long.mp4", "caption": "the first second", "start": 0, "end": 1.0},
        {"video": "long.mp4", "caption": "seconds two to three", "start": 2.0, "end": 3.0},
        {"video": "long.mp4", "caption": "after the end", "start": 50, "end": 60},
        {"video": "long.mp4", "caption": "backwards", "start": 3, "end": 2},
        {"video": "long.mp4", "caption": "half a segment", "start": 1},
        {"video": "missing.mp4", "caption": "no such video", "start": 0, "end": 1},
        {"video": "images/photo.jpg", "caption": "a red photo"},
        {"video": "images/photo.jpg", "caption": "a red photo"},
        {"video": "spaces and ünïcødé/clip (1) 名前.mp4", "caption": "unicode path"},
        {"caption": "no video field"},
    ]
    path = annotation_path(data, "captions", "train")
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    summary = extract(data, frames=FRAMES, short_side=SHORT_SIDE, workers=2, max_pixels=3840 * 2160)
    annotations = prepare_annotations(data)
    return {"data": data, "summary": summary, "store": ClipStore(data / "clip_store"), "annotations": annotations}


def failure_reasons(run: dict[str, Any]) -> dict[str, str]:
    return {failure["video"]: failure["reason"] for failure in run["summary"]["failures"]}


def test_failures_are_reported_by_path_with_a_reason_and_counted(run: dict[str, Any]) -> None:
    reasons = failure_reasons(run)
    assert set(reasons) == {"refused_8k.mp4", "images/not_an_image.jpg", "twin\ufffd.mp4",
                            segment_clip_id("long.mp4", 50, 60)}
    assert reasons["refused_8k.mp4"].startswith("resolution 7680x4320 exceeds --max-pixels")
    assert reasons["images/not_an_image.jpg"].startswith("not a readable image")
    assert reasons["twin\ufffd.mp4"].startswith("duplicate id")
    assert "holds no frame" in reasons[segment_clip_id("long.mp4", 50, 60)]
    assert run["summary"]["failed"] == 4
    failed_lines = (run["data"] / "clip_store/failed.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["video"] for line in failed_lines} == set(reasons)


def test_everything_else_is_stored(run: dict[str, Any]) -> None:
    store = run["store"]
    expected = {"one_frame.mp4", "huge_4k.mp4", "vfr.mp4", "phone_rotated.mp4", "long.mp4",
                "spaces and ünïcødé/clip (1) 名前.mp4", "images/photo.jpg", "images/drawing.png", "images/web.webp",
                "twin\ufffd.mp4", segment_clip_id("long.mp4", 0, 1), segment_clip_id("long.mp4", 2, 3)}
    assert set(store.ids()) == expected
    assert run["summary"]["done"] == len(expected) and run["summary"]["segments"] == 3
    assert store.verify() == []


def test_one_frame_video_is_one_frame_not_padded(run: dict[str, Any]) -> None:
    assert run["store"].num_frames("one_frame.mp4") == 1


def test_huge_frames_are_downscaled(run: dict[str, Any]) -> None:
    meta = run["store"].meta("huge_4k.mp4")
    assert (meta["src_width"], meta["src_height"]) == (3840, 2160)
    assert meta["height"] == SHORT_SIDE and meta["width"] == round(3840 * SHORT_SIDE / 2160)


def test_variable_frame_rate_keeps_true_timestamps(run: dict[str, Any]) -> None:
    meta = run["store"].meta("vfr.mp4")
    assert meta["num_frames"] == FRAMES and meta["src_frames"] == len(VFR_TIMES)
    assert all(any(abs(t - v) < 0.011 for v in VFR_TIMES) for t in meta["frame_times"])
    assert meta["frame_times"] == sorted(meta["frame_times"]) and meta["frame_times"][-1] >= 2.5
    positions = [palette_index(jpeg) for jpeg in run["store"].read_frames("vfr.mp4")]
    assert positions == [min(range(len(VFR_TIMES)), key=lambda i: abs(VFR_TIMES[i] - t)) for t in meta["frame_times"]]


def upright(jpeg: bytes) -> tuple[int, int, np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
    half = image.shape[0] // 2
    return image.shape[1], image.shape[0], image[:half].mean((0, 1)), image[half:].mean((0, 1))


def test_rotated_phone_video_is_stored_upright(run: dict[str, Any], tmp_path: Path) -> None:
    from prepare.extract import _decode_with_pyav

    width, height, top, bottom = upright(run["store"].read_frames("phone_rotated.mp4", [0])[0])
    # 90 degrees counter-clockwise: the landscape frame becomes portrait, its right (blue) half on top.
    assert (width, height) == (32, 64)
    assert top[2] > 200 > top[0] and bottom[0] > 200 > bottom[2]
    # The PyAV fallback must agree with decord, which applies the rotation itself.
    clip = _decode_with_pyav(str(run["data"] / "videos/phone_rotated.mp4"), 2, 64)
    pixels = np.asarray(clip.images[0]).astype(int)
    assert pixels.shape[:2] == (64, 32) and pixels[:32].mean((0, 1))[2] > 200 and pixels[32:].mean((0, 1))[0] > 200


def test_unicode_and_spaces_in_paths(run: dict[str, Any]) -> None:
    video = "spaces and ünïcødé/clip (1) 名前.mp4"
    assert run["store"].num_frames(video) == FRAMES
    train = run["annotations"]["kinds"]["captions"]["train"]
    assert train["kept"] >= 1


def test_images_are_one_frame_clips(run: dict[str, Any]) -> None:
    store = run["store"]
    for video, colour in (("images/photo.jpg", (255, 0, 0)), ("images/drawing.png", (0, 255, 0)),
                          ("images/web.webp", (0, 0, 255))):
        meta = store.meta(video)
        assert meta["num_frames"] == 1 and meta["decoder"] == "image" and meta["height"] == SHORT_SIDE
        pixel = np.asarray(Image.open(io.BytesIO(store.read_frames(video)[0])).convert("RGB"))[16, 32].astype(int)
        assert np.abs(pixel - colour).max() < 40


def test_segments_hold_only_their_seconds(run: dict[str, Any]) -> None:
    store = run["store"]
    for start, end in ((0, 1), (2, 3)):
        clip_id = segment_clip_id("long.mp4", start, end)
        meta = store.meta(clip_id)
        assert meta["segment"] == [start, end] and meta["num_frames"] == FRAMES
        assert all(start <= t < end for t in meta["frame_times"])
        # Frame i of long.mp4 (10 fps) shows PALETTE[i % 27]: the colours prove which frames were taken.
        assert [palette_index(jpeg) for jpeg in store.read_frames(clip_id)] == [
            round(t * 10) % len(PALETTE) for t in meta["frame_times"]]


def test_annotation_rows_reported_by_line(run: dict[str, Any]) -> None:
    train = run["annotations"]["kinds"]["captions"]["train"]
    invalid = run["annotations"]["invalid_examples"]
    assert any(m.startswith("annotations/captions_train.jsonl:4: segment start=3 end=2") for m in invalid)
    assert any(m.startswith("annotations/captions_train.jsonl:5: missing required field 'end'") for m in invalid)
    assert any(m.startswith("annotations/captions_train.jsonl:10: missing required field 'video'") for m in invalid)
    assert train["invalid"] == 3
    # Unknown video and the segment past the end (its extraction failed): dropped and counted.
    assert train["missing_video"] == 2
    assert train["duplicates"] == 1 and train["duplicate_examples"] == [
        "annotations/captions_train.jsonl:8: same as line 7"]
    # Kept: two segments, the photo twice (duplicates are kept), the unicode path.
    assert train["kept"] == 5


def test_prepared_rows_point_at_segment_clips(run: dict[str, Any]) -> None:
    from prepare.annotations import load_prepared

    rows = load_prepared(run["data"], "captions")["train"]
    by_caption = dict(zip(rows["caption"], rows["video"], strict=True))
    assert by_caption["the first second"] == "long.mp4#t=0.000,1.000"
    assert by_caption["seconds two to three"] == "long.mp4#t=2.000,3.000"
    assert all(video in run["store"] for video in rows["video"])
