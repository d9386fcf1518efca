"""`evaluate.py --predictions`: one JSON object per query that agrees exactly with the metrics of the same run,
and `python -m violet.report` reading what evaluate.py writes by default.

Tiny runs (a few steps) are enough: the checks are agreement between two outputs of one evaluation, not quality.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SMOKE_MODEL

import evaluate
import train
import violet
from violet import report
from violet.data.collate import unique_videos
from violet.data.layout import videos_dir
from violet.data.prepared import load_prepared
from violet.metrics import recall_metrics
from violet.tasks.ranking import RERANKED_OFFSET, retrieval_predictions

T2V_KEYS = [f"t2v_{m}" for m in ("r1", "r5", "r10", "medr", "meanr")]


def train_run(task, data, out, steps, *extra):
    train.main(["--task", task, "--data", str(data), "--output-dir", str(out), "--max-steps", str(steps),
                "--batch-size", "8", *SMOKE_MODEL, *extra])
    return out


@pytest.fixture(scope="module")
def runs(demo_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("prediction_runs")
    return {
        # With the VTM head, so re-ranked predictions are checked too.
        "retrieval": train_run("retrieval", demo_data, root / "retrieval", 3, "objective.vtm_weight=1"),
        "qa-mc": train_run("qa-mc", demo_data, root / "qa-mc", 2),
        "qa-oe": train_run("qa-oe", demo_data, root / "qa-oe", 2),
    }


def evaluate_with_predictions(task, data, run, tmp_path, *extra):
    """evaluate.main with --predictions: (metrics as returned, metrics file, prediction rows)."""
    name = f"{task}{'_'.join(extra)}"
    output, predictions = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
    returned = evaluate.main(["--task", task, "--data", str(data), "--checkpoint", str(run), "--output", str(output),
                              "--predictions", str(predictions), *extra])
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    return returned, json.loads(output.read_text()), rows


def percent(flags: list[bool]) -> float:
    """As violet.metrics computes a percentage, so equality can be exact."""
    return float(torch.tensor(flags).float().mean() * 100)


def test_ranked_lists_follow_the_metric_ranks_with_ties_against_the_query():
    scores = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.3, 0.1, 0.7], [0.0, 0.2, 0.1]])
    scores[3, 2] = RERANKED_OFFSET + 3.0  # a re-ranked pair: it sorts above every cosine
    rows = retrieval_predictions(scores, torch.tensor([0, 2, 2, 1]), ["a", "b", "c", "d"], ["x", "y", "z"], 3)
    assert [row["rank"] for row in rows] == [2, 2, 1, 2]  # a tie with a wrong video ranks the gold one lower
    assert [[entry["video"] for entry in row["top"]] for row in rows] == [
        ["y", "x", "z"], ["y", "z", "x"], ["z", "x", "y"], ["z", "y", "x"]]
    assert [row["correct"] for row in rows] == [False, False, True, False]
    assert rows[3]["top"][0]["reranked"] and rows[3]["top"][0]["score"] == pytest.approx(3.0, abs=1e-3)
    assert not any(entry["reranked"] for row in rows[:3] for entry in row["top"])
    assert rows[0]["top"][1] == {"video": "x", "score": 0.5, "reranked": False, "correct": True}
    short = retrieval_predictions(scores, torch.tensor([0, 2, 2, 1]), list("abcd"), list("xyz"), 1)
    assert [[entry["video"] for entry in row["top"]] for row in short] == [["y"], ["y"], ["z"], ["z"]]


@pytest.mark.parametrize("rerank_k", ["4", "0"])
def test_retrieval_predictions_agree_with_the_metrics(runs, demo_data, tmp_path, rerank_k):
    returned, metrics, rows = evaluate_with_predictions(
        "retrieval", demo_data, runs["retrieval"], tmp_path, "--rerank-k", rerank_k, "--top-k", "3")
    assert "predictions" not in returned and "predictions" not in metrics
    test = load_prepared(demo_data, "captions")["test"]
    assert len(rows) == metrics["n"] == len(test)
    assert [row["index"] for row in rows] == list(range(len(test)))  # row order, complete
    assert [row["text"] for row in rows] == test["caption"] and [row["video"] for row in rows] == test["video"]
    ranks = torch.tensor([row["rank"] for row in rows], dtype=torch.float)
    assert recall_metrics(ranks, "t2v") == {key: metrics[key] for key in T2V_KEYS}
    assert percent([row["correct"] for row in rows]) == metrics["t2v_r1"]
    videos = unique_videos(test)[0]["video"]
    for row in rows:
        top = row["top"]
        listed = {entry["video"] for entry in top}
        assert len(top) == 3 and len(listed) == 3 and listed <= set(videos)
        assert [entry["correct"] for entry in top] == [entry["video"] == row["video"] for entry in top]
        assert any(entry["correct"] for entry in top) == (row["rank"] <= 3)
        if row["rank"] <= 3:
            assert top[row["rank"] - 1]["video"] == row["video"]
        # The top 3 lie inside the re-ranked top 4, ordered by VTM; without re-ranking, by cosine.
        assert all(entry["reranked"] == (rerank_k == "4") for entry in top)
        scores = [entry["score"] for entry in top]
        assert scores == sorted(scores, reverse=True)
        if rerank_k == "0":
            assert all(-1.0001 <= score <= 1.0001 for score in scores)


def test_multiple_choice_predictions_agree_with_the_metrics_and_the_api(runs, demo_data, tmp_path):
    _, metrics, rows = evaluate_with_predictions("qa-mc", demo_data, runs["qa-mc"], tmp_path)
    test = load_prepared(demo_data, "qa_mc")["test"]
    assert len(rows) == metrics["n"] == len(test) and [row["index"] for row in rows] == list(range(len(test)))
    assert percent([row["correct"] for row in rows]) == metrics["accuracy"]
    for row, source in zip(rows, test):
        assert (row["video"], row["question"], row["options"], row["answer"]) == (
            source["video"], source["question"], source["options"], source["answer"])
        assert len(row["scores"]) == len(row["options"])
        assert row["prediction"] == max(range(len(row["scores"])), key=row["scores"].__getitem__)
        assert row["correct"] == (row["prediction"] == row["answer"])
    # violet.load scores options with the task's own function: the same numbers from the raw file.
    model = violet.load(runs["qa-mc"], device="cpu")
    for row in rows[:2]:
        answered = model.answer(videos_dir(demo_data) / row["video"], row["question"], row["options"])
        assert answered["scores"] == pytest.approx(row["scores"], abs=1e-3)


def test_open_ended_predictions_agree_with_the_metrics(runs, demo_data, tmp_path):
    _, metrics, rows = evaluate_with_predictions("qa-oe", demo_data, runs["qa-oe"], tmp_path, "--top-k", "4")
    test = load_prepared(demo_data, "qa_oe")["test"]
    assert len(rows) == metrics["n"] == len(test) and [row["question"] for row in rows] == test["question"]
    assert percent([row["correct"] for row in rows]) == metrics["accuracy"]
    assert sum(not row["in_vocabulary"] for row in rows) == metrics["n_oov"]
    for row, source in zip(rows, test):
        assert row["answer"] == source["answer"] and row["video"] == source["video"]
        probabilities = [entry["probability"] for entry in row["top"]]
        assert len(row["top"]) == min(4, metrics["num_answers"])
        assert probabilities == sorted(probabilities, reverse=True)
        assert row["top"][0]["answer"] == row["prediction"] and 0 < sum(probabilities) <= 1 + 1e-6
        assert row["correct"] == (row["prediction"] == source["answer"].strip().lower())


def table_cells(output: str, task: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.strip().startswith(task + " "))
    return line.split()


def test_report_reads_what_evaluate_writes_by_default(runs, demo_data, capsys, tmp_path):
    run = runs["retrieval"]
    fine_tuned = evaluate.main(["--task", "retrieval", "--data", str(demo_data), "--checkpoint", str(run)])
    zero_shot = evaluate.main(["--task", "qa-mc", "--data", str(demo_data), "--checkpoint", str(run), "--zero-shot"])
    assert "predictions" not in fine_tuned  # asked for nothing: the Trainer's call, unchanged
    assert (run / "eval_retrieval_test.json").exists() and (run / "eval_qa-mc_test.json").exists()
    capsys.readouterr()
    for where in (run, run.parent):  # a run directory, or the directory of runs
        assert report.main([str(where)]) == 0
        output = capsys.readouterr().out
        # task, metric, chance, zero-shot, fine-tuned, eval set
        assert table_cells(output, "retrieval")[2:6] == [
            f"{100 / fine_tuned['n_videos']:.1f}", "n/a", f"{fine_tuned['t2v_r1']:.1f}", "test,"]
        assert table_cells(output, "qa-mc")[2:5] == [
            f"{zero_shot['chance']:.1f}", f"{zero_shot['accuracy']:.1f}", "n/a"]
        assert f"n={fine_tuned['n']}" in output and str(run / "eval_retrieval_test.json") in output
    old = tmp_path / "old"  # a file of an older evaluate.py: no setup, kind and split from its name
    old.mkdir()
    (old / "finetuned_qa-oe.json").write_text(json.dumps({"accuracy": 12.5, "n": 8, "n_oov": 1, "num_answers": 4}))
    assert report.main([str(old), "--markdown"]) == 0
    assert "| qa-oe | accuracy | 25.0 | n/a | 12.5 | test, n=8, n_oov=1 |" in capsys.readouterr().out
    assert report.main([str(tmp_path / "empty")]) == 1
