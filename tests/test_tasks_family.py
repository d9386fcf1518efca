"""CPU runs of the VIOLET and SimVTP tiny twins through train.main / evaluate.main on the demo fixture:
pretrain, fine-tune retrieval from it, evaluate; SimVTP's encoder sees ~10 % of the video tubes while pretraining."""
from __future__ import annotations

import json

import pytest

import evaluate
import train

COMMON = ["model.image_size=32", "data.num_workers=0", "train.eval_batch_size=16", "train.log_every=1"]
FAMILY = {
    "violet-tiny": [],
    # 4 px tubes on 32 px frames: 64 per step, so 90 % masking keeps 6 (the ratio a 224 px ViT-B/16 sees). The 90 %
    # tube and 75 % text masking come from the preset itself (violet.models.preset_overrides).
    "simvtp-tiny": ["model.patch_size=4"],
}


def run(task, data, out, preset, *extra):
    return train.main(["--task", task, "--data", str(data), "--output-dir", str(out), "--batch-size", "8",
                       "--model", preset, *COMMON, *FAMILY[preset], *extra])


def log_of(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", sorted(FAMILY))
def test_pretrain_then_finetune_retrieval(preset, demo_data, tmp_path):
    pretrained = tmp_path / "pretrain"
    metrics = run("pretrain", demo_data, pretrained, preset, "--max-steps", "3", "data.num_frames=4")
    assert metrics["n"] == 8 and 0 <= metrics["t2v_r1"] <= 100
    log = log_of(pretrained)
    assert [entry["step"] for entry in log] == [1, 2, 3]
    for entry in log:
        assert all(entry[f"train/{name}"] > 0 for name in ("mlm", "mvm", "vtm", "vtc"))
    encoded = log[0]["train/video_tokens_encoded"]
    if preset == "simvtp-tiny":
        assert encoded == pytest.approx(6 / 64)  # the encoder ran on the visible tubes only
    else:
        assert encoded == 1.0  # VIOLET encodes every token (masked ones as mask tokens)
    assert json.loads((pretrained / "config.json").read_text())["model"]["preset"] == preset

    finetuned = tmp_path / "retrieval"
    run("retrieval", demo_data, finetuned, preset, "--max-steps", "2", "--init", str(pretrained), "data.num_frames=4")
    result = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(finetuned),
                            "--output", str(tmp_path / "metrics.json")])
    assert result["n"] == 10 and result["setup"]["model"] == preset


def test_violet_pretrains_with_hog_targets(demo_data, tmp_path):
    out = tmp_path / "hog"
    run("pretrain", demo_data, out, "violet-tiny", "--max-steps", "2", "objective.mvm_target=hog",
        "data.num_frames=4", "train.eval_every=0")
    assert all(entry["train/mvm"] > 0 for entry in log_of(out))


def test_preset_settings_apply_under_user_overrides():
    from violet.runtime import build_config
    from violet.tasks import get_task

    simvtp = build_config(get_task("pretrain"), model="simvtp-tiny")
    assert (simvtp.objective.mvm_ratio, simvtp.objective.mlm_prob) == (0.9, 0.75)
    mine = build_config(get_task("pretrain"), model="simvtp-tiny", dotted=["objective.mvm_ratio=0.5"])
    assert mine.objective.mvm_ratio == 0.5  # the user's flags still win over the preset


def test_text_init_from_a_local_bert_directory_is_applied_by_the_trainer(demo_data, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=256, max_position_embeddings=64))
    bert.save_pretrained(tmp_path / "bert")
    run("retrieval", demo_data, tmp_path / "run", "violet-tiny", "--max-steps", "1", "train.eval_every=0",
        f"model.text_init={tmp_path / 'bert'}")
    assert "text initialised from a bert checkpoint" in capsys.readouterr().out


def test_caption_tasks_share_code_by_composition_not_inheritance(demo_data):
    """Pretrain and retrieval hold the same pieces (matching objective, retrieval evaluation); no task subclasses
    another, and the caption-task rules (VTM head, held-back train slice) hold for both."""
    from violet.config import RunConfig, apply_overrides
    from violet.data.text import load_tokenizer
    from violet.tasks import TASKS
    from violet.tasks.base import Task
    from violet.tasks.ranking import HELDOUT, held_back

    # No registered task inherits another (shared behaviour comes from pieces such as ranking.EvaluatedByRetrieval).
    assert all(issubclass(cls, Task) for cls in TASKS.values())
    assert not [(a.name, b.name) for a in TASKS.values() for b in TASKS.values() if a is not b and issubclass(a, b)]
    pretrain, retrieval = TASKS["pretrain"], TASKS["retrieval"]
    assert pretrain.heads == ("vtc", "vtm", "mlm", "mvm") and retrieval.heads == ("vtc", "vtm", "mlm")
    assert pretrain.annotation_kind == retrieval.annotation_kind == "captions"
    assert pretrain.supports_zero_shot and retrieval.supports_zero_shot
    tokenizer = load_tokenizer("")
    for cls in (pretrain, retrieval):
        for weight in (0.0, 1.0):
            config = RunConfig()
            apply_overrides(config, {"objective": {"vtm_weight": weight}, "data": {"data_dir": str(demo_data)}})
            task = cls(config, tokenizer)
            assert ("vtm" in task.heads) == (weight > 0), (cls.name, weight)
            assert task.text_fields({"caption": ["a dog runs"]})["text_ids"].shape[0] == 1
            train = task.require_split("train")
            assert len(task.train_rows()) == len(train)  # a val split exists: nothing held back
            del task.splits["val"]
            kept = task.train_rows()
            if weight > 0:  # no val split: a slice of train is kept out to choose re-ranking on
                assert len(kept) < len(train) and not any(held_back(video) for video in kept["video"])
                assert len(kept) + len(task.retrieval.eval_rows(HELDOUT)) == len(train)
            else:
                assert len(kept) == len(train)


@pytest.mark.parametrize("weights, heads, video_passes", [
    ({"mvm_weight": 0.0}, ("vtc", "vtm", "mlm"), 1),  # no masked video pass: MLM reads the clean video
    ({"mlm_weight": 0.0}, ("vtc", "vtm", "mvm"), 2),
    ({"mlm_weight": 0.0, "mvm_weight": 0.0}, ("vtc", "vtm"), 1),
    ({}, ("vtc", "vtm", "mlm", "mvm"), 2),
])
def test_a_zero_weight_masked_objective_drops_its_head_and_its_pass(weights, heads, video_passes, demo_data):
    """A loss weighted 0 is not computed and multiplied by 0: its head is not built and its pass not run (MVM's is a
    second trip through the video encoder), and the step's loss is the sum of the terms that remain."""
    import torch

    from violet.config import RunConfig, apply_overrides
    from violet.data.text import load_tokenizer
    from violet.tasks import TASKS

    config = RunConfig()
    apply_overrides(config, {"objective": weights, "data": {"data_dir": str(demo_data)},
                             "model": {"image_size": 32}})
    task = TASKS["pretrain"](config, load_tokenizer(""))
    assert task.heads == heads
    model = task.build_model()
    assert set(model.heads) == set(heads)
    calls = []
    original = model.forward

    def counting(kind, **kwargs):
        calls.append(kind)
        return original(kind, **kwargs)

    model.forward = counting
    batch = task.text_fields({"caption": ["a red ball rolls left", "a blue box moves up"] * 2})
    batch.update(frames=torch.rand(4, 8, 3, 32, 32), video=["a", "b", "c", "d"])
    loss, terms = task.training_step(model, batch, torch.Generator().manual_seed(0))
    assert calls.count("video") == video_passes
    assert ("mlm" in terms) == ("mlm" in heads) and ("mvm" in terms) == ("mvm" in heads)
    expected = sum(terms[name] for name in ("vtc", "vtm", "mlm", "mvm") if name in terms)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in model.text.parameters() if p.requires_grad)


@pytest.mark.parametrize("mlm_weight, heads", [(0.0, ("vtc",)), (0.5, ("vtc", "mlm"))])
def test_retrieval_adds_mlm_only_when_weighted(mlm_weight, heads, demo_data):
    """Retrieval's default has no MLM; with objective.mlm_weight > 0 the step adds the MLM term of one fused pass
    over the masked caption and the clip the contrastive term already encoded (no second video pass)."""
    import torch

    from violet.data.text import load_tokenizer
    from violet.runtime import build_config
    from violet.tasks import get_task

    task_cls = get_task("retrieval")
    assert task_cls.defaults["objective"]["mlm_weight"] == 0.0  # the field's 1.0 is pretraining's
    assert build_config(task_cls, model="small").objective.mlm_weight == 0.0
    assert build_config(task_cls).objective.mlm_weight == 1.0  # the tiny preset's recipe, chosen on val
    config = build_config(task_cls, data_dir=str(demo_data),
                          dotted=["model.image_size=32", f"objective.mlm_weight={mlm_weight}"])
    task = task_cls(config, load_tokenizer(""))
    assert task.heads == heads
    model = task.build_model()
    assert set(model.heads) == set(heads)
    calls = []
    original = model.forward
    model.forward = lambda kind, **kwargs: calls.append(kind) or original(kind, **kwargs)
    batch = task.text_fields({"caption": ["a red ball rolls left", "a blue box moves up"] * 2})
    batch.update(frames=torch.rand(4, 8, 3, 32, 32), video=["a", "b", "c", "d"])
    loss, terms = task.training_step(model, batch, torch.Generator().manual_seed(0))
    assert calls.count("video") == 1 and calls.count("fusion") == (mlm_weight > 0)
    assert ("mlm" in terms) == (mlm_weight > 0)
    assert torch.allclose(loss, terms["vtc"] + terms.get("mlm", 0.0))


@pytest.mark.parametrize("temporal_weight,negative", [
    (0.0, "swap"), (0.5, "swap"), (0.5, "reverse"), (0.5, "segments")])
def test_retrieval_adds_the_temporal_order_contrast_only_when_weighted(temporal_weight, negative, demo_data):
    """objective.temporal_weight > 0: one more video pass, over the clips altered in time as
    objective.temporal_negative says (halves swapped, or played backwards), and the term in the loss; at 0 (the
    default) neither. "segments" takes the negative from the real pass (segment means in the other order)."""
    import torch

    from violet.data.text import load_tokenizer
    from violet.objectives import reverse_time, swap_halves
    from violet.runtime import build_config
    from violet.tasks import get_task

    task_cls = get_task("retrieval")
    assert build_config(task_cls).objective.temporal_weight == 0.0
    config = build_config(task_cls, data_dir=str(demo_data), dotted=[
        "model.image_size=32", "objective.mlm_weight=0", f"objective.temporal_weight={temporal_weight}",
        f"objective.temporal_negative={negative}", "model.video_pool_segments=2"])
    task = task_cls(config, load_tokenizer(""))
    model = task.build_model()
    frames_seen = []
    original = model.forward

    def counting(kind, **kwargs):
        if kind == "video":
            frames_seen.append(kwargs["frames"])
        return original(kind, **kwargs)

    model.forward = counting
    batch = task.text_fields({"caption": ["a red ball rolls left", "a blue box moves up"] * 2})
    batch.update(frames=torch.rand(4, 8, 3, 32, 32), video=["a", "b", "c", "d"])
    loss, terms = task.training_step(model, batch, torch.Generator().manual_seed(0))
    assert len(frames_seen) == 1 + (temporal_weight > 0 and negative != "segments")
    if temporal_weight > 0 and negative != "segments":
        altered = {"swap": swap_halves, "reverse": reverse_time}[negative](batch["frames"])
        assert torch.equal(frames_seen[1], altered) and not torch.equal(altered, batch["frames"])
    if temporal_weight > 0:
        assert 0.0 <= float(terms["temporal_acc"]) <= 1.0
        # the term alone moves the video encoder (through both passes, or both segments), not only the projections
        video_params = [p for p in model.video.parameters() if p.requires_grad]
        grads = torch.autograd.grad(terms["temporal"], video_params, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert ("temporal" in terms) == (temporal_weight > 0)
    assert torch.allclose(loss, terms["vtc"] + terms.get("temporal", 0.0))


@pytest.mark.parametrize("mlm_weight", [0.0, 0.5])
def test_qa_mc_adds_mlm_on_the_correct_answer_text_only_when_weighted(mlm_weight, demo_data):
    """qa-mc's MLM term fuses the correct "question + answer" text of each row (one per question, not one per
    option) with the clip the option scores already encoded; with the default weight 0 there is no such pass."""
    import torch

    from violet.data.text import load_tokenizer
    from violet.runtime import build_config
    from violet.tasks import get_task

    task_cls = get_task("qa-mc")
    assert build_config(task_cls, model="small").objective.mlm_weight == 0.0  # the task's own recipe
    assert build_config(task_cls).objective.mlm_weight == 1.0  # the tiny preset's, chosen on val
    config = build_config(task_cls, data_dir=str(demo_data), dotted=[
        "model.image_size=32", "objective.vtm_weight=0", f"objective.mlm_weight={mlm_weight}",
        "objective.temporal_weight=0"])  # the tiny preset's reversed-clip term has its own test below
    task = task_cls(config, load_tokenizer(""))
    assert task.heads == (("vtc", "mlm") if mlm_weight else ("vtc",))
    model = task.build_model()
    fused = []
    original = model.forward
    model.forward = lambda kind, **kwargs: (fused.append(kwargs) if kind == "fusion" else None) or original(kind, **kwargs)
    options = [["moves left", "moves right", "stays"], ["is red", "is blue", "is green"]]
    batch = task.text_fields({"question": ["where does it go?", "what colour?"], "options": options, "answer": [1, 2]})
    batch.update(frames=torch.rand(2, 8, 3, 32, 32), video=["a", "b"])
    loss, terms = task.training_step(model, batch, torch.Generator().manual_seed(0))
    assert len(fused) == (mlm_weight > 0) and ("mlm" in terms) == (mlm_weight > 0)
    if fused:
        mask = fused[0]["text_mask"]
        assert mask.shape[0] == 2  # one answer text per question
        assert torch.equal(mask, batch["text_mask"][torch.tensor([1, 5])])  # rows 0 option 1, row 1 option 2
    assert torch.allclose(loss, terms["qa_mc"] + terms["vtc"] + terms.get("mlm", 0.0))


def test_qa_mc_temporal_contrast_uses_each_correct_answer_text(demo_data, monkeypatch):
    """objective.temporal_weight > 0 in qa-mc: one more video pass over the clips played backwards, scored against
    the embedding of each row's correct "question + answer" text (not any other option), and the term in the loss."""
    import torch

    from violet.data.text import load_tokenizer
    from violet.objectives import reverse_time, temporal_order_loss
    from violet.runtime import build_config
    from violet.tasks import get_task

    task_cls = get_task("qa-mc")
    config = build_config(task_cls, data_dir=str(demo_data), dotted=[
        "model.image_size=32", "objective.vtm_weight=0", "objective.mlm_weight=0", "objective.temporal_weight=0.5",
        "objective.temporal_negative=reverse"])
    task = task_cls(config, load_tokenizer(""))
    model = task.build_model()
    frames_seen, texts_seen = [], []
    original = model.forward

    def recording(kind, **kwargs):
        out = original(kind, **kwargs)
        if kind == "video":
            frames_seen.append(kwargs["frames"])
        if kind == "text":
            texts_seen.append(out["embed"])
        return out

    model.forward = recording
    seen_text = []
    monkeypatch.setattr("violet.objectives.temporal.temporal_order_loss",
                        lambda text, *rest: seen_text.append(text) or temporal_order_loss(text, *rest))
    options = [["moves left", "moves right", "stays"], ["is red", "is blue", "is green"]]
    batch = task.text_fields({"question": ["where does it go?", "what colour?"], "options": options, "answer": [1, 2]})
    batch.update(frames=torch.rand(2, 8, 3, 32, 32), video=["a", "b"])
    loss, terms = task.training_step(model, batch, torch.Generator().manual_seed(0))
    assert len(frames_seen) == 2 and torch.equal(frames_seen[1], reverse_time(batch["frames"]))
    assert torch.equal(seen_text[0], texts_seen[0][torch.tensor([1, 5])])  # row 0 option 1, row 1 option 2
    assert torch.allclose(loss, terms["qa_mc"] + terms["vtc"] + terms["temporal"])


@pytest.mark.parametrize("task, saved_format, loads_with", [
    ("pretrain", 1, 1.0), ("retrieval", 1, 0.0), ("retrieval", 2, 1.0), ("qa-mc", 2, 0.0), ("qa-mc", 3, 1.0),
    ("qa-oe", 3, 0.0),
])
def test_runs_saved_before_their_task_read_mlm_weight_load_without_mlm(task, saved_format, loads_with, tmp_path):
    """Before config.json format 2 only pretraining read objective.mlm_weight, before format 3 qa-mc did not; a
    task that did not read it saved an unused 1.0 and has no MLM head, so such a run loads with 0."""
    import json

    from violet.config import RunConfig, apply_overrides
    from violet.engine.rundir import CONFIG_FORMAT, RunDir

    config = RunConfig()
    apply_overrides(config, {"task": task, "objective": {"mlm_weight": 1.0}})
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.save_config(config)
    assert json.loads(run.config_path.read_text())["format"] == CONFIG_FORMAT == 3
    assert run.load_config().objective.mlm_weight == (0.0 if task == "qa-oe" else 1.0)
    saved = json.loads(config.to_json())
    if saved_format > 1:  # format 1 had no "format" key
        saved["format"] = saved_format
    run.config_path.write_text(json.dumps(saved))
    assert run.load_config().objective.mlm_weight == loads_with
