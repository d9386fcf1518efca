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
