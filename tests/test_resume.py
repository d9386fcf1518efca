"""Interrupted training resumed with --resume continues from the last checkpoint and matches an
uninterrupted run step for step (same batches, same masks, same augmentation)."""
from __future__ import annotations

import json

import pytest
from test_tasks_smoke import run_train

from violet.engine.trainer import Trainer


def losses(out):
    return {entry["step"]: entry["train/loss"] for entry in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())}


def test_resume_mid_epoch_matches_uninterrupted(demo_data, tmp_path, monkeypatch):
    # 24 rows / batch 8 = 3 steps per epoch: the checkpoint at step 4 is in the middle of the second epoch.
    common = ("--max-steps", "7", "train.save_every=2", "train.keep_checkpoints=1")
    full = tmp_path / "full"
    run_train("pretrain", demo_data, full, *common)

    interrupted = tmp_path / "interrupted"
    original = Trainer.train_step

    def killed_after_step_5(self, batch):
        if self.state.step == 5:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", killed_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_train("pretrain", demo_data, interrupted, *common)
    monkeypatch.undo()
    checkpoints = sorted(p.name for p in (interrupted / "checkpoints").iterdir())
    assert checkpoints == ["step_4"]  # keep_checkpoints=1 pruned step_2
    assert max(losses(interrupted)) == 5
    with open(interrupted / "train_log.jsonl", "a") as log:  # a kill in the middle of writing a log line
        log.write('{"step": 6, "train/lo')

    run_train("pretrain", demo_data, interrupted, *common, "--resume")
    resumed, reference = losses(interrupted), losses(full)
    assert sorted(resumed) == list(range(1, 8))
    for step in range(1, 8):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), step


def test_resume_without_checkpoint_starts_at_zero(demo_data, tmp_path, capsys):
    out = tmp_path / "fresh"
    run_train("retrieval", demo_data, out, "--max-steps", "1", "--resume")
    assert "no finished checkpoint" in capsys.readouterr().out
    assert list(losses(out)) == [1]


def test_a_run_directory_belongs_to_one_run(demo_data, tmp_path):
    """A second run into a used directory is refused (it would prune and later resume a mix of both runs), and
    every kept step directory evaluates like the final export."""
    out = tmp_path / "run"
    run_train("retrieval", demo_data, out, "--max-steps", "2", "train.save_every=1", "train.keep_checkpoints=2")
    first_log = (out / "train_log.jsonl").read_text()
    with pytest.raises(SystemExit, match="already holds a training run.*--resume"):
        run_train("retrieval", demo_data, out, "--max-steps", "2")
    assert (out / "train_log.jsonl").read_text() == first_log
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1", "step_2"]

    import evaluate

    final = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(out), "--split",
                           "val", "--output", str(tmp_path / "final.json")])
    step_2 = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint",
                            str(out / "checkpoints" / "step_2"), "--split", "val", "--output", str(tmp_path / "s.json")])
    step_1 = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint",
                            str(out / "checkpoints" / "step_1"), "--split", "val", "--output", str(tmp_path / "t.json")])
    assert step_2["t2v_meanr"] == pytest.approx(final["t2v_meanr"])  # the last step is the export
    assert step_1["n"] == final["n"]

    run_train("retrieval", demo_data, out, "--max-steps", "1", "--overwrite")  # starting over is one flag
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1"]
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1]
    config_before = (out / "config.json").read_text()
    with pytest.raises(SystemExit, match=r"--resume cannot change train\.lr: 0\.0005 -> 0\.001"):
        run_train("retrieval", demo_data, out, "--max-steps", "2", "--resume", "train.lr=1e-3")
    assert (out / "config.json").read_text() == config_before  # the run's record still says what it used


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_only_finite_checkpoints(demo_data, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "diverged"
    with pytest.raises(FloatingPointError, match="non-finite.*lower train.lr"):
        run_train("retrieval", demo_data, out, "--max-steps", "8", "train.save_every=1", "train.lr=1e6",
                  "train.grad_clip=0", "objective.vtm_weight=1", "train.keep_checkpoints=8")
    saved = sorted((out / "checkpoints").glob("step_*"))
    for step in saved:
        for name, tensor in load_file(str(step / "model.safetensors")).items():
            assert torch.isfinite(tensor).all(), (step.name, name)
    assert not (out / "model.safetensors").exists()  # nothing exported from a diverged run
