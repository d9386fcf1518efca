"""Search an index made by violet.index with a text query: exact dual-encoder search (one matrix product).

    python -m violet.search --index INDEX "a red ball moves left" [-k 5] [--json]

The query is embedded by the run the index records (its weights must be the ones the index was made with);
prints the k best videos, best first, with their cosine similarity to the query.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from violet.engine.checkpointer import file_digest
from violet.index import IndexError_, VideoIndex


def search(model: Any, index: VideoIndex, queries: Sequence[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """Per query, the k best of the index: [{"rank", "path" (relative to the indexed directory), "file",
    "score"}]. `model` is the violet.api.TrainedModel the index was made with."""
    embeddings = index.embeddings()
    paths = index.paths
    scores = model.encode_texts(list(queries)) @ embeddings.T
    top = scores.topk(min(k, len(paths)), dim=1)
    return [[{"rank": rank + 1, "path": paths[i], "file": str(index.videos_dir / paths[i]), "score": float(score)}
             for rank, (score, i) in enumerate(zip(values.tolist(), indices.tolist()))]
            for values, indices in zip(top.values, top.indices)]


def load_index_model(index: VideoIndex, checkpoint: str | None, device: str | None) -> Any:
    """The run that made the index (or `checkpoint`, for a run directory that moved), checked by its weights."""
    from violet.api import load  # here: --help and usage errors need none of the model code

    recorded = index.manifest["run"]
    model = load(checkpoint or recorded["path"], device)
    if file_digest(model.run.weights_path) != recorded["weights_sha256"]:
        raise IndexError_(f"{model.run.weights_path} is not the model {index.root} was made with (its weights "
                          "changed): index again with python -m violet.index")
    return model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m violet.search", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, type=Path, help="an index directory made by python -m violet.index")
    parser.add_argument("query", help="what to look for, in words")
    parser.add_argument("-k", type=int, default=5, help="results to show (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--checkpoint", default=None, help="the index's run, if its directory moved")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.k < 1:
        print("error: -k must be >= 1", file=sys.stderr)
        return 2
    from violet.engine.rundir import RunDirError

    try:
        index = VideoIndex.open(args.index)
        if not index.paths:
            raise IndexError_(f"{args.index} holds no videos")
        results = search(load_index_model(index, args.checkpoint, args.device), index, [args.query], args.k)[0]
    except (IndexError_, RunDirError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"query": args.query, "index": str(args.index), "results": results}, indent=2))
    else:
        for result in results:
            print(f"{result['rank']:>3}  {result['score']:.4f}  {result['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
