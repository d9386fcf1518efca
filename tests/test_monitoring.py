"""Seeing what the model learns: one TensorBoard run directory holds the scalars (with MFU), the pretraining
visuals (images + MLM text), and the whole config as hyperparameters with the final val metrics; visuals never
change training; fine-tuning tasks draw their own; trackers are chosen by train.log_with."""
from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import SMOKE_MODEL
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from test_tasks_smoke import run_train

from violet.config import ConfigError
from violet.data.text import load_tokenizer
from violet.runtime import build_accelerator, build_config
from violet.tasks import get_task
from violet.tasks.visuals import mvm_rows, pixel_reconstruction, vq_map

ACCUMULATOR_SIZES = {"images": 0, "tensors": 0, "scalars": 0}  # 0 = keep every event


def losses(out):
    return [entry["train/loss"] for entry in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def pretrain_run(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("monitored")
    # With MVM (the tiny preset pretrains without it), so the images show the masked input and the reconstruction.
    run_train("pretrain", demo_data, out, "--max-steps", "3", "train.visual_every=2", "objective.mvm_weight=1")
    return out


def test_one_tensorboard_run_holds_images_text_hparams_and_mfu(pretrain_run):
    event_dirs = {path.parent for path in pretrain_run.rglob("events.out.tfevents*")}
    assert event_dirs == {pretrain_run / "tensorboard"}, "hparams or visuals went to a second run directory"
    events = EventAccumulator(str(pretrain_run / "tensorboard"), size_guidance=ACCUMULATOR_SIZES)
    events.Reload()
    tags = events.Tags()
    assert {"pretrain/clip_0", "pretrain/clip_1"} <= set(tags["images"])
    assert [image.step for image in events.Images("pretrain/clip_0")] == [2, 3]  # every 2 steps and at the end
    text_tags = {"pretrain/clip_0/text_summary", "pretrain/clip_1/text_summary"}  # add_text's suffix
    assert text_tags <= set(events.PluginTagToContent("text"))
    text = events.Tensors("pretrain/clip_0/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "masked input" in text and "MLM output" in text and "MVM pixel MSE" in text
    assert "perf/mfu" in tags["scalars"] and "perf/tokens_per_s" in tags["scalars"]
    mfu = events.Scalars("perf/mfu")[-1].value
    assert 0 < mfu < 1.5, mfu  # CPU: against the matmul rate measured at start

    hparams = {tag: HParamsPluginData.FromString(content)
               for tag, content in events.PluginTagToContent("hparams").items()}
    session = hparams["_hparams_/session_start_info"].session_start_info.hparams
    assert session["train.lr"].number_value == pytest.approx(5e-4)
    assert session["model.width"].number_value == 64 and session["task"].string_value == "pretrain"
    assert session["data.train_augment"].string_value == "True"
    metrics = {info.name.tag for info in hparams["_hparams_/experiment"].experiment.metric_infos}
    assert {"val/t2v_r1", "val/v2t_r1"} <= metrics
    assert "val/t2v_r1" in tags["scalars"]  # the metric values the HParams tab reads, in the same run
    assert "_hparams_/session_end_info" in hparams


def test_the_pretraining_image_shows_original_masked_and_reconstruction(pretrain_run):
    events = EventAccumulator(str(pretrain_run / "tensorboard"), size_guidance=ACCUMULATOR_SIZES)
    events.Reload()
    image = events.Images("pretrain/clip_0")[-1]
    # 3 rows of 32 px frames drawn at 4x (128 px) with 2 px gaps; 8 frames side by side after the labels
    assert image.height == 3 * (128 + 2) + 2 and image.width > 8 * 128


def test_visuals_do_not_change_training(demo_data, tmp_path):
    """Visuals every step (mid-run, with their own masks) leave the losses bit for bit as a run without any."""
    with_visuals, without = tmp_path / "with", tmp_path / "without"
    run_train("pretrain", demo_data, with_visuals, "--max-steps", "2", "train.visual_every=1")
    run_train("pretrain", demo_data, without, "--max-steps", "2", "train.visual_samples=0")
    assert losses(with_visuals) == losses(without)
    assert not any(tag.startswith("pretrain/") for tag in tensorboard_tags(without)["images"])


def tensorboard_tags(out):
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return events.Tags()


def build_task(name, demo_data, tmp_path, *dotted):
    config = build_config(get_task(name), data_dir=str(demo_data), output_dir=str(tmp_path),
                          dotted=[*SMOKE_MODEL, *dotted])
    task = get_task(name)(config, load_tokenizer(""))
    accelerator = build_accelerator(config, None)
    model = task.build_model().eval()
    return task, model, accelerator


def test_mae_style_hog_visuals_draw_glyph_rows(demo_data, tmp_path):
    simvtp_style = ("model.decoder_depth=1", "model.decoder_width=64", "model.decoder_heads=2", "model.video_depth=0",
                    "objective.mvm_target=hog", "objective.mvm_ratio=0.75", "objective.mvm_weight=1")
    task, model, accelerator = build_task("pretrain", demo_data, tmp_path, *simvtp_style)
    with torch.no_grad():
        visuals = task.visuals(model, accelerator)
    image = visuals["images"]["pretrain/clip_0"]
    assert image.shape[0] == 4 * (128 + 2) + 2 and image.dtype.name == "uint8"  # original, masked, target, predicted
    assert "MVM HOG MSE" in visuals["text"]["pretrain/clip_0"]
    assert "dropped tubes" not in visuals["text"]["pretrain/clip_0"]  # the label is drawn, not written


def test_visuals_of_a_run_pretrained_without_mvm_show_the_clip_and_the_mlm_predictions(demo_data, tmp_path):
    task, model, accelerator = build_task("pretrain", demo_data, tmp_path, "objective.mvm_weight=0")
    with torch.no_grad():
        visuals = task.visuals(model, accelerator)
    assert visuals["images"]["pretrain/clip_0"].shape[0] == 128 + 2 * 2  # the original frames, one row
    text = visuals["text"]["pretrain/clip_0"]
    assert "No MVM in this run" in text and "masked words right" in text
    task, model, accelerator = build_task("pretrain", demo_data, tmp_path, "objective.mvm_weight=0",
                                          "objective.mlm_weight=0")
    assert task.visuals(model, accelerator) == {}  # no masked pass in the step: nothing to draw


def test_pixel_reconstruction_restores_patch_statistics():
    frames = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    from violet.objectives.mvm import pixel_targets

    targets = pixel_targets(frames[None], 8, 2)[0]
    hidden = torch.tensor([True, False, False, True])
    image = pixel_reconstruction(frames, targets, hidden, tubelet=2, region=8)  # a perfect prediction
    assert (abs(image.astype(int) - frames.permute(0, 2, 3, 1).numpy().astype(int)) <= 1).all()


def test_vq_visuals_colour_ids_and_black_out_visible_tokens():
    frames = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    targets = torch.tensor([[3, 3], [5, 5], [7, 7], [9, 9]])
    predicted = torch.tensor([[3, 3], [0, 0], [0, 0], [8, 8]])
    hidden = torch.tensor([True, False, False, True])
    colours = vq_map(targets, hidden, frames=2, grid=2, block=8)
    assert colours.shape == (2, 16, 16, 3)
    assert (colours[:, 8:, 8:] != 0).any() and (colours[:, :8, 8:] == 0).all()  # token 1 visible: black
    task = SimpleNamespace(config=SimpleNamespace(model=SimpleNamespace(video_region=8, tubelet=2)),
                           mvm_target=SimpleNamespace(kind="vq"))
    rows, line = mvm_rows(task, frames, hidden, targets, predicted)
    assert [label.split("\n")[0] for label, _ in rows] == ["VQ target ids", "VQ predicted ids"]
    assert "50.0%" in line  # token 0 right, token 3 wrong


@pytest.mark.parametrize("name, expected", [("retrieval", "| 1 |"), ("qa-mc", "← model"), ("qa-oe", "probability")])
def test_finetuning_visuals_show_frames_and_predictions(demo_data, tmp_path, name, expected):
    task, model, accelerator = build_task(name, demo_data, tmp_path)
    with torch.no_grad():
        visuals = task.visuals(model, accelerator)
    assert set(visuals["images"]) == {f"{name}/clip_0", f"{name}/clip_1"}
    assert expected in visuals["text"][f"{name}/clip_0"]


def test_log_with_none_writes_no_event_files(demo_data, tmp_path):
    out = tmp_path / "quiet"
    run_train("retrieval", demo_data, out, "--max-steps", "1", "train.log_with=none", "train.progress=false")
    assert not list(out.rglob("events.out.tfevents*")) and (out / "train_log.jsonl").exists()
    with pytest.raises(ConfigError, match="train.log_with must be tensorboard|wandb|all|none"):
        build_config(get_task("retrieval"), dotted=["train.log_with=mlflow"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is an optional extra (pip install '.[wandb]'); not installed here")
def test_wandb_offline_run_gets_scalars_visuals_and_config(demo_data, tmp_path, monkeypatch):
    from accelerate.tracking import WandBTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    stored = {}
    original = WandBTracker.store_init_configuration
    monkeypatch.setattr(WandBTracker, "store_init_configuration",
                        lambda self, values: (stored.update(values), original(self, values))[1])
    out = tmp_path / "both"
    run_train("retrieval", demo_data, out, "--max-steps", "2", "train.log_with=all")
    assert stored["train.lr"] == 5e-4 and stored["model.width"] == 64  # the whole flattened config
    (offline,) = (out / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))
    media = offline / "files" / "media"
    assert {p.name.split("_2_")[0] for p in (media / "images" / "retrieval").iterdir()} == {"clip_0", "clip_1"}
    assert len(list((media / "html" / "retrieval").rglob("*.html"))) == 2  # the texts
    assert list(out.rglob("events.out.tfevents*"))  # "all" keeps TensorBoard too
