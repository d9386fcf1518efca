"""The fault table of docs/reliability.md: one test per case that no other test file covers. Each plants the fault
(a payload, a truncated file, a hostile row, an oversized image, a full disk) and asserts what must happen instead
of what used to: nothing foreign runs, the file and line (or the file and what to do) are named, the rest of the
work is kept, and the previous checkpoint still resumes."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_checkpointer import Counter, train_one_step, weights_of

# ---- case 2: a payload in a VQ tokenizer file -----------------------------------------------------------------


class Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_torch_export_tokenizer_with_a_payload_is_refused_and_never_run(tmp_path):
    """A real torch.export archive whose sample inputs carry a pickle payload: torch.export.load falls back to
    unpickling them (weights_only=False), so the old loader ran it. Now no file is loaded as a tokenizer at all;
    tests/test_mvm_targets.py::test_no_file_of_a_tokenizer_directory_runs_code plants payloads in the new format."""
    from violet.config import ObjectiveConfig
    from violet.models import preset
    from violet.objectives import MVMTarget

    marker = tmp_path / "payload_ran"
    program = torch.export.export(torch.nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 8, 8),))
    torch.export.save(program, tmp_path / "clean.pt2")
    payload = io.BytesIO()
    torch.save({"inputs": Payload(marker)}, payload)
    with zipfile.ZipFile(tmp_path / "clean.pt2") as clean, zipfile.ZipFile(tmp_path / "tokenizer.pt2", "w") as out:
        for info in clean.infolist():
            planted = "sample_inputs" in info.filename
            out.writestr(info, payload.getvalue() if planted else clean.read(info.filename))
    objective = ObjectiveConfig(mvm_target="vq", vq_tokenizer=str(tmp_path / "tokenizer.pt2"))
    with pytest.raises(Exception) as refused:
        MVMTarget(objective, preset("simvtp-tiny"))
    assert not marker.exists(), "the payload in the tokenizer file was executed"
    assert isinstance(refused.value, ValueError)
    assert re.search(r"tokenizer.pt2' is a file.*not loaded: loading or running them executes", str(refused.value))


# ---- case 4: a truncated model.safetensors ----------------------------------------------------------------------


def test_a_truncated_export_names_the_file_and_what_to_do(tmp_path):
    from safetensors.torch import save_file

    from violet.engine.weights import load_weights, read_weights

    model = torch.nn.Linear(4, 3)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    assert torch.equal(read_weights(tmp_path)[0]["weight"], model.weight.detach())
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - 7])  # a copy that stopped early
    expected = rf"{tmp_path}/model.safetensors cannot be read .*truncated.*export it again .*checkpoints/step_N"
    with pytest.raises(ValueError, match=expected):
        read_weights(tmp_path)
    with pytest.raises(ValueError, match=expected):
        load_weights(torch.nn.Linear(4, 3), tmp_path)


# ---- case 12: one hostile annotation row --------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on it, not a JSONDecodeError
SURROGATE = '{"video": "a.mp4", "caption": "half a pair \\ud800"}'  # parses, but no UTF-8 writer accepts it


def test_a_hostile_annotation_row_is_reported_by_line_and_the_rest_kept(tmp_path):
    from test_annotations import write_store

    from prepare.annotations import find_segments, load_prepared, prepare_annotations

    data = tmp_path / "DATA"
    write_store(data, ["a.mp4", "a.mp4#t=0.000,1.000"])
    lines = ['{"video": "a.mp4", "caption": "first"}', SURROGATE, DEEP,
             '[' * 50_000 + '{"video": "a.mp4", "start": 0, "end": 1}' + ']' * 50_000,
             '{"video": "a.mp4", "caption": "a segment", "start": 0, "end": 1}',
             '{"video": "a.mp4", "caption": "last"}']
    (data / "annotations").mkdir()
    (data / "annotations" / "captions_train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert find_segments(data) == {"a.mp4#t=0.000,1.000": ("a.mp4", (0.0, 1.0))}  # extraction's pass over the rows
    summary = prepare_annotations(data)
    assert summary["invalid_examples"] == [
        "annotations/captions_train.jsonl:2: not valid Unicode: lone surrogate '\\ud800' (half of a \\u escape pair)",
        "annotations/captions_train.jsonl:3: invalid JSON: nested too deeply to parse",
        "annotations/captions_train.jsonl:4: invalid JSON: nested too deeply to parse"]
    assert load_prepared(data, "captions")["train"]["caption"] == ["first", "a segment", "last"]


def test_a_hostile_source_row_is_reported_by_file_and_line_and_the_rest_kept(tmp_path, capsys):
    from prepare.convert.__main__ import main as convert_main

    src, data = tmp_path / "src", tmp_path / "DATA"
    (src / "gifs").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (src / "gifs" / f"{name}.gif").write_bytes(b"")
    entry = '{{"question": "{}", "answer": "yes", "video_id": 1}}'
    (src / "youtube_mapping.txt").write_bytes(b"a vid1\nb\xff vid2\nc vid3\n")
    qa = "[\n" + ",\n".join([entry.format("first?"), DEEP, entry.format("half \\ud800"),
                             entry.format("caf\udce9?"), entry.format("last?")]) + "\n]\n"
    (src / "train_qa.json").write_bytes(qa.encode("utf-8", "surrogateescape"))  # line 5 holds the byte 0xe9
    assert convert_main(["msvd-qa", "--src", str(src), "--out", str(data), "--videos", str(src / "gifs")]) == 0
    rows = [json.loads(line) for line in (data / "annotations" / "qa_oe_train.jsonl").read_text().splitlines()]
    assert [row["question"] for row in rows] == ["first?", "last?"]
    summary = json.loads((data / "annotations" / "convert_msvd-qa.json").read_text())
    assert summary["skipped"] == {"malformed": 4}
    assert summary["skipped_examples"]["malformed"] == [
        "youtube_mapping.txt:2: not valid UTF-8 (byte 0xff)",
        "train_qa.json:3 [1]: invalid JSON: nested too deeply to parse",
        "train_qa.json:4 [2]: not valid Unicode: lone surrogate '\\ud800' (half of a \\u escape pair)",
        "train_qa.json:5 [3]: not valid UTF-8 (byte 0xe9)"]


def test_a_hostile_table_row_is_reported_by_file_and_line_and_the_rest_kept(tmp_path):
    from prepare.convert.__main__ import main as convert_main

    src, data = tmp_path / "tgif", tmp_path / "DATA"
    src.mkdir()
    (src / "a.gif").write_bytes(b"")
    header = "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey\n"
    row = "a\tWhat {}?\tnod\tjump\tclap\twave\tspin\t{}\tX\t1\n"
    text = (header + row.format("first", 1) + row.format("\udcff", 1) + row.format("x" * 200_000, 1)
            + row.format("two", "²") + row.format("huge", "9" * 5000) + row.format("last", 4))
    (src / "Train_action_question.csv").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert convert_main(["tgif-action", "--src", str(src), "--out", str(data)]) == 0
    rows = [json.loads(line) for line in (data / "annotations" / "qa_mc_train.jsonl").read_text().splitlines()]
    assert [(row["question"], row["answer"]) for row in rows] == [("What first?", 1), ("What last?", 4)]
    examples = json.loads((data / "annotations" / "convert_tgif-action.json").read_text())["skipped_examples"]
    assert [example.split(": ", 1)[0] for example in examples["malformed"]] == [
        f"Train_action_question.csv:{line}" for line in (3, 4, 5, 6)]
    assert "not valid UTF-8 (byte 0xff)" in examples["malformed"][0]
    assert "field larger than field limit" in examples["malformed"][1]


# ---- case 13: --max-pixels for images ------------------------------------------------------------------------------


def test_an_image_over_max_pixels_is_refused_and_reported_like_a_video(tmp_path):
    from test_extract import write_video

    from prepare.extract import extract

    videos = tmp_path / "DATA" / "videos"
    videos.mkdir(parents=True)
    Image.new("RGB", (80, 40), (255, 0, 0)).save(videos / "small.png")
    Image.new("RGB", (200, 100), (0, 255, 0)).save(videos / "large.png")
    write_video(videos / "large.mp4", 128, 96, 2)
    summary = extract(tmp_path / "DATA", frames=2, short_side=32, workers=1, max_pixels=10_000)
    reasons = {failure["video"]: failure["reason"] for failure in summary["failures"]}
    assert reasons["large.png"].startswith("resolution 200x100 exceeds --max-pixels 10000")
    assert reasons["large.mp4"].startswith("resolution 128x96 exceeds --max-pixels 10000")
    assert set(reasons) == {"large.png", "large.mp4"} and summary["done"] == 1  # small.png is stored
    failed = (tmp_path / "DATA" / "clip_store" / "failed.jsonl").read_text().splitlines()
    assert {json.loads(line)["video"] for line in failed} == {"large.png", "large.mp4"}


# ---- case 14: the disk fills during a checkpoint save --------------------------------------------------------------


@pytest.fixture
def checkpointer(tmp_path):
    from accelerate import Accelerator

    from violet.engine.checkpointer import Checkpointer
    from violet.engine.rundir import RunDir

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    model, optimizer = accelerator.prepare(model, torch.optim.AdamW(model.parameters(), lr=0.1))
    counter = Counter()
    saver = Checkpointer(accelerator, RunDir(tmp_path / "run"), every=1, keep=2)
    saver.track("counter", counter)
    return accelerator, model, optimizer, counter, saver


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_resumable(checkpointer, monkeypatch):
    from violet.engine.checkpointer import verify_checkpoint

    accelerator, model, optimizer, counter, saver = checkpointer
    train_one_step(model, optimizer, counter)
    first = saver.save(counter.step)
    saved = weights_of(model)
    original = accelerator.save_state

    def disk_fills(directory: str, *args, **kwargs):
        original(directory, *args, **kwargs)
        written = max((p for p in Path(directory).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        written.write_bytes(written.read_bytes()[:10])  # the write that hit the full disk stopped here
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(accelerator, "save_state", disk_fills)
    train_one_step(model, optimizer, counter)
    with pytest.raises(OSError, match=r"step 2 .*No space left on device.*previous checkpoints .* are untouched"):
        saver.save(counter.step)
    monkeypatch.undo()
    assert [path.name for path in saver.finished()] == ["step_1"] and verify_checkpoint(first) is None
    train_one_step(model, optimizer, counter)  # what the killed run did after its last good save is lost
    assert saver.resume() == first and counter.step == 1
    assert all(torch.equal(value, saved[name]) for name, value in weights_of(model).items())
    train_one_step(model, optimizer, counter)  # and training goes on from there, saving again
    assert saver.save(counter.step).name == "step_2" and [p.name for p in saver.finished()] == ["step_1", "step_2"]
