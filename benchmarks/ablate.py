"""Ablations on the val splits of the tuning worlds: one row = one change against the defaults.

Each row trains a task on worlds 1-3 (prepare/worlds.py; the only seeds allowed to choose defaults), evaluates on
the *val* split and records the headline metrics per world with their mean and spread. Test splits are never read.
Finished (row, world) pairs are reused, so the command can be stopped and started again.

    python benchmarks/ablate.py --worlds /tmp/worlds --out /tmp/ablate [--rows retrieval/default ...]

`--worlds DIR` holds (or receives) DIR/w1, DIR/w2, DIR/w3 prepared by `python -m prepare.worlds` + `python -m prepare`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import ROOT, evaluate, launch, run  # noqa: E402

SEEDS = (1, 2, 3)
# name -> (task, overrides). "default" rows carry no override; the others change one thing.
ROWS: dict[str, tuple[str, list[str]]] = {
    "retrieval/default": ("retrieval", []),
    "retrieval/frames=4": ("retrieval", ["data.num_frames=4"]),
    "retrieval/tubelet=1": ("retrieval", ["model.tubelet=1"]),
    "retrieval/image_size=32": ("retrieval", ["model.image_size=32"]),
    "retrieval/lr=1e-3": ("retrieval", ["train.lr=1e-3"]),
    "retrieval/lr=2.5e-4": ("retrieval", ["train.lr=2.5e-4"]),
    "retrieval/warmup=0": ("retrieval", ["train.warmup_ratio=0"]),
    "retrieval/schedule=cosine": ("retrieval", ["train.lr_schedule=cosine"]),
    "retrieval/epochs=20": ("retrieval", ["train.epochs=20"]),
    "retrieval/epochs=40": ("retrieval", ["train.epochs=40"]),
    "retrieval/epochs=80": ("retrieval", ["train.epochs=80"]),
    "retrieval/epochs=160": ("retrieval", ["train.epochs=160"]),
    "retrieval/width=256": ("retrieval", ["model.width=256", "model.embed_dim=256"]),
    "retrieval/vtm_weight=1": ("retrieval", ["objective.vtm_weight=1"]),
    "retrieval/vtm_weight=1,random_negatives": ("retrieval", ["objective.vtm_weight=1",
                                                              "objective.vtm_hard_negatives=false"]),
    "retrieval/grad_clip=0": ("retrieval", ["train.grad_clip=0"]),
    "retrieval/text_pool=cls": ("retrieval", ["model.text_pool=cls"]),
    "retrieval/init_std=0.02": ("retrieval", ["model.init_std=0.02"]),
    "retrieval/no_augment": ("retrieval", ["data.train_augment=false"]),
    "retrieval/frames=16": ("retrieval", ["data.num_frames=16", "model.max_frames=16"]),
    "retrieval/frames=16,tubelet=4": ("retrieval", ["data.num_frames=16", "model.max_frames=16", "model.tubelet=4"]),
    "retrieval/video_depth=4": ("retrieval", ["model.video_depth=4"]),
    "retrieval/dropout=0.1": ("retrieval", ["model.dropout=0.1"]),
    "retrieval/patch=4,tubelet=4": ("retrieval", ["model.patch_size=4", "model.tubelet=4"]),
    "retrieval/patch=4,frames=4": ("retrieval", ["model.patch_size=4", "data.num_frames=4"]),
    "qa-mc/default": ("qa-mc", []),
    "qa-mc/vtc_weight=0": ("qa-mc", ["objective.vtc_weight=0"]),
    "qa-mc/epochs=40": ("qa-mc", ["train.epochs=40"]),
    "qa-mc/epochs=80": ("qa-mc", ["train.epochs=80"]),
    "qa-mc/no_augment": ("qa-mc", ["data.train_augment=false"]),
    # qa-mc ends at ~91 % on its own training questions and ~64 % on val (world 1): it overfits 240 questions.
    "qa-mc/dropout=0.1": ("qa-mc", ["model.dropout=0.1"]),
    "qa-mc/crop_scale_min=0.4": ("qa-mc", ["data.crop_scale_min=0.4"]),  # crops down to 40 % of the frame (0.6)
    # More of the answer text's words predicted from the clip: more grounding signal for the same fused pass.
    "qa-mc/mlm_prob=0.4": ("qa-mc", ["objective.mlm_prob=0.4"]),
    "qa-mc/fusion_depth=4": ("qa-mc", ["model.fusion_depth=4"]),
    "qa-mc/batch=32,lr=5e-4": ("qa-mc", ["train.batch_size=32", "train.lr=5e-4"]),
    # 4-pixel patches in 4-frame tubelets cost ~2.5x the step: fewer epochs keep the 10-minute budget.
    "qa-mc/patch=4,tubelet=4,epochs=14": ("qa-mc", ["model.patch_size=4", "model.tubelet=4", "train.epochs=14"]),
    # Options scored by the dual encoder alone (no fused pass per option): a cheaper step, so finer tubelets fit.
    "qa-mc/mlm_weight=1": ("qa-mc", ["objective.mlm_weight=1"]),
    "qa-mc/mlm_weight=1,vtm_weight=0,patch=4,tubelet=4": ("qa-mc", ["objective.mlm_weight=1", "objective.vtm_weight=0",
                                                                   "model.patch_size=4", "model.tubelet=4"]),
    "qa-mc/mlm_weight=1,vtm_weight=0,patch=4,tubelet=4,epochs=30": (
        "qa-mc", ["objective.mlm_weight=1", "objective.vtm_weight=0", "model.patch_size=4", "model.tubelet=4",
                  "train.epochs=30"]),
    "qa-mc/mlm_weight=1,vtm_weight=0,patch=4,tubelet=4,video_pool_segments=2": (
        "qa-mc", ["objective.mlm_weight=1", "objective.vtm_weight=0", "model.patch_size=4", "model.tubelet=4",
                  "model.video_pool_segments=2"]),
    # The correct "question answer" text must score its clip above the clip played backwards (as retrieval's row).
    "qa-mc/temporal_weight=1,negative=reverse": ("qa-mc", [
        "objective.temporal_weight=1", "objective.temporal_negative=reverse"]),
    # The same in 24 epochs (360 steps): 30 epochs with the second video pass took 676 s on world 1.
    "qa-mc/temporal_weight=1,negative=reverse,epochs=24": ("qa-mc", [
        "objective.temporal_weight=1", "objective.temporal_negative=reverse", "train.epochs=24"]),
    # ... and in 20 epochs (300 steps): the 24-epoch recipe took 561-642 s on the held-out worlds.
    "qa-mc/temporal_weight=1,negative=reverse,epochs=20": ("qa-mc", [
        "objective.temporal_weight=1", "objective.temporal_negative=reverse", "train.epochs=20"]),
    # The reversed pass over the first 4 rows of each batch of 16 only: a quarter of the second pass's cost.
    "qa-mc/temporal_weight=1,negative=reverse,rows=4,epochs=24": ("qa-mc", [
        "objective.temporal_weight=1", "objective.temporal_negative=reverse", "objective.temporal_rows=4",
        "train.epochs=24"]),
    "qa-mc/temporal_weight=1,negative=segments,video_pool_segments=2": ("qa-mc", [
        "objective.temporal_weight=1", "objective.temporal_negative=segments", "model.video_pool_segments=2"]),
    "qa-mc/video_pool_segments=2": ("qa-mc", ["model.video_pool_segments=2"]),
    "qa-mc/video_pool_segments=4": ("qa-mc", ["model.video_pool_segments=4"]),
    "retrieval/video_pool_segments=2": ("retrieval", ["model.video_pool_segments=2"]),
    # The clip's embedding from a learned query attending over its tokens instead of their mean.
    "retrieval/video_pool=attention": ("retrieval", ["model.video_pool=attention"]),
    "qa-mc/video_pool=attention": ("qa-mc", ["model.video_pool=attention"]),
    "qa-mc/vtm_weight=0": ("qa-mc", ["objective.vtm_weight=0"]),
    "qa-mc/vtm_weight=0,patch=4,tubelet=4": ("qa-mc", ["objective.vtm_weight=0", "model.patch_size=4",
                                                        "model.tubelet=4"]),
    "qa-mc/vtm_weight=0,patch=4,tubelet=4,epochs=40": ("qa-mc", ["objective.vtm_weight=0", "model.patch_size=4",
                                                                  "model.tubelet=4", "train.epochs=40"]),
    "qa-oe/default": ("qa-oe", []),
    "qa-oe/patch=4,tubelet=4,epochs=6": ("qa-oe", ["model.patch_size=4", "model.tubelet=4", "train.epochs=6"]),
    # Each "question answer" text of the vocabulary scored by the dual encoder instead of a classifier on the
    # fused pass: no fused pass, so the finer tubelets fit the budget too.
    "qa-oe/answer_scoring=text": ("qa-oe", ["objective.answer_scoring=text"]),
    "qa-oe/answer_scoring=text,patch=4,tubelet=4": ("qa-oe", ["objective.answer_scoring=text", "model.patch_size=4",
                                                              "model.tubelet=4"]),
    "qa-oe/vtc_weight=0": ("qa-oe", ["objective.vtc_weight=0"]),
    "qa-oe/epochs=16": ("qa-oe", ["train.epochs=16"]),
    "qa-oe/epochs=32": ("qa-oe", ["train.epochs=32"]),
    # Zero-shot retrieval along a longer pretraining: val every 35 steps (5 epochs of 240 videos), so one run per
    # world also shows the default's 175 steps. Dual encoder throughout, so every point is measured alike.
    "pretrain/epochs=35,curve": ("pretrain", ["train.epochs=35", "train.eval_every=35", "eval.rerank_k=0"]),
    # 4-pixel patches in 4-frame tubelets cost ~2.7x the pretraining step: 14 epochs (~98 steps) fit 10 minutes.
    "pretrain/patch=4,tubelet=4,epochs=14,curve": ("pretrain", ["model.patch_size=4", "model.tubelet=4",
                                                                "train.epochs=14", "train.eval_every=35",
                                                                "eval.rerank_k=0"]),
    # The same tubelets without VTM, whose 3B fused pairs are about half of the step: ~2x the steps in the budget.
    "pretrain/patch=4,tubelet=4,vtm_weight=0,epochs=25,curve": ("pretrain", [
        "model.patch_size=4", "model.tubelet=4", "objective.vtm_weight=0", "train.epochs=25", "train.eval_every=35",
        "eval.rerank_k=0"]),
    # ... and without MVM, whose masked video pass is a second trip through the encoder: 32 epochs fit (~2.4 s a step).
    "pretrain/patch=4,tubelet=4,vtm_weight=0,mvm_weight=0,epochs=32,curve": ("pretrain", [
        "model.patch_size=4", "model.tubelet=4", "objective.vtm_weight=0", "objective.mvm_weight=0", "train.epochs=32",
        "train.eval_every=35", "eval.rerank_k=0"]),
    # Retrieval with pretraining's MLM as an auxiliary term (the fused pass costs ~2.6x the step): 32 epochs fit.
    "retrieval/mlm_weight=1,epochs=32": ("retrieval", ["objective.mlm_weight=1", "train.epochs=32"]),
    # More of each caption masked (SimVTP masks 75 % of the text): more words per step the fusion must find in the clip.
    "retrieval/mlm_prob=0.4": ("retrieval", ["objective.mlm_prob=0.4"]),
    "retrieval/mlm_prob=0.75": ("retrieval", ["objective.mlm_prob=0.75"]),
    # The learning rate annealed to zero over the run instead of held at its peak: the constant schedule's last
    # steps still move the weights at full speed (at the current recipes, VTC + MLM, 30 epochs).
    "retrieval/schedule=cosine,lr=1e-3": ("retrieval", ["train.lr_schedule=cosine", "train.lr=1e-3"]),
    # Two more video blocks: the moving thing's shape is spread over a 4-frame tubelet's displaced copies, and the
    # errors left name the wrong shape; 24 epochs keep the deeper encoder inside the 10-minute budget.
    "retrieval/video_depth=4,epochs=24": ("retrieval", ["model.video_depth=4", "train.epochs=24"]),
    # Each clip with its halves swapped in time as a negative for its own caption (a second video pass a step): the
    # errors left confuse the order of two moves.
    "retrieval/temporal_weight=1": ("retrieval", ["objective.temporal_weight=1"]),
    # The clip played backwards as the negative instead: each tubelet's frames run the other way, so the tokens
    # differ from the first step (the swap above left the term at ln 2), and direction as well as order is asked.
    "retrieval/temporal_weight=1,negative=reverse": ("retrieval", [
        "objective.temporal_weight=1", "objective.temporal_negative=reverse"]),
    # Segment pooling with its own segments in the other order as the negative: an order contrast without a second
    # video pass (the pixel-level swap sat at ln 2; the reverse costs ~30 % of the step).
    "retrieval/temporal_weight=1,negative=segments,video_pool_segments=2": ("retrieval", [
        "objective.temporal_weight=1", "objective.temporal_negative=segments", "model.video_pool_segments=2"]),
    # The swap with an embedding that keeps the halves apart by construction (either alone did not help). Unlike the
    # segments negative, the swapped clip's segments keep their time embeddings and exchange their content, so only
    # reading what moves in each half tells the two apart.
    "retrieval/temporal_weight=1,video_pool_segments=2": ("retrieval", [
        "objective.temporal_weight=1", "model.video_pool_segments=2"]),
    # The same on the first 8 clips of each batch of 32 (objective.temporal_rows): the second pass at about a
    # quarter of its cost, as the qa-mc default does with the reversed clip.
    "retrieval/temporal_weight=1,video_pool_segments=2,rows=8": ("retrieval", [
        "objective.temporal_weight=1", "model.video_pool_segments=2", "objective.temporal_rows=8"]),
    # The reversed clip on the first 8 clips of each batch of 32 (over the whole batch: a tie on val for ~30 % more
    # time).
    "retrieval/temporal_weight=1,negative=reverse,rows=8": ("retrieval", [
        "objective.temporal_weight=1", "objective.temporal_negative=reverse", "objective.temporal_rows=8"]),
    # Twice the updates of half the size in the same epochs (240 videos: 15 steps an epoch instead of 8).
    "retrieval/batch=16": ("retrieval", ["train.batch_size=16"]),
    # Retrieval fine-tuned from that pretraining run of the same world (INIT_FROM): the recipe for --init runs.
    # Each clip also contrasted with one more text about it from the world's other kinds (captions, questions with
    # their answers; train splits only), violet/tasks/companions.py.
    "qa-mc/companion_weight=1": ("qa-mc", ["objective.companion_weight=1"]),
    "retrieval/companion_weight=1": ("retrieval", ["objective.companion_weight=1"]),
    # The contrastive temperature: where it starts (CLIP's 0.07) and whether it is learned.
    "retrieval/temperature=0.03": ("retrieval", ["model.temperature=0.03"]),
    "retrieval/temperature=0.07,fixed": ("retrieval", ["model.learn_temperature=false"]),
    "qa-mc/temperature=0.03": ("qa-mc", ["model.temperature=0.03"]),
    # The masked-language pass over the first 16 rows of each batch of 32: the steps it saves buy 10 more epochs.
    "retrieval/mlm_rows=16,epochs=40": ("retrieval", ["objective.mlm_rows=16", "train.epochs=40"]),
    "retrieval-from-pretrain/default": ("retrieval", []),
    "retrieval-from-pretrain/lr=2.5e-4": ("retrieval", ["train.lr=2.5e-4"]),
    "retrieval-from-pretrain/lr=1e-4": ("retrieval", ["train.lr=1e-4"]),
    "retrieval-from-pretrain/lr=1e-4,epochs=20": ("retrieval", ["train.lr=1e-4", "train.epochs=20"]),
    # The same fine-tuning (the --init defaults: lr 1e-4, 20 epochs) from the 4 x 4 x 4 pretraining without VTM pairs,
    # whose tubelets the fine-tuned run inherits.
    "retrieval-from-pretrain-p4/default": ("retrieval", []),
    "retrieval-from-pretrain-p4/epochs=40": ("retrieval", ["train.epochs=40"]),
    "retrieval-from-pretrain-p4/lr=2.5e-4,epochs=40": ("retrieval", ["train.lr=2.5e-4", "train.epochs=40"]),
}
INIT_FROM = {  # row family -> the row whose run is --init
    "retrieval-from-pretrain": "pretrain/epochs=35,curve",
    "retrieval-from-pretrain-p4": "pretrain/patch=4,tubelet=4,vtm_weight=0,epochs=25,curve",
}
HEADLINE = {"retrieval": ("t2v_r1", "t2v_r5", "t2v_r10"), "qa-mc": ("accuracy",), "qa-oe": ("accuracy",),
            "pretrain": ("t2v_r1", "t2v_r5", "t2v_r10")}


def val_curve(train_log: Path) -> list[float]:
    """t2v R@1 of each val evaluation the run printed during training ("val: t2v_r1=..."), in order."""
    return [float(line.split("t2v_r1=")[1].split(",")[0]) for line in train_log.read_text().splitlines()
            if line.startswith("val: ") and "t2v_r1=" in line]


def ensure_world(worlds: Path, seed: int) -> Path:
    from prepare.worlds import make_world

    data = worlds / f"w{seed}"
    if not (data / "hf").exists():
        make_world(data, seed)
        run([sys.executable, "-m", "prepare", str(data)], worlds / f"prepare_w{seed}.log")
    return data


def one_run(name: str, seed: int, data: Path, out: Path) -> dict:
    task, overrides = ROWS[name]
    run_dir = out / name.replace("/", "__") / f"w{seed}"
    result_file = run_dir.with_suffix(".json")
    if result_file.exists():
        return json.loads(result_file.read_text())
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    init_row = INIT_FROM.get(name.split("/")[0])
    if init_row:  # the pretraining run of this world first (reused when it exists)
        one_run(init_row, seed, data, out)
        overrides = ["--init", str(out / init_row.replace("/", "__") / f"w{seed}"), *overrides]
    seconds = run(launch(["--task", task, "--data", str(data), "--output-dir", str(run_dir), "eval.split=val",
                          *overrides]), run_dir.with_suffix(".train.log"))
    pretrain = task == "pretrain"  # a pretraining run is judged by zero-shot retrieval
    metrics = evaluate("retrieval" if pretrain else task, data, run_dir, run_dir.with_suffix(".eval.json"),
                       ["--zero-shot"] if pretrain else [], "val")
    result = {key: round(metrics[key], 2) for key in HEADLINE[task]}
    if pretrain:
        result["val_curve_t2v_r1"] = val_curve(run_dir.with_suffix(".train.log"))
    result.update(seconds=round(seconds, 1), rerank_k=metrics.get("rerank_k"))
    result_file.write_text(json.dumps(result) + "\n")
    return result


def summarise(per_world: dict[int, dict], task: str) -> dict:
    row: dict = {"worlds": sorted(per_world)}
    for key in (*HEADLINE[task], "seconds"):
        values = [result[key] for result in per_world.values()]
        row[key] = {"mean": round(statistics.mean(values), 1),
                    "stdev": round(statistics.stdev(values), 1) if len(values) > 1 else 0.0,
                    "per_world": values}
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--worlds", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, choices=SEEDS, default=list(SEEDS),
                        help="a subset of the tuning worlds, to screen a row on one before running all three")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)
    summary = args.out / "ablate.json"
    table: dict = json.loads(summary.read_text()) if summary.exists() else {}  # rows of earlier invocations stay
    for name in args.rows:  # row by row, so a stopped run still leaves whole rows
        task = ROWS[name][0]
        per_world = {seed: one_run(name, seed, ensure_world(args.worlds, seed), args.out) for seed in args.seeds}
        table[name] = {"overrides": ROWS[name][1], **summarise(per_world, task)}
        summary.write_text(json.dumps(table, indent=2) + "\n")
        print(json.dumps({name: table[name]}), flush=True)
    return table


if __name__ == "__main__":
    started = time.time()
    main(sys.argv[1:])
    print(f"done in {time.time() - started:.0f} s", file=sys.stderr)
