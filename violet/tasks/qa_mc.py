"""Multiple-choice video QA: each "question + option" is scored with the cross-modal VTM head; training is
cross-entropy over a question's options. The same head scores options zero-shot from a pretrained checkpoint."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from violet.data.text import tokenize
from violet.metrics import accuracy
from violet.tasks.base import Task
from violet.tasks.registry import register
from violet.tasks.retrieval import match_score


@register("qa-mc")
class MultipleChoiceQATask(Task):
    annotation_kind = "qa_mc"
    heads = ("vtm",)
    supports_zero_shot = True
    defaults = {"train": {"epochs": 20, "lr": 3e-4, "batch_size": 16}}

    def text_fields(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts, counts = [], []
        for question, options in zip(batch["question"], batch["options"]):
            texts.extend(f"{question} {option}" for option in options)
            counts.append(len(options))
        tokens = tokenize(self.tokenizer, texts, self.config.model.max_text_len)
        return {
            "text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"],
            "option_counts": torch.tensor(counts), "answer_index": torch.tensor(batch["answer"]),
        }

    def option_scores(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        """(B, max options) match scores; missing options (rows with fewer) are -inf."""
        counts = batch["option_counts"]
        video = model("video", frames=batch["frames"])["tokens"]
        text = model("text", ids=batch["text_ids"], mask=batch["text_mask"])["tokens"]
        owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        fused = model("fusion", text_tokens=text, text_mask=batch["text_mask"], video_tokens=video[owner])
        flat = match_score(fused["vtm_logits"])
        scores = torch.full((len(counts), int(counts.max())), float("-inf"), device=flat.device)
        column = torch.arange(len(owner), device=counts.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        scores[owner, column] = flat
        return scores

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        scores = self.option_scores(model, batch)
        loss = F.cross_entropy(scores, batch["answer_index"])
        acc = (scores.argmax(dim=1) == batch["answer_index"]).float().mean()
        return loss, {"qa_mc": loss, "qa_mc_acc": acc.detach()}

    def evaluate(self, model: Any, accelerator: Accelerator, split: str) -> dict[str, Any]:
        rows = self.require_split(split)
        out = self.predict_rows(
            accelerator, rows,
            lambda batch: {"prediction": self.option_scores(model, batch).argmax(dim=1),
                           "answer": batch["answer_index"]},
            f"{split} qa_mc",
        )
        num_options = torch.tensor([len(options) for options in rows["options"]], dtype=torch.float)
        return {
            "accuracy": accuracy(out["prediction"], out["answer"]), "n": len(rows),
            "chance": float((1.0 / num_options).mean() * 100),
        }
