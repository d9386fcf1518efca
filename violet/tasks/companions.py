"""Companion texts: what the data set's other annotation kinds say about a task's training videos.

Many video QA sets share their videos with a caption set (MSRVTT-QA with MSRVTT, TGIF-QA with TGIF), and a
caption set may come with questions about the same clips. A task trains on one kind; the others hold more text
about the very clips it sees, each a fact the video encoder could learn to see. With `objective.companion_weight`
> 0, every training clip of a batch is paired with one of its companion texts, drawn at random each step, in a
second contrastive term against the other clips of the batch: more supervision per clip for one more text pass
and no extra video pass (the video pass is most of a step).

A companion text is a caption as written, a multiple-choice question with its correct option, or an open-ended
question with its answer ("question answer": the form the QA tasks score). Only the *train* split of each other
kind is read, and only videos among the task's own training rows receive companions: nothing of a val or test
split reaches training, even when a data set's kinds split their videos differently.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from violet.data.layout import KINDS
from violet.data.prepared import load_prepared
from violet.data.text import question_with_answer, tokenize
from violet.objectives import video_keys, vtc_loss

logger = logging.getLogger(__name__)


def companion_texts_of(kind: str, rows: Any) -> list[str]:
    """One text per row of a prepared train split of `kind`, in row order."""
    if kind == "captions":
        return list(rows["caption"])
    if kind == "qa_mc":
        return [question_with_answer(question, options[answer]) for question, options, answer
                in zip(rows["question"], rows["options"], rows["answer"])]
    return [question_with_answer(question, answer) for question, answer in zip(rows["question"], rows["answer"])]


class CompanionTexts:
    """video id -> the other kinds' train texts about it, for the videos of a task's training rows."""

    def __init__(self, data_dir: str | Path, own_kind: str, videos: list[str]) -> None:
        wanted = set(videos)
        self.table: dict[str, list[str]] = {}
        self.found: dict[str, int] = {}  # kind -> texts taken from its train split
        for kind in KINDS:
            if kind == own_kind:
                continue
            try:
                prepared = load_prepared(data_dir, kind)
            except FileNotFoundError:  # the data set has no such kind: nothing to take
                continue
            if "train" not in prepared:
                continue
            rows = prepared["train"]
            taken = 0
            for video, text in zip(rows["video"], companion_texts_of(kind, rows)):
                if video in wanted:
                    self.table.setdefault(video, []).append(text)
                    taken += 1
            self.found[kind] = taken
        self.coverage = len(self.table) / max(1, len(wanted))

    def describe(self) -> str:
        sources = ", ".join(f"{count} from {kind}_train" for kind, count in self.found.items()) or "none"
        return f"companion texts for {len(self.table)} training videos ({self.coverage:.0%} of them): {sources}"

    def draw(self, videos: list[str], own_texts: list[str], generator: torch.Generator) -> list[str]:
        """One companion text per row, drawn with `generator`; a row whose video has none keeps its own text
        (so every rank always contributes the same number of rows to the batch-wide contrast)."""
        drawn = []
        for video, own in zip(videos, own_texts):
            texts = self.table.get(video)
            drawn.append(texts[int(torch.randint(len(texts), (1,), generator=generator))] if texts else own)
        return drawn


def load_companions(task: Any, own_kind: str) -> CompanionTexts | None:
    """The task's companion texts when `objective.companion_weight` > 0, else None; says what it found, and
    turns the term off with a warning when no other kind describes the training videos."""
    if task.config.objective.companion_weight <= 0:
        return None
    companions = CompanionTexts(task.data_dir, own_kind, list(task.train_rows()["video"]))
    if not companions.table:
        logger.warning("objective.companion_weight=%s, but %s holds no other annotation kind's train rows for these "
                       "videos (looked for %s): the companion term is off", task.config.objective.companion_weight,
                       task.data_dir, ", ".join(f"{kind}_train" for kind in KINDS if kind != own_kind))
        return None
    logger.info("%s: %s", task.name, companions.describe())
    return companions


def companion_terms(task: Any, model: Any, batch: dict[str, Any], own_texts: list[str], video: dict[str, Any],
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """{"companion": the weighted contrastive term of each clip against one drawn companion text}. Tokenised
    here, not in the loader workers: the draw uses the Trainer's per-rank generator, which resumes exactly.

    A text that describes several videos ("who moves? the red one") may be drawn for two clips of a batch. It
    needs no key of its own: the two rows have the same text embedding, so their terms sum to exactly the loss
    with both clips as positives of either row (checked numerically when this was written)."""
    texts = task.companions.draw(batch["video"], own_texts, generator)
    tokens = tokenize(task.tokenizer, texts, task.config.model.max_text_len)
    device = video["embed"].device
    text = model("text", ids=tokens["input_ids"].to(device), mask=tokens["attention_mask"].to(device))
    terms = vtc_loss(text["embed"], video["embed"], video["logit_scale"], task.config.objective.companion_weight,
                     video_keys(batch["video"], device))
    return {"companion": terms["vtc"]}
