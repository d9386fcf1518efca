"""Unseen worlds: complete data sets in the user layout, drawn from a seed, for choosing and checking defaults.

Each video shows two objects (distinct colours and shapes) on a plain background; one of them moves once or
twice, one move after another, each move in its own direction and at its own speed. Every caption and question
is about what happens: which object moves, which way, how fast, in which order, how many times. The first frame alone does not answer
them (every object is visible from the start).

The seed also draws the *language*: the word for each colour, shape, direction and speed (from pools of
synonyms), the caption grammars and the question phrasings. Two seeds give different vocabularies and templates,
so no setting can be tuned to one world's text. Defaults are chosen on the val splits of some seeds and checked
on the test splits of other seeds (benchmarks/heldout.py).

    python -m prepare.worlds OUT --seed 7 [--train 240 --val 60 --test 60]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from prepare.demo import shape_points, write_jsonl, write_mp4
from violet.data.layout import SPLITS, annotation_path, annotations_dir, videos_dir

COLOURS = {"red": (225, 45, 45), "green": (40, 200, 70), "blue": (60, 110, 250), "yellow": (240, 225, 40),
           "purple": (165, 65, 215), "orange": (250, 140, 30), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle", "star")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPEEDS = {"slow": 0.22, "fast": 0.5}  # distance travelled, as a fraction of the frame
# Synonym pools: a world uses one word per concept, drawn by its seed.
WORDS = {
    "red": ("red", "crimson", "scarlet"), "green": ("green", "lime", "emerald"), "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"), "purple": ("purple", "violet", "magenta"),
    "orange": ("orange", "amber", "tangerine"), "white": ("white", "ivory", "pale"),
    "circle": ("circle", "disc", "ball", "ring"), "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "wedge", "pyramid", "arrowhead"), "star": ("star", "spark", "asterisk", "sparkle"),
    "left": ("left", "leftward", "west", "to the left"), "right": ("right", "rightward", "east", "to the right"),
    "up": ("up", "upward", "north", "to the top"), "down": ("down", "downward", "south", "to the bottom"),
    "slow": ("slowly", "gently", "a little", "briefly"), "fast": ("quickly", "rapidly", "far", "swiftly"),
}
VERBS = ("moves", "goes", "travels", "drifts", "heads", "slides", "shifts")
JOINERS = (", then ", " and after that ", "; next it ", ", followed by a move ", " and later ")
CAPTION_TEMPLATES = (  # {story}: the thing and its moves in order
    "{story}", "in this clip {story}", "{story}, the other one stays still", "watch: {story}",
    "a scene where {story}", "{story} ({count} moves)", "here {story}",
)
FIRST_MOVE = ("the {colour} {shape} {verb} {speed} {direction}", "the {colour} {shape} {verb} {direction} {speed}",
              "the {shape} in {colour} {verb} {direction}, {speed}", "{speed}, the {colour} {shape} {verb} {direction}")
LATER_MOVE = ("{direction} {speed}", "{speed} {direction}", "{direction}, {speed}")
COUNT_WORDS = ("one", "two", "three")  # indexed by moves - 1
QUESTIONS = {
    "direction": ("which way does the {colour} {shape} move first?", "where does the {colour} {shape} go first?",
                  "the {colour} {shape} first moves in which direction?"),
    "last": ("which way does the {colour} {shape} go at the end?", "the last move of the {colour} {shape} is which way?",
             "where does the {colour} {shape} finally head?"),
    "mover": ("which colour moves?", "what colour is the thing that moves?", "who moves, by colour?"),
    "count": ("how many times does the {colour} {shape} move?", "how many moves does the {colour} {shape} make?",
              "count the moves of the {colour} {shape}."),
    "speed": ("how does the {colour} {shape} move the first time, slow or fast?",
              "what speed is the first move of the {colour} {shape}?", "is the {colour} {shape} quick or slow at first?"),
    "story": ("what happens in the video?", "which description fits the clip?", "which story is shown?"),
}
MC_OPTIONS = 4
OBJECTS = 2  # things in a scene; one of them moves
MAX_MOVES = 2  # it moves 1..MAX_MOVES times, one move after another
FRAMES, FPS, SIZE = 16, 8, 64


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str


@dataclass(frozen=True)
class Event:
    thing: Thing
    direction: str
    speed: str


class Language:
    """The words and templates of one world, drawn from its seed."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.word = {concept: str(rng.choice(pool)) for concept, pool in WORDS.items()}
        self.verb = str(rng.choice(VERBS))
        self.joiner = str(rng.choice(JOINERS))
        self.captions = [CAPTION_TEMPLATES[i] for i in rng.choice(len(CAPTION_TEMPLATES), 3, replace=False)]
        self.first_move = str(rng.choice(FIRST_MOVE))
        self.later_move = str(rng.choice(LATER_MOVE))
        self.questions = {kind: str(rng.choice(pool)) for kind, pool in QUESTIONS.items()}

    def thing_words(self, thing: Thing) -> dict[str, str]:
        return {"colour": self.word[thing.colour], "shape": self.word[thing.shape]}

    def caption(self, events: list[Event], rng: np.random.Generator, template: str = "") -> str:
        """The moving thing and its moves in order, in this world's words; `template` fixes the frame sentence."""
        first = events[0]
        story = self.first_move.format(verb=self.verb, direction=self.word[first.direction],
                                       speed=self.word[first.speed], **self.thing_words(first.thing))
        for event in events[1:]:
            story += self.joiner + self.later_move.format(direction=self.word[event.direction],
                                                          speed=self.word[event.speed])
        template = template or str(rng.choice(self.captions))
        return template.format(story=story, count=COUNT_WORDS[len(events) - 1])


def draw_scene(things: list[Thing], events: list[Event], rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, SIZE, SIZE, 3) uint8: each moving thing moves during its own equal share of the clip, in order."""
    background = tuple(int(v) for v in rng.integers(0, 70, 3))
    diameter = SIZE * 0.2
    margin = diameter / 2 + 2
    positions = {thing: np.array(rng.uniform(margin, SIZE - margin, 2)) for thing in things}
    paths = {thing: np.repeat(positions[thing][None], FRAMES, 0) for thing in things}
    bounds = np.linspace(0, FRAMES - 1, len(events) + 1).round().astype(int)
    moves = [SPEEDS[e.speed] * SIZE * np.array(DIRECTIONS[e.direction], dtype=float) for e in events]
    visited = np.cumsum([np.zeros(2), *moves], axis=0)  # offsets from the start after each move
    low, high = margin - visited.min(axis=0), SIZE - margin - visited.max(axis=0)  # every move stays inside
    mover = events[0].thing
    start = rng.uniform(low, np.maximum(low, high))
    for index, move in enumerate(moves):
        begin, end = bounds[index], bounds[index + 1]
        progress = np.clip((np.arange(FRAMES) - begin) / max(1, end - begin), 0, 1)[:, None]
        paths[mover][begin:] = start + visited[index] + progress[begin:] * move
    paths[mover][: bounds[0] + 1] = start
    video = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    for t in range(FRAMES):
        image = Image.new("RGB", (SIZE, SIZE), background)
        canvas = ImageDraw.Draw(image)
        for thing in things:
            x, y = paths[thing][t]
            colour = COLOURS[thing.colour]
            if thing.shape == "circle":
                canvas.ellipse((x - diameter / 2, y - diameter / 2, x + diameter / 2, y + diameter / 2), fill=colour)
            else:
                canvas.polygon(shape_points(thing.shape, x, y, diameter), fill=colour)
        video[t] = np.asarray(image)
    noise = rng.integers(-5, 6, video.shape, dtype=np.int16)
    return np.clip(video.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def draw_story(rng: np.random.Generator) -> tuple[list[Thing], list[Event]]:
    colours = rng.choice(list(COLOURS), OBJECTS, replace=False)
    shapes = rng.choice(SHAPES, OBJECTS, replace=False)
    things = [Thing(str(c), str(s)) for c, s in zip(colours, shapes)]
    mover = things[int(rng.integers(OBJECTS))]  # the other thing stays still: which one moves is seen in motion
    moves = int(rng.integers(1, MAX_MOVES + 1))
    directions = rng.choice(list(DIRECTIONS), moves, replace=False)  # consecutive moves go different ways
    events = [Event(mover, str(direction), str(rng.choice(list(SPEEDS)))) for direction in directions]
    return things, events


def qa_rows(language: Language, things: list[Thing], events: list[Event], video: str, rng: np.random.Generator) -> tuple[list, list]:
    """Open-ended rows (one per question kind that applies) and one multiple-choice row per video."""
    first = events[0]
    words = language.thing_words(first.thing)
    oe = [
        ("direction", language.questions["direction"].format(**words), language.word[first.direction].split()[-1]),
        ("last", language.questions["last"].format(**words), language.word[events[-1].direction].split()[-1]),
        ("count", language.questions["count"].format(**words), COUNT_WORDS[len(events) - 1]),
        ("speed", language.questions["speed"].format(**words), language.word[first.speed].split()[-1]),
        ("mover", language.questions["mover"], language.word[first.thing.colour]),
    ]
    oe_rows = [{"video": video, "question": question, "answer": answer} for _, question, answer in oe]
    # Multiple choice: the true story against stories that differ only in motion (direction, order, speed).
    template = str(rng.choice(language.captions))  # one template for all options: only the motion differs
    truth = language.caption(events, rng, template)
    options = {truth}
    attempts = 0
    while len(options) < MC_OPTIONS and attempts < 100:
        attempts += 1
        options.add(language.caption(perturb(things, events, rng), rng, template))
    options.discard(truth)
    distractors = sorted(options)[: MC_OPTIONS - 1]
    rng.shuffle(distractors)
    answer = int(rng.integers(len(distractors) + 1))
    choices = distractors[:answer] + [truth] + distractors[answer:]
    mc_row = {"video": video, "question": language.questions["story"], "options": choices, "answer": answer}
    return oe_rows, [mc_row]


def perturb(things: list[Thing], events: list[Event], rng: np.random.Generator) -> list[Event]:
    """The same scene with one motion fact changed: a direction, a speed, the order of the moves, or which thing
    moves (the other one, present in every frame, makes the same moves)."""
    changed = list(events)
    choice = int(rng.integers(4))
    index = int(rng.integers(len(events)))
    event = changed[index]
    if choice == 0:
        other = [d for d in DIRECTIONS if d not in {e.direction for e in events}]
        changed[index] = Event(event.thing, str(rng.choice(other)), event.speed)
    elif choice == 1:
        changed[index] = Event(event.thing, event.direction, "slow" if event.speed == "fast" else "fast")
    elif choice == 2 and len(events) > 1:
        changed.reverse()
    else:
        other_thing = next(thing for thing in things if thing != event.thing)
        changed = [Event(other_thing, e.direction, e.speed) for e in events]
    return changed


def make_world(out_dir: str | Path, seed: int, n_train: int = 240, n_val: int = 60, n_test: int = 60) -> dict:
    """Write videos/ and annotations/ for one world; returns counts per split and the world's language."""
    out_dir = Path(out_dir)
    if annotations_dir(out_dir).is_dir() and any(annotations_dir(out_dir).iterdir()):
        raise FileExistsError(f"{annotations_dir(out_dir)} already exists and is not empty")
    annotations_dir(out_dir).mkdir(parents=True, exist_ok=True)
    language = Language(np.random.default_rng([seed, 99]))
    counts = {}
    for split_index, (split, count) in enumerate(zip(SPLITS, (n_train, n_val, n_test))):
        if count == 0:  # an absent split, as many real data sets ship (no val, or no test)
            continue
        (videos_dir(out_dir) / split).mkdir(parents=True, exist_ok=True)
        captions, mc, oe = [], [], []
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            things, events = draw_story(rng)
            video = f"{split}/{index:05d}.mp4"
            write_mp4(videos_dir(out_dir) / video, draw_scene(things, events, rng), FPS)
            captions.append({"video": video, "caption": language.caption(events, rng)})
            oe_part, mc_part = qa_rows(language, things, events, video, rng)
            oe.extend(oe_part)
            mc.extend(mc_part)
        for kind, rows in (("captions", captions), ("qa_mc", mc), ("qa_oe", oe)):
            write_jsonl(annotation_path(out_dir, kind, split), rows)
        counts[split] = {"videos": count, "captions": len(captions), "qa_mc": len(mc), "qa_oe": len(oe)}
    summary = {"seed": seed, "counts": counts, "words": language.word, "verb": language.verb,
               "caption_templates": language.captions, "move_templates": [language.first_move, language.later_move],
               "questions": language.questions}
    (out_dir / "world.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prepare.worlds", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("out", type=Path, help="output folder (videos/ and annotations/ go inside)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--test", type=int, default=60)
    args = parser.parse_args(argv)
    try:
        summary = make_world(args.out, args.seed, args.train, args.val, args.test)
    except FileExistsError as error:
        parser.error(str(error))
    print(json.dumps(summary["counts"]))


if __name__ == "__main__":
    main()
