"""End to end: broken files in DATA/videos are reported by name, the rest is prepared, and training runs."""
from __future__ import annotations

import json

from conftest import SMOKE_MODEL

import train
from prepare.__main__ import main as prepare_main


def test_broken_videos_are_reported_and_training_still_runs(demo_copy, tmp_path, capsys):
    videos = demo_copy / "videos"
    good = next((videos / "train").glob("*.mp4")).read_bytes()
    (videos / "broken").mkdir()
    (videos / "broken" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (videos / "broken" / "empty.mp4").write_bytes(b"")
    (videos / "broken" / "notes.mp4").write_text("this is a text file, not a video\n")
    with open(demo_copy / "annotations" / "captions_train.jsonl", "a") as handle:
        for name in ("truncated", "empty", "notes"):
            handle.write(json.dumps({"video": f"broken/{name}.mp4", "caption": "a red circle moves left"}) + "\n")

    assert prepare_main([str(demo_copy), "--frames", "8", "--short-side", "48", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    for name in ("truncated.mp4", "empty.mp4", "notes.mp4"):
        assert f"broken/{name}" in printed
    summary = json.loads((demo_copy / "clip_store" / "summary.json").read_text())
    assert summary["failed"] == 3 and summary["skipped"] == 42  # the good videos were stored before: resumed
    assert {failure["video"] for failure in summary["failures"]} == {
        "broken/truncated.mp4", "broken/empty.mp4", "broken/notes.mp4"}
    annotations = json.loads((demo_copy / "hf" / "summary.json").read_text())
    assert annotations["kinds"]["captions"]["train"]["missing_video"] == 3

    metrics = train.main(["--task", "retrieval", "--data", str(demo_copy), "--output-dir", str(tmp_path / "run"),
                          "--batch-size", "8", "--max-steps", "2", *SMOKE_MODEL])
    assert metrics["n"] == 8
