"""What a run records about itself besides its config: versions, machine, data, progress; and throughput scalars."""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import platform
import resource
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from violet.config import RunConfig
from violet.data.clip_store import SETTINGS_FILENAME
from violet.data.layout import SUMMARY_FILENAME, default_hf_dir, default_store_dir

PACKAGES = ("torch", "accelerate", "deepspeed", "transformers", "datasets", "timm", "decord")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def data_description(data_dir: str) -> dict[str, Any]:
    """How the clips were prepared (frames kept, size) and which annotation files (by hash) the run read, so the
    same preprocessing can be rebuilt from the run directory alone."""
    store = default_store_dir(data_dir) / SETTINGS_FILENAME
    summary = default_hf_dir(data_dir) / SUMMARY_FILENAME
    described: dict[str, Any] = {"dir": str(Path(data_dir).resolve()) if data_dir else ""}
    if store.exists():
        described["clip_store"] = json.loads(store.read_text())
    if summary.exists():
        kinds = json.loads(summary.read_text()).get("kinds", {})
        described["annotations"] = {f"{kind}_{split}": {"sha256": info.get("sha256"), "rows": info.get("kept")}
                                    for kind, splits in kinds.items() for split, info in splits.items()}
    return described


def config_hash(config: RunConfig) -> str:
    """A short hash of the settings that decide what is learned (not where the run is written)."""
    settings = config.to_dict()
    for key in ("output_dir", "resume"):
        settings.pop(key, None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_metadata(config: RunConfig, accelerator: Accelerator, step: int, run_id: str, metrics: dict | None = None,
                 samples_seen: int = 0) -> dict[str, Any]:
    return {
        "run_id": run_id, "config_sha256": config_hash(config), "task": config.task, "model": config.model.preset, "step": step, "samples_seen": samples_seen,
        "finished": metrics is not None, "metrics_val": metrics or {},
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "processes": accelerator.num_processes, "backend": accelerator.distributed_type.name.lower(),
        "precision": accelerator.mixed_precision, "python": platform.python_version(),
        "packages": package_versions(), "data": data_description(config.data.data_dir),
        "init": config.init,
    }


def throughput_logs(clips: int, elapsed: float, data_wait: float) -> dict[str, float]:
    logs = {"perf/clips_per_s": clips / max(elapsed, 1e-9), "perf/data_wait_fraction": data_wait / max(elapsed, 1e-9)}
    if torch.cuda.is_available():
        logs["perf/gpu_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    logs["perf/host_max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return logs
