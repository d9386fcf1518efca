"""Built-in deterministic demo data set of procedurally drawn videos.

Each clip shows one coloured shape on a plain background that moves in one
direction or grows/shrinks; captions and questions are generated from those
attributes, so every answer needs the pixels (colour, shape, motion, background).

    python -m prepare.demo OUT [--seed 0] [--train 320] [--val 48] [--test 64]
"""
from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import product
from pathlib import Path
from types import MappingProxyType

import av
import numpy as np
from PIL import Image, ImageDraw

from violet.data.layout import SPLITS, annotation_path, annotations_dir, videos_dir

BACKGROUNDS = MappingProxyType({
    "black": (12, 12, 12), "gray": (110, 110, 110),
    "navy": (18, 28, 84), "brown": (84, 52, 28),
})
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = MappingProxyType({
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (60, 110, 245),
    "yellow": (240, 220, 40), "purple": (160, 60, 210), "orange": (250, 140, 30),
    "white": (245, 245, 245),
})
# Unit steps in image coordinates (y grows downwards).
DIRECTIONS = MappingProxyType({"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)})
MOTIONS = (*DIRECTIONS, "grows", "shrinks")
VOCABULARY = MappingProxyType({
    "background": tuple(BACKGROUNDS), "shape": SHAPES, "colour": tuple(COLOURS), "motion": MOTIONS,
})
# {move} is "moves left" style for translations; size changes always use "grows"/"shrinks".
CAPTION_TEMPLATES = (
    "{a} {colour} {shape} {move} on a {background} background",
    "{a} {colour} {shape} {move} over a {background} background",
    "on a {background} background, {a} {colour} {shape} {move}",
)
MOVE_VERBS = ("moves", "moving", "slides")  # one per caption template
MC_QUESTIONS = ("what is moving in the video?", "which description matches the video?")
MC_OPTIONS = 5
OE_FIELDS = ("colour", "shape", "motion", "background")
SEEN_FRACTION = 0.75  # share of val/test combos drawn from combos present in train
NOISE_LEVEL = 6  # +/- uniform pixel noise so frames are not perfectly flat


@dataclass(frozen=True)
class Scene:
    background: str
    shape: str
    colour: str
    motion: str


def all_scenes() -> list[Scene]:
    return [Scene(*combo) for combo in product(BACKGROUNDS, SHAPES, COLOURS, MOTIONS)]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def move_phrase(motion: str, verb: str = "moves") -> str:
    return motion if motion in ("grows", "shrinks") else f"{verb} {motion}"


def caption_for(scene: Scene, template_index: int) -> str:
    move = move_phrase(scene.motion, MOVE_VERBS[template_index])
    return CAPTION_TEMPLATES[template_index].format(
        a=article(scene.colour), colour=scene.colour, shape=scene.shape, move=move, background=scene.background)


def short_description(scene: Scene, with_background: bool) -> str:
    text = f"{article(scene.colour)} {scene.colour} {scene.shape} {move_phrase(scene.motion)}"
    return f"{text} on a {scene.background} background" if with_background else text


def sample_scenes(rng: np.random.Generator, count: int, seen: set[Scene], seen_fraction: float) -> list[Scene]:
    """Draw `count` combos without replacement, ~seen_fraction of them from `seen`.

    Falls back to the other pool when one runs dry and only repeats combos when
    the split is larger than the whole combination space.
    """
    universe = all_scenes()
    seen_pool = [s for s in universe if s in seen]
    unseen_pool = [s for s in universe if s not in seen]
    n_seen = min(len(seen_pool), round(seen_fraction * count))
    n_unseen = min(len(unseen_pool), count - n_seen)
    n_seen = min(len(seen_pool), count - n_unseen)
    chosen = [seen_pool[i] for i in rng.permutation(len(seen_pool))[:n_seen]]
    chosen += [unseen_pool[i] for i in rng.permutation(len(unseen_pool))[:n_unseen]]
    while len(chosen) < count:
        chosen += [universe[i] for i in rng.permutation(len(universe))[: count - len(chosen)]]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def shape_points(shape: str, cx: float, cy: float, diameter: float) -> list[tuple[float, float]]:
    radius = diameter / 2
    if shape == "square":
        half = radius * 0.9  # a touch smaller so its area is close to the circle's
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "triangle":
        radii, corners = [radius], 3
    else:  # star: alternate outer and inner radius
        radii, corners = [radius, radius * 0.45], 10
    angles = -np.pi / 2 + 2 * np.pi * np.arange(corners) / corners
    return [(cx + radii[k % len(radii)] * np.cos(a), cy + radii[k % len(radii)] * np.sin(a))
            for k, a in enumerate(angles)]


def render_frames(scene: Scene, rng: np.random.Generator, size: int, frame_count: int) -> np.ndarray:
    """Return uint8 frames (T, size, size, 3) for one scene, jittered by `rng`."""
    colour = tuple(int(c) for c in np.clip(np.array(COLOURS[scene.colour]) + rng.integers(-12, 13, 3), 0, 255))
    base = size * rng.uniform(0.25, 0.35)
    margin = max(2.0, 0.04 * size)
    progress = np.linspace(0.0, 1.0, frame_count)
    if scene.motion in DIRECTIONS:
        # Travel 42-50% of the frame; the start is shifted randomly inside the leftover slack.
        travel = size * rng.uniform(0.42, 0.50)
        slack = max(0.0, size - 2 * margin - base - travel)
        start = margin + base / 2 + rng.uniform(0.0, slack)
        across = rng.uniform(margin + base / 2, size - margin - base / 2)
        along = start + travel * progress
        dx, dy = DIRECTIONS[scene.motion]
        along = along if dx + dy > 0 else size - along  # mirror for left/up
        xs, ys = (along, np.full_like(along, across)) if dx else (np.full_like(along, across), along)
        diameters = np.full_like(progress, base)
    else:
        small, large = base * 0.55, base * 1.4
        diameters = small + (large - small) * (progress if scene.motion == "grows" else 1 - progress)
        low, high = margin + large / 2, size - margin - large / 2
        xs = np.full_like(progress, rng.uniform(low, high))
        ys = np.full_like(progress, rng.uniform(low, high))
    video = np.empty((frame_count, size, size, 3), dtype=np.uint8)
    for t in range(frame_count):
        image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
        draw = ImageDraw.Draw(image)
        if scene.shape == "circle":
            r = diameters[t] / 2
            draw.ellipse((xs[t] - r, ys[t] - r, xs[t] + r, ys[t] + r), fill=colour)
        else:
            draw.polygon(shape_points(scene.shape, xs[t], ys[t], diameters[t]), fill=colour)
        video[t] = np.asarray(image)
    noise = rng.integers(-NOISE_LEVEL, NOISE_LEVEL + 1, video.shape, dtype=np.int16)
    return np.clip(video.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_mp4(path: Path, video: np.ndarray, fps: int) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        # One encoder thread: x264 output depends on the thread count, which would
        # otherwise follow the machine's core count. Tiny frames encode fast anyway.
        stream.codec_context.thread_count = 1
        # mbtree=0: with macroblock-tree rate control x264 now and then produced
        # different bytes for identical 96x96 input (apparently it depends on
        # uninitialised memory); without it the output was repeatable in hundreds
        # of trials. veryfast/crf 23 keeps colours and edges clean at ~35 KB a clip.
        stream.codec_context.options = {"crf": "23", "preset": "veryfast", "x264-params": "mbtree=0"}
        time_base = Fraction(1, fps)
        for index, array in enumerate(video):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = index, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def mc_row(scene: Scene, video: str, index: int, rng: np.random.Generator) -> dict:
    """Multiple choice: distractors differ from the truth in one or two attributes."""
    with_background = index % 2 == 1
    fields = ("colour", "shape", "motion", "background") if with_background else ("colour", "shape", "motion")
    truth = short_description(scene, with_background)
    distractors: list[str] = []
    while len(distractors) < MC_OPTIONS - 1:
        changed = rng.choice(fields, size=int(rng.integers(1, 3)), replace=False)
        other = replace(scene, **{f: str(rng.choice([v for v in VOCABULARY[f] if v != getattr(scene, f)]))
                                  for f in changed})
        text = short_description(other, with_background)
        if text != truth and text not in distractors:
            distractors.append(text)
    answer = int(rng.integers(0, MC_OPTIONS))
    options = distractors[:answer] + [truth] + distractors[answer:]
    return {"video": video, "question": MC_QUESTIONS[index % 2], "options": options, "answer": answer}


def oe_question(scene: Scene, field: str) -> str:
    if field == "colour":
        return "what colour is the shape?"
    if field == "shape":
        return "what shape is moving?"
    if field == "background":
        return "what colour is the background?"
    return "which way does the shape move?" if scene.motion in DIRECTIONS else "does the shape grow or shrink?"


def oe_rows(scene: Scene, video: str, index: int) -> list[dict]:
    # Odd videos get two questions; the question type cycles over the split so
    # all four types are equally frequent. Questions before video i: i + i // 2.
    first = index + index // 2
    fields = [OE_FIELDS[(first + k) % len(OE_FIELDS)] for k in range(1 + index % 2)]
    return [{"video": video, "question": oe_question(scene, f), "answer": getattr(scene, f)} for f in fields]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def readme_text(seed: int, counts: dict, size: int, frames: int, fps: int) -> str:
    return f"""# violet demo data set

Generated by `python -m prepare.demo` with seed {seed}; identical on every run.

Each video ({size}x{size}, {frames} frames at {fps} fps, H.264 yuv420p) shows one shape on a
solid background, drawn frame by frame with PIL:

- background: {", ".join(BACKGROUNDS)}
- shape: {", ".join(SHAPES)}
- colour: {", ".join(COLOURS)}
- motion: {", ".join(MOTIONS)} (translations cover 42-50% of the frame)

Per video the start position, object size (25-35% of the frame), object colour
(+/-12 per channel) and pixel noise (+/-{NOISE_LEVEL}) vary. Attribute combinations are
unique within a split (up to 672 videos); about {SEEN_FRACTION:.0%} of val/test combinations also occur in train.

Counts: {json.dumps(counts)}

- `videos/<split>/NNNNN.mp4`
- `annotations/captions_<split>.jsonl`: video, caption
- `annotations/qa_mc_<split>.jsonl`: video, question, options, answer (index)
- `annotations/qa_oe_<split>.jsonl`: video, question, answer (one word)
"""


def make_demo(out_dir: str | Path, seed: int = 0, n_train: int = 320, n_val: int = 48, n_test: int = 64,
              size: int = 96, frames: int = 24, fps: int = 8, *, force: bool = False) -> dict:
    """Write the demo set under out_dir and return {split: {kind: count}}."""
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32 (yuv420p), got {size}")
    if frames < 2 or fps < 1 or min(n_train, n_val, n_test) < 0:
        raise ValueError("need frames >= 2, fps >= 1 and split sizes >= 0")
    out_dir = Path(out_dir)
    annotations = annotations_dir(out_dir)
    if annotations.is_dir() and any(annotations.iterdir()) and not force:
        raise FileExistsError(f"{annotations} already exists and is not empty (use --force to overwrite)")
    annotations.mkdir(parents=True, exist_ok=True)
    split_sizes = {"train": n_train, "val": n_val, "test": n_test}
    seen: set[Scene] = set()
    counts: dict[str, dict[str, int]] = {}
    for split_index, split in enumerate(SPLITS):
        combo_rng = np.random.default_rng([seed, split_index, 0])
        scenes = sample_scenes(combo_rng, split_sizes[split], seen, 0.0 if split == "train" else SEEN_FRACTION)
        if split == "train":
            seen = set(scenes)
        video_dir = videos_dir(out_dir) / split
        video_dir.mkdir(parents=True, exist_ok=True)
        for stale in video_dir.glob("*.mp4"):  # leftovers of an earlier, larger --force run
            if re.fullmatch(r"\d{5}\.mp4", stale.name) and int(stale.stem) >= len(scenes):
                stale.unlink()
        captions, mc, oe = [], [], []
        for index, scene in enumerate(scenes):
            # Separate streams for text and pixels, keyed by (seed, split, index), so each
            # video is reproducible on its own and text does not depend on size/frames.
            text_seed, pixel_seed = np.random.SeedSequence([seed, split_index, index + 1]).spawn(2)
            text_rng, pixel_rng = np.random.default_rng(text_seed), np.random.default_rng(pixel_seed)
            video = f"{split}/{index:05d}.mp4"
            write_mp4(videos_dir(out_dir) / video, render_frames(scene, pixel_rng, size, frames), fps)
            template_index = int(text_rng.integers(len(CAPTION_TEMPLATES)))
            captions.append({"video": video, "caption": caption_for(scene, template_index)})
            mc.append(mc_row(scene, video, index, text_rng))
            oe.extend(oe_rows(scene, video, index))
        for kind, rows in (("captions", captions), ("qa_mc", mc), ("qa_oe", oe)):
            write_jsonl(annotation_path(out_dir, kind, split), rows)
        counts[split] = {"videos": len(scenes), "captions": len(captions), "qa_mc": len(mc), "qa_oe": len(oe)}
    (out_dir / "README.md").write_text(readme_text(seed, counts, size, frames, fps), encoding="utf-8")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prepare.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (videos/ and annotations/ go inside)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--val", type=int, default=48)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--size", type=int, default=96, help="frame width and height (even)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--force", action="store_true", help="overwrite an existing data set")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        counts = make_demo(args.out, args.seed, args.train, args.val, args.test,
                           args.size, args.frames, args.fps, force=args.force)
    except (FileExistsError, ValueError) as error:
        parser.error(str(error))  # exits with status 2
    elapsed = time.perf_counter() - started
    print(f"demo data set written to {args.out.resolve()}")
    print(f"  videos:      {videos_dir(args.out)}/{{train,val,test}}/NNNNN.mp4")
    print(f"  annotations: {annotations_dir(args.out)}/{{captions,qa_mc,qa_oe}}_{{split}}.jsonl")
    for split, split_counts in counts.items():
        print(f"  {split:5s} " + ", ".join(f"{kind}={n}" for kind, n in split_counts.items()))
    print(f"done in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
