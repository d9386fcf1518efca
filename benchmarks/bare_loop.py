"""The bare PyTorch reference beside every recipe: no Accelerate, no Trainer, no re-ranking, ~nothing shared with
the project except the prepared clips (read once, evaluation sampling). If a project recipe learns less per step
than this on the same data, the gap is a bug to find.

    python benchmarks/bare_loop.py --task retrieval|qa-mc|qa-oe --data DATA [--steps 265] [--split val]

Recipe: 8 evenly sampled frames at 64 px, pixels in [0, 1], no augmentation; 3-D conv tubelets 2x8x8 with one
learned position table, 2 pre-norm layers of width 128, mean-pooled; words lower-cased, one embedding per word,
learned positions, 2 pre-norm layers, mean over real tokens. Retrieval: symmetric InfoNCE, learned temperature
from 0.07. QA: 4 pre-norm layers over [text token; video tokens], read at the text token (MC: one score per
question + option; OE: a classifier over the train answers). AdamW lr 5e-4 constant, wd 0.05, batch 32.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from violet.data.prepared import load_prepared  # noqa: E402
from violet.data.datasets import ClipDataset  # noqa: E402

WIDTH, FRAMES, SIZE = 128, 8, 64


def clips(rows, data: Path) -> torch.Tensor:
    dataset = ClipDataset(rows, data / "clip_store", FRAMES, SIZE, train=False)
    return torch.stack([dataset[i]["frames"] for i in range(len(dataset))]).float() / 255  # (N, T, 3, S, S)


def stack(depth: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(WIDTH, 4, WIDTH * 4, 0.0, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class Words:
    def __init__(self, texts: list[str]) -> None:
        words = sorted({w for text in texts for w in re.findall(r"[a-z0-9]+", text.lower())})
        self.ids = {w: i + 1 for i, w in enumerate(words)}  # 0 = padding and unknown

    def __call__(self, texts: list[str]) -> torch.Tensor:
        rows = [[self.ids.get(w, 0) for w in re.findall(r"[a-z0-9]+", t.lower())][:64] or [0] for t in texts]
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out


class Bare(nn.Module):
    def __init__(self, vocab: int, outputs: int) -> None:
        super().__init__()
        self.patch = nn.Conv3d(3, WIDTH, (2, 8, 8), (2, 8, 8))
        self.video_pos = nn.Parameter(torch.randn(1, FRAMES // 2 * (SIZE // 8) ** 2, WIDTH) * 0.02)
        self.video = stack(2)
        self.word = nn.Embedding(vocab, WIDTH)
        self.text_pos = nn.Parameter(torch.randn(1, 64, WIDTH) * 0.02)
        self.text = stack(2)
        self.video_proj, self.text_proj = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fusion = stack(4)
        self.head = nn.Linear(WIDTH, outputs)

    def video_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(frames.transpose(1, 2)).flatten(2).transpose(1, 2)
        return self.video(tokens + self.video_pos)

    def text_embed(self, ids: torch.Tensor) -> torch.Tensor:
        real = ids > 0
        hidden = self.text(self.word(ids) + self.text_pos[:, : ids.shape[1]], src_key_padding_mask=~real)
        return (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)

    def embeds(self, frames: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        video = F.normalize(self.video_proj(self.video_tokens(frames).mean(1)), dim=-1)
        return F.normalize(self.text_proj(self.text_embed(ids)), dim=-1), video

    def fused(self, frames: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([self.text_embed(ids)[:, None], self.video_tokens(frames)], dim=1)
        return self.head(self.fusion(joint)[:, 0])


class Project(nn.Module):
    """The project's tiny model behind the bare loop's interface (`--model project`): isolates model vs loop."""

    def __init__(self, overrides: list[str]) -> None:
        super().__init__()
        from violet.config import ModelConfig, apply_overrides, parse_dotted
        from violet.data.text import load_tokenizer
        from violet.models import VideoLanguageModel

        config = ModelConfig(tubelet=2)
        apply_overrides(config, parse_dotted(overrides).get("model", {}))
        self.tokenizer = load_tokenizer()
        self.model = VideoLanguageModel(config, len(self.tokenizer), ("vtc",))

    def embeds(self, frames: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts, padding="longest", truncation=True, max_length=64, return_tensors="pt")
        video = self.model("video", frames=(frames * 255).round().to(torch.uint8))
        text = self.model("text", ids=tokens["input_ids"], mask=tokens["attention_mask"])
        self.logit_scale = self.model.heads["vtc"].logit_scale
        return text["embed"], video["embed"]


def texts_of(task: str, rows) -> tuple[list[str], list[int]]:
    """Flat texts and, per row, how many texts it has (MC: one per option)."""
    if task == "retrieval":
        return list(rows["caption"]), [1] * len(rows)
    if task == "qa-oe":
        return list(rows["question"]), [1] * len(rows)
    texts = [f"{q} {o}" for q, options in zip(rows["question"], rows["options"]) for o in options]
    return texts, [len(options) for options in rows["options"]]


def scores(model: Bare, task: str, frames: torch.Tensor, ids: torch.Tensor, counts: list[int]) -> torch.Tensor:
    if task == "retrieval":
        text, video = model.embeds(frames, ids)
        return model.logit_scale.exp().squeeze() * text @ video.T
    owner = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    out = model.fused(frames[owner], ids)
    return out if task == "qa-oe" else out[:, 0].view(len(counts), -1)  # equal option counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--task", required=True, choices=("retrieval", "qa-mc", "qa-oe"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=265)
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=("bare", "project"), default="bare",
                        help="project: the project's model (retrieval) inside this loop, to bisect model vs loop")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("overrides", nargs="*", help="model.* overrides for --model project")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    kind = {"retrieval": "captions", "qa-mc": "qa_mc", "qa-oe": "qa_oe"}[args.task]
    splits = load_prepared(args.data, kind)
    train, held = splits["train"], splits[args.split]
    answers = sorted(set(a.strip().lower() for a in train["answer"])) if args.task == "qa-oe" else []
    words = Words(texts_of(args.task, train)[0])
    if args.model == "project":
        model = Project(args.overrides)
        words = lambda texts: texts  # noqa: E731 (the project tokenizes itself)
    else:
        model = Bare(len(words.ids) + 1, max(1, len(answers)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    train_frames, started = clips(train, args.data), time.perf_counter()
    for step in range(args.steps):
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed * 7919 + step))[:32]
        rows = train.select(pick.tolist())
        texts, counts = texts_of(args.task, rows)
        out = scores(model, args.task, train_frames[pick], words(texts), counts)
        if args.task == "retrieval":
            labels = torch.arange(len(pick))
            loss = (F.cross_entropy(out, labels) + F.cross_entropy(out.T, labels)) / 2
        elif args.task == "qa-mc":
            loss = F.cross_entropy(out, torch.tensor(rows["answer"]))
        else:
            loss = F.cross_entropy(out, torch.tensor([answers.index(a.strip().lower()) for a in rows["answer"]]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        frames, (texts, counts) = clips(held, args.data), texts_of(args.task, held)
        if args.task == "retrieval":
            videos = sorted(set(held["video"]))
            first = [list(held["video"]).index(v) for v in videos]
            sim = scores(model, args.task, frames[first], words(texts), counts)
            gold = torch.tensor([videos.index(v) for v in held["video"]])
            rank = (sim > sim.gather(1, gold[:, None])).sum(1)
            result = {"t2v_r1": 100 * float((rank < 1).float().mean()), "t2v_r5": 100 * float((rank < 5).float().mean())}
        else:
            out = torch.cat([scores(model, args.task, frames[i:i + 32], words(texts_of(args.task, held.select(
                range(i, min(i + 32, len(held)))))[0]), counts[i:i + 32]) for i in range(0, len(held), 32)])
            gold = (torch.tensor(held["answer"]) if args.task == "qa-mc" else
                    torch.tensor([answers.index(a) if a in answers else -1 for a in held["answer"]]))
            result = {"accuracy": 100 * float((out.argmax(1) == gold).float().mean())}
    result.update(task=args.task, split=args.split, steps=args.steps, train_seconds=round(train_seconds, 1),
                  final_loss=round(float(loss), 4))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
