"""violet.load on raw files must see what evaluation sees: the same pixels, the same embeddings, the same ranking.

One small world is generated and prepared (8 frames at 48 px, not prepare's defaults, so the settings must come
from the run), one tiny retrieval run (with the VTM head, so re-ranking is exercised) and one tiny qa-mc run are
trained for a few steps; the agreement checks need a model, not a good one.
"""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import SMOKE_MODEL

import evaluate
import train
import violet
from prepare.__main__ import build_parser as prepare_parser
from prepare.__main__ import main as prepare_main
from prepare.extract import VIDEO_EXTENSIONS as PREPARE_VIDEO_EXTENSIONS
from prepare.worlds import make_world
from violet.api import RunCapabilityError, VideoFileError, clip_settings
from violet.data.collate import unique_videos
from violet.data.datasets import ClipDataset
from violet.data.decode import PREPARE_DEFAULTS, VIDEO_EXTENSIONS, frame_windows, window_spans
from violet.data.layout import default_store_dir, videos_dir
from violet.data.prepared import load_prepared
from violet.engine.rundir import RunDir
from violet.metrics import retrieval_metrics
from violet.objectives import match_score

STORE_SETTINGS = {"frames_per_video": 8, "short_side": 48, "jpeg_quality": 90}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = tmp_path_factory.mktemp("api_world")
    make_world(data, seed=21, n_train=16, n_val=4, n_test=12)
    assert prepare_main([str(data), "--frames", "8", "--short-side", "48", "--workers", "2"]) == 0
    return data


@pytest.fixture(scope="module")
def retrieval_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("api_runs") / "retrieval"
    train.main(["--task", "retrieval", "--data", str(world), "--output-dir", str(out), "--max-steps", "3",
                "--batch-size", "8", *SMOKE_MODEL, "objective.vtm_weight=1"])
    return out


@pytest.fixture(scope="module", params=[0.0, 1.0], ids=["dual", "dual+vtm"])
def qa_mc_run(world, tmp_path_factory, request):
    """qa-mc runs scoring options by the dual encoder alone (objective.vtm_weight=0) and with the VTM match."""
    out = tmp_path_factory.mktemp("api_runs") / "qa-mc"
    train.main(["--task", "qa-mc", "--data", str(world), "--output-dir", str(out), "--max-steps", "2",
                "--batch-size", "4", f"objective.vtm_weight={request.param}", *SMOKE_MODEL])
    return out


@pytest.fixture(scope="module")
def model(retrieval_run):
    return violet.load(retrieval_run, device="cpu")


def assert_same_ranking(ours: dict, evaluated: dict) -> None:
    """R@1 within 1 point (one caption is 8), and the mean rank, which moves with any caption's rank."""
    assert abs(ours["t2v_r1"] - evaluated["t2v_r1"]) <= 1.0, (ours, evaluated)
    assert ours["t2v_r5"] == pytest.approx(evaluated["t2v_r5"]) and ours["t2v_meanr"] == pytest.approx(
        evaluated["t2v_meanr"]), (ours, evaluated)


def test_test_split_of_raw_files_ranks_as_evaluate_does(world, retrieval_run, model, tmp_path):
    rows = load_prepared(world, "captions")["test"]
    videos, text_to_video = unique_videos(rows)
    files = [videos_dir(world) / video for video in videos["video"]]
    store_frames = ClipDataset(videos, default_store_dir(world), model.num_frames, model.image_size, train=False)
    for video, file in zip(videos["video"], files):  # the very pixels the clip store gives evaluation
        assert torch.equal(model.clips(file)[0], store_frames.load_clip(video, None)), video
    video_embed = model.encode_videos(files, batch_size=3)  # batches that split the set unevenly
    text_embed = model.encode_texts(rows["caption"])
    with torch.no_grad():
        stored = model.model("video", frames=torch.stack([store_frames[i]["frames"] for i in range(len(files))]))
    cosine = (video_embed * stored["embed"].float()).sum(dim=1)
    assert cosine.min() > 0.99, cosine
    assert torch.allclose(video_embed.norm(dim=1), torch.ones(len(files)), atol=1e-5)

    similarity = text_embed @ video_embed.T
    ours = retrieval_metrics(similarity, text_to_video)
    assert torch.allclose(model.score(files, rows["caption"], rerank_k=0), similarity, atol=1e-6)
    evaluated = evaluate.main(["--task", "retrieval", "--data", str(world), "--checkpoint", str(retrieval_run),
                               "--rerank-k", "0", "--split", "test", "--output", str(tmp_path / "dual.json")])
    assert_same_ranking(ours, evaluated)

    # With the VTM head, re-ranking the top 4 per caption as evaluation does.
    reranked = retrieval_metrics(model.score(files, rows["caption"], rerank_k=4), text_to_video)
    evaluated = evaluate.main(["--task", "retrieval", "--data", str(world), "--checkpoint", str(retrieval_run),
                               "--rerank-k", "4", "--split", "test", "--output", str(tmp_path / "rerank.json")])
    assert_same_ranking(reranked, evaluated)


def test_settings_come_from_the_run_and_old_runs_fall_back(retrieval_run, model, tmp_path, caplog):
    assert model.settings.frames_per_video == 8 and model.settings.short_side == 48
    assert model.settings.source.endswith("run.json")
    old = tmp_path / "old_run"  # a run made before run.json existed, its data still in place
    shutil.copytree(retrieval_run, old, ignore=shutil.ignore_patterns("run.json", "checkpoints"))
    config = RunDir(old).load_config()
    with caplog.at_level(logging.WARNING, logger="violet.api"):
        from_store = clip_settings(RunDir(old), config)
        config.data.data_dir = str(tmp_path / "gone")
        defaults = clip_settings(RunDir(old), config)
    assert {key: getattr(from_store, key) for key in STORE_SETTINGS} == STORE_SETTINGS
    assert {key: getattr(defaults, key) for key in PREPARE_DEFAULTS} == PREPARE_DEFAULTS
    assert "prepare's defaults" in caplog.text
    prepare_defaults = prepare_parser().parse_args(["DATA"])
    assert (prepare_defaults.frames, prepare_defaults.short_side, prepare_defaults.quality) == (16, 256, 90)
    assert tuple(PREPARE_DEFAULTS.values()) == (16, 256, 90)
    assert VIDEO_EXTENSIONS == PREPARE_VIDEO_EXTENSIONS


def test_unreadable_and_missing_files_raise_an_error_naming_them(world, model, tmp_path):
    good = next((videos_dir(world) / "test").iterdir())
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)
    with pytest.raises(VideoFileError) as caught:
        model.encode_videos([good, bad])
    assert caught.value.path == str(bad) and str(bad) in str(caught.value)
    with pytest.raises(VideoFileError, match="no such file"):
        model.encode_videos([tmp_path / "missing.webm"])
    with pytest.raises(ValueError, match="uint8"):
        model.encode_videos(np.zeros((4, 8, 8, 3), dtype=np.float32))


def test_windows_average_their_embeddings(world, model):
    file = next((videos_dir(world) / "test").iterdir())  # 16 frames at 8 fps: 2 s
    assert window_spans(2.0, 1.0, 0.5) == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
    assert window_spans(2.0, 1.0, 0.75) == [(0.0, 1.0), (0.75, 1.75), (1.0, 2.0)]  # the tail is kept
    assert window_spans(2.0, 3.0, 1.0) == [None] and frame_windows(16, 8, 1.0, 1.0) == [(0, 8), (8, 16)]
    clips = model.clips(file, window_stride=0.5, window_seconds=1.0)
    assert clips.shape[0] == 3
    windowed = model.encode_videos(file, window_stride=0.5, window_seconds=1.0)
    with model.inference():
        each = model.model("video", frames=clips)["embed"].float()
    assert torch.allclose(windowed[0], torch.nn.functional.normalize(each.mean(dim=0), dim=0), atol=1e-5)
    assert not torch.allclose(windowed, model.encode_videos(file), atol=1e-3)
    frames = np.random.default_rng(0).integers(0, 256, (24, 40, 56, 3), dtype=np.uint8)
    assert model.clips(frames, window_stride=1.0, window_seconds=1.0, fps=8).shape[0] == 3
    with pytest.raises(ValueError, match="fps"):
        model.encode_videos(frames, window_stride=1.0)


def test_long_videos_stream_their_windows_in_bounded_batches(world, model, monkeypatch):
    """A long video is never decoded or encoded whole: the encoder sees at most `batch_size` windows at a time,
    no window tensor of the whole video is built, and the pooled embedding and the best-window re-ranking
    equal what all windows at once give."""
    frames = np.random.default_rng(1).integers(0, 256, (96, 40, 56, 3), dtype=np.uint8)  # 12 s at 8 fps
    window = {"window_stride": 0.5, "window_seconds": 1.0, "fps": 8}
    everything = model.clips(frames, **window)  # 23 windows, built here only to compute the expectation
    assert everything.shape[0] == 23
    with model.inference():
        tokens = model.model("video", frames=everything)["tokens"]
        expected = torch.nn.functional.normalize(model.model("video", frames=everything)["embed"].float().mean(0), dim=0)
    encoder, seen = model.model, []

    def counting(mode, **inputs):
        if mode == "video":
            seen.append(len(inputs["frames"]))
        return encoder(mode, **inputs)

    monkeypatch.setattr(model, "model", counting)
    monkeypatch.setattr(model, "clips", lambda *a, **k: pytest.fail("the whole video's windows were stacked"))
    streamed = model.encode_videos(frames, batch_size=4, **window)
    assert max(seen) <= 4 and sum(seen) == 23
    assert torch.allclose(streamed[0], expected, atol=1e-5)

    from violet.api import as_frames
    from violet.windows import best_window_matches

    texts = model._text_features(["a red square moves left"], 64, keep_tokens=True)
    seen.clear()
    best = best_window_matches(model, [as_frames(frames)], texts, {0: [0]}, 4, window)
    assert max(seen) <= 4
    with model.inference():
        direct = match_score(encoder("fusion", text_tokens=texts["tokens"].expand(23, -1, -1),
                                     text_mask=texts["mask"].expand(23, -1), video_tokens=tokens)["vtm_logits"])
    assert best[(0, 0)] == pytest.approx(float(direct.max()), abs=1e-4)


def test_answer_needs_the_right_run(world, model, qa_mc_run, tmp_path):
    with pytest.raises(RunCapabilityError, match="qa-oe"):
        model.answer(next((videos_dir(world) / "test").iterdir()), "what moves?")
    qa = violet.load(qa_mc_run, device="cpu")
    vtm_weight = json.loads((qa_mc_run / "config.json").read_text())["objective"]["vtm_weight"]
    assert ("vtm" in qa.heads) == (vtm_weight > 0)  # no fused match head is built or saved without its loss
    rows = load_prepared(world, "qa_mc")["test"]
    choices = []
    for row in rows:
        result = qa.answer(videos_dir(world) / row["video"], row["question"], row["options"])
        assert 0 <= result["choice"] < len(row["options"]) and len(result["scores"]) == len(row["options"])
        assert abs(sum(result["probabilities"]) - 1) < 1e-5
        choices.append(result["choice"] == row["answer"])
    evaluated = evaluate.main(["--task", "qa-mc", "--data", str(world), "--checkpoint", str(qa_mc_run),
                               "--split", "test", "--output", str(tmp_path / "qa.json")])
    assert abs(100 * np.mean(choices) - evaluated["accuracy"]) <= 1.0, (choices, evaluated)
    assert json.loads((tmp_path / "qa.json").read_text())["n"] == len(rows)



@pytest.mark.parametrize("scoring", ["classifier", "text"])
def test_open_ended_answers_agree_with_evaluate(world, tmp_path, scoring):
    out = tmp_path / "qa-oe"
    train.main(["--task", "qa-oe", "--data", str(world), "--output-dir", str(out), "--max-steps", "2",
                "--batch-size", "8", f"objective.answer_scoring={scoring}", *SMOKE_MODEL])
    qa = violet.load(out, device="cpu")
    assert ("qa_oe" in qa.heads) == (scoring == "classifier")  # text scoring needs no classifier head
    rows = load_prepared(world, "qa_oe")["test"]
    right = []
    for row in rows:
        answers = qa.answer(videos_dir(world) / row["video"], row["question"], top_k=3)["answers"]
        probabilities = [entry["probability"] for entry in answers]
        assert len(answers) == 3 and probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
        right.append(answers[0]["answer"] == row["answer"].strip().lower())  # as qa-oe labels answers
    evaluated = evaluate.main(["--task", "qa-oe", "--data", str(world), "--checkpoint", str(out), "--split", "test",
                               "--output", str(tmp_path / "oe.json")])
    assert abs(100 * np.mean(right) - evaluated["accuracy"]) <= 1.0, (np.mean(right), evaluated)
