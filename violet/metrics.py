"""Retrieval and QA metrics, computed from full score matrices so they can be checked by hand."""
from __future__ import annotations

import torch


def ranks_of_targets(scores: torch.Tensor, targets: list[set[int]] | torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked correct column for each row of `scores` (higher score = better).

    `targets[i]` is the set of correct columns for row i (a video can have several captions). Ties count
    against the query (a correct item tied with a wrong one gets the worse rank), so constant scores never
    look good.
    """
    ranks = []
    for row, correct in enumerate(targets):
        correct_idx = torch.tensor(sorted(correct) if isinstance(correct, set) else [int(correct)])
        row_scores = scores[row].float()
        best = row_scores[correct_idx].max()
        wrong = torch.ones_like(row_scores, dtype=torch.bool)
        wrong[correct_idx] = False
        ranks.append(int((row_scores[wrong] >= best).sum().item()) + 1)
    return torch.tensor(ranks, dtype=torch.float)


def recall_metrics(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    """R@1/5/10 in percent, median and mean rank."""
    return {
        f"{prefix}_r1": float((ranks <= 1).float().mean() * 100),
        f"{prefix}_r5": float((ranks <= 5).float().mean() * 100),
        f"{prefix}_r10": float((ranks <= 10).float().mean() * 100),
        f"{prefix}_medr": float(ranks.median()),
        f"{prefix}_meanr": float(ranks.mean()),
    }


def retrieval_metrics(
    text_video_scores: torch.Tensor, text_to_video: torch.Tensor, video_text_scores: torch.Tensor | None = None
) -> dict[str, float]:
    """scores: (num_texts, num_videos); text_to_video[i] = the video of caption i.

    t2v ranks each caption's own video; v2t ranks, for each video, the best of its captions, using
    `video_text_scores` (num_videos, num_texts) when the two directions were re-ranked separately.
    """
    num_texts, num_videos = text_video_scores.shape
    if text_to_video.shape[0] != num_texts:
        raise ValueError(f"{num_texts} score rows but {text_to_video.shape[0]} caption labels")
    captions_of_video: list[set[int]] = [set() for _ in range(num_videos)]
    for text, video in enumerate(text_to_video.tolist()):
        captions_of_video[video].add(text)
    if any(not captions for captions in captions_of_video):
        raise ValueError("every video in a retrieval evaluation needs at least one caption")
    v2t_scores = text_video_scores.T if video_text_scores is None else video_text_scores
    t2v = ranks_of_targets(text_video_scores, text_to_video)
    v2t = ranks_of_targets(v2t_scores, captions_of_video)
    return {**recall_metrics(t2v, "t2v"), **recall_metrics(v2t, "v2t"), "n": num_texts, "n_videos": num_videos}


def accuracy(predictions: torch.Tensor, answers: torch.Tensor) -> float:
    """Percent of rows where prediction == answer; an answer of -1 (out of vocabulary) is always wrong."""
    if predictions.numel() == 0:
        raise ValueError("accuracy of an empty evaluation set")
    correct = (predictions == answers) & (answers >= 0)
    return float(correct.float().mean() * 100)
