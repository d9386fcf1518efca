"""What every converter gets from prepare.convert.common: video placement (links, copies, reruns,
conflicts), atomic and idempotent output, --strict, --val-fraction, errors naming the missing
source file, and an end-to-end run where converted annotations and real videos go through
`python -m prepare` and come out as prepared datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prepare.annotations import load_prepared
from prepare.convert.__main__ import main as convert_main


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def msrvtt_qa_source(root: Path, videos: dict[int, str], rows: list[tuple[int, str, str]], split: str = "train") -> None:
    """MSRVTT-QA files: {split}_qa.json plus placeholder clips (real ones are written by the e2e test)."""
    write(root / f"{split}_qa.json", json.dumps(
        [{"question": question, "answer": answer, "video_id": video, "id": index}
         for index, (video, question, answer) in enumerate(rows)]))
    for video_number, relative in videos.items():
        path = root / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"clip {video_number}".encode())


@pytest.fixture
def qa_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    msrvtt_qa_source(src, {0: "TrainValVideo/video0.mp4", 1: "TrainValVideo/video1.mp4"},
                     [(0, "what runs?", "dog"), (1, "what sleeps?", "cat")])
    return src


def run(*argv: str) -> int:
    return convert_main(list(argv))


def test_rerun_keeps_links_and_rewrites_identical_files(qa_src: Path, tmp_path: Path) -> None:
    data = tmp_path / "DATA"
    assert run("msrvtt-qa", "--src", str(qa_src), "--out", str(data)) == 0
    first = (data / "annotations" / "qa_oe_train.jsonl").read_bytes()
    assert run("msrvtt-qa", "--src", str(qa_src), "--out", str(data)) == 0
    assert (data / "annotations" / "qa_oe_train.jsonl").read_bytes() == first
    summary = json.loads((data / "annotations" / "convert_msrvtt-qa.json").read_text())
    assert summary["videos_placed"] == {"already_in_place": 2}
    assert not list(data.rglob("*.tmp-*")), "staging files left behind"
    link = data / "videos" / "TrainValVideo" / "video1.mp4"
    assert link.is_symlink() and link.read_bytes() == b"clip 1"


def test_copy_places_real_files(qa_src: Path, tmp_path: Path) -> None:
    data = tmp_path / "DATA"
    assert run("msrvtt-qa", "--src", str(qa_src), "--out", str(data), "--copy") == 0
    copied = data / "videos" / "TrainValVideo" / "video0.mp4"
    assert not copied.is_symlink() and copied.read_bytes() == b"clip 0"


def test_existing_different_file_is_never_overwritten(qa_src: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "DATA"
    write(data / "videos" / "TrainValVideo" / "video0.mp4", "the user's own file")
    assert run("msrvtt-qa", "--src", str(qa_src), "--out", str(data)) == 1
    assert "TrainValVideo/video0.mp4 exists and is not a link to" in capsys.readouterr().err
    assert (data / "videos" / "TrainValVideo" / "video0.mp4").read_text() == "the user's own file"
    assert not (data / "annotations").exists(), "annotations must not be written when placing videos failed"


def test_strict_fails_on_malformed_rows_and_writes_nothing(qa_src: Path, tmp_path: Path, capsys) -> None:
    msrvtt_qa_source(qa_src, {}, [(0, "what?", "")], split="test")
    data = tmp_path / "DATA"
    assert run("msrvtt-qa", "--src", str(qa_src), "--out", str(data), "--strict") == 1
    assert "test_qa.json:1 [0]: needs a non-empty 'question' and 'answer'" in capsys.readouterr().err
    assert not data.exists()


def test_missing_source_file_is_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert run("msrvtt-ret", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "DATA")) == 1
    assert "none of MSRVTT_data.json, train_val_videodatainfo.json found under" in capsys.readouterr().err


def test_val_fraction_holds_out_whole_videos_and_stale_val_is_removed(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "DATA"
    videos = {number: f"TrainValVideo/video{number}.mp4" for number in range(40)}
    rows = [(number, f"question {copy} about {number}?", "yes") for number in range(40) for copy in range(2)]
    msrvtt_qa_source(src, videos, rows)
    assert run("msrvtt-qa", "--src", str(src), "--out", str(data), "--val-fraction", "0.3") == 0
    train = read_jsonl(data / "annotations" / "qa_oe_train.jsonl")
    val = read_jsonl(data / "annotations" / "qa_oe_val.jsonl")
    assert len(train) + len(val) == 80 and 0 < len(val) < len(train)
    assert not {row["video"] for row in train} & {row["video"] for row in val}
    # Without the flag the earlier val file (ours) must go, or it would be prepared next to the new train file.
    assert run("msrvtt-qa", "--src", str(src), "--out", str(data)) == 0
    assert not (data / "annotations" / "qa_oe_val.jsonl").exists()
    assert len(read_jsonl(data / "annotations" / "qa_oe_train.jsonl")) == 80


def test_converted_data_prepares_end_to_end(tmp_path: Path) -> None:
    """MSR-VTT retrieval and QA converted into one DATA dir, real mp4 clips, then `python -m prepare`."""
    from prepare.__main__ import main as prepare_main
    from prepare.demo import write_mp4

    src, clips = tmp_path / "msrvtt", tmp_path / "msrvtt" / "videos" / "all"
    clips.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number in range(3):
        write_mp4(clips / f"video{number}.mp4", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), fps=4)
    (clips / "video3.mp4").write_bytes(b"")  # an empty download: extraction reports it, its rows are dropped
    write(src / "MSRVTT_data.json", json.dumps({"videos": [], "sentences": [
        {"video_id": f"video{number}", "caption": f"caption {letter} of clip {number}", "sen_id": 0}
        for number in range(4) for letter in "ab"]}))
    write(src / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo1\nvideo3\n")
    write(src / "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,sentence\nret0,msr2,video2,a test caption\n")
    write(src / "train_qa.json", json.dumps([{"question": "what is it?", "answer": "Noise", "video_id": 0, "id": 0}]))
    write(src / "test_qa.json", json.dumps([{"question": "what is it?", "answer": "noise", "video_id": 2, "id": 1}]))

    data = tmp_path / "DATA"
    assert run("msrvtt-ret", "--src", str(src), "--out", str(data)) == 0
    assert run("msrvtt-qa", "--src", str(src), "--out", str(data)) == 0
    assert prepare_main([str(data), "--frames", "4", "--short-side", "32", "--workers", "1"]) == 0

    captions = load_prepared(data, "captions")
    assert sorted(zip(captions["train"]["video"], captions["train"]["caption"])) == [
        ("videos/all/video0.mp4", "caption a of clip 0"), ("videos/all/video0.mp4", "caption b of clip 0"),
        ("videos/all/video1.mp4", "caption a of clip 1"), ("videos/all/video1.mp4", "caption b of clip 1")]
    assert captions["test"]["caption"] == ["a test caption"]
    qa = load_prepared(data, "qa_oe")
    assert qa["train"]["answer"] == ["noise"] and qa["test"]["answer_id"] == [0]
    summary = json.loads((data / "hf" / "summary.json").read_text())
    assert summary["kinds"]["captions"]["train"]["missing_video"] == 2  # the two captions of the empty video3
