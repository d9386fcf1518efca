"""Tests for prepare.annotations and the python -m prepare entry point."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import datasets
import pytest

import prepare
from prepare import annotations
from prepare.__main__ import main as prepare_main
from prepare.annotations import (
    AnnotationError,
    load_answer_vocab,
    load_prepared,
    prepare_annotations,
    stored_video_ids,
)
from violet.data.layout import KINDS, annotation_path

STORED_VIDEOS = ["a.mp4", "b.mp4", "sub/c.mp4", "d.mp4"]

CAPTIONS_TRAIN = [
    '{"video": "a.mp4", "caption": "a dog runs"}',             # 1 kept
    '{"video": "./b.mp4", "caption": "  a cat  ", "extra": 1}',  # 2 kept, video normalised, extra ignored
    "",                                                          # 3 blank: skipped, not counted
    '{"video": "a.mp4", "caption": "broken"',                  # 4 bad JSON
    '{"video": "a.mp4"}',                                       # 5 missing field
    '{"video": 7, "caption": "x"}',                             # 6 wrong type
    '{"video": "gone.mp4", "caption": "x"}',                    # 7 video not in store
    '{"video": "sub\\\\c.mp4", "caption": "c"}',                # 8 kept, backslash path
    "[1, 2]",                                                    # 9 not an object
]
CAPTIONS_TEST = ['{"video": "d.mp4", "caption": "d"}', '{"video": "gone2.mp4", "caption": "y"}']
QA_MC_TRAIN = [
    '{"video": "a.mp4", "question": "what?", "options": ["x", "y", "z"], "answer": 2}',       # 1 kept
    '{"video": "a.mp4", "question": "q", "options": ["p", "q", "r", "s"], "answer": 5}',      # 2 out of range
    '{"video": "a.mp4", "question": "q", "options": ["p", "q"], "answer": true}',             # 3 bool
    '{"video": "a.mp4", "question": "q", "options": [], "answer": 0}',                        # 4 empty options
    '{"video": "a.mp4", "question": "q", "options": ["x", " "], "answer": 0}',                # 5 empty option
    '{"video": "a.mp4", "question": "q", "options": ["x", "y"], "answer": "1"}',              # 6 str answer
    '{"video": "b.mp4", "question": "how?", "options": ["yes", "no"], "answer": 0}',          # 7 kept
]
QA_MC_TEST = ['{"video": "d.mp4", "question": "which?", "options": ["l", "r"], "answer": 1}']
# Counts after normalisation: yes 3, no 2, blue 1, red 1 -> top-3 is yes, no, blue (tie broken a-z).
QA_OE_TRAIN = [
    '{"video": "a.mp4", "question": "is it?", "answer": "Yes"}',
    '{"video": "a.mp4", "question": "is it?", "answer": " yes "}',
    '{"video": "b.mp4", "question": "is it?", "answer": "YES"}',
    '{"video": "b.mp4", "question": "is it?", "answer": "no"}',
    '{"video": "a.mp4", "question": "is it?", "answer": "No"}',
    '{"video": "a.mp4", "question": "color?", "answer": "red"}',
    '{"video": "a.mp4", "question": "color?", "answer": "blue"}',
    '{"video": "a.mp4", "question": "how many?", "answer": 2}',  # 8 int answer: invalid
]
# "purple" is the most frequent test answer: it must not leak into the vocabulary.
QA_OE_TEST = [
    '{"video": "d.mp4", "question": "color?", "answer": "purple"}',
    '{"video": "d.mp4", "question": "color?", "answer": "purple"}',
    '{"video": "d.mp4", "question": "color?", "answer": "purple"}',
    '{"video": "d.mp4", "question": "color?", "answer": "red"}',
    '{"video": "d.mp4", "question": "is it?", "answer": "yes"}',
]


def write_lines(path: Path, lines: list[str], trailing_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""), encoding="utf-8")


def write_store(data_dir: Path, videos: list[str]) -> None:
    entries = [json.dumps({"video": video, "frames": 16}) for video in videos]
    # A crash mid-write leaves a truncated last line that must be ignored.
    write_lines(data_dir / "clip_store" / "index.jsonl", entries + ['{"video": "trunc'], trailing_newline=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "DATA"
    (data / "videos").mkdir(parents=True)
    write_store(data, STORED_VIDEOS)
    for kind, split, lines in [
        ("captions", "train", CAPTIONS_TRAIN), ("captions", "test", CAPTIONS_TEST),
        ("qa_mc", "train", QA_MC_TRAIN), ("qa_mc", "test", QA_MC_TEST),
        ("qa_oe", "train", QA_OE_TRAIN), ("qa_oe", "test", QA_OE_TEST),
    ]:
        write_lines(annotation_path(data, kind, split), lines)
    return data


def test_stored_video_ids_ignores_truncated_line(data_dir: Path) -> None:
    assert stored_video_ids(data_dir / "clip_store") == set(STORED_VIDEOS)


def test_each_validation_error_is_reported_with_file_and_line(data_dir: Path) -> None:
    summary = prepare_annotations(data_dir, answer_top_k=3)
    expected = [
        "annotations/captions_train.jsonl:4: invalid JSON",
        "annotations/captions_train.jsonl:5: missing required field 'caption'",
        "annotations/captions_train.jsonl:6: 'video' must be a string, got int",
        "annotations/captions_train.jsonl:9: expected a JSON object, got list",
        "annotations/qa_mc_train.jsonl:2: 'answer' 5 out of range for 4 options",
        "annotations/qa_mc_train.jsonl:3: 'answer' must be an int (index into 'options'), got bool",
        "annotations/qa_mc_train.jsonl:4: 'options' needs at least 2 entries, got 0",
        "annotations/qa_mc_train.jsonl:5: 'options'[1] is empty",
        "annotations/qa_mc_train.jsonl:6: 'answer' must be an int (index into 'options'), got string",
        "annotations/qa_oe_train.jsonl:8: 'answer' must be a string, got int",
    ]
    messages = summary["invalid_examples"]
    assert len(messages) == len(expected) == summary["invalid_total"]
    for message, prefix in zip(messages, expected):
        assert message.startswith(prefix), (message, prefix)


def test_counts_missing_videos_and_missing_splits(data_dir: Path) -> None:
    summary = prepare_annotations(data_dir, answer_top_k=3)
    captions_train = summary["kinds"]["captions"]["train"]
    assert {k: captions_train[k] for k in ("rows_read", "kept", "invalid", "missing_video")} == {
        "rows_read": 8, "kept": 3, "invalid": 4, "missing_video": 1}
    assert captions_train["missing_video_examples"] == ["gone.mp4"]
    assert summary["kinds"]["captions"]["test"]["missing_video"] == 1
    assert summary["kinds"]["qa_mc"]["train"]["kept"] == 2
    assert summary["kinds"]["qa_mc"]["train"]["invalid"] == 5
    assert summary["missing_files"] == {"captions": ["val"], "qa_mc": ["val"], "qa_oe": ["val"]}
    assert annotations.describe_missing(summary["missing_files"]) == ["no val split for captions, qa_mc, qa_oe"]
    path = annotation_path(data_dir, "qa_mc", "train")
    assert summary["source_sha256"]["annotations/qa_mc_train.jsonl"] == hashlib.sha256(path.read_bytes()).hexdigest()
    on_disk = json.loads((data_dir / "hf" / "summary.json").read_text())
    assert on_disk["kinds"] == summary["kinds"]


def test_answer_vocab_from_train_only_with_top_k_and_ties(data_dir: Path) -> None:
    summary = prepare_annotations(data_dir, answer_top_k=3)
    assert load_answer_vocab(data_dir / "hf") == ["yes", "no", "blue"]
    assert load_answer_vocab(data_dir) == ["yes", "no", "blue"]
    assert summary["answer_vocab_size"] == 3
    qa_oe = load_prepared(data_dir, "qa_oe")
    train, test = qa_oe["train"], qa_oe["test"]
    assert train["answer"] == ["yes", "yes", "yes", "no", "no", "red", "blue"]
    assert train["answer_id"] == [0, 0, 0, 1, 1, -1, 2]
    assert test["answer_id"] == [-1, -1, -1, -1, 0]
    assert summary["kinds"]["qa_oe"]["train"]["oov"] == 1
    assert summary["kinds"]["qa_oe"]["test"]["oov"] == 4


def test_saved_datasets_have_exact_columns_dtypes_and_splits(data_dir: Path) -> None:
    prepare_annotations(data_dir)
    captions = load_prepared(data_dir / "hf", "captions")
    assert set(captions) == {"train", "test"}
    assert captions["train"].features == datasets.Features(
        {"video": datasets.Value("string"), "caption": datasets.Value("string"), "line": datasets.Value("int32")})
    assert captions["train"]["video"] == ["a.mp4", "b.mp4", "sub/c.mp4"]
    assert captions["train"]["caption"] == ["a dog runs", "a cat", "c"]
    assert captions["train"]["line"] == [1, 2, 8]

    qa_mc = load_prepared(data_dir, "qa_mc")
    assert set(qa_mc) == {"train", "test"}
    assert list(qa_mc["train"].features) == ["video", "question", "options", "answer", "line"]
    assert qa_mc["train"].features["options"] == datasets.List(datasets.Value("string"))
    assert qa_mc["train"].features["answer"] == datasets.Value("int32")
    assert qa_mc["train"][0] == {"video": "a.mp4", "question": "what?", "options": ["x", "y", "z"],
                                 "answer": 2, "line": 1}

    qa_oe = load_prepared(data_dir, "qa_oe")
    assert qa_oe["test"].features == annotations.FEATURES["qa_oe"]
    assert qa_oe["test"].features["answer_id"] == datasets.Value("int32")


def test_rerun_replaces_outputs_and_leaves_no_staging_dirs(data_dir: Path) -> None:
    prepare_annotations(data_dir)
    write_lines(annotation_path(data_dir, "captions", "train"), ['{"video": "d.mp4", "caption": "new"}'])
    annotation_path(data_dir, "qa_mc", "train").unlink()
    annotation_path(data_dir, "qa_mc", "test").unlink()
    summary = prepare_annotations(data_dir)
    assert load_prepared(data_dir, "captions")["train"]["caption"] == ["new"]
    assert not (data_dir / "hf" / "qa_mc").exists()  # stale kind removed
    assert summary["missing_files"]["qa_mc"] == ["train", "val", "test"]
    assert [p.name for p in (data_dir / "hf").iterdir() if p.name.startswith(".")] == []


def test_strict_exits_1_and_writes_nothing(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert annotations.main([str(data_dir), "--strict"]) == 1
    assert "annotations/qa_mc_train.jsonl:2:" in capsys.readouterr().err
    assert not (data_dir / "hf").exists()
    with pytest.raises(AnnotationError, match="nothing written"):
        prepare_annotations(data_dir, strict=True)


def test_strict_passes_on_clean_data(tmp_path: Path) -> None:
    write_store(tmp_path, ["a.mp4"])
    write_lines(annotation_path(tmp_path, "captions", "train"), ['{"video": "a.mp4", "caption": "ok"}'])
    summary = prepare_annotations(tmp_path, strict=True)
    assert summary["written"] == {"captions": ["train"]}
    assert not (tmp_path / "hf" / "qa_oe_answers.json").exists()


def test_no_annotation_files_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_store(tmp_path, ["a.mp4"])
    assert annotations.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no annotation files" in err and str(tmp_path / "annotations") in err
    with pytest.raises(AnnotationError, match="annotations"):
        prepare_annotations(tmp_path)


def test_missing_clip_store_is_a_clear_error(data_dir: Path) -> None:
    (data_dir / "clip_store" / "index.jsonl").unlink()
    with pytest.raises(AnnotationError, match="index.jsonl"):
        prepare_annotations(data_dir)


def test_load_prepared_missing_names_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m prepare") as error:
        load_prepared(tmp_path, "captions")
    assert str(tmp_path) in str(error.value)
    with pytest.raises(ValueError):
        load_prepared(tmp_path, "nonsense")


def test_cli_prints_table_and_missing_line(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert annotations.main([str(data_dir), "--answer-top-k", "2", "--out", str(data_dir / "out")]) == 0
    out = capsys.readouterr().out
    assert "no val split for captions, qa_mc, qa_oe" in out
    assert "annotations/captions_train.jsonl:4:" in out
    assert load_answer_vocab(data_dir / "out") == ["yes", "no"]


# ------------------------------------------------------------ python -m prepare


@pytest.fixture
def fake_extract(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-in for prepare.extract (which needs video libraries) that records its call."""
    state: dict[str, Any] = {"result": {"done": 3, "skipped": 1, "failed": 0}, "calls": []}

    def extract(data_dir: Any, **kwargs: Any) -> dict[str, Any]:
        state["calls"].append((data_dir, kwargs))
        if isinstance(state["result"], Exception):
            raise state["result"]
        return state["result"]

    module = types.ModuleType("prepare.extract")
    module.extract = extract  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prepare.extract", module)
    monkeypatch.setattr(prepare, "extract", module, raising=False)
    return state


def test_prepare_main_runs_extraction_then_annotations(
    data_dir: Path, fake_extract: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert prepare_main([str(data_dir), "--frames", "8", "--workers", "2", "--answer-top-k", "3"]) == 0
    (called_dir, kwargs), = fake_extract["calls"]
    assert Path(called_dir) == data_dir
    assert kwargs == {"frames": 8, "short_side": 256, "quality": 90, "workers": 2, "strict": False}
    assert set(load_prepared(data_dir, "captions")) == {"train", "test"}
    assert load_answer_vocab(data_dir) == ["yes", "no", "blue"]
    out = capsys.readouterr().out
    assert "3 extracted, 1 already stored, 0 failed" in out and "no val split" in out


@pytest.mark.parametrize("result, strict", [
    ({"done": 0, "skipped": 0, "failed": 4}, False),   # every video failed
    ({"done": 3, "skipped": 0, "failed": 1}, True),    # strict failure
    (RuntimeError("ffmpeg exploded"), False),          # extract raised
])
def test_prepare_main_exits_1_when_extraction_fails(
    data_dir: Path, fake_extract: dict[str, Any], result: Any, strict: bool
) -> None:
    fake_extract["result"] = result
    assert prepare_main([str(data_dir)] + (["--strict"] if strict else [])) == 1
    assert not (data_dir / "hf").exists()


def test_prepare_main_strict_invalid_annotations_exit_1(data_dir: Path, fake_extract: dict[str, Any]) -> None:
    assert prepare_main([str(data_dir), "--strict"]) == 1
    assert fake_extract["calls"][0][1]["strict"] is True
    assert not (data_dir / "hf").exists()


def test_all_kinds_constant_matches_features() -> None:
    assert set(annotations.FEATURES) == set(KINDS)
