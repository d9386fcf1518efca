"""ZeRO-3 builds the model partitioned (deepspeed.zero.Init, zero3_init_flag: true in our ZeRO-3 launch configs).

Built partitioned, the model must be the model built whole: the same initial values (including what the model
sets after its submodules exist, such as the MLM output norm's starting scale), and weights loaded with --init
must land in the partitions. Both are checked through the losses of real runs, fp32 on 2 CPU processes:
- pretraining from scratch, partitioned vs whole construction (same masks: both 2 ranks): equal losses;
- retrieval fine-tuned with --init from that run, partitioned on 2 ranks vs one plain process with the same
  global batch: equal losses.
The memory figure is measured by benchmarks/zero3_construction.py (docs/benchmarks.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import SMOKE_MODEL
from test_deepspeed_2proc import free_port, logged_losses, run_launch

STEPS = ["--max-steps", "2", "train.save_every=0", "train.mixed_precision=no"]


def launch(data, out, task: str, batch: int, *extra: str, processes: int = 2, partitioned: bool = True) -> str:
    if processes == 1:
        prefix = [sys.executable]
    else:
        prefix = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
                  "accelerate_configs/cpu_2proc_zero3.yaml",
                  "--zero3_init_flag", "true" if partitioned else "false", "--main_process_port", str(free_port())]
    result = run_launch(prefix + ["train.py", "--task", task, "--data", str(data), "--output-dir", str(out),
                                  "--batch-size", str(batch), *SMOKE_MODEL, *STEPS, *extra])
    return result.stdout + result.stderr


def test_partitioned_construction_trains_like_the_whole_model(demo_data, tmp_path):
    whole = tmp_path / "pretrain_whole"
    launch(demo_data, whole, "pretrain", 4, partitioned=False)
    partitioned = tmp_path / "pretrain_partitioned"
    launch(demo_data, partitioned, "pretrain", 4)
    expected, found = logged_losses(whole), logged_losses(partitioned)
    assert sorted(found) == [1, 2]
    for step in (1, 2):
        assert found[step] == pytest.approx(expected[step], abs=1e-4), step

    # --init into the partitioned model: the loaded weights, not fresh ones, must be what it trains from
    fine_tuned = tmp_path / "retrieval_partitioned"
    log = launch(demo_data, fine_tuned, "retrieval", 4, "--init", str(whole))
    assert "lacks backbone weights" not in log
    alone = tmp_path / "retrieval_alone"
    launch(demo_data, alone, "retrieval", 8, "--init", str(whole), processes=1)
    expected, found = logged_losses(alone), logged_losses(fine_tuned)
    for step in (1, 2):
        assert found[step] == pytest.approx(expected[step], abs=1e-4), step
