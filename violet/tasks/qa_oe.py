"""Open-ended video QA as classification over the answer vocabulary built from the train split.

Out-of-vocabulary answers are skipped in training (no label exists) but count as wrong in evaluation, and
their number is reported as `n_oov` (VIOLET dropped them silently, inflating accuracy).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from violet.data.prepared import load_answer_vocab
from violet.data.text import question_with_answer, tokenize
from violet.metrics import accuracy
from violet.objectives import video_keys, vtc_loss
from violet.tasks.base import Task
from violet.tasks.registry import register

ANSWERS_FILE = "answers.json"
# Text scoring encodes every answer with every question of the batch: batch x answers short texts a step (1,600
# at 50 answers and batch 32), so "auto" keeps it to small vocabularies and uses the classifier beyond.
MAX_TEXT_SCORED_ANSWERS = 50
logger = logging.getLogger(__name__)


@register("qa-oe")
class OpenEndedQATask(Task):
    annotation_kind = "qa_oe"
    heads = ("vtc", "qa_oe")
    # Several questions per video: 8 epochs are ~300 steps on ~250 videos. Answers scored as texts learned
    # direction and speed where the classifier stayed at chance (docs/benchmarks.md, "Ablations").
    defaults = {"train": {"epochs": 8, "lr": 3e-4}, "objective": {"answer_scoring": "auto"}}

    def __init__(self, config: Any, tokenizer: Any, answers: list[str] | None = None) -> None:
        super().__init__(config, tokenizer)
        # A fine-tuned checkpoint carries its own vocabulary: its classifier's rows mean those words.
        self.answers = answers if answers is not None else load_answer_vocab(self.data_dir)
        top_k = config.objective.answer_top_k
        if top_k and top_k < len(self.answers):
            self.answers = self.answers[:top_k]
        self.answer_ids = {answer: position for position, answer in enumerate(self.answers)}
        if config.objective.answer_scoring == "auto":  # resolved here, so the saved config records the choice
            small = len(self.answers) <= MAX_TEXT_SCORED_ANSWERS
            config.objective.answer_scoring = "text" if small else "classifier"
            logger.info("qa-oe scores its %d answers with %s (objective.answer_scoring=auto)", len(self.answers),
                        "their texts" if small else f"a classifier (more than {MAX_TEXT_SCORED_ANSWERS})")
        self.by_text = config.objective.answer_scoring == "text"
        if self.by_text:  # answers are scored as texts by the dual encoder: no classifier head
            self.heads = ("vtc",)

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
        fields = {"text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"], "label": torch.tensor(labels)}
        if self.by_text:  # the candidates include each row's "question answer" text: no separate pair texts
            candidates = answer_candidates(self.tokenizer, batch["question"], self.answers,
                                           self.config.model.max_text_len)
            return {**fields, "candidate_ids": candidates["input_ids"], "candidate_mask": candidates["attention_mask"]}
        # "question answer" texts for the contrastive term (see training_step).
        texts = [question_with_answer(question, answer) for question, answer in zip(batch["question"], batch["answer"])]
        pairs = tokenize(self.tokenizer, texts, self.config.model.max_text_len)
        return {**fields, "pair_ids": pairs["input_ids"], "pair_mask": pairs["attention_mask"]}

    def answer_logits(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        video = model("video", frames=batch["frames"])
        if self.by_text:
            return text_answer_logits(model, video, batch["candidate_ids"], batch["candidate_mask"])[0], video
        return answer_logits(model, video, batch["text_ids"], batch["text_mask"]), video

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        video = model("video", frames=batch["frames"])
        if self.by_text:
            logits, candidates = text_answer_logits(model, video, batch["candidate_ids"], batch["candidate_mask"])
            pair = candidates[torch.arange(len(logits), device=logits.device), batch["label"]]
        else:
            logits = answer_logits(model, video, batch["text_ids"], batch["text_mask"])
            pair = model("text", ids=batch["pair_ids"], mask=batch["pair_mask"])["embed"]
        logits = logits.float()
        loss = F.cross_entropy(logits, batch["label"])
        # Contrastive term: each video against its "question answer" text and the others of the batch. The
        # classifier alone did not teach the video encoder motion; this signal does. Rows of one video are
        # positives of each other's videos (multi-positive targets).
        keys = video_keys(batch["video"], logits.device)
        terms = vtc_loss(pair, video["embed"], video["logit_scale"], self.config.objective.vtc_weight, keys)
        acc = (logits.argmax(dim=1) == batch["label"]).float().mean()
        return loss + terms["vtc"], {"qa_oe": loss, "vtc": terms["vtc"], "qa_oe_acc": acc.detach()}

    def evaluate(self, model: Any, accelerator: Accelerator, split: str, predictions: bool = False,
                 top_k: int = 10) -> dict[str, Any]:
        """Accuracy over all rows (out-of-vocabulary answers count as wrong); with `predictions`, also one dict
        per question (row order) with its `top_k` answers, from the same logits."""
        rows = self.require_split(split)
        k = min(top_k, len(self.answers))

        def compute(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            logits = self.answer_logits(model, batch)[0].float()
            out = {"prediction": logits.argmax(dim=1), "answer": batch["label"]}
            if predictions:
                top = logits.softmax(dim=-1).topk(k, dim=1)
                out.update(top_probability=top.values, top_answer=top.indices)
            return out

        out = self.predict_rows(accelerator, rows, compute, f"{split} qa_oe")
        metrics: dict[str, Any] = {
            "accuracy": accuracy(out["prediction"], out["answer"]), "n": len(rows),
            "n_oov": int((out["answer"] < 0).sum()), "num_answers": len(self.answers),
        }
        if predictions:
            metrics["predictions"] = self.answer_predictions(rows, out)
        return metrics

    def answer_predictions(self, rows: Any, out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One dict per question from evaluation's gathered outputs; `correct` is what accuracy() counts."""
        predictions = []
        for index, row in enumerate(rows):
            predicted, label = int(out["prediction"][index]), int(out["answer"][index])
            top = zip(out["top_answer"][index].tolist(), out["top_probability"][index].tolist())
            predictions.append({
                "index": index, "video": row["video"], "question": row["question"],
                "prediction": self.answers[predicted], "answer": row["answer"], "in_vocabulary": label >= 0,
                "correct": predicted == label and label >= 0,
                "top": [{"answer": self.answers[i], "probability": p} for i, p in top],
            })
        return predictions


def answer_logits(model: Any, video: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits over the answer vocabulary of each question (token ids and mask) about its video (`video`, a video
    pass's output, one row per question). The task and violet.load both answer with this."""
    text = model("text", ids=ids, mask=mask, embed=False)["tokens"]
    return model("fusion", text_tokens=text, text_mask=mask, video_tokens=video["tokens"])["answer_logits"]


def answer_candidates(tokenizer: Any, questions: list[str], answers: list[str], max_len: int) -> dict:
    """Tokens of every "question answer" text, question-major: row q * len(answers) + a."""
    texts = [question_with_answer(question, answer) for question in questions for answer in answers]
    return tokenize(tokenizer, texts, max_len)


def text_answer_logits(
    model: Any, video: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(questions, answers) logits: the scaled dual-encoder similarity of each "question answer" text
    (answer_candidates' rows) to its question's video (`video`, one row per question); and the texts' embeddings,
    (questions, answers, dim), which training reuses for its contrastive term."""
    text = model("text", ids=ids, mask=mask)
    embed = text["embed"].view(video["embed"].shape[0], -1, text["embed"].shape[-1])
    logits = text["logit_scale"].float() * torch.einsum("qad,qd->qa", embed.float(), video["embed"].float())
    return logits, embed
