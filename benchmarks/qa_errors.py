"""Open-ended QA accuracy of a run on a generated world, per question kind (which way first, which way last, how
many moves, how fast, which colour moves): shows which facts a recipe learned. Question kinds are recognised
from the world's own question templates (its world.json); answers come from `evaluate.py --predictions`.

    python evaluate.py --task qa-oe --data WORLD --checkpoint RUN --split val --predictions P.jsonl
    python benchmarks/qa_errors.py WORLD P.jsonl

Prints one JSON object: per kind the accuracy, the number of questions, and the chance of always giving that
kind's most frequent answer. Use it on val splits only: it is how a default is chosen.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path


def kind_patterns(questions: dict[str, str]) -> dict[str, re.Pattern]:
    """One regular expression per question kind, from its template ("{colour} {shape}" match any words)."""
    patterns = {}
    for kind, template in questions.items():
        pieces = re.split(r"\{\w+\}", template)
        patterns[kind] = re.compile(".+".join(re.escape(piece) for piece in pieces) + "$")
    return patterns


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("predictions", type=Path)
    args = parser.parse_args(argv)
    patterns = kind_patterns(json.loads((args.world / "world.json").read_text())["questions"])
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line.strip()]
    by_kind: dict[str, list[dict]] = {}
    for line_number, row in enumerate(rows, 1):
        kinds = [kind for kind, pattern in patterns.items() if pattern.match(row["question"])]
        if len(kinds) != 1:
            raise SystemExit(f"{args.predictions}:{line_number}: question {row['question']!r} matches "
                             f"{len(kinds)} of the world's templates; is this the world the run was evaluated on?")
        by_kind.setdefault(kinds[0], []).append(row)
    report = {}
    for kind, kind_rows in by_kind.items():
        majority = Counter(row["answer"] for row in kind_rows).most_common(1)[0][1]
        report[kind] = {"accuracy": round(100 * sum(row["correct"] for row in kind_rows) / len(kind_rows), 1),
                        "n": len(kind_rows), "majority_answer": round(100 * majority / len(kind_rows), 1)}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
