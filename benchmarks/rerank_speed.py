"""Re-ranked retrieval (dual-encoder top-k, then VTM on those pairs) against VTM on all pairs: time and t2v R@1.

    python benchmarks/rerank_speed.py --checkpoint RUN --data DATA [--split val] [--k 16]

RUN is a retrieval (or pretraining) run with a VTM head (e.g. trained with objective.vtm_weight=1); DATA a prepared
data set with at least 1000 videos and 1000 captions in the split. The split is encoded once (video and caption
tokens and embeddings, timed apart), then the evaluation's own scoring (RetrievalEvaluator.score_matrices) runs
with eval.rerank_k = k and with every pair re-ranked (k = -1); each is timed, wall clock, on the same encoded
features. Prints one JSON object: times, the pairs each one scored, `speedup` and both t2v R@1 (goal: >= 20x
faster, R@1 within 0.5 points). `--max-pairs N` stops the all-pairs side after N pairs and extrapolates its time
(the per-pair work is identical), for machines where all pairs take hours; R@1 of all pairs is then not reported.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from violet.data.text import load_tokenizer  # noqa: E402
from violet.engine.rundir import RunDir  # noqa: E402
from violet.engine.weights import load_weights  # noqa: E402
from violet.metrics import retrieval_metrics  # noqa: E402
from violet.runtime import build_accelerator, require_prepared  # noqa: E402
from violet.tasks import get_task  # noqa: E402
from violet.tasks.ranking import RetrievalEvaluator  # noqa: E402


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per fused forward pass")
    parser.add_argument("--max-pairs", type=int, default=0, help="time this many all-pairs scores, extrapolate")
    args = parser.parse_args(argv)
    run = RunDir(args.checkpoint)
    config = run.load_config()
    config.data.data_dir = str(require_prepared(args.data))
    config.train.eval_batch_size = args.batch_size
    config.task = "retrieval"
    accelerator = build_accelerator(config, project_dir=None)
    task = get_task("retrieval")(config, load_tokenizer(run.tokenizer_dir))
    task.heads = tuple(dict.fromkeys((*task.heads, "vtm")))  # evaluate the matching head even if vtm_weight=0
    model = task.build_model()
    load_weights(model, run.path, required_heads=("vtc", "vtm"))
    model = accelerator.prepare(model).eval()
    evaluator = RetrievalEvaluator(task)
    rows = evaluator.eval_rows(args.split)
    with torch.inference_mode(), accelerator.autocast():
        features, encode_s = timed(evaluator.encode_split, model, accelerator, rows, args.split)
        texts, videos = len(features["text"]["embed"]), len(features["video"]["embed"])
        (reranked, _), rerank_s = timed(evaluator.score_matrices, model, accelerator, features, args.k)
        dual = retrieval_metrics(features["text"]["embed"].float() @ features["video"]["embed"].float().T,
                                 features["text_to_video"])["t2v_r1"]
        record = {"checkpoint": str(run.path), "split": args.split, "texts": texts, "videos": videos,
                  "k": args.k, "encode_s": round(encode_s, 1), "rerank_s": round(rerank_s, 1),
                  "rerank_t2v_r1": retrieval_metrics(reranked, features["text_to_video"])["t2v_r1"],
                  "dual_encoder_t2v_r1": dual, "device": str(accelerator.device),
                  "precision": accelerator.mixed_precision, "batch_size": args.batch_size}
        all_pairs = texts * videos
        if args.max_pairs and args.max_pairs < all_pairs:
            sample = [(t, v) for t in range(texts) for v in range(videos)][: args.max_pairs]
            _, sample_s = timed(evaluator.match_pairs, model, accelerator, features, sample)
            record.update(all_pairs_s=round(sample_s * all_pairs / len(sample), 1), all_pairs_extrapolated_from=len(sample))
        else:
            (everything, _), all_s = timed(evaluator.score_matrices, model, accelerator, features, -1)
            record.update(all_pairs_s=round(all_s, 1),
                          all_pairs_t2v_r1=retrieval_metrics(everything, features["text_to_video"])["t2v_r1"])
    record["speedup"] = round(record["all_pairs_s"] / record["rerank_s"], 1)
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
