"""Resuming on another number of processes than the checkpoint was saved by.

Launched tests (CPU, fp32, a schedule whose learning rate changes every step): a run saves at step 3 and goes on
to step 6; a copy of it without the step-6 checkpoint is resumed from step 3 on another process count. The resumed
steps must repeat the uninterrupted run's losses and learning rates: the same samples (position by samples seen),
optimizer state (DeepSpeed's partitions through the universal format), schedule and global batch.
- DDP (torchrun) 2 -> 1 plain process; ZeRO-2 2 -> 1; ZeRO-3 1 -> 2.
Unit tests cover the arithmetic and the refusals.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_MLM, SMOKE_MODEL
from test_deepspeed_2proc import REPO, free_port, logged_losses, run_launch
from transformers import get_scheduler

from violet.engine.resume import (
    ResizeError,
    batches_to_skip,
    keep_global_batch,
    rescale_schedule,
    saved_processes,
)

# Linear decay after a one-step warm-up: every step has its own learning rate, so a schedule left at the old
# process count's position shows in the resumed steps' logged lr.
VARYING_LR = ["train.lr_schedule=linear", "train.warmup_ratio=0.2", "train.mixed_precision=no"]
# Reductions run in another order on another process count: losses agree to float32 rounding, not bit for bit
# (Without resize.restore_group_settings, DeepSpeed's universal loader's shared Adam step counter put the ZeRO-3
# losses 2e-4 off at step 5 and 4e-3 at step 6.)
LOSS_TOLERANCE = 1e-4


def train_args(data: Path, out: Path, batch: int, *extra: str) -> list[str]:
    return ["train.py", "--task", "retrieval", "--data", str(data), "--output-dir", str(out), "--batch-size",
            str(batch), "--max-steps", "6", "train.save_every=3", *SMOKE_MODEL, *NO_MLM, *VARYING_LR, *extra]


def accelerate(config: str, processes: int) -> list[str]:
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
            f"accelerate_configs/{config}.yaml", "--num_processes", str(processes), "--main_process_port",
            str(free_port())]


def torchrun(processes: int) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(processes), "--master_port",
            str(free_port())]


def log_entries(out: Path) -> dict[int, dict]:
    return {entry["step"]: entry for entry in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())}


def interrupted_copy(full: Path, target: Path) -> Path:
    """The run as a kill right after the step-3 checkpoint would have left it (later steps' log lines included:
    --resume rewinds the log itself)."""
    shutil.copytree(full, target)
    shutil.rmtree(target / "checkpoints" / "step_6")
    (target / "model.safetensors").unlink()
    return target


def assert_continues(full: Path, resumed: Path) -> None:
    before, after = log_entries(full), log_entries(resumed)
    assert sorted(after) == list(range(1, 7))
    for step in (4, 5, 6):
        assert after[step]["train/lr"] == pytest.approx(before[step]["train/lr"], rel=1e-6), step
        assert after[step]["train/loss"] == pytest.approx(before[step]["train/loss"], abs=LOSS_TOLERANCE), step
    assert (resumed / "model.safetensors").exists()


@pytest.mark.parametrize("saved_by, resumed_by, launcher", [
    (2, 1, "ddp"), (2, 1, "cpu_2proc_zero2"), (1, 2, "cpu_2proc_zero3"),
])
def test_resume_on_another_process_count_continues_the_run(saved_by, resumed_by, launcher, demo_data, tmp_path):
    global_batch = 8

    def command(processes: int) -> list[str]:
        if launcher == "ddp":
            return torchrun(processes) if processes > 1 else [sys.executable]
        return accelerate(launcher, processes)

    full = tmp_path / "full"
    run_launch(command(saved_by) + train_args(demo_data, full, global_batch // saved_by))
    resumed = interrupted_copy(full, tmp_path / "resumed")
    # The same command line as the saved run, on another process count: the per-device batch is re-chosen.
    result = run_launch(command(resumed_by) + train_args(demo_data, resumed, global_batch // saved_by, "--resume"))
    plural = "es" if saved_by > 1 else ""
    assert (f"resumed from {resumed / 'checkpoints' / 'step_3'} at step 3 (saved by {saved_by} process{plural}, "
            f"now {resumed_by})") in result.stdout
    assert f"global batch={global_batch} (= {global_batch // resumed_by} per device x 1 accumulation" in result.stdout
    assert_continues(full, resumed)
    assert not (resumed / "checkpoints" / ".resize").exists() or not any((resumed / "checkpoints" / ".resize").iterdir())


def test_a_deepspeed_checkpoint_is_not_resumed_without_deepspeed(demo_data, tmp_path):
    out = tmp_path / "zero2"
    run_launch(accelerate("cpu_2proc_zero2", 1) + train_args(demo_data, out, 8))
    shutil.rmtree(out / "checkpoints" / "step_6")
    result = subprocess.run([sys.executable, *train_args(demo_data, out, 8, "--resume")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "was saved with DeepSpeed and this launch is not using it" in result.stderr + result.stdout


# ----- the arithmetic -----
def test_the_global_batch_is_kept_with_the_saved_accumulation_when_it_divides():
    assert keep_global_batch(8, saved_accum=1, processes=1) == (8, 1)
    assert keep_global_batch(8, saved_accum=1, processes=4) == (2, 1)
    assert keep_global_batch(32, saved_accum=2, processes=8) == (2, 2)
    assert keep_global_batch(12, saved_accum=4, processes=2) == (6, 1)  # 12 / (2 x 4) is no whole batch
    with pytest.raises(ResizeError, match="cannot be split evenly over 3 processes"):
        keep_global_batch(8, saved_accum=1, processes=3)


def test_the_data_position_is_carried_by_samples_seen():
    # 3 micro-batches of 4 on each of 2 processes = 24 samples = 3 batches of 8 on one process.
    assert batches_to_skip(3, saved_batch=4, saved_count=2, batch=8, processes=1) == 3
    assert batches_to_skip(3, saved_batch=8, saved_count=1, batch=2, processes=2) == 6
    with pytest.raises(ResizeError, match="not a whole number of batches"):
        batches_to_skip(1, saved_batch=4, saved_count=1, batch=8, processes=1)


def schedule(processes: int, steps_done: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A warm-up + linear schedule laid out in process-steps, as the Trainer builds it, advanced `steps_done`."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=2 * processes, num_training_steps=10 * processes)
    for _ in range(steps_done * processes):
        optimizer.step()
        scheduler.step()
    return scheduler


def test_the_schedule_is_rescaled_to_the_new_process_count():
    saved = schedule(processes=2, steps_done=4)
    restored = schedule(processes=1, steps_done=0)
    restored.load_state_dict(saved.state_dict())  # what loading the checkpoint does: counter of 2 processes
    rescale_schedule(restored, step=4, processes=1)
    expected = schedule(processes=1, steps_done=4)
    assert restored.last_epoch == expected.last_epoch == 4
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(expected.optimizer.param_groups[0]["lr"])
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(0.75)  # 6 of 8 decay steps left


def test_saved_process_count_is_recorded_or_counted(tmp_path):
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "trainer_state.json").write_text(json.dumps({"trainer": {"step": 3, "num_processes": 4}}))
    assert saved_processes(recorded) == 4
    older = tmp_path / "older"  # before the count was recorded: Accelerate's per-process random states
    older.mkdir()
    (older / "trainer_state.json").write_text(json.dumps({"trainer": {"step": 3}}))
    for rank in range(2):
        (older / f"random_states_{rank}.pkl").write_bytes(b"")
    assert saved_processes(older) == 2
