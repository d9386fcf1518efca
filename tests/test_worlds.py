"""The unseen-world generator: reproducible per seed, different language per seed, answers that need motion."""
from __future__ import annotations

import json

import numpy as np

from prepare.worlds import COLOURS, DIRECTIONS, Language, draw_scene, draw_story, make_world


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_world_other_seed_other_language(tmp_path):
    first = make_world(tmp_path / "a", 5, n_train=6, n_val=0, n_test=2)
    again = make_world(tmp_path / "b", 5, n_train=6, n_val=0, n_test=2)
    assert read(tmp_path / "a/annotations/captions_train.jsonl") == read(tmp_path / "b/annotations/captions_train.jsonl")
    assert first["words"] == again["words"]
    assert not (tmp_path / "a/annotations/captions_val.jsonl").exists()  # an absent split stays absent
    languages = [Language(np.random.default_rng([seed, 99])) for seed in range(6)]
    assert len({json.dumps(lang.word, sort_keys=True) for lang in languages}) == 6
    assert len({(lang.first_move, lang.joiner, tuple(lang.captions)) for lang in languages}) > 3


def test_multiple_choice_options_differ_only_in_what_happens(tmp_path):
    make_world(tmp_path, 3, n_train=30, n_val=0, n_test=0)
    for row in read(tmp_path / "annotations/qa_mc_train.jsonl"):
        assert len(row["options"]) == 4 and len(set(row["options"])) == 4
        assert 0 <= row["answer"] < 4
    captions = {r["video"]: r["caption"] for r in read(tmp_path / "annotations/captions_train.jsonl")}
    oe = read(tmp_path / "annotations/qa_oe_train.jsonl")
    assert {r["video"] for r in oe} == set(captions) and len(oe) == 5 * len(captions)


def colour_centroid(frame, colour):
    distance = np.abs(frame.astype(int) - np.array(colour)).sum(axis=-1)
    ys, xs = np.nonzero(distance < 60)
    return np.array([xs.mean(), ys.mean()])


def test_a_single_move_goes_the_stated_way():
    for index in range(20):
        rng = np.random.default_rng([0, 0, index])
        things, events = draw_story(rng)
        video = draw_scene(things, events, rng)
        mover = events[0].thing
        if len(events) == 1:
            shift = colour_centroid(video[-1], COLOURS[mover.colour]) - colour_centroid(video[0], COLOURS[mover.colour])
            assert np.dot(shift, DIRECTIONS[events[0].direction]) > 8, (index, events, shift)


def test_qa_mc_error_report_names_the_fact_each_wrong_option_changes(tmp_path, capsys):
    """benchmarks/qa_mc_errors.py groups (answer, wrong option) pairs by the fact that differs; scoring every
    correct option highest gives 100 per kind, scoring one option of a kind above the answer lowers that kind."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "qa_mc_errors", Path(__file__).resolve().parent.parent / "benchmarks" / "qa_mc_errors.py")
    errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(errors)
    world = make_world(tmp_path / "w", 4, n_train=0, n_val=12, n_test=0)
    word_kind = {world["words"].get(word, word): kind for word, kind in errors.KINDS.items()}
    rows = read(tmp_path / "w/annotations/qa_mc_val.jsonl")
    kinds = [[errors.changed_kind(row["options"][row["answer"]], option, word_kind)
              for option in row["options"]] for row in rows]
    assert all(k[row["answer"]] == "same text" for k, row in zip(kinds, rows))
    assert {kind for k in kinds for kind in k} - {"same text"} <= {"colour+shape", "direction", "speed", "order",
                                                                   "direction+speed"}
    predictions, fooled = [], None
    for index, (row, k) in enumerate(zip(rows, kinds)):
        scores = [0.0] * len(row["options"])
        scores[row["answer"]] = 1.0
        if fooled is None and "direction" in k:  # the first question with a direction distractor gets it wrong
            fooled = index
            scores[k.index("direction")] = 2.0
        predictions.append({"options": row["options"], "answer": row["answer"], "scores": scores,
                            "correct": scores.index(max(scores)) == row["answer"]})
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    report = errors.main([str(tmp_path / "w"), str(tmp_path / "p.jsonl")])
    assert json.loads(capsys.readouterr().out) == report
    assert fooled is not None and report["accuracy"] == round(100 * (len(rows) - 1) / len(rows), 1)
    pairs = report["pairwise"]
    assert pairs["direction"]["accuracy"] < 100
    assert all(entry["accuracy"] == 100 for kind, entry in pairs.items() if kind != "direction")
    assert sum(entry["pairs"] for entry in pairs.values()) == 3 * len(rows)


def test_retrieval_error_report_groups_captions_by_moves_and_names_what_differs(tmp_path, capsys):
    """benchmarks/retrieval_errors.py: a caption that names one direction twice counts two moves; top-1 accuracy
    per number of moves and per speed of one-move captions counts every caption once; a wrong top-1 reports the
    facts its caption changes."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "retrieval_errors", Path(__file__).resolve().parent.parent / "benchmarks" / "retrieval_errors.py")
    errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(errors)
    world = make_world(tmp_path / "w", 6, n_train=0, n_val=20, n_test=0)
    concept_of = {word: concept for concept, word in world["words"].items()}
    up, fast = world["words"]["up"], world["words"]["fast"]
    twice = errors.caption_facts(f"it goes {up} {fast}, then {up} {fast}", concept_of)
    assert twice["directions"] == ["up", "up"] and twice["speeds"] == ["fast", "fast"]
    rows = read(tmp_path / "w/annotations/captions_val.jsonl")
    facts = [errors.caption_facts(row["caption"], concept_of) for row in rows]
    moves = [len(f["directions"]) for f in facts]
    assert set(moves) <= {1, 2} and 1 in moves and 2 in moves
    wrong = moves.index(2)  # the first two-move caption ranks another video first
    other = next(i for i, f in enumerate(facts) if f["shape"] != facts[wrong]["shape"])
    predictions = [{"text": row["caption"], "correct": i != wrong,
                    "top": [{"video": rows[other if i == wrong else i]["video"]}]} for i, row in enumerate(rows)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    report = errors.main([str(tmp_path / "w"), str(tmp_path / "p.jsonl")])
    assert json.loads(capsys.readouterr().out) == report
    assert report["wrong_top1"] == 1 and report["top1_caption_differs_in"]["shape"] == 1
    assert report["top1_right_by_moves"] == {"1": [moves.count(1)] * 2, "2": [moves.count(2) - 1, moves.count(2)]}
    by_speed = report["top1_right_by_one_move_speed"]
    assert sum(total for _, total in by_speed.values()) == moves.count(1)
    assert all(right == total for right, total in by_speed.values())
