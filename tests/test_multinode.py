"""Multi-node rehearsal on one machine: two "nodes" x 1 process launched with Accelerate's multi-node arguments
(machine rank, main process address 127.0.0.1, port) from the same config file real clusters use
(accelerate_configs/multi_node_zero3.yaml). They must train as one job: one rendezvous, a global batch counted
over both nodes, one train log written by rank 0, and the same per-step losses as one process holding the
whole global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import NO_MLM, SMOKE_MODEL
from test_deepspeed_2proc import BF16_REL_TOLERANCE, REPO, free_port

STEPS = 3


def node_command(rank: int, port: int, data, out) -> list[str]:
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    return [accelerate, "launch", "--config_file", "accelerate_configs/multi_node_zero3.yaml",
            "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "train.py", "--task", "retrieval", "--data", str(data), "--output-dir", str(out), "--batch-size", "4",
            "--max-steps", str(STEPS), *SMOKE_MODEL, *NO_MLM]


def losses(out) -> dict[int, float]:
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return {entry["step"]: entry["train/loss"] for entry in map(json.loads, lines)}


def test_two_nodes_train_as_one_job(demo_data, tmp_path):
    port, out = free_port(), tmp_path / "two_nodes"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Each node writes to a file, not a pipe: a pipe read only after the other node exits fills up (DeepSpeed warns
    # on every collective call), its writer blocks, and the other node then waits for it in a collective forever.
    logs = [tmp_path / f"node_{rank}.log" for rank in (0, 1)]
    handles = [log.open("w") for log in logs]
    nodes = [subprocess.Popen(node_command(rank, port, demo_data, out), cwd=REPO, env=env, text=True,
                              stdout=handle, stderr=subprocess.STDOUT) for rank, handle in zip((0, 1), handles)]
    for node, handle in zip(nodes, handles):
        node.wait(timeout=540)
        handle.close()
    outputs = [log.read_text() for log in logs]
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f"node {rank} failed:\n{output[-3000:]}"
    assert "global batch=8 (= 4 per device x 1 accumulation x 2 processes)" in outputs[0]
    assert "ZeRO-3" in outputs[0]
    two_nodes = losses(out)
    assert sorted(two_nodes) == list(range(1, STEPS + 1))  # one log, written once

    import train

    alone = tmp_path / "one_process"
    train.main(["--task", "retrieval", "--data", str(demo_data), "--output-dir", str(alone), "--batch-size", "8",
                "--max-steps", str(STEPS), *SMOKE_MODEL, *NO_MLM])
    for step, loss in losses(alone).items():
        assert two_nodes[step] == pytest.approx(loss, rel=BF16_REL_TOLERANCE), step
