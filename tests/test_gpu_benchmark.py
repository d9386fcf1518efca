"""benchmarks/gpu.py runs only on a GPU machine; here: it refuses without CUDA, launches each strategy with the
repository's configs, and reads a run's log as documented (the first logging window left out)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_it_refuses_without_a_gpu():
    with pytest.raises(SystemExit, match="found none"):
        gpu.main(["--presets", "base", "--strategies", "ddp"])


def test_each_strategy_uses_its_launch_config():
    assert gpu.launcher("ddp", 1) == [sys.executable]
    assert "--multi_gpu" in gpu.launcher("ddp", 8) and "8" in gpu.launcher("ddp", 8)
    zero3 = gpu.launcher("zero3", 4)
    assert zero3[zero3.index("--config_file") + 1] == "accelerate_configs/multi_gpu_zero3.yaml"
    assert zero3[zero3.index("--num_processes") + 1] == "4"
    for strategy in ("zero2", "zero3"):
        assert (gpu.ROOT / gpu.CONFIGS[strategy]).exists()


def test_the_summary_leaves_out_the_first_window(tmp_path):
    log = tmp_path / "train_log.jsonl"
    windows = [{"step": 5, "train/loss": 9.0, "perf/clips_per_s": 1.0, "perf/mfu": 0.01, "perf/gpu_max_allocated_gib": 30.0},
               {"step": 10, "train/loss": 8.0, "perf/clips_per_s": 64.0, "perf/mfu": 0.30, "perf/gpu_max_allocated_gib": 31.0},
               {"step": 15, "train/loss": 7.5, "perf/clips_per_s": 32.0, "perf/mfu": 0.20, "perf/gpu_max_allocated_gib": 32.0}]
    log.write_text("".join(json.dumps(window) + "\n" for window in windows))
    summary = gpu.summarise(log, global_batch=64)
    assert summary["clips_per_s"] == 48.0 and summary["s_per_step"] == pytest.approx(64 / 48, abs=1e-4)
    assert summary["mfu"] == 0.25 and summary["gpu_max_allocated_gib"] == 32.0 and summary["final_loss"] == 7.5
