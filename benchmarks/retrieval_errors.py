"""What a retrieval run gets wrong on a generated world: for each caption whose gold video is not ranked first,
which facts of the top-ranked video's caption differ from the gold caption (colour, shape, directions, speeds,
number of moves); and top-1 accuracy by the number of moves the caption tells, and by the speed of one-move
captions. Read the world's words from its world.json, the ranking from `evaluate.py --predictions`.

    python evaluate.py --task retrieval --data WORLD --checkpoint RUN --split val --predictions P.jsonl
    python benchmarks/retrieval_errors.py WORLD P.jsonl --split val

Prints one JSON object. Use it on val splits only: it is how a default is chosen.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prepare.worlds import COLOURS, DIRECTIONS, SHAPES, SPEEDS  # noqa: E402


def caption_facts(caption: str, concept_of: dict[str, str]) -> dict[str, list[str]]:
    """The concepts a caption names, in order and as often as named (two moves the same way name the direction
    twice), grouped by kind (a world uses one word or phrase per concept)."""
    found = sorted((match.start(), concept) for word, concept in concept_of.items()
                   for match in re.finditer(rf"(?<![\w-]){re.escape(word)}(?![\w-])", caption))
    concepts = [concept for _, concept in found]
    return {"colour": [c for c in concepts if c in COLOURS][:1], "shape": [c for c in concepts if c in SHAPES][:1],
            "directions": [c for c in concepts if c in DIRECTIONS], "speeds": [c for c in concepts if c in SPEEDS]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--split", default="val")
    args = parser.parse_args(argv)
    words = json.loads((args.world / "world.json").read_text())["words"]
    concept_of = {word: concept for concept, word in words.items()}
    rows = (args.world / "annotations" / f"captions_{args.split}.jsonl").read_text().splitlines()
    caption_of = {row["video"]: row["caption"] for row in map(json.loads, rows)}
    differs: Counter = Counter()
    groups: dict[str, Counter] = {"moves": Counter(), "one_move_speed": Counter()}  # "<group value>/right|total"
    errors = 0
    for line in args.predictions.read_text().splitlines():
        prediction = json.loads(line)
        gold = caption_facts(prediction["text"], concept_of)
        keys = [("moves", str(len(gold["directions"])))]
        if len(gold["directions"]) == 1:
            keys.append(("one_move_speed", gold["speeds"][0]))
        for group, value in keys:
            groups[group][value, "total"] += 1
            groups[group][value, "right"] += bool(prediction["correct"])
        if prediction["correct"]:
            continue
        errors += 1
        top = caption_facts(caption_of[prediction["top"][0]["video"]], concept_of)
        differs.update(kind for kind in gold if gold[kind] != top[kind])
        differs["number of moves"] += len(gold["directions"]) != len(top["directions"])
    report = {"queries": len(caption_of), "wrong_top1": errors, "top1_caption_differs_in": dict(differs)}
    for group, counts in groups.items():
        values = sorted({value for value, _ in counts})
        report[f"top1_right_by_{group}"] = {value: [counts[value, "right"], counts[value, "total"]] for value in values}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
