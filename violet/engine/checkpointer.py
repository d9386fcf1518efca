"""Checkpointer: every duty around resumable state, in one place.

- when to save (`train.save_every`) and how many to keep (`train.keep_checkpoints`);
- atomic writes: Accelerate's `save_state` writes into `checkpoints/step_N.partial`, every file is fsynced, a
  manifest of sizes and SHA-256 hashes is written last, and only then is the directory renamed to `step_N`, so a
  kill or a full disk during a save never leaves something that looks like a checkpoint;
- resume lookup with fallback: `--resume` verifies the newest checkpoint against its manifest and, if a file was
  truncated or rewritten (or loading fails), says which and falls back to the previous good one;
- the export of final weights (weights.py) from the checkpoint just saved.
Each step directory also carries the run's config and tokenizer, so `evaluate.py --checkpoint OUT/checkpoints/step_N`
and `violet.load` work on it like on the final export.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from violet.engine.rundir import RunDir, write_text
from violet.engine.state import load_states, save_states
from violet.engine.weights import export_weights

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"
LEGACY_MARKER = "COMPLETE"  # checkpoints written before manifests existed: accepted, but not verifiable
PARTIAL = ".partial"


class CheckpointError(RuntimeError):
    """No checkpoint could be used; the message lists each one tried and why it was refused."""


def step_of(path: Path) -> int:
    return int(path.name.split("_")[1])


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, step: int) -> None:
    """Fsync every file and record its size and hash; the manifest itself is the completion marker."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[str(path.relative_to(directory))] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
    write_text(directory / MANIFEST, json.dumps({"step": step, "files": files}, indent=1) + "\n")


def verify_checkpoint(directory: Path, full: bool = True) -> str | None:
    """None if the checkpoint is intact; otherwise what is wrong, naming the file."""
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        return None if (directory / LEGACY_MARKER).exists() else f"{directory} is incomplete (no {MANIFEST})"
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError) as error:
        return f"{manifest_path} is unreadable ({error})"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}"
        if full and file_digest(path) != expected["sha256"]:
            return f"{path} was changed after it was saved (SHA-256 differs from the manifest)"
    return None


def finished_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under `root` that were completely written, oldest first (not yet hash-verified)."""
    if not root.exists():
        return []
    done = [path for path in root.glob("step_*") if path.is_dir() and not path.name.endswith(PARTIAL)
            and ((path / MANIFEST).exists() or (path / LEGACY_MARKER).exists())]
    return sorted(done, key=step_of)


class Checkpointer:
    def __init__(self, accelerator: Accelerator, run: RunDir, every: int, keep: int,
                 describe: Callable[[Path], None] | None = None) -> None:
        """`describe(directory)` writes what makes a step directory loadable on its own (config, tokenizer, task
        files); it runs on the main process before the manifest, so those files are verified too."""
        self.accelerator = accelerator
        self.describe = describe
        self.tracked: dict[str, Any] = {}
        self.run = run
        self.every = every
        self.keep = keep
        self.last_saved: Path | None = None

    def track(self, name: str, obj: Any) -> None:
        """Save and restore `obj` (state_dict / load_state_dict) with every checkpoint, next to model and optimizer."""
        self.tracked[name] = obj

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def finished(self) -> list[Path]:
        return finished_checkpoints(self.run.checkpoints_dir)

    def save(self, step: int) -> Path:
        """Write the resumable state of `step` atomically; every rank calls this."""
        final = self.run.checkpoints_dir / f"step_{step}"
        if final == self.last_saved:
            return final  # the last step was also a periodic save
        partial = final.with_name(final.name + PARTIAL)
        accelerator = self.accelerator
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)  # left by a save that was killed
            partial.parent.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(partial))
            accelerator.wait_for_everyone()
            save_states(self.tracked, partial, write=accelerator.is_main_process)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                if self.describe is not None:
                    self.describe(partial)
                write_manifest(partial, step)
        except OSError as error:  # e.g. a full disk: nothing was renamed, so no earlier checkpoint was touched
            raise OSError(f"saving the checkpoint of step {step} into {partial} failed ({error}); the previous "
                          f"checkpoints in {self.run.checkpoints_dir} are untouched") from error
        if accelerator.is_main_process:
            if final.exists():  # a step saved before a fallback resume: the new save replaces it
                shutil.rmtree(final)
            os.replace(partial, final)
            _fsync_dir(final.parent)
            self.prune()
        accelerator.wait_for_everyone()
        self.last_saved = final
        return final

    def prune(self) -> None:
        for old in self.finished()[:-self.keep] if self.keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self, stage: Callable[[Path], Path] | None = None) -> Path | None:
        """Load the newest checkpoint that verifies and loads; None when there is none at all.

        `stage(checkpoint)`, run on the main process, returns the directory to load the model and optimizer from
        instead (e.g. a format conversion beside it); it is removed again after loading."""
        candidates = self.finished()
        refused = []
        for path in reversed(candidates):
            problem = verify_checkpoint(path)
            if problem is None:
                try:
                    self.load(path, stage)
                except Exception as error:  # a file the manifest cannot vouch for (legacy) or a version mismatch
                    problem = f"loading {path} failed: {type(error).__name__}: {error}"
            if problem is None:
                if refused:
                    logger.warning("resuming from %s instead of newer checkpoints: %s", path, "; ".join(refused))
                return path
            logger.warning("skipping checkpoint: %s", problem)
            refused.append(problem)
        if refused:
            raise CheckpointError("no usable checkpoint in " f"{self.run.checkpoints_dir}: " + "; ".join(refused))
        return None

    def load(self, path: Path, stage: Callable[[Path], Path] | None) -> None:
        accelerator = self.accelerator
        staged: list[Path | str | None] = [None]
        if stage is not None:
            if accelerator.is_main_process:
                try:
                    staged[0] = stage(path)
                except Exception as error:  # told to every rank, so none waits for a directory that never comes
                    staged[0] = f"preparing {path} for loading failed: {type(error).__name__}: {error}"
            if accelerator.num_processes > 1:  # every rank loads what the main process staged
                from accelerate.utils import broadcast_object_list

                broadcast_object_list(staged)
            if isinstance(staged[0], str):
                raise RuntimeError(staged[0])
        try:
            accelerator.load_state(str(staged[0] or path))
            load_states(self.tracked, path)
        finally:
            accelerator.wait_for_everyone()
            if staged[0] is not None and accelerator.is_main_process:
                shutil.rmtree(staged[0], ignore_errors=True)

    def export(self, model: nn.Module, checkpoint: Path) -> None:
        export_weights(self.accelerator, model, self.run.weights_path, checkpoint)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
