"""One command for a GPU machine: the paper-size presets in bf16 under DDP, ZeRO-2 and ZeRO-3.

    python benchmarks/gpu.py [--presets base violet-base simvtp-base] [--strategies ddp zero2 zero3]
                             [--gpus N] [--steps 40] [--batch-size 8] [--task pretrain] [--data DIR]

For every (preset, strategy) it launches train.py exactly as a user would (`accelerate launch` with the
repository's launch configs, `--num_processes` = the GPUs to use; one GPU under "ddp" is a plain process), on a
demo data set made at 224 px on first use, and reads the run's own train_log.jsonl: seconds per optimizer step,
clips/s, MFU (against the GPU's bf16 peak, from violet.engine.efficiency), peak GPU memory (torch's max
allocated) and host RSS, averaged over the logging windows after the first (start-up, compilation and the first
batches fall in the first). Prints one JSON object: the GPU, the software versions and one record per run.
It needs CUDA and is never part of the test suite; record its output in docs/benchmarks.md with the GPU model.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"zero2": "accelerate_configs/multi_gpu_zero2.yaml", "zero3": "accelerate_configs/multi_gpu_zero3.yaml"}


def launcher(strategy: str, gpus: int) -> list[str]:
    """The command prefix that runs train.py under `strategy` on `gpus` GPUs."""
    accelerate = str(Path(sys.executable).parent / "accelerate")
    if strategy == "ddp":
        if gpus == 1:
            return [sys.executable]
        return [accelerate, "launch", "--multi_gpu", "--num_processes", str(gpus), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [accelerate, "launch", "--config_file", CONFIGS[strategy], "--num_processes", str(gpus)]


def train_command(strategy: str, gpus: int, preset: str, args: argparse.Namespace, out: Path) -> list[str]:
    return launcher(strategy, gpus) + [
        "train.py", "--task", args.task, "--data", str(args.data), "--output-dir", str(out), "--model", preset,
        "--batch-size", str(args.batch_size), "--max-steps", str(args.steps), "train.mixed_precision=bf16",
        f"train.log_every={max(1, args.steps // 8)}", "train.save_every=0", "train.eval_every=0",
        "data.num_workers=6",
    ]


def summarise(log: Path, global_batch: int) -> dict:
    rows = [json.loads(line) for line in log.read_text().splitlines()][1:]  # the first window holds start-up
    if not rows:
        raise RuntimeError(f"{log} has fewer than two logging windows: raise --steps")

    def mean(key: str) -> float | None:
        values = [row[key] for row in rows if key in row]
        return round(statistics.mean(values), 4) if values else None

    clips = mean("perf/clips_per_s")
    return {"clips_per_s": clips, "s_per_step": round(global_batch / clips, 4), "mfu": mean("perf/mfu"),
            "tflops_per_device": mean("perf/tflops_per_device"),
            "gpu_max_allocated_gib": max(row.get("perf/gpu_max_allocated_gib", 0.0) for row in rows),
            "host_max_rss_gib": max(row.get("perf/host_max_rss_gib", 0.0) for row in rows),
            "final_loss": round(rows[-1]["train/loss"], 4)}


def ensure_data(data: Path) -> None:
    if (data / "hf").exists():
        return
    for command in ([sys.executable, "-m", "prepare.demo", str(data), "--size", "224", "--frames", "32"],
                    [sys.executable, "-m", "prepare", str(data), "--short-side", "256"]):
        subprocess.run(command, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--presets", nargs="+", default=["base", "violet-base", "simvtp-base"])
    parser.add_argument("--strategies", nargs="+", choices=("ddp", "zero2", "zero3"), default=["ddp", "zero2", "zero3"])
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per run (default: all visible)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8, help="per GPU")
    parser.add_argument("--task", default="pretrain")
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / ".data" / "gpu_demo")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py measures GPUs and found none (torch.cuda.is_available() is false)")
    gpus = args.gpus or torch.cuda.device_count()
    ensure_data(args.data)
    runs = []
    for preset in args.presets:
        for strategy in args.strategies:
            with tempfile.TemporaryDirectory(prefix="gpu_bench_") as out:
                command = train_command(strategy, gpus, preset, args, Path(out) / "run")
                result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                        env={**os.environ, "OMP_NUM_THREADS": "4"})
                record = {"preset": preset, "strategy": strategy, "gpus": gpus, "per_gpu_batch": args.batch_size,
                          "command": " ".join(command[command.index("train.py"):])}
                if result.returncode != 0:
                    record["error"] = (result.stderr or result.stdout)[-2000:]
                else:
                    record.update(summarise(Path(out) / "run" / "train_log.jsonl", args.batch_size * gpus))
            runs.append(record)
            print(json.dumps(record), file=sys.stderr, flush=True)
    report = {"gpu": torch.cuda.get_device_name(0), "gpu_count": gpus, "torch": torch.__version__,
              "cuda": torch.version.cuda, "task": args.task, "steps": args.steps, "runs": runs}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
