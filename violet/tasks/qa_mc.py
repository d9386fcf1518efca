"""Multiple-choice video QA. Each "question + option" text gets the dual-encoder similarity to the video (the
contrastive path) as its score; with `objective.vtm_weight` > 0 also the cross-modal VTM match of the fused pair,
which costs a fused pass per option. Training is cross-entropy over a question's options plus a contrastive term
that pairs each video with its correct "question + answer" text against the other videos of the batch: that term
is what teaches the video encoder motion from QA data alone (the option loss by itself stayed at chance).
With `objective.mlm_weight` > 0 the correct "question + answer" text, words masked, is also fused with the clip
and its masked words predicted (MLM as an auxiliary term, as in pretraining). With `objective.temporal_weight` > 0
the correct text must also score its clip above the same clip altered in time (as in retrieval).
The same scores work zero-shot from a pretrained checkpoint (with its VTM head when it has one).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from violet.data.text import question_with_answer, tokenize
from violet.metrics import accuracy
from violet.objectives import check_temporal_negative, match_score, temporal_order_terms, video_keys, vtc_loss
from violet.tasks.base import Task
from violet.tasks.companions import companion_terms, load_companions
from violet.tasks.ranking import caption_heads, masked_language_terms
from violet.tasks.registry import register


@register("qa-mc")
class MultipleChoiceQATask(Task):
    annotation_kind = "qa_mc"
    heads = ("vtc", "vtm", "mlm")
    supports_zero_shot = True
    # The task's own recipe (the paper presets'): VTM match on, no MLM (the field's 1.0 is pretraining's). The tiny
    # preset scores by the dual encoder and adds MLM (violet/models/presets.py, chosen on val).
    defaults = {"train": {"epochs": 20, "lr": 3e-4, "batch_size": 16}, "objective": {"mlm_weight": 0.0}}

    def __init__(self, config: Any, tokenizer: Any) -> None:
        super().__init__(config, tokenizer)
        # objective.vtm_weight=0: options are scored by the dual encoder alone, without the fused pass per option;
        # objective.mlm_weight=0 (the default): no masked pass over the answer text.
        self.heads = caption_heads(self.heads, config.objective)
        check_temporal_negative(config.objective, config.model)
        self.companions = None  # objective.companion_weight > 0: loaded for training only

    def prepare_training(self) -> None:
        self.companions = load_companions(self, self.annotation_kind)

    def text_fields(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts, counts = [], []
        for question, options in zip(batch["question"], batch["options"]):
            texts.extend(question_with_answer(question, option) for option in options)
            counts.append(len(options))
        tokens = tokenize(self.tokenizer, texts, self.config.model.max_text_len)
        return {
            "text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"],
            "option_counts": torch.tensor(counts), "answer_index": torch.tensor(batch["answer"]),
        }

    def option_scores(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict, dict]:
        """(B, max options) scores, missing options (rows with fewer) -inf; and the video and text passes."""
        counts = batch["option_counts"]
        video = model("video", frames=batch["frames"])
        owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        flat, text = score_options(model, video, batch["text_ids"], batch["text_mask"], owner, "vtm" in self.heads)
        scores = torch.full((len(counts), int(counts.max())), float("-inf"), device=flat.device)
        column = torch.arange(len(owner), device=counts.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        scores[owner, column] = flat
        return scores, video, text

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        scores, video, text = self.option_scores(model, batch)
        answer = batch["answer_index"]
        loss = F.cross_entropy(scores, answer)
        # The correct option's text of each row, against the other videos of the (global) batch.
        first_option = batch["option_counts"].cumsum(0) - batch["option_counts"]
        correct = first_option + answer
        keys = video_keys(batch["video"], answer.device)
        terms = vtc_loss(text["embed"][correct], video["embed"], video["logit_scale"],
                         self.config.objective.vtc_weight, keys)
        if "mlm" in self.heads:  # the answer text's masked words predicted from it fused with the clip
            answer_text = {"text_ids": batch["text_ids"][correct], "text_mask": batch["text_mask"][correct]}
            terms.update(masked_language_terms(self, model, answer_text, video["tokens"], None, generator))
        objective = self.config.objective
        if objective.temporal_weight > 0:  # the clip altered in time must score lower against the correct text
            terms.update(temporal_order_terms(model, batch["frames"], text["embed"][correct], video,
                                              objective.temporal_weight, objective.temporal_negative,
                                              objective.temporal_rows))
        if self.companions is not None:  # the clip's captions or other questions, against the batch's clips
            own = [question_with_answer(question, options[index]) for question, options, index
                   in zip(batch["question"], batch["options"], answer.tolist())]
            terms.update(companion_terms(self, model, batch, own, video, generator))
        acc = (scores.argmax(dim=1) == answer).float().mean()
        logs = {"qa_mc": loss, **terms, "qa_mc_acc": acc.detach()}
        extra = sum(terms.get(name, 0.0) for name in ("mlm", "temporal", "companion"))
        return loss + terms["vtc"] + extra, logs

    def evaluate(self, model: Any, accelerator: Accelerator, split: str, predictions: bool = False,
                 top_k: int = 10) -> dict[str, Any]:
        """Accuracy and chance; with `predictions`, also one dict per question (row order) from the same
        scores (`top_k` is unused: every option's score is listed)."""
        rows = self.require_split(split)
        width = max(len(options) for options in rows["options"])  # one width for every batch, so they concatenate

        def compute(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            scores = self.option_scores(model, batch)[0]
            out = {"prediction": scores.argmax(dim=1), "answer": batch["answer_index"]}
            if predictions:
                out["scores"] = F.pad(scores.float(), (0, width - scores.shape[1]), value=float("-inf"))
            return out

        out = self.predict_rows(accelerator, rows, compute, f"{split} qa_mc")
        num_options = torch.tensor([len(options) for options in rows["options"]], dtype=torch.float)
        metrics: dict[str, Any] = {
            "accuracy": accuracy(out["prediction"], out["answer"]), "n": len(rows),
            "chance": float((1.0 / num_options).mean() * 100),
        }
        if predictions:
            metrics["predictions"] = option_predictions(rows, out)
        return metrics


def score_options(
    model: Any, video: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, owner: torch.Tensor,
    matching: bool = True,
) -> tuple[torch.Tensor, dict]:
    """The score of each "question option" text against its video (`owner[i]` = the row of `video`, a video
    pass's output, that text i belongs to): the scaled dual-encoder similarity, plus with `matching` (a model
    with a VTM head) the VTM match log-odds of the fused pair. Returns the flat scores and the text pass. The
    task and violet.load both score with this."""
    text = model("text", ids=ids, mask=mask)
    dual = text["logit_scale"].float() * (text["embed"].float() * video["embed"][owner].float()).sum(dim=-1)
    if not matching:
        return dual, text
    fused = model("fusion", text_tokens=text["tokens"], text_mask=mask, video_tokens=video["tokens"][owner])
    return match_score(fused["vtm_logits"]) + dual, text


def option_predictions(rows: Any, out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One dict per question from evaluation's gathered outputs; `correct` is what accuracy() counts."""
    predictions = []
    for index, row in enumerate(rows):
        predicted, answer = int(out["prediction"][index]), int(out["answer"][index])
        predictions.append({
            "index": index, "video": row["video"], "question": row["question"], "options": list(row["options"]),
            "prediction": predicted, "answer": answer, "correct": predicted == answer and answer >= 0,
            "scores": out["scores"][index, :len(row["options"])].tolist(),
        })
    return predictions
