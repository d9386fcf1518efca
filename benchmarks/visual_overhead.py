"""What logging visuals costs: the share of training time spent drawing them at the default interval.

Trains the tiny preset's pretraining on a generated world twice, with visuals at the default interval
(`train.visual_every`) and with them off (`train.visual_every=0`), and prints one JSON object:
- `visual_seconds`: the sum of `perf/visuals_s` the trainer logs for each drawing (read back from the TensorBoard
  event file with TensorBoard's own EventAccumulator), and `visual_share` = that sum over the training loop's time
  (first to last logged step) of the same run: robust to other load on the machine, since both come from one run;
- `wall_with` / `wall_without` and their ratio: the whole `train.py` process, so noisier on a shared machine.

    python benchmarks/visual_overhead.py --out /tmp/visual_overhead [--steps 300] [--seed 11]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import ROOT, launch, run  # noqa: E402


def loop_seconds_and_visuals(run_dir: Path) -> tuple[float, float, int]:
    """(seconds from the first to the last logged training step, summed perf/visuals_s, drawings) of one run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"no TensorBoard event file under {run_dir}")
    scalars: dict[str, list] = {}
    for path in events:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(accumulator.Scalars(tag))
    visuals = scalars.get("perf/visuals_s", [])
    times = [event.wall_time for tag, values in scalars.items() if tag.startswith("train/") for event in values]
    if not times:
        raise SystemExit(f"no train/* scalars in the event files under {run_dir}")
    return max(times) - min(times), sum(event.value for event in visuals), len(visuals)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11, help="world seed (any: nothing is chosen from this run)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from prepare.worlds import make_world

    data = args.out / "world"
    args.out.mkdir(parents=True, exist_ok=True)
    if not (data / "hf").exists():
        make_world(data, args.seed)
        run([sys.executable, "-m", "prepare", str(data)], args.out / "prepare.log")
    walls = {}
    for name, extra in (("with", []), ("without", ["train.visual_every=0"])):
        run_dir = args.out / name
        walls[name] = run(launch(["--task", "pretrain", "--data", str(data), "--output-dir", str(run_dir),
                                  "--max-steps", str(args.steps), "--overwrite", "train.log_with=tensorboard",
                                  *extra]), args.out / f"{name}.log")
    loop, visual_seconds, drawings = loop_seconds_and_visuals(args.out / "with")
    result = {
        "steps": args.steps, "drawings": drawings, "visual_seconds": round(visual_seconds, 2),
        "loop_seconds": round(loop, 1), "visual_share": round(visual_seconds / loop, 4),
        "wall_with": round(walls["with"], 1), "wall_without": round(walls["without"], 1),
        "wall_ratio": round(walls["with"] / walls["without"], 3),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
