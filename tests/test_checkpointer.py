"""Checkpointer and RunDir: atomic saves with a manifest, resume fallback past damaged checkpoints, keep-last-k,
one process per run directory, atomic small files and readable exports."""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import torch
from accelerate import Accelerator

from violet.engine.checkpointer import MANIFEST, CheckpointError, Checkpointer, verify_checkpoint
from violet.engine.rundir import RunDir, RunDirError, write_text


class Counter:
    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


@pytest.fixture
def training(tmp_path):
    """A prepared model + optimizer, a registered counter and a Checkpointer keeping 2 checkpoints."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    counter = Counter()
    checkpointer = Checkpointer(accelerator, RunDir(tmp_path / "run"), every=1, keep=2)
    checkpointer.track("counter", counter)
    return accelerator, model, optimizer, counter, checkpointer


def train_one_step(model, optimizer, counter):
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    counter.step += 1


def weights_of(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_saves_are_complete_verified_and_pruned(training):
    accelerator, model, optimizer, counter, checkpointer = training
    for _ in range(3):
        train_one_step(model, optimizer, counter)
        checkpointer.save(counter.step)
    names = sorted(path.name for path in checkpointer.run.checkpoints_dir.iterdir())
    assert names == ["step_2", "step_3"]  # keep=2, and no .partial directory left behind
    manifest = json.loads((checkpointer.run.checkpoints_dir / "step_3" / MANIFEST).read_text())
    assert manifest["step"] == 3 and any(name.endswith(".safetensors") or name.endswith(".bin")
                                         for name in manifest["files"])
    assert verify_checkpoint(checkpointer.run.checkpoints_dir / "step_3") is None


def test_resume_falls_back_past_a_damaged_checkpoint(training, caplog):
    accelerator, model, optimizer, counter, checkpointer = training
    saved = {}
    for _ in range(2):
        train_one_step(model, optimizer, counter)
        checkpointer.save(counter.step)
        saved[counter.step] = weights_of(model)
    newest = checkpointer.run.checkpoints_dir / "step_2"
    damaged = next(path for path in newest.iterdir() if path.name.startswith("optimizer"))
    damaged.write_bytes(b"")  # as a full disk or a rewrite would leave it
    train_one_step(model, optimizer, counter)
    with caplog.at_level(logging.WARNING):
        found = checkpointer.resume()
    assert found.name == "step_1" and counter.step == 1
    assert damaged.name in caplog.text and "step_1" in caplog.text
    for name, value in weights_of(model).items():
        assert torch.equal(value, saved[1][name]), name


def test_a_changed_file_of_the_same_size_is_caught(training):
    accelerator, model, optimizer, counter, checkpointer = training
    train_one_step(model, optimizer, counter)
    path = checkpointer.save(counter.step)
    target = next(p for p in path.iterdir() if p.name != MANIFEST)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    assert "changed after it was saved" in verify_checkpoint(path)
    with pytest.raises(CheckpointError, match="changed after it was saved"):
        checkpointer.resume()


def test_an_interrupted_save_is_never_resumed(training):
    accelerator, model, optimizer, counter, checkpointer = training
    train_one_step(model, optimizer, counter)
    checkpointer.save(counter.step)
    half = checkpointer.run.checkpoints_dir / "step_2.partial"  # killed before its manifest and rename
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half")
    (checkpointer.run.checkpoints_dir / "step_3").mkdir()  # a directory without a manifest
    assert [path.name for path in checkpointer.finished()] == ["step_1"]
    assert checkpointer.resume().name == "step_1"


def test_no_checkpoint_means_none(training):
    assert training[-1].resume() is None


def test_a_second_process_cannot_take_a_run_directory(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunDirError, match=f"in use by pid {os.getpid()}"):
            with RunDir(tmp_path / "run").lock():
                pass
    with run.lock():  # released when the holder is done
        pass


def test_small_files_are_written_whole_and_readable(tmp_path):
    target = tmp_path / "a" / "config.json"
    write_text(target, "{}\n")
    assert target.read_text() == "{}\n" and not list(target.parent.glob(".*partial"))


def test_export_is_readable_by_the_team(training, tmp_path):
    accelerator, model, optimizer, counter, checkpointer = training
    from violet.engine.weights import export_weights

    old = os.umask(0o022)
    try:
        target = tmp_path / "model.safetensors"
        model.no_weight_decay = lambda: set()
        export_weights(accelerator, model, target, None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


class Payload:
    """Unpickling this runs a shell command: what a rewritten checkpoint file could carry."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_file_of_a_checkpoint_is_unpickled(training, tmp_path):
    import pickle

    accelerator, model, optimizer, counter, checkpointer = training
    train_one_step(model, optimizer, counter)
    path = checkpointer.save(counter.step)
    marker = tmp_path / "payload_ran"
    files = [p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST]
    assert {"trainer_state.json", "trainer_state.safetensors"} <= {p.name for p in files}
    assert not [p.name for p in files if p.name.startswith("custom_checkpoint")]  # nothing left for torch.save
    for target in files:  # one planted file at a time, the manifest rewritten to match (a careful attacker)
        original = target.read_bytes()
        target.write_bytes(pickle.dumps(Payload(marker)))
        from violet.engine.checkpointer import write_manifest

        write_manifest(path, counter.step)
        try:
            checkpointer.resume()
        except Exception:
            pass  # refusing the file is fine; running it is not
        assert not marker.exists(), f"a payload in {target.name} was executed"
        target.write_bytes(original)
    write_manifest(path, counter.step)
    assert checkpointer.resume() == path  # and the intact checkpoint still resumes
