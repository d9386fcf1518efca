"""Experiment trackers (Accelerate's): which ones a run uses, its config as hyperparameters, and visuals.

TensorBoard keeps everything of a run in one directory (OUT/tensorboard): scalars, images, texts and the HParams
plugin's summaries. Accelerate's own `store_init_configuration` would write the hyperparameters into a new
time-stamped subdirectory (a second "run" in TensorBoard), so they are written here with TensorBoard's hparams
summary API into the run's own event file instead: the session (the whole flattened config) when training
starts, and the experiment (which metrics to show: the final val metrics, read from the run's `val/*` scalars)
with the session's end when it finishes. Other trackers (wandb) get the config through Accelerate.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker
from torch.utils.tensorboard.summary import hparams

TRACKER_CHOICES = {"tensorboard": ("tensorboard",), "wandb": ("wandb",), "all": ("tensorboard", "wandb"), "none": ()}
WANDB_PROJECT = "violet"  # unless the WANDB_PROJECT environment variable names another


def build_trackers(log_with: str, project_dir: str, tensorboard_dir: str) -> list[GeneralTracker]:
    """Accelerate tracker objects for `train.log_with`; TensorBoard writes to project_dir/tensorboard_dir."""
    if log_with not in TRACKER_CHOICES:
        raise ValueError(f"train.log_with must be {'|'.join(TRACKER_CHOICES)}, got {log_with!r}")
    trackers: list[GeneralTracker] = []
    for name in TRACKER_CHOICES[log_with]:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(tensorboard_dir, project_dir))
        elif importlib.util.find_spec("wandb") is None:
            raise ValueError(f"train.log_with={log_with} needs the wandb package: pip install '.[wandb]' "
                             "(or log_with=tensorboard)")
        else:  # offline with WANDB_MODE=offline; the run id is set when training starts (see start_trackers)
            trackers.append(WandBTracker(os.environ.get("WANDB_PROJECT", WANDB_PROJECT), dir=project_dir,
                                         name=Path(project_dir).resolve().name))
    return trackers


def hparam_values(flat_config: dict[str, Any]) -> dict[str, Any]:
    """Values the HParams plugin can hold: numbers and strings (booleans and anything else as text)."""
    values = {}
    for key, value in flat_config.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            value = str(value)
        values[key] = value
    return values


def tensorboard_writer(accelerator: Accelerator) -> Any | None:
    """The SummaryWriter of this run (main process, TensorBoard tracker on), else None."""
    if not accelerator.is_main_process:
        return None
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            return tracker.writer
    return None


def start_trackers(accelerator: Accelerator, flat_config: dict[str, Any], run_id: str) -> None:
    """Open the trackers and record the whole config as hyperparameters of this run."""
    for tracker in accelerator.log_with:
        if getattr(tracker, "name", None) == "wandb":  # a resumed run continues its wandb run
            tracker.init_kwargs.setdefault("id", run_id)
            tracker.init_kwargs.setdefault("resume", "allow")
    accelerator.init_trackers("violet")  # the project name of the trackers built by build_trackers is their own
    if not accelerator.is_main_process:
        return
    values = hparam_values(flat_config)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            _, session_start, _ = hparams(values, {})
            tracker.writer.file_writer.add_summary(session_start)
            tracker.writer.flush()
        else:
            tracker.store_init_configuration(values)


def finish_hparams(accelerator: Accelerator, flat_config: dict[str, Any], metrics: dict[str, Any],
                   split: str = "val") -> None:
    """Attach the final metrics (the run's `{split}/*` scalars) to its hyperparameters in TensorBoard."""
    writer = tensorboard_writer(accelerator)
    if writer is None:
        return
    names = {f"{split}/{key}": value for key, value in metrics.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)}
    experiment, _, session_end = hparams(hparam_values(flat_config), names)
    writer.file_writer.add_summary(experiment)
    writer.file_writer.add_summary(session_end)
    writer.flush()


def log_visuals(accelerator: Accelerator, visuals: dict[str, dict[str, Any]], step: int) -> None:
    """Images (uint8 H x W x 3) and markdown texts, to every tracker (main process only)."""
    if not accelerator.is_main_process:
        return
    images, texts = visuals.get("images", {}), visuals.get("text", {})
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for tag, image in images.items():
                tracker.writer.add_image(tag, np.asarray(image), global_step=step, dataformats="HWC")
            for tag, text in texts.items():
                tracker.writer.add_text(tag, text, global_step=step)
            tracker.writer.flush()
        elif tracker.name == "wandb":
            import wandb

            values: dict[str, Any] = {tag: wandb.Image(np.asarray(image)) for tag, image in images.items()}
            # an image and a text may share a tag (TensorBoard keeps them apart by plugin); wandb needs two keys
            values.update({f"{tag}/text": wandb.Html(markdown_as_html(text)) for tag, text in texts.items()})
            tracker.log(values, step=step)
        else:
            tracker.log_images({tag: [np.asarray(image)] for tag, image in images.items()}, step=step)
            tracker.log(dict(texts), step=step)


def markdown_as_html(text: str) -> str:
    """wandb shows HTML, not markdown: keep the text as it is, preformatted."""
    import html

    return f"<pre>{html.escape(text)}</pre>"
