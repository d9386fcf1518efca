"""CPU smoke runs of every task through train.main / evaluate.main, on the prepared demo fixture."""
from __future__ import annotations

import json

import pytest
from conftest import SMOKE_MODEL

import evaluate
import train

RETRIEVAL_KEYS = {f"{d}_{m}" for d in ("t2v", "v2t") for m in ("r1", "r5", "r10", "medr", "meanr")} | {"n"}


def run_train(task, data, out, *extra):
    return train.main(["--task", task, "--data", str(data), "--output-dir", str(out), "--batch-size", "8",
                       *extra, *SMOKE_MODEL])


@pytest.fixture(scope="module")
def pretrained(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    metrics = run_train("pretrain", demo_data, out, "--max-steps", "4", "train.lr_schedule=cosine")
    assert {"t2v_r1", "v2t_r1"} <= set(metrics) and metrics["n"] == 8  # zero-shot retrieval on val
    return out


def test_pretrain_outputs(pretrained):
    for name in ("model.safetensors", "config.json", "tokenizer/tokenizer.json", "metrics_val.json"):
        assert (pretrained / name).exists(), name
    assert list(pretrained.rglob("events.out.tfevents*")), "no TensorBoard event file"
    log = [json.loads(line) for line in (pretrained / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]
    assert log[-1]["train/lr"] < 1e-9 < log[0]["train/lr"]  # warmup + cosine ends exactly at the last step
    assert {"train/mlm", "train/vtm", "train/vtc", "train/lr", "train/grad_norm",
            "perf/clips_per_s", "perf/data_wait_fraction"} <= set(log[0])
    assert "train/mvm" not in log[0]  # the tiny preset pretrains without MVM (its pass is not run)
    assert json.loads((pretrained / "config.json").read_text())["task"] == "pretrain"
    metadata = json.loads((pretrained / "run.json").read_text())  # the run describes itself
    assert metadata["step"] == 4 and metadata["finished"] and len(metadata["run_id"]) == 12
    assert metadata["data"]["clip_store"]["frames_per_video"] >= 1 and metadata["packages"]["torch"]
    card = (pretrained / "README.md").read_text()
    assert card.startswith("# pretrain") and "violet.load" in card and "t2v_r1" in card


def test_zero_shot_retrieval_and_qa_mc(pretrained, demo_data, tmp_path):
    metrics = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(pretrained),
                             "--zero-shot", "--output", str(tmp_path / "r.json")])
    assert RETRIEVAL_KEYS <= set(metrics) and metrics["n"] == 10
    assert metrics["setup"]["zero_shot"] and metrics["setup"]["split_sha256"]
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 10
    mc = evaluate.main(["--task", "qa-mc", "--data", str(demo_data), "--checkpoint", str(pretrained), "--zero-shot",
                        "--output", str(tmp_path / "mc.json")])
    assert 0 <= mc["accuracy"] <= 100 and mc["n"] == 10
    with pytest.raises(SystemExit, match="trained for 'pretrain'"):
        evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(pretrained)])
    with pytest.raises(SystemExit, match="no zero-shot"):
        evaluate.main(["--task", "qa-oe", "--data", str(demo_data), "--checkpoint", str(pretrained), "--zero-shot"])


def test_retrieval_finetune_and_rerank_modes(pretrained, demo_data, tmp_path):
    out = tmp_path / "ret"
    run_train("retrieval", demo_data, out, "--max-steps", "3", "--init", str(pretrained), "objective.vtm_weight=1")
    results = {}
    for k in ("0", "4", "all"):
        results[k] = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(out),
                                    "--rerank-k", k, "--output", str(tmp_path / f"{k}.json")])
        assert RETRIEVAL_KEYS <= set(results[k])
    assert results["all"]["rerank_k"] == -1 and results["0"]["rerank_k"] == 0
    assert results["0"]["rerank_source"] == "--rerank-k"
    # The run chose its re-ranking depth on val, never worse than the dual encoder there, and evaluate.py uses it.
    choice = json.loads((out / "evaluation_choice.json").read_text())
    measured = {int(k): v for k, v in choice["t2v_r1_by_k"].items()}
    assert choice["split"] == "val" and 0 in measured and measured[choice["rerank_k"]] >= measured[0]
    default = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(out),
                             "--output", str(tmp_path / "default.json")])
    assert default["rerank_k"] == choice["rerank_k"] and default["rerank_source"] == "chosen by the run on val"
    # re-ranking the top 4 only reorders them: which items sit in the top 4 (hence R@5) cannot change
    for key in ("t2v_r5", "v2t_r5"):
        assert results["4"][key] == results["0"][key], key


def test_qa_mc_train_and_evaluate(demo_data, tmp_path):
    out = tmp_path / "mc"
    run_train("qa-mc", demo_data, out, "--max-steps", "3")
    metrics = evaluate.main(["--task", "qa-mc", "--data", str(demo_data), "--checkpoint", str(out)])
    assert metrics["n"] == 10 and metrics["chance"] == pytest.approx(20.0)
    assert (out / "eval_qa-mc_test.json").exists()


def test_qa_oe_train_and_evaluate_counts_oov(demo_data, tmp_path):
    out = tmp_path / "oe"
    run_train("qa-oe", demo_data, out, "--max-steps", "3", "objective.answer_top_k=3")
    answers = json.loads((out / "answers.json").read_text())
    assert len(answers) == 3
    assert json.loads((out / "config.json").read_text())["objective"]["answer_scoring"] == "text"
    metrics = evaluate.main(["--task", "qa-oe", "--data", str(demo_data), "--checkpoint", str(out)])
    assert metrics["n_oov"] > 0  # answers outside the 3 kept are counted, not dropped
    assert metrics["accuracy"] <= 100 * (metrics["n"] - metrics["n_oov"]) / metrics["n"]


def test_open_ended_answers_are_scored_as_texts_for_small_vocabularies_and_the_run_records_it(demo_data):
    from violet.config import RunConfig
    from violet.data.text import load_tokenizer
    from violet.runtime import build_config
    from violet.tasks import get_task

    task_cls, tokenizer = get_task("qa-oe"), load_tokenizer()
    small = build_config(task_cls, data_dir=str(demo_data))
    assert small.objective.answer_scoring == "auto"
    assert task_cls(small, tokenizer, answers=["left", "right"]).heads == ("vtc",)
    assert small.objective.answer_scoring == "text"  # resolved into the config the run saves
    large = build_config(task_cls, data_dir=str(demo_data))
    many = [f"answer{i}" for i in range(51)]
    assert "qa_oe" in task_cls(large, tokenizer, answers=many).heads
    assert large.objective.answer_scoring == "classifier"
    assert RunConfig().objective.answer_scoring == "classifier"  # what a run saved before the option had


def test_unprepared_data_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="python -m prepare"):
        train.main(["--task", "retrieval", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o")])
