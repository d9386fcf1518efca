"""Open-ended video QA as classification over the answer vocabulary built from the train split.

Out-of-vocabulary answers are skipped in training (no label exists) but count as wrong in evaluation, and
their number is reported as `n_oov` (VIOLET dropped them silently, inflating accuracy).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from violet.data.text import tokenize
from violet.metrics import accuracy
from violet.tasks.base import Task
from violet.tasks.registry import register

ANSWERS_FILE = "answers.json"


@register("qa-oe")
class OpenEndedQATask(Task):
    annotation_kind = "qa_oe"
    heads = ("qa_oe",)
    defaults = {"train": {"epochs": 20, "lr": 3e-4}}

    def __init__(self, config: Any, tokenizer: Any, answers: list[str] | None = None) -> None:
        from prepare.prepared import load_answer_vocab

        super().__init__(config, tokenizer)
        # A fine-tuned checkpoint carries its own vocabulary: its classifier's rows mean those words.
        self.answers = answers if answers is not None else load_answer_vocab(self.data_dir / "hf")
        top_k = config.objective.answer_top_k
        if top_k and top_k < len(self.answers):
            self.answers = self.answers[:top_k]
        self.answer_ids = {answer: position for position, answer in enumerate(self.answers)}

    def num_answers(self) -> int:
        return len(self.answers)

    def save_artifacts(self, out_dir: Path) -> None:
        (out_dir / ANSWERS_FILE).write_text(json.dumps(self.answers))

    @classmethod
    def load_answers(cls, checkpoint_dir: Path) -> list[str]:
        return json.loads((checkpoint_dir / ANSWERS_FILE).read_text())

    def train_rows(self) -> Any:
        rows = self.require_split("train")
        return rows.filter(lambda answer: answer.strip().lower() in self.answer_ids, input_columns="answer")

    def text_fields(self, batch: dict[str, Any]) -> dict[str, Any]:
        tokens = tokenize(self.tokenizer, batch["question"], self.config.model.max_text_len)
        labels = [self.answer_ids.get(answer.strip().lower(), -1) for answer in batch["answer"]]
        return {"text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"], "label": torch.tensor(labels)}

    def answer_logits(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        video = model("video", frames=batch["frames"])["tokens"]
        text = model("text", ids=batch["text_ids"], mask=batch["text_mask"])["tokens"]
        return model("fusion", text_tokens=text, text_mask=batch["text_mask"], video_tokens=video)["answer_logits"]

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        logits = self.answer_logits(model, batch).float()
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(dim=1) == batch["label"]).float().mean()
        return loss, {"qa_oe": loss, "qa_oe_acc": acc.detach()}

    def evaluate(self, model: Any, accelerator: Accelerator, split: str) -> dict[str, Any]:
        rows = self.require_split(split)
        out = self.predict_rows(
            accelerator, rows,
            lambda batch: {"prediction": self.answer_logits(model, batch).argmax(dim=1), "answer": batch["label"]},
            f"{split} qa_oe",
        )
        return {
            "accuracy": accuracy(out["prediction"], out["answer"]), "n": len(rows),
            "n_oov": int((out["answer"] < 0).sum()), "num_answers": len(self.answers),
        }
