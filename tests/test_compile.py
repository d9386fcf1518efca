"""train.compile wraps the model in torch.compile (inductor) through Accelerate and trains the same model.

Each run is its own process: Accelerate keeps one process-wide state, so the compile setting of a first
Accelerator would otherwise stick to the second."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import SMOKE_MODEL
from test_deepspeed_2proc import REPO


def train_losses(data, out, compile_flag: str) -> tuple[list[float], str]:
    command = [sys.executable, "train.py", "--task", "retrieval", "--data", str(data), "--output-dir", str(out),
               "--batch-size", "8", "--max-steps", "3", *SMOKE_MODEL, f"train.compile={compile_flag}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["train/loss"] for line in lines], done.stdout + done.stderr


def test_compiled_training_gives_the_same_losses(demo_data, tmp_path):
    eager, _ = train_losses(demo_data, tmp_path / "eager", "false")
    compiled, output = train_losses(demo_data, tmp_path / "compiled", "true")
    assert compiled == pytest.approx(eager, rel=1e-4)
    from safetensors.torch import load_file

    names = set(load_file(str(tmp_path / "compiled" / "model.safetensors")))
    assert names == set(load_file(str(tmp_path / "eager" / "model.safetensors")))  # no "_orig_mod." prefixes
