"""What the two caption tasks (pretrain, retrieval) share, as pieces they hold rather than inherit: caption text
fields, the rule that a zero-weight loss has no head, the joint masked-language pass, the slice of train held
back to tune re-ranking, and text-video retrieval evaluation (dual-encoder ranking, with the top-k re-ranked by
the VTM head). qa-mc holds the zero-weight rule and the masked-language pass too.
"""
from __future__ import annotations

import zlib
from typing import Any

import datasets
import torch
from accelerate import Accelerator

from violet.config import ObjectiveConfig
from violet.data.collate import make_collate, unique_videos
from violet.data.text import tokenize
from violet.distributed import gather_by_index, run_sharded
from violet.metrics import ranks_of_targets, retrieval_metrics
from violet.objectives import mask_text_tokens, match_score, mlm_loss
from violet.tasks.base import Task

HELDOUT = "train-heldout"
RERANK_CANDIDATES = (0, 4, 16, 64)
RERANKED_OFFSET = 1e4  # above any cosine similarity: re-ranked items sort above the rest


def caption_fields(tokenizer: Any, captions: list[str], max_len: int) -> dict[str, Any]:
    """Text fields of a caption batch (runs in DataLoader workers)."""
    tokens = tokenize(tokenizer, captions, max_len)
    return {"text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"]}


def caption_heads(heads: tuple[str, ...], objective: ObjectiveConfig) -> tuple[str, ...]:
    """A task's heads without those whose loss weight is 0 (objective.vtm_weight, mlm_weight, mvm_weight).

    A zero-weight loss would still cost its pass (VTM: a fused pass over 3B pairs, most of the step; MVM: a second,
    masked trip through the video encoder), and an untrained head must not be used: without VTM, evaluation is
    dual-encoder only."""
    weights = {"vtm": objective.vtm_weight, "mlm": objective.mlm_weight, "mvm": objective.mvm_weight}
    return tuple(head for head in heads if weights.get(head, 1.0) != 0)


def masked_language_terms(task: Task, model: Any, batch: dict[str, Any], video_tokens: torch.Tensor,
                          hidden: torch.Tensor | None, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The joint fused pass over the caption (words masked when the task has an MLM head) and `video_tokens`: the
    MLM terms, and the MVM terms at `hidden` (None: no MVM; the task then holds `mvm_target`)."""
    objective = task.config.objective
    if 0 < objective.mlm_rows < len(batch["text_ids"]):  # the first rows only (objective.mlm_rows)
        rows = objective.mlm_rows
        batch = {key: batch[key][:rows] for key in ("text_ids", "text_mask", "frames") if key in batch}
        video_tokens = video_tokens[:rows]
        hidden = None if hidden is None else hidden[:rows]
    ids, positions = batch["text_ids"], None
    if "mlm" in task.heads:
        ids, positions = mask_text_tokens(
            batch["text_ids"], batch["text_mask"], task.special_ids.to(ids.device), task.tokenizer.mask_token_id,
            len(task.tokenizer), objective.mlm_prob, generator,
        )
    text = model("text", ids=ids, mask=batch["text_mask"], embed=False)
    fused = model("fusion", text_tokens=text["tokens"], text_mask=batch["text_mask"], video_tokens=video_tokens,
                  mlm_positions=positions, mvm_positions=hidden)
    terms = {}
    if positions is not None:
        terms.update(mlm_loss(fused["mlm_logits"], batch["text_ids"], positions, objective.mlm_weight))
    if hidden is not None:
        terms.update(task.mvm_target.loss(fused["mvm_pred"], batch["frames"], hidden))
    return terms


def held_back(video: str) -> bool:
    """About 1 in 10 videos, by a hash of the id (stable across runs and processes)."""
    return zlib.crc32(video.encode()) % 10 == 0


def retrieval_predictions(
    scores: torch.Tensor, text_to_video: torch.Tensor, captions: list[str], video_ids: list[str], top_k: int
) -> list[dict[str, Any]]:
    """One dict per caption, in row order: its text, gold video, the gold video's 1-based rank and the top-k
    videos, from `scores` (texts, videos), the matrix the t2v metrics are computed from.

    The rank is ranks_of_targets' (ties count against the query), and the listed order follows it: the gold
    video sits at position rank-1 of the list whenever rank <= k, so R@1 recomputed from the list or from the
    ranks equals the metric. A re-ranked entry's score is its VTM match log-odds (RERANKED_OFFSET removed,
    `reranked` true); other scores are dual-encoder cosines."""
    ranks = ranks_of_targets(scores, text_to_video).long().tolist()
    num_videos = scores.shape[1]
    k = min(top_k, num_videos)
    rows = []
    for text, caption in enumerate(captions):
        gold, rank = int(text_to_video[text]), ranks[text]
        wrong = scores[text].float().clone()
        wrong[gold] = float("-inf")
        order = wrong.topk(min(k, num_videos - 1)).indices.tolist()
        if rank <= k:
            order.insert(rank - 1, gold)
        rows.append({
            "index": text, "text": caption, "video": video_ids[gold], "rank": rank, "correct": rank == 1,
            "top": [_ranked_entry(float(scores[text, v]), video_ids[v], v == gold) for v in order[:k]],
        })
    return rows


def _ranked_entry(score: float, video: str, correct: bool) -> dict[str, Any]:
    # Cosines lie in [-1, 1] and VTM log-odds far below the offset: above half of it means re-ranked.
    reranked = score > RERANKED_OFFSET / 2
    return {"video": video, "score": score - RERANKED_OFFSET if reranked else score, "reranked": reranked,
            "correct": correct}


class EvaluatedByRetrieval:
    """For caption tasks that hold a RetrievalEvaluator as `self.retrieval`: their train rows, evaluation and
    evaluation tuning are its (a few delegating methods, shared rather than written into each task)."""

    retrieval: RetrievalEvaluator

    def train_rows(self) -> Any:
        return self.retrieval.train_rows()

    def evaluate(self, model: Any, accelerator: Accelerator, split: str, predictions: bool = False,
                 top_k: int = 10) -> dict[str, Any]:
        return self.retrieval.evaluate(model, accelerator, split, predictions, top_k)

    def tune_evaluation(self, model: Any, accelerator: Accelerator) -> dict[str, Any] | None:
        return self.retrieval.tune(model, accelerator)


class RetrievalEvaluator:
    """Zero-shot or fine-tuned retrieval evaluation of a caption task, and the data-driven choice of
    eval.rerank_k. It reads the task's splits, loaders, tokenizer and config; VTM re-ranking is used only when
    the task's model has the VTM head."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.config = task.config

    @property
    def matching(self) -> bool:
        return "vtm" in self.task.heads

    def train_rows(self) -> Any:
        """The train split, less the held-back slice when there is no val split to tune re-ranking on."""
        rows = self.task.require_split("train")
        if self.task.has_split("val") or not self.matching:
            return rows
        return rows.filter(lambda video: not held_back(video), input_columns="video")

    def eval_rows(self, split: str) -> Any:
        """Rows of a split; "train-heldout" is the slice of train kept out of training to choose re-ranking
        when the data has no val split."""
        if split == HELDOUT:
            return self.task.require_split("train").filter(held_back, input_columns="video")
        return self.task.require_split(split)

    def evaluate(self, model: Any, accelerator: Accelerator, split: str, predictions: bool = False,
                 top_k: int = 10) -> dict[str, Any]:
        """Retrieval metrics; with `predictions`, also one dict per caption (row order) ranked by the very
        score matrix the metrics come from (see retrieval_predictions)."""
        rows = self.eval_rows(split)
        features = self.encode_split(model, accelerator, rows, split)
        rerank_k = self.config.eval.rerank_k if self.matching else 0
        t2v_scores, v2t_scores = self.score_matrices(model, accelerator, features, rerank_k)
        metrics = {**retrieval_metrics(t2v_scores, features["text_to_video"], v2t_scores), "rerank_k": rerank_k}
        if predictions:
            metrics["predictions"] = retrieval_predictions(
                t2v_scores, features["text_to_video"], rows["caption"], features["video_ids"], top_k)
        return metrics

    def tune(self, model: Any, accelerator: Accelerator) -> dict[str, Any]:
        """Choose eval.rerank_k by data: t2v R@1 of each k on val (or the held-back slice of train); ties and
        near-ties (within one query) go to the smaller k, so re-ranking is never worse than the dual encoder."""
        if not self.matching:
            self.config.eval.rerank_k = 0
            return {"rerank_k": 0, "reason": "no VTM head (objective.vtm_weight=0): dual encoder only"}
        split = "val" if self.task.has_split("val") else HELDOUT
        rows = self.eval_rows(split)
        features = self.encode_split(model, accelerator, rows, split)
        candidates = [k for k in RERANK_CANDIDATES if k < len(unique_videos(rows)[0])]
        measured = {k: self.rank(model, accelerator, features, k)["t2v_r1"] for k in candidates}
        one_query = 100.0 / len(rows)
        best = candidates[0]
        for k in candidates[1:]:
            if measured[k] > measured[best] + one_query / 2:
                best = k
        self.config.eval.rerank_k = best
        return {"rerank_k": best, "split": split, "rows": len(rows), "t2v_r1_by_k": measured}

    def encode_split(self, model: Any, accelerator: Accelerator, rows: Any, split: str) -> dict[str, Any]:
        """Video tokens and embeddings of the split's distinct videos, caption tokens and embeddings."""
        task = self.task
        videos, text_to_video = unique_videos(rows)
        batch_size = self.config.train.eval_batch_size
        max_len = self.config.model.max_text_len

        video_loader = accelerator.prepare(
            task.loader(task.clip_dataset(videos, train=False, num_frames=task.eval_num_frames()), batch_size,
                        False, make_collate(lambda batch: {}))
        )
        video_out = gather_by_index(
            accelerator, video_loader,
            lambda batch: {k: v for k, v in model("video", frames=batch["frames"]).items() if k != "logit_scale"},
            len(videos), f"{split} videos",
        )

        def encode_texts(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            tokens = tokenize(task.tokenizer, batch["caption"], max_len, fixed_length=True)
            ids, mask = tokens["input_ids"].to(accelerator.device), tokens["attention_mask"].to(accelerator.device)
            out = model("text", ids=ids, mask=mask)
            return {"embed": out["embed"], "tokens": out["tokens"], "mask": mask}

        text_loader = accelerator.prepare(task.loader(_CaptionRows(rows), batch_size, False, _collate_captions))
        text_out = gather_by_index(accelerator, text_loader, encode_texts, len(rows), f"{split} captions")
        return {"video": video_out, "text": text_out, "text_to_video": text_to_video, "video_ids": videos["video"]}

    def rank(self, model: Any, accelerator: Accelerator, features: dict[str, Any], rerank_k: int) -> dict[str, Any]:
        """Retrieval metrics of dual-encoder ranking, with the top-k per query re-ranked by VTM when k != 0."""
        t2v_scores, v2t_scores = self.score_matrices(model, accelerator, features, rerank_k)
        return retrieval_metrics(t2v_scores, features["text_to_video"], v2t_scores)

    def score_matrices(
        self, model: Any, accelerator: Accelerator, features: dict[str, Any], rerank_k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(texts, videos) and (videos, texts) ranking scores: the dual-encoder similarity, with each query's
        top-k set to RERANKED_OFFSET + its VTM match score when k != 0."""
        video_out, text_out = features["video"], features["text"]
        similarity = text_out["embed"].float() @ video_out["embed"].float().T  # (texts, videos)
        t2v_scores, v2t_scores = similarity.clone(), similarity.T.clone()
        if rerank_k != 0:
            k_videos = similarity.shape[1] if rerank_k < 0 else min(rerank_k, similarity.shape[1])
            k_texts = similarity.shape[0] if rerank_k < 0 else min(rerank_k, similarity.shape[0])
            t2v_top = similarity.topk(k_videos, dim=1).indices
            v2t_top = similarity.T.topk(k_texts, dim=1).indices
            pairs = sorted(
                {(t, int(v)) for t in range(similarity.shape[0]) for v in t2v_top[t]}
                | {(int(t), v) for v in range(similarity.shape[1]) for t in v2t_top[v]}
            )
            matched = self.match_pairs(model, accelerator, features, pairs)
            # Re-ranked items go above the rest, ordered by their VTM score; the rest keep dual-encoder order.
            for t in range(similarity.shape[0]):
                for v in t2v_top[t].tolist():
                    t2v_scores[t, v] = RERANKED_OFFSET + matched[(t, v)]
            for v in range(similarity.shape[1]):
                for t in v2t_top[v].tolist():
                    v2t_scores[v, t] = RERANKED_OFFSET + matched[(t, v)]
        return t2v_scores, v2t_scores

    def match_pairs(
        self, model: Any, accelerator: Accelerator, features: dict[str, Any], pairs: list[tuple[int, int]]
    ) -> dict[tuple[int, int], float]:
        """VTM match score of each (text, video) pair of encoded features, computed sharded across processes."""
        video_out, text_out = features["video"], features["text"]

        def score_pairs(chunk: list[tuple[int, int]]) -> torch.Tensor:
            text_idx = torch.tensor([t for t, _ in chunk])
            video_idx = torch.tensor([v for _, v in chunk])
            out = model(
                "fusion",
                text_tokens=text_out["tokens"][text_idx].to(accelerator.device),
                text_mask=text_out["mask"][text_idx].to(accelerator.device),
                video_tokens=video_out["tokens"][video_idx].to(accelerator.device),
            )
            return match_score(out["vtm_logits"])

        pair_scores = run_sharded(accelerator, pairs, self.config.train.eval_batch_size, score_pairs)
        return {pair: float(score) for pair, score in zip(pairs, pair_scores)}


class _CaptionRows(torch.utils.data.Dataset):
    """Captions only (no frames), for encoding the text side of a retrieval evaluation."""

    def __init__(self, rows: datasets.Dataset) -> None:
        self.captions = rows["caption"]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, "caption": self.captions[index]}


def _collate_captions(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"index": torch.tensor([s["index"] for s in samples]), "caption": [s["caption"] for s in samples]}
