"""Tests for prepare.demo: layout, schema, determinism and that the pixels match the text."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from prepare import demo

SMALL = {"n_train": 8, "n_val": 2, "n_test": 4}
SIZE, FRAMES = 96, 24


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def scene_from_caption(caption: str) -> demo.Scene:
    """Recover the attributes from the caption words alone (each word belongs to one vocabulary)."""
    words = set(caption.replace(",", " ").split())
    found = {}
    for field, vocabulary in demo.VOCABULARY.items():
        matches = [value for value in vocabulary if value in words]
        assert len(matches) == 1, (caption, field, matches)
        found[field] = matches[0]
    return demo.Scene(**found)


def object_stats(frame: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Centroid (x, y), pixel area and mean colour of pixels far from the background.

    The object covers well under half of the frame, so the median pixel is background.
    """
    background = np.median(frame.reshape(-1, 3), axis=0)
    mask = np.abs(frame.astype(float) - background).sum(axis=-1) > 90
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()]), float(mask.sum()), frame[mask].mean(axis=0)


def nearest_colour(rgb: np.ndarray) -> str:
    return min(demo.COLOURS, key=lambda name: np.linalg.norm(np.array(demo.COLOURS[name]) - rgb))


def assert_pixels_match(scene: demo.Scene, video: np.ndarray) -> None:
    first_pos, first_area, first_rgb = object_stats(video[0])
    last_pos, last_area, last_rgb = object_stats(video[-1])
    if scene.motion in demo.DIRECTIONS:
        step = np.array(demo.DIRECTIONS[scene.motion])
        travel = float((last_pos - first_pos) @ step)
        assert travel > 0.35 * SIZE, (scene, travel)  # at least ~40% of the frame
        assert abs(last_area - first_area) < 0.3 * first_area, scene
    else:
        ratio = last_area / first_area
        assert (ratio > 3) if scene.motion == "grows" else (ratio < 1 / 3), (scene, ratio)
    for rgb in (first_rgb, last_rgb):
        assert nearest_colour(rgb) == scene.colour, (scene, rgb)
    background = np.median(video[0].reshape(-1, 3), axis=0)
    assert np.abs(background - demo.BACKGROUNDS[scene.background]).max() < 20, (scene, background)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, demo.make_demo(out, seed=0, **SMALL)


def test_counts_and_files(dataset):
    out, counts = dataset
    assert (out / "README.md").is_file()
    for split, expected in zip(demo.SPLITS, SMALL.values()):
        assert counts[split]["videos"] == counts[split]["captions"] == counts[split]["qa_mc"] == expected
        assert len(list((out / "videos" / split).glob("*.mp4"))) == expected
        for kind in ("captions", "qa_mc", "qa_oe"):
            rows = read_jsonl(out / "annotations" / f"{kind}_{split}.jsonl")
            assert len(rows) == counts[split][kind]
            assert all((out / "videos" / row["video"]).is_file() for row in rows)
            assert all(row["video"].startswith(f"{split}/") for row in rows)


def test_schema_and_answers(dataset):
    out, _ = dataset
    for split in demo.SPLITS:
        captions = read_jsonl(out / "annotations" / f"captions_{split}.jsonl")
        assert len({row["caption"] for row in captions}) == len(captions)  # distinct within a split
        scenes = {}
        for row in captions:
            assert set(row) == {"video", "caption"} and isinstance(row["caption"], str)
            scenes[row["video"]] = scene_from_caption(row["caption"])
        for row in read_jsonl(out / "annotations" / f"qa_mc_{split}.jsonl"):
            assert set(row) == {"video", "question", "options", "answer"}
            options, answer = row["options"], row["answer"]
            assert isinstance(answer, int) and 0 <= answer < len(options) == 5
            assert len(set(options)) == 5 and all(isinstance(o, str) for o in options)
            with_background = "background" in options[answer]
            assert options[answer] == demo.short_description(scenes[row["video"]], with_background)
            assert row["question"] in demo.MC_QUESTIONS
        oe_rows = read_jsonl(out / "annotations" / f"qa_oe_{split}.jsonl")
        assert {row["video"] for row in oe_rows} == set(scenes)
        for row in oe_rows:
            assert set(row) == {"video", "question", "answer"}
            assert row["answer"].isalpha() and row["answer"].islower()
            assert row["answer"] in vars(scenes[row["video"]]).values()


def test_videos_decode_and_pixels_match_captions(dataset):
    out, _ = dataset
    for split in demo.SPLITS:
        for row in read_jsonl(out / "annotations" / f"captions_{split}.jsonl"):
            video = decode(out / "videos" / row["video"])
            assert video.shape == (FRAMES, SIZE, SIZE, 3)
            assert_pixels_match(scene_from_caption(row["caption"]), video)


def test_every_motion_and_colour_survives_encoding(tmp_path):
    # The small data set does not cover every attribute, so round-trip one scene per motion/colour.
    colours = list(demo.COLOURS)
    for index in range(len(colours)):
        scene = demo.Scene(background=list(demo.BACKGROUNDS)[index % 4], shape=demo.SHAPES[index % 4],
                           colour=colours[index], motion=demo.MOTIONS[index % len(demo.MOTIONS)])
        path = tmp_path / f"{index}.mp4"
        demo.write_mp4(path, demo.render_frames(scene, np.random.default_rng(index), SIZE, FRAMES), fps=8)
        assert_pixels_match(scene, decode(path))


def test_deterministic(dataset, tmp_path):
    out, _ = dataset
    demo.make_demo(tmp_path, seed=0, **SMALL)
    for path in sorted((out / "annotations").iterdir()):
        assert path.read_bytes() == (tmp_path / "annotations" / path.name).read_bytes(), path.name
    for path in sorted((out / "videos").rglob("*.mp4")):
        assert path.read_bytes() == (tmp_path / path.relative_to(out)).read_bytes(), path


def test_other_seed_differs(dataset, tmp_path):
    out, _ = dataset
    demo.make_demo(tmp_path, seed=1, n_train=8, n_val=0, n_test=0)
    name = "captions_train.jsonl"
    assert (out / "annotations" / name).read_bytes() != (tmp_path / "annotations" / name).read_bytes()


def test_refuses_existing_output_without_force(dataset, tmp_path):
    out, _ = dataset
    with pytest.raises(SystemExit) as refused:
        demo.main([str(out), "--train", "1", "--val", "0", "--test", "0"])
    assert refused.value.code == 2
    demo.main([str(tmp_path), "--train", "3", "--val", "0", "--test", "0"])
    demo.main([str(tmp_path), "--train", "2", "--val", "1", "--test", "0", "--force"])
    assert len(read_jsonl(tmp_path / "annotations" / "captions_train.jsonl")) == 2
    assert len(list((tmp_path / "videos" / "train").glob("*.mp4"))) == 2  # stale clip removed
