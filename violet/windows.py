"""Long videos in bounded memory: windows streamed through the video encoder and pooled per video.

With `window_stride`, violet.api cuts a long video into windows of the trained clip length. Decoding a video's
windows at once ([W, T, 3, S, S]) and keeping every window's tokens for re-ranking grows with the video: a
two-hour film at a 2 s stride is 3,600 windows, ~4 GB of uint8 pixels at 224 px and ~2.8 GB of base-size tokens.
Here windows are decoded one at a time (the next batch in a background thread while this one is encoded) and
encoded `batch_size` at a time; per video only a running sum of window embeddings is kept, whose normalised mean
is the video's embedding as before. Re-ranking streams the windows of the videos some text has in its top k a
second time and keeps, per (text, video), the best window's match score. Memory is bounded by the batch, not by
the length of any video.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from violet.objectives import match_score

Batch = tuple[torch.Tensor | None, list[int], dict[int, Exception]]  # clips, owner of each, failures since


def stream_windows(model: Any, videos: Sequence[Any], batch_size: int, window: dict[str, Any]) -> Iterator[Batch]:
    """Batches of at most `batch_size` windows of `videos`, in order, with the index of the video each window
    belongs to, and the videos that failed since the previous batch (a video that fails part-way is reported
    then; the caller drops what it already had of it)."""
    from violet.api import VideoFileError

    clips: list[torch.Tensor] = []
    owners: list[int] = []
    failures: dict[int, Exception] = {}
    for index, video in enumerate(videos):
        try:
            for clip in model.window_clips(video, **window):
                clips.append(clip)
                owners.append(index)
                if len(clips) == batch_size:
                    yield torch.stack(clips), owners, failures
                    clips, owners, failures = [], [], {}
        except VideoFileError as error:
            failures[index] = error
    if clips or failures:
        yield (torch.stack(clips) if clips else None), owners, failures


def ahead(batches: Iterator[Batch]) -> Iterator[Batch]:
    """The same batches, the next one decoded in a background thread while the caller uses this one (decoding
    releases the GIL)."""
    end = object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, batches, end)
        while True:
            batch = pending.result()
            if batch is end:
                return
            pending = pool.submit(next, batches, end)
            yield batch


def pooled_embeddings(model: Any, videos: Sequence[Any], batch_size: int, window: dict[str, Any]
                      ) -> tuple[torch.Tensor, dict[int, Exception]]:
    """(float [N, D] L2-normalised mean of each video's window embeddings, {index: error} of unreadable videos,
    whose rows are zero)."""
    sums = torch.zeros(len(videos), model.config.model.embed_dim)
    failures: dict[int, Exception] = {}
    for clips, owners, failed in ahead(stream_windows(model, videos, batch_size, window)):
        failures.update(failed)
        if clips is not None:
            with model.inference():
                embeds = model.model("video", frames=clips.to(model.device))["embed"].float().cpu()
            sums.index_add_(0, torch.tensor(owners), embeds)
    for index in failures:
        sums[index] = 0.0
    return F.normalize(sums, dim=-1), failures


def best_window_matches(model: Any, videos: Sequence[Any], text: dict[str, torch.Tensor],
                        wanted: dict[int, list[int]], batch_size: int, window: dict[str, Any]
                        ) -> dict[tuple[int, int], float]:
    """{(text, video): VTM match log-odds of the video's best window} for the texts `wanted[video]` of each
    video in `wanted`; `text` holds the texts' tokens and masks."""
    order = sorted(wanted)
    best: dict[tuple[int, int], float] = {}
    for clips, owners, failed in ahead(stream_windows(model, [videos[v] for v in order], batch_size, window)):
        if failed:
            raise next(iter(failed.values()))
        if clips is None:
            continue
        with model.inference():
            tokens = model.model("video", frames=clips.to(model.device))["tokens"]
            pairs = [(t, row) for row, owner in enumerate(owners) for t in wanted[order[owner]]]
            for start in range(0, len(pairs), batch_size):
                part = pairs[start:start + batch_size]
                texts, rows = torch.tensor([t for t, _ in part]), torch.tensor([r for _, r in part])
                scores = match_score(model.model("fusion", text_tokens=text["tokens"][texts],
                                                 text_mask=text["mask"][texts],
                                                 video_tokens=tokens[rows.to(tokens.device)])["vtm_logits"])
                for (t, row), score in zip(part, scores.float().cpu().tolist()):
                    key = (t, order[owners[row]])
                    best[key] = max(best.get(key, float("-inf")), score)
    return best
