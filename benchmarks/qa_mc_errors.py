"""Multiple-choice QA of a run on a generated world, per kind of distractor: for every question and every wrong
option, whether the run scored the correct option above it, grouped by what the wrong option changes (the
colour and shape, a direction, a speed, the order of two moves). Shows which facts a recipe tells apart; the options of a world's
questions differ from the answer in one such fact (prepare/worlds.py).

    python evaluate.py --task qa-mc --data WORLD --checkpoint RUN --split val --predictions P.jsonl
    python benchmarks/qa_mc_errors.py WORLD P.jsonl

Prints one JSON object: per kind the pairwise accuracy (chance 50) and the number of pairs, and the question
accuracy. Use it on val splits only: it is how a default is chosen.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prepare.worlds import COLOURS, DIRECTIONS, SHAPES, SPEEDS  # noqa: E402

KINDS = {**{c: "colour" for c in COLOURS}, **{s: "shape" for s in SHAPES}, **{d: "direction" for d in DIRECTIONS},
         **{s: "speed" for s in SPEEDS}}


def fact_tokens(text: str, word_kind: dict[str, str]) -> list[str]:
    """The text's words, each of the world's fact phrases (which may be several words: "to the left") as one token
    "kind:phrase"."""
    text = f" {text.replace(',', ' ')} "
    for phrase in sorted(word_kind, key=len, reverse=True):
        text = text.replace(f" {phrase} ", f" {word_kind[phrase]}:{phrase.replace(' ', '_')} ")
    return text.split()


def changed_kind(answer: str, option: str, word_kind: dict[str, str]) -> str:
    """What `option` changes of `answer`: the kinds of the fact phrases that differ (joined when several; "other"
    when a differing word is none of the world's fact phrases)."""
    a, b = fact_tokens(answer, word_kind), fact_tokens(option, word_kind)
    if a != b and Counter(a) == Counter(b):
        return "order"  # the same moves, told in another order
    if len(a) == len(b):
        differing = [x for x, y in zip(a, b) if x != y] + [y for x, y in zip(a, b) if x != y]
    else:
        differing = list((Counter(a) - Counter(b)) + (Counter(b) - Counter(a)))
    kinds = sorted({word.split(":")[0] if ":" in word else "other" for word in differing})
    return "+".join(kinds) or "same text"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path, help="the world's directory (holds world.json)")
    parser.add_argument("predictions", type=Path, help="evaluate.py --task qa-mc --predictions output (JSON lines)")
    args = parser.parse_args(argv)
    world = json.loads((args.world / "world.json").read_text())
    word_kind = {world["words"].get(word, word): kind for word, kind in KINDS.items()}
    pairs: dict[str, list[bool]] = {}
    correct = total = 0
    for line in args.predictions.read_text().splitlines():
        row = json.loads(line)
        answer, scores, options = row["answer"], row["scores"], row["options"]
        correct, total = correct + bool(row["correct"]), total + 1
        for index, option in enumerate(options):
            if index != answer:
                kind = changed_kind(options[answer], option, word_kind)
                pairs.setdefault(kind, []).append(scores[answer] > scores[index])
    report = {"accuracy": round(100 * correct / max(total, 1), 1), "n": total,
              "pairwise": {kind: {"accuracy": round(100 * sum(hits) / len(hits), 1), "pairs": len(hits)}
                           for kind, hits in sorted(pairs.items())}}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
