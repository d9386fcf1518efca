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
    # 4 px tubes on 32 px frames: 64 per step, so 90 % masking keeps 6 (the ratio a 224 px ViT-B/16 sees).
    "simvtp-tiny": ["model.patch_size=4", "objective.mvm_ratio=0.9", "objective.mlm_prob=0.75"],
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
