"""Two processes on CPU with DeepSpeed ZeRO-2 through `accelerate launch`: the global batch spans both ranks,
distributed evaluation covers every sample once, and the exported safetensors evaluate without DeepSpeed to the
same metrics as the evaluation inside the run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMOKE_MODEL

import evaluate

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_zero2_two_processes_train_and_export(demo_data, tmp_path):
    out = tmp_path / "zero2"
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--config_file", "accelerate_configs/cpu_2proc_zero2.yaml",
        "--main_process_port", str(free_port()), "train.py", "--task", "retrieval", "--data", str(demo_data),
        "--output-dir", str(out), "--max-steps", "3", "--batch-size", "4", *SMOKE_MODEL,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "global batch=8 (= 4 per device x 1 accumulation x 2 processes)" in result.stdout
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3]
    in_run = json.loads((out / "metrics_val.json").read_text())
    assert in_run["n"] == 8 and in_run["n_videos"] == 8

    # The consolidated weights load in a plain single process and reproduce the in-run evaluation.
    alone = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(out),
                           "--split", "val", "--output", str(tmp_path / "alone.json")])
    for key in ("t2v_r1", "t2v_r5", "t2v_meanr", "v2t_r1", "v2t_meanr"):
        assert alone[key] == pytest.approx(in_run[key], abs=1e-6), key
