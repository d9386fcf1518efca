"""OUT/train_log.jsonl: the logged scalars as JSON lines, readable without TensorBoard (reference logs)."""
from __future__ import annotations

import json
from pathlib import Path


def _logged_step(line: str) -> float:
    """The step of one train-log line; a line torn by a kill mid-write (or blank) counts as after any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class TrainLog:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled  # the main process writes; the others only compute

    def append(self, step: int, logs: dict[str, float]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"step": step, **logs}) + "\n")

    def rewind(self, step: int) -> None:
        """After a resume from `step`: drop the lines of later steps (they are trained again) and any torn line."""
        if self.enabled and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _logged_step(line) <= step]
            self.path.write_text("".join(line + "\n" for line in kept))
