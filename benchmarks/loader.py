"""Clips/s of our clip-store loader vs decoding the raw videos with decord vs the bare JPEG decode (the limit).

    python -m prepare.demo DIR --size 320 && python -m prepare DIR
    python benchmarks/loader.py DIR [--workers 2] [--frames 4] [--size 224] [--batch-size 8] [--repeats 3]

All three paths produce the same thing: uint8 (T, 3, size, size) clips of the same frames (evaluation sampling:
segment middles of the stored frames, which are known positions of the source video) with a centre crop.

- ours: ClipDataset through a DataLoader (`--workers` persistent workers, the training collate).
- decord: a Dataset that opens each raw video with decord (one thread; parallelism from the same number of
  DataLoader workers), `get_batch` of the same source frames, then the same crop and resize.
- limit: the JPEG bytes of the same frames already in memory, decoded with the same call and DCT scale
  (simplejpeg), in `--workers` processes: no reading, cropping, resizing, collating or process hand-off.

Prints one JSON object; `ratio_vs_decord` = ours / decord, `fraction_of_decode_limit` = ours / limit, each the
median over `--repeats` rounds (after one warm-up round) of the ratio within a round; in a round the three paths
run over every clip, ours and the limit twice in the order ours, limit, limit, ours (each rate is the clips of
both passes over their time), so load that rises or falls during the round hits both alike.
`clips_per_cpu_s` and the `cpu_*` ratios count CPU seconds of every process involved instead of wall time: on a
machine shared with other jobs they show what the wall-clock ratios would be with the cores to ourselves.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from prepare.annotations import load_prepared
from violet.data.decode import uniform_frame_indices
from violet.data.layout import default_store_dir, videos_dir
from violet.data.clip_store import ClipStore
from violet.data.collate import collate_clips, unique_videos
from violet.data.datasets import ClipDataset
from violet.data.sampling import steady_memory_worker_init
from violet.data.video import crop_box, decode_frames, sample_frame_indices


class DecordClips(Dataset):
    """The same clips decoded from the raw videos with decord (the reader opened per item, in the worker)."""

    def __init__(self, paths: list[str], source_indices: list[list[int]], size: int) -> None:
        self.paths, self.source_indices, self.size = paths, source_indices, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import decord

        reader = decord.VideoReader(self.paths[index], ctx=decord.cpu(0), num_threads=1)
        frames = reader.get_batch(self.source_indices[index]).asnumpy()
        left, top, right, bottom = (round(v) for v in crop_box(frames.shape[2], frames.shape[1], False, None, 1.0))
        clip = torch.from_numpy(frames[:, top:bottom, left:right]).permute(0, 3, 1, 2).contiguous()
        clip = F.interpolate(clip, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return {"index": index, "frames": clip}


def _decode_share(args: tuple[list[list[bytes]], int]) -> int:
    clips, size = args
    torch.set_num_threads(1)
    import simplejpeg

    for jpegs in clips:
        height, width, _, _ = simplejpeg.decode_jpeg_header(jpegs[0])
        zoom = size / min(width, height)
        decode_frames(jpegs, min_width=math.ceil(width * zoom), min_height=math.ceil(height * zoom))
    return len(clips)


def tree_cpu_seconds() -> float:
    """User + system CPU time of this process and its live children (DataLoader workers, pool processes)."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def loader_pass(loader: DataLoader) -> tuple[float, float, int]:
    """Clips per wall second and per CPU second (all processes) of one pass over a loader, and the clip count."""
    start, cpu, clips = time.perf_counter(), tree_cpu_seconds(), 0
    for batch in loader:
        clips += batch["frames"].shape[0]
    return clips / (time.perf_counter() - start), clips / max(tree_cpu_seconds() - cpu, 1e-9), clips


def decode_pass(pool: Any, shares: list[tuple[list[list[bytes]], int]]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), tree_cpu_seconds()
    count = sum(pool.map(_decode_share, shares))
    return count / (time.perf_counter() - start), count / max(tree_cpu_seconds() - cpu, 1e-9)


def both(first: tuple[float, float], second: tuple[float, float]) -> tuple[float, float]:
    """Rates (per wall second, per CPU second) of two passes over the same clips, taken together: the harmonic
    mean, i.e. all clips over all seconds."""
    return tuple(2 / (1 / a + 1 / b) for a, b in zip(first, second, strict=True))  # type: ignore[return-value]


def tree_rss_mib() -> float:
    process = psutil.Process()
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4, help="frames per clip")
    parser.add_argument("--size", type=int, default=224, help="output side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-epochs", type=int, default=5, help="extra passes of our loader to watch RSS")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    videos, _ = unique_videos(load_prepared(args.data_dir, "captions")[args.split])
    store = ClipStore(default_store_dir(args.data_dir))
    paths, source_indices, jpegs = [], [], []
    for video in videos["video"]:
        meta = store.meta(video)
        stored = sample_frame_indices(meta["num_frames"], args.frames, train=False)
        # Stored frame i is source frame uniform_frame_indices(src_frames, stored frames)[i] (prepare.extract).
        positions = uniform_frame_indices(meta["src_frames"], meta["num_frames"])
        paths.append(str(videos_dir(args.data_dir) / video))
        source_indices.append([positions[i] for i in stored])
        jpegs.append(store.read_frames(video, stored))

    def loader(dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_clips,
                          persistent_workers=args.workers > 0, worker_init_fn=steady_memory_worker_init)

    ours_loader = loader(ClipDataset(videos, store.root, args.frames, args.size, train=False))
    decord_loader = loader(DecordClips(paths, source_indices, args.size))
    workers = max(1, args.workers)
    shares = [(jpegs[w::workers], args.size) for w in range(workers)]
    rates: dict[str, list[float]] = {"ours": [], "decord": [], "limit": []}
    per_cpu_second: dict[str, list[float]] = {"ours": [], "decord": [], "limit": []}
    load_before = os.getloadavg()[0]
    with get_context("fork").Pool(workers) as pool:
        # Interleaved, so the three paths see the same load on a shared machine; pass 0 warms everything up.
        for attempt in range(args.repeats + 1):
            # ABBA: a linear drift of the machine's load affects ours and the limit equally.
            ours_first = loader_pass(ours_loader)
            limit_rate, limit_cpu = both(decode_pass(pool, shares), decode_pass(pool, shares))
            ours_last = loader_pass(ours_loader)
            ours_rate, ours_cpu = both(ours_first[:2], ours_last[:2])
            clips = ours_first[2]
            decord_rate, decord_cpu, _ = loader_pass(decord_loader)
            if attempt:
                for name, rate, cpu in (("ours", ours_rate, ours_cpu), ("decord", decord_rate, decord_cpu),
                                        ("limit", limit_rate, limit_cpu)):
                    rates[name].append(rate)
                    per_cpu_second[name].append(cpu)
    del decord_loader
    rss_before = tree_rss_mib()
    for _ in range(args.memory_epochs):
        for _batch in ours_loader:
            pass
    rss_after = tree_rss_mib()
    ours, decord_rate, limit = (statistics.median(rates[name]) for name in ("ours", "decord", "limit"))
    def paired(numerator: str, denominator: str, values: dict[str, list[float]]) -> float:
        """Ratios of the paired passes of each repeat, then their median: robust to load changing between repeats."""
        return statistics.median(n / d for n, d in zip(values[numerator], values[denominator], strict=True))

    paired_fraction, paired_ratio = paired("ours", "limit", rates), paired("ours", "decord", rates)
    sample = store.meta(videos["video"][0])
    result = {
        "ratio_vs_decord": round(paired_ratio, 2),
        "fraction_of_decode_limit": round(paired_fraction, 3),
        "ours_clips_per_s": round(ours, 1), "decord_clips_per_s": round(decord_rate, 1),
        "decode_limit_clips_per_s": round(limit, 1),
        "clips": clips, "frames": args.frames, "size": args.size, "workers": args.workers,
        "batch_size": args.batch_size, "repeats": args.repeats,
        "stored_frame": f"{sample['width']}x{sample['height']}",
        "source_video": f"{sample.get('src_width')}x{sample.get('src_height')}",
        "loader_rss_mib_before_memory_epochs": round(rss_before, 1),
        f"loader_rss_mib_after_{args.memory_epochs}_more_epochs": round(rss_after, 1),
        "per_repeat_clips_per_s": {name: [round(r, 1) for r in values] for name, values in rates.items()},
        "per_repeat_clips_per_cpu_s": {name: [round(r, 1) for r in values] for name, values in per_cpu_second.items()},
        # Clips per CPU-second of every process involved (the main process and its workers / pool processes): a
        # load-independent view of the same comparison, for machines shared with other jobs.
        "clips_per_cpu_s": {name: round(statistics.median(values), 1) for name, values in per_cpu_second.items()},
        "cpu_ratio_vs_decord": round(paired("ours", "decord", per_cpu_second), 2),
        "cpu_fraction_of_decode_limit": round(paired("ours", "limit", per_cpu_second), 3),
        "load_average_1min_at_start": round(load_before, 2),
        "cpu_cores": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
        "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
