"""violet.index / violet.search / violet.answer: index, add, resume after a kill, skip bad files, search exactly.

The run is a randomly initialised tiny model saved as a run directory: what is checked here (which files get
embedded, what is stored, what search returns) does not depend on training.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMOKE_MODEL
from safetensors.torch import save_file

import violet
from prepare.demo import write_mp4
from violet import answer as answer_cli
from violet import index as index_cli
from violet import search as search_cli
from violet.config import RunConfig, apply_overrides, parse_dotted
from violet.data.text import load_tokenizer
from violet.engine.rundir import RunDir
from violet.index import IndexError_, VideoIndex, build_index
from violet.models import VideoLanguageModel

QUERIES = ["a red square moves left", "the blue circle goes up quickly"]


def make_run(path, seed: int) -> RunDir:
    config = RunConfig(task="retrieval")
    apply_overrides(config, parse_dotted(SMOKE_MODEL))
    tokenizer = load_tokenizer("")
    torch.manual_seed(seed)
    model = VideoLanguageModel(config.model, len(tokenizer), ("vtc",))
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.save_config(config)
    tokenizer.save_pretrained(str(run.tokenizer_dir))
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(run.weights_path))
    run.save_metadata({"data": {"clip_store": {"frames_per_video": 6, "short_side": 32, "jpeg_quality": 90}}})
    return run


def write_videos(root, names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (1, 1, 1, 3))
        noise = rng.integers(0, 60, (8, 32, 32, 3))
        write_mp4(path, np.clip(base + noise, 0, 255).astype(np.uint8), fps=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("index_run") / "run", seed=0)


@pytest.fixture()
def model(run, monkeypatch):
    """The loaded run, counting the files it decodes."""
    loaded = violet.load(run.path, device="cpu")
    loaded.decoded = []
    window_clips = loaded.window_clips

    def counting(video, *args, **window):
        loaded.decoded.append(str(video))
        return window_clips(video, *args, **window)

    monkeypatch.setattr(loaded, "window_clips", counting)
    return loaded


@pytest.fixture()
def videos(tmp_path):
    root = tmp_path / "videos"
    write_videos(root, [f"a/{i}.mp4" for i in range(3)] + [f"b/c/{i}.mp4" for i in range(3)])
    return root


def test_index_add_and_search_round_trip(model, videos, tmp_path):
    out = tmp_path / "index"
    summary = build_index(model, videos, out, batch_size=2, flush_every=1)
    assert summary["indexed"] == 6 and summary["failed"] == 0 and len(model.decoded) == 6
    index = VideoIndex.open(out)
    assert index.manifest["complete"] and index.manifest["run"]["weights_sha256"]
    assert sorted(index.paths) == sorted(p.relative_to(videos).as_posix() for p in videos.rglob("*.mp4"))
    with pytest.raises(IndexError_, match="--add"):
        build_index(model, videos, out)
    write_videos(videos, ["new/x.mp4", "new/y.mp4"], seed=1)
    model.decoded.clear()
    assert build_index(model, videos, out, add=True, batch_size=2)["indexed"] == 2
    assert sorted(model.decoded) == [str(videos / "new/x.mp4"), str(videos / "new/y.mp4")]  # old ones not again

    index = VideoIndex.open(out)
    fresh = model.encode_videos([videos / path for path in index.paths])
    assert torch.allclose(index.embeddings(), fresh, atol=1e-6)
    results = search_cli.search(model, index, QUERIES, k=100)
    expected = model.encode_texts(QUERIES) @ fresh.T
    for query, ranked in enumerate(results):
        assert sorted(r["path"] for r in ranked) == sorted(index.paths)  # every indexed video, once
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)
        for result in ranked:
            assert result["score"] == pytest.approx(float(expected[query, index.paths.index(result["path"])]), abs=1e-5)


def test_a_killed_run_continues_without_embedding_finished_files_again(model, videos, tmp_path, monkeypatch):
    out = tmp_path / "index"
    embed = model.embed_in_chunks

    def dies_on_the_third_chunk(*args, **kwargs):
        for number, chunk in enumerate(embed(*args, **kwargs), start=1):
            if number == 3:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(model, "embed_in_chunks", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_index(model, videos, out, batch_size=2, flush_every=10)  # kept although no flush was due
    partial = VideoIndex.open(out)
    assert not partial.manifest["complete"] and len(partial.paths) == 4
    monkeypatch.setattr(model, "embed_in_chunks", embed)
    model.decoded.clear()
    summary = build_index(model, videos, out, batch_size=2)  # the same command again, no --add
    assert summary["indexed"] == 2 and summary["total"] == 6
    assert sorted(model.decoded) == sorted(str(videos / path) for path in set(VideoIndex.open(out).paths)
                                           - set(partial.paths))
    index = VideoIndex.open(out)
    assert index.manifest["complete"] and len(set(index.paths)) == 6
    assert torch.allclose(index.embeddings(), model.encode_videos([videos / p for p in index.paths]), atol=1e-6)


def test_bad_files_are_reported_skipped_and_retried_once_changed(model, videos, tmp_path, capsys):
    bad = videos / "a" / "broken.webm"
    bad.write_bytes(b"not a video at all" * 50)
    out = tmp_path / "index"
    summary = build_index(model, videos, out, batch_size=4)
    assert summary["indexed"] == 6 and summary["failed"] == 1
    failures = VideoIndex.open(out).manifest["failures"]
    assert [f["path"] for f in failures] == ["a/broken.webm"] and failures[0]["reason"]
    assert "a/broken.webm" not in VideoIndex.open(out).paths
    model.decoded.clear()
    assert build_index(model, videos, out, add=True)["indexed"] == 0 and model.decoded == []  # unchanged: not again
    write_videos(videos, ["a/broken.webm"], seed=2)  # replaced by a readable file
    assert build_index(model, videos, out, add=True)["indexed"] == 1
    assert VideoIndex.open(out).manifest["failures"] == []


def test_an_index_of_another_run_is_refused(model, videos, tmp_path):
    out = tmp_path / "index"
    build_index(model, videos, out, batch_size=8)
    other = violet.load(make_run(tmp_path / "other", seed=1).path, device="cpu")
    with pytest.raises(IndexError_, match="another run"):
        build_index(other, videos, out, add=True)


def test_command_lines(run, videos, tmp_path, capsys):
    out = tmp_path / "index"
    assert index_cli.main(["--checkpoint", str(run.path), "--videos", str(videos), "--out", str(out), "--quiet"]) == 0
    assert "indexed 6 files" in capsys.readouterr().out
    assert search_cli.main(["--index", str(out), QUERIES[0], "-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["rank"] for r in results] == [1, 2, 3] and all((videos / r["path"]).is_file() for r in results)
    assert search_cli.main(["--index", str(tmp_path / "nothing"), "query"]) == 1
    assert "not a video index" in capsys.readouterr().err
    video = next(videos.rglob("*.mp4"))
    assert answer_cli.main(["--checkpoint", str(run.path), str(video), "what moves?"]) == 1  # no answer head
    assert "qa-oe" in capsys.readouterr().err
    # Options are scored by the dual encoder, which a retrieval run has: it can choose (as qa-mc zero-shot does).
    assert answer_cli.main(["--checkpoint", str(run.path), str(video), "q", "--options", "a", "b", "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    assert chosen["option"] in ("a", "b") and len(chosen["probabilities"]) == 2
    for cli in (index_cli, search_cli, answer_cli):
        with pytest.raises(SystemExit) as exited:
            cli.main(["--help"])
        assert exited.value.code == 0


def test_an_index_keeps_its_window_settings(model, videos, tmp_path):
    out = tmp_path / "index"
    build_index(model, videos, out, window_stride=0.5)  # the run's clip length is unknown: windows of the stride
    made = VideoIndex.open(out).manifest
    assert (made["window_stride"], made["window_seconds"]) == (0.5, 0.5)
    write_videos(videos, ["new/z.mp4"], seed=3)
    assert build_index(model, videos, out, add=True)["indexed"] == 1  # continued with the index's windows
    index = VideoIndex.open(out)
    expected = model.encode_videos(videos / "new/z.mp4", window_stride=0.5, window_seconds=0.5)[0]
    assert torch.allclose(index.embeddings()[index.paths.index("new/z.mp4")], expected, atol=1e-6)
    assert not torch.allclose(expected, model.encode_videos(videos / "new/z.mp4")[0], atol=1e-3)
    with pytest.raises(IndexError_, match="window_stride"):
        build_index(model, videos, out, add=True, window_stride=1.0)
