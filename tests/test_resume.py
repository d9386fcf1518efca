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
