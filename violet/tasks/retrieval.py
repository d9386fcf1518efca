"""Text-video retrieval: fine-tune with VTC + hard-negative VTM; evaluate dual-encoder ranking re-ranked by VTM."""
from __future__ import annotations

import zlib
from typing import Any

import datasets
import torch
from accelerate import Accelerator

from violet.data.datasets import make_collate, unique_videos
from violet.data.text import tokenize
from violet.distributed import gather_by_index, run_sharded
from violet.metrics import retrieval_metrics
from violet.objectives import sample_hard_negatives, vtc_loss, vtm_loss
from violet.objectives.global_batch import gather_with_grad, local_offset, rank_sizes
from violet.objectives.vtm import pad_tokens
from violet.tasks.base import Task, video_keys
from violet.tasks.registry import register


HELDOUT = "train-heldout"
RERANK_CANDIDATES = (0, 4, 16, 64)


def match_score(vtm_logits: torch.Tensor) -> torch.Tensor:
    """Log-odds of "match" from the 2-way VTM head, the score used for re-ranking and option scoring."""
    logits = vtm_logits.float()
    return logits[:, 1] - logits[:, 0]


@register("retrieval")
class RetrievalTask(Task):
    annotation_kind = "captions"
    heads = ("vtc", "vtm")
    supports_zero_shot = True
    # No VTM by default: its fused pass over positives and two hard negatives costs ~4x the dual-encoder step on
    # CPU; turn it on (objective.vtm_weight=1) and the run measures on val whether re-ranking helps.
    defaults = {"train": {"epochs": 40, "lr": 5e-4}, "objective": {"vtm_weight": 0.0}}

    def __init__(self, config: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(config, tokenizer, **kwargs)
        if config.objective.vtm_weight == 0:
            # No matching loss: no VTM head and no fused pass (it would cost most of the step for nothing, and an
            # untrained head must not re-rank); evaluation is dual-encoder only.
            self.heads = tuple(head for head in self.heads if head != "vtm")

    def text_fields(self, batch: dict[str, Any]) -> dict[str, Any]:
        tokens = tokenize(self.tokenizer, batch["caption"], self.config.model.max_text_len)
        return {"text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"]}

    def contrastive_and_matching(
        self, model: Any, batch: dict[str, Any], generator: torch.Generator, video_mask: torch.Tensor | None = None
    ) -> tuple:
        """VTC over the global batch and VTM on positives + hard negatives; returns (terms, video, text).

        `video_mask` (bool (B, N), True = hidden) makes MAE-style models (SimVTP) encode visible tubes only."""
        objective = self.config.objective
        video = model("video", frames=batch["frames"], mvm_mask=video_mask)
        text = model("text", ids=batch["text_ids"], mask=batch["text_mask"])
        keys = video_keys(batch["video"], batch["frames"].device)
        sizes = rank_sizes(keys.shape[0], keys.device)  # exchanged once, used by every global-batch gather below
        terms = vtc_loss(text["embed"], video["embed"], text["logit_scale"], objective.vtc_weight, keys, sizes)
        if "vtm" not in self.heads:
            terms["vtm"] = torch.zeros((), device=keys.device)
            return terms, video, text
        negatives = self.matching_negatives(text, video, batch["text_mask"], keys, sizes)
        terms.update(
            vtm_loss(
                lambda t, m, v: model("fusion", text_tokens=t, text_mask=m, video_tokens=v)["vtm_logits"],
                text["tokens"], batch["text_mask"], video["tokens"], *negatives, objective.vtm_weight,
            )
        )
        return terms, video, text

    def matching_negatives(
        self, text: dict, video: dict, text_mask: torch.Tensor, keys: torch.Tensor, sizes: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negative video tokens per text, negative text tokens per video, their masks), hard-sampled.

        With objective.vtm_negatives="global" the candidates are the global batch and the draw is made for the
        whole global batch with the task's rank-shared generator, each rank keeping its own rows: the same
        pairs as one process holding the whole batch. "local" samples within this rank's batch only.
        """
        objective = self.config.objective
        if objective.vtm_negatives not in ("global", "local"):
            raise ValueError(f"objective.vtm_negatives must be global|local, got {objective.vtm_negatives!r}")
        pooled = objective.vtm_negatives == "global"
        sizes = sizes if pooled else [keys.shape[0]]
        gather = (lambda tensor: gather_with_grad(tensor, sizes)) if pooled else (lambda tensor: tensor)
        with torch.no_grad():
            all_keys = gather(keys)
            similarity = gather(text["embed"].detach()).float() @ gather(video["embed"].detach()).float().T
            video_for_text, text_for_video = sample_hard_negatives(
                similarity.cpu(), (all_keys[:, None] == all_keys[None, :]).cpu(), objective.vtm_hard_negatives,
                self.global_generator,
            )
            mine = slice(local_offset(sizes), local_offset(sizes) + keys.shape[0]) if pooled else slice(None)
            video_for_text = video_for_text[mine].to(keys.device)
            text_for_video = text_for_video[mine].to(keys.device)
        # Token pools keep gradients: a negative drawn from another rank trains that rank's encoders too.
        length = self.config.model.max_text_len if pooled else text_mask.shape[1]  # equal shapes for the gather
        text_pool = gather(pad_tokens(text["tokens"], length))
        mask_pool = gather(pad_tokens(text_mask, length))
        video_pool = gather(video["tokens"])
        return video_pool[video_for_text], text_pool[text_for_video], mask_pool[text_for_video]

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        terms, _, _ = self.contrastive_and_matching(model, batch, generator)
        return terms["vtc"] + terms["vtm"], terms

    # ----- evaluation -----
    def train_rows(self) -> Any:
        rows = self.require_split("train")
        return rows if self.has_split("val") or "vtm" not in self.heads else rows.filter(
            lambda video: not _held_back(video), input_columns="video")

    def eval_rows(self, split: str) -> Any:
        """Rows of a split; "train-heldout" is the slice of train kept out of training to choose re-ranking
        when the data has no val split."""
        if split == HELDOUT:
            return self.require_split("train").filter(_held_back, input_columns="video")
        return self.require_split(split)

    def evaluate(self, model: Any, accelerator: Accelerator, split: str) -> dict[str, Any]:
        rows = self.eval_rows(split)
        features = self.encode_split(model, accelerator, rows, split)
        rerank_k = self.config.eval.rerank_k if "vtm" in self.heads else 0
        return {**self.rank(model, accelerator, features, rerank_k), "rerank_k": rerank_k}

    def tune_evaluation(self, model: Any, accelerator: Accelerator) -> dict[str, Any] | None:
        """Choose eval.rerank_k by data: t2v R@1 of each k on val (or the held-back slice of train); ties and
        near-ties (within one query) go to the smaller k, so re-ranking is never worse than the dual encoder."""
        if "vtm" not in self.heads:
            self.config.eval.rerank_k = 0
            return {"rerank_k": 0, "reason": "no VTM head (objective.vtm_weight=0): dual encoder only"}
        split = "val" if self.has_split("val") else HELDOUT
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
        videos, text_to_video = unique_videos(rows)
        batch_size = self.config.train.eval_batch_size
        max_len = self.config.model.max_text_len

        video_loader = accelerator.prepare(
            self.loader(self.clip_dataset(videos, train=False, num_frames=self.eval_num_frames()), batch_size,
                        False, make_collate(lambda batch: {}))
        )
        video_out = gather_by_index(
            accelerator, video_loader,
            lambda batch: {k: v for k, v in model("video", frames=batch["frames"]).items() if k != "logit_scale"},
            len(videos), f"{split} videos",
        )

        def encode_texts(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            tokens = tokenize(self.tokenizer, batch["caption"], max_len, fixed_length=True)
            ids, mask = tokens["input_ids"].to(accelerator.device), tokens["attention_mask"].to(accelerator.device)
            out = model("text", ids=ids, mask=mask)
            return {"embed": out["embed"], "tokens": out["tokens"], "mask": mask}

        text_loader = accelerator.prepare(
            self.loader(_CaptionRows(rows), batch_size, False, _collate_captions)
        )
        text_out = gather_by_index(accelerator, text_loader, encode_texts, len(rows), f"{split} captions")
        return {"video": video_out, "text": text_out, "text_to_video": text_to_video}

    def rank(self, model: Any, accelerator: Accelerator, features: dict[str, Any], rerank_k: int) -> dict[str, Any]:
        """Retrieval metrics of dual-encoder ranking, with the top-k per query re-ranked by VTM when k != 0."""
        video_out, text_out = features["video"], features["text"]
        similarity = text_out["embed"].float() @ video_out["embed"].float().T  # (texts, videos)
        t2v_scores, v2t_scores = similarity.clone(), similarity.T.clone()
        if rerank_k != 0:
            batch_size = self.config.train.eval_batch_size
            k_videos = similarity.shape[1] if rerank_k < 0 else min(rerank_k, similarity.shape[1])
            k_texts = similarity.shape[0] if rerank_k < 0 else min(rerank_k, similarity.shape[0])
            t2v_top = similarity.topk(k_videos, dim=1).indices
            v2t_top = similarity.T.topk(k_texts, dim=1).indices
            pairs = sorted(
                {(t, int(v)) for t in range(similarity.shape[0]) for v in t2v_top[t]}
                | {(int(t), v) for v in range(similarity.shape[1]) for t in v2t_top[v]}
            )

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

            pair_scores = run_sharded(accelerator, pairs, batch_size, score_pairs)
            matched = {pair: float(score) for pair, score in zip(pairs, pair_scores)}
            # Re-ranked items go above the rest, ordered by their VTM score; the rest keep dual-encoder order.
            offset = 1e4
            for t in range(similarity.shape[0]):
                for v in t2v_top[t].tolist():
                    t2v_scores[t, v] = offset + matched[(t, v)]
            for v in range(similarity.shape[1]):
                for t in v2t_top[v].tolist():
                    v2t_scores[v, t] = offset + matched[(t, v)]
        return retrieval_metrics(t2v_scores, features["text_to_video"], v2t_scores)


def _held_back(video: str) -> bool:
    """About 1 in 10 videos, by a hash of the id (stable across runs and processes)."""
    return zlib.crc32(video.encode()) % 10 == 0


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
