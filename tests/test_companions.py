"""Companion texts (objective.companion_weight): what is taken from the other annotation kinds, what never is,
how one is drawn per row, and the term in training runs."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import SMOKE_MODEL

import train
from violet.data.prepared import load_prepared
from violet.tasks.companions import CompanionTexts


def test_takes_the_other_kinds_train_texts_of_the_given_videos_only(demo_data):
    qa_train = load_prepared(demo_data, "qa_mc")["train"]
    videos = list(qa_train["video"])[:5]
    companions = CompanionTexts(demo_data, "qa_mc", videos)
    assert set(companions.table) == set(videos) and set(companions.found) == {"captions", "qa_oe"}
    captions = load_prepared(demo_data, "captions")["train"]
    open_ended = load_prepared(demo_data, "qa_oe")["train"]
    for video in videos:
        expected = [row["caption"] for row in captions if row["video"] == video]
        expected += [f"{row['question']} {row['answer']}" for row in open_ended if row["video"] == video]
        assert companions.table[video] == expected
    assert companions.found["captions"] == sum(1 for video in captions["video"] if video in set(videos))
    # Nothing from a val or test split, not even for a video that appears there: only train rows are read.
    held_out = {row["caption"] for split in ("val", "test") for row in load_prepared(demo_data, "captions")[split]}
    taken = {text for texts in companions.table.values() for text in texts}
    assert not taken & (held_out - set(captions["caption"]))


def test_retrieval_takes_the_correct_option_of_each_question(demo_data):
    mc = load_prepared(demo_data, "qa_mc")["train"]
    row = mc[0]
    companions = CompanionTexts(demo_data, "captions", [row["video"]])
    assert f"{row['question']} {row['options'][row['answer']]}" in companions.table[row["video"]]
    assert "captions" not in companions.found  # the task's own kind is not a companion


def test_draw_is_seeded_and_falls_back_to_the_rows_own_text(demo_data):
    video = load_prepared(demo_data, "qa_mc")["train"][0]["video"]
    companions = CompanionTexts(demo_data, "qa_mc", [video])
    rows, own = [video, "no/such.mp4"] * 20, ["own a", "own b"] * 20
    first = companions.draw(rows, own, torch.Generator().manual_seed(3))
    assert first == companions.draw(rows, own, torch.Generator().manual_seed(3))
    assert all(text in companions.table[video] for text in first[0::2])
    assert first[1::2] == ["own b"] * 20
    assert len(set(first[0::2])) > 1  # each step draws anew among the video's texts


def run_train(task, data, out, *extra):
    return train.main(["--task", task, "--data", str(data), "--output-dir", str(out), "--batch-size", "8",
                       "--max-steps", "2", *extra, *SMOKE_MODEL])


@pytest.mark.parametrize("task", ["qa-mc", "retrieval"])
def test_the_term_is_logged_and_scales_with_its_weight(task, demo_data, tmp_path):
    first = {}
    for weight in (1, 2):
        run_train(task, demo_data, tmp_path / f"w{weight}", f"objective.companion_weight={weight}")
        log = [json.loads(line) for line in (tmp_path / f"w{weight}" / "train_log.jsonl").read_text().splitlines()]
        first[weight] = log[0]["train/companion"]
    # The same seed draws the same texts and clips at step 1, so the weighted term doubles exactly.
    assert first[1] > 0.1 and first[2] == pytest.approx(2 * first[1], rel=1e-5)
    run_train(task, demo_data, tmp_path / "off")
    log = json.loads((tmp_path / "off" / "train_log.jsonl").read_text().splitlines()[0])
    assert "train/companion" not in log  # off by default: no extra text pass


def test_no_other_kind_turns_the_term_off_with_a_warning(demo_copy, tmp_path, capsys):
    for kind in ("captions", "qa_oe"):
        shutil.rmtree(demo_copy / "hf" / kind)
    run_train("qa-mc", demo_copy, tmp_path / "run", "objective.companion_weight=1")
    err = capsys.readouterr().err  # the run's logging writes to stderr (setup_logging replaces any handler)
    assert "the companion term is off" in err and str(demo_copy) in err
    log = json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[0])
    assert "train/companion" not in log
