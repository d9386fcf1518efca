"""Use a trained run on raw files: embed videos and texts, score them against each other, answer questions.

    import violet
    m = violet.load("demo_runs/retrieval")
    videos = m.encode_videos(["a.mp4", "b.webm"])      # [N, D], L2-normalised
    texts = m.encode_texts(["a red ball moves left"])   # [M, D]
    similarity = texts @ videos.T                       # the dual-encoder score evaluate.py ranks by

A file goes through the code `python -m prepare` + evaluate.py run, with no prepared data directory: the run's
frames per video, short side and JPEG quality (read from run.json), the JPEG round trip (the model trained on
decoded JPEGs, not on the source pixels), then the evaluation sampling of num_frames and the centre crop to the
model's image size. A file's embedding is therefore the one evaluation computes from the clip store.

Long videos: by default one clip spans the whole video, as prepare stores it. With `window_stride` (seconds) a
video longer than one window is cut into windows of the trained clip length, each encoded; the embeddings are
averaged and normalised again.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from violet.config import RunConfig
from violet.data.clip_store import SETTINGS_FILENAME
from violet.data.decode import (
    PREPARE_DEFAULTS,
    VideoDecodeError,
    extract_array,
    extract_video,
    frame_windows,
    video_duration,
    window_spans,
)
from violet.data.layout import STORE_INDEX_FILENAME, default_store_dir
from violet.data.text import load_tokenizer, question_with_answer, tokenize
from violet.data.video import decode_clip, sample_frame_indices
from violet.engine.rundir import RunDir, RunDirError
from violet.engine.weights import load_weights
from violet.models import VideoLanguageModel
from violet.runtime import mixed_precision
from violet.tasks.qa_mc import score_options
from violet.tasks.qa_oe import OpenEndedQATask, answer_candidates, answer_logits, text_answer_logits
from violet.tasks.ranking import RERANKED_OFFSET
from violet.windows import best_window_matches, pooled_embeddings

logger = logging.getLogger(__name__)
Video = str | os.PathLike | np.ndarray | torch.Tensor  # a file, or decoded RGB frames uint8 [T, H, W, 3]
INFERENCE_HEADS = ("vtc", "vtm", "qa_oe")  # MLM/MVM heads only serve pretraining: not built
_UNREAD = object()  # the trained clip length, before the run's store was looked at
DURATIONS_READ = 2000  # clips of the run's store read to measure the trained clip length (a median is stable)


class VideoFileError(ValueError):
    """A video or image that cannot be used; `path` names it and the message says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class RunCapabilityError(RuntimeError):
    """The run has no head for what was asked (e.g. open-ended answers from a retrieval run)."""


@dataclass(frozen=True)
class ClipSettings:
    """How the run's training clips were prepared, and where that was read."""

    frames_per_video: int
    short_side: int
    jpeg_quality: int
    source: str


def clip_settings(run: RunDir, config: RunConfig) -> ClipSettings:
    """run.json's record of the clip store; for runs made before it existed, the store of the run's data
    directory if it is still there, else prepare's defaults (said in a log line: they may not be what it saw)."""
    keys = tuple(PREPARE_DEFAULTS)
    recorded = run.metadata().get("data", {}).get("clip_store") or {}
    if all(key in recorded for key in keys):
        return ClipSettings(*(int(recorded[key]) for key in keys), source=str(run.metadata_path))
    store = default_store_dir(config.data.data_dir) / SETTINGS_FILENAME if config.data.data_dir else None
    if store is not None and store.is_file():
        settings = json.loads(store.read_text())
        if all(key in settings for key in keys):
            logger.warning("%s does not record how its clips were prepared; using %s", run.path, store)
            return ClipSettings(*(int(settings[key]) for key in keys), source=str(store))
    logger.warning("%s does not record how its clips were prepared (no run.json) and its clip store is gone: "
                   "decoding with prepare's defaults %s", run.path, PREPARE_DEFAULTS)
    return ClipSettings(**PREPARE_DEFAULTS, source="prepare defaults")


def saved_heads(run: RunDir) -> tuple[str, ...]:
    """The inference heads the run's weights hold (read from the file's header, no tensor loaded)."""
    path = run.weights_path
    if not path.is_file():
        raise RunDirError(f"{run.path} has no {path.name}: not a finished violet run")
    try:
        with safe_open(str(path), "pt") as weights:
            names = list(weights.keys())
    except Exception as error:  # noqa: BLE001 - safetensors raises its own types for a truncated file
        raise RunDirError(f"{path} cannot be read ({error})") from None
    return tuple(head for head in INFERENCE_HEADS if any(name.startswith(f"heads.{head}.") for name in names))


class TrainedModel:
    """A run loaded for inference (eval mode, no gradients, bf16 autocast on GPUs that have it)."""

    def __init__(self, run_dir: str | os.PathLike[str], device: str | torch.device | None = None) -> None:
        self.run = RunDir(run_dir)
        self.config = self.run.load_config()
        self.task = self.config.task
        self.settings = clip_settings(self.run, self.config)
        self.heads = saved_heads(self.run)
        # A qa-oe run answers with its classifier head, or (objective.answer_scoring=text) by scoring each answer
        # of its vocabulary as text with the dual encoder.
        self.answers_by_text = self.task == "qa-oe" and self.config.objective.answer_scoring == "text"
        answerer = "qa_oe" in self.heads or self.answers_by_text
        self.answers = OpenEndedQATask.load_answers(self.run.path) if answerer else []
        self.tokenizer = load_tokenizer(self.run.tokenizer_dir)
        model = VideoLanguageModel(self.config.model, len(self.tokenizer), self.heads,
                                   len(self.answers) if "qa_oe" in self.heads else 0)
        load_weights(model, self.run.path, required_heads=self.heads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.num_frames = self.config.eval.num_frames or self.config.data.num_frames
        self.image_size = self.config.model.image_size
        self.precision = mixed_precision(self.config.train.mixed_precision) if self.device.type == "cuda" else "no"
        self._trained_seconds: Any = _UNREAD
        self._window_warned = False

    def __repr__(self) -> str:
        return f"TrainedModel({str(self.run.path)!r}, task={self.task!r}, device={str(self.device)!r})"

    @property
    def rerank_k(self) -> int:
        """Top-k re-ranked by the VTM head, as the run chose it on held-out data; 0 without a VTM head."""
        if "vtm" not in self.heads:
            return 0
        choice = self.run.evaluation_choice()
        return int(choice["rerank_k"]) if choice and "rerank_k" in choice else self.config.eval.rerank_k

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        autocast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            yield

    # ----- clips -----
    def trained_clip_seconds(self) -> float | None:
        """Median duration of the clips the run trained on, when its clip store is still there."""
        if self._trained_seconds is _UNREAD:
            self._trained_seconds, data_dir = None, self.config.data.data_dir
            index = default_store_dir(data_dir) / STORE_INDEX_FILENAME if data_dir else None
            if index is not None and index.is_file():
                with open(index, encoding="utf-8") as lines:
                    rows = [json.loads(line) for _, line in zip(range(DURATIONS_READ), lines) if line.strip()]
                durations = [row["duration"] for row in rows if row.get("duration", 0) > 0]  # images have none
                self._trained_seconds = statistics.median(durations) if durations else None
        return self._trained_seconds

    def window_length(self, stride: float, window_seconds: float | None) -> float:
        if window_seconds is not None:
            return window_seconds
        trained = self.trained_clip_seconds()
        if trained is None:
            log = logger.warning if not self._window_warned else logger.debug  # once, not once per video
            self._window_warned = True
            log("the clip length %s trained on is unknown (its clip store is gone): windows of %g s, the stride; "
                "pass window_seconds to choose", self.run.path, stride)
            return stride
        return trained

    def clips(self, video: Video, window_stride: float | None = None, window_seconds: float | None = None,
              fps: float | None = None) -> torch.Tensor:
        """uint8 [W, T, 3, S, S]: what the model sees of one video, W windows (1 without `window_stride`). Holds
        every window at once: the embedding and scoring paths stream them instead (violet.windows)."""
        return torch.stack(list(self.window_clips(video, window_stride, window_seconds, fps)))

    def window_clips(self, video: Video, window_stride: float | None = None, window_seconds: float | None = None,
                     fps: float | None = None) -> Iterator[torch.Tensor]:
        """uint8 [T, 3, S, S] of each window in turn, decoded only when asked for."""
        length = None if window_stride is None else self.window_length(window_stride, window_seconds)
        for jpegs in self._window_jpegs(video, window_stride, length, fps):
            # evaluation's deterministic sampling and centre crop, as ClipDataset does it
            indices = sample_frame_indices(len(jpegs), self.num_frames, train=False)
            yield decode_clip([jpegs[i] for i in indices], self.image_size, train=False)

    def _window_jpegs(self, video: Video, stride: float | None, length: float | None,
                      fps: float | None) -> Iterator[list[bytes]]:
        frames, side, quality = self.settings.frames_per_video, self.settings.short_side, self.settings.jpeg_quality
        if isinstance(video, (str, os.PathLike)):
            path = os.fspath(video)
            if not os.path.isfile(path):
                raise VideoFileError(path, "no such file" if not os.path.exists(path) else "not a file")
            try:
                spans = [None] if stride is None else window_spans(video_duration(path), length, stride)
                for span in spans:
                    yield extract_video(path, frames, side, quality, span=span)[0]
            except VideoDecodeError as error:
                raise VideoFileError(path, str(error)) from None
            except Exception as error:  # noqa: BLE001 - a decoder's own exception must still name the file
                raise VideoFileError(path, f"{type(error).__name__}: {error}") from None
            return
        array = as_frames(video)
        if stride is None:
            windows = [(0, len(array))]
        elif fps is None:
            raise ValueError("window_stride is in seconds: pass fps= with decoded frames")
        else:
            windows = frame_windows(len(array), fps, length, stride)
        for begin, end in windows:
            yield extract_array(array[begin:end], frames, side, quality)[0]

    def embed_in_chunks(self, videos: Sequence[Video], chunk: int, batch_size: int = 16,
                        **window: Any) -> Iterator[list[torch.Tensor | VideoFileError]]:
        """For each `chunk` of videos in turn: each one's embedding [D], or the VideoFileError saying why it
        could not be read (violet.index writes the index between chunks)."""
        for start in range(0, len(videos), chunk):
            part = videos[start:start + chunk]
            embeds, failures = pooled_embeddings(self, part, batch_size, window)
            yield [failures.get(i, embeds[i]) for i in range(len(part))]

    # ----- embeddings -----
    def encode_videos(self, videos: Video | Sequence[Video], batch_size: int = 16, window_stride: float | None = None,
                      *, window_seconds: float | None = None, fps: float | None = None) -> torch.Tensor:
        """Float [N, D], L2-normalised. `window_stride` (seconds): cut videos longer than one window (of
        `window_seconds`, default the trained clip length) into windows every that many seconds and average
        their embeddings (streamed: memory does not grow with a video's length); `fps` gives the rate of
        decoded-frame arrays. Raises VideoFileError naming the first file that cannot be read."""
        one = isinstance(videos, (str, os.PathLike, np.ndarray, torch.Tensor))  # a path or one video's frames
        videos = [videos] if one else list(videos)
        embeds, failures = pooled_embeddings(self, videos, batch_size, self._window(window_stride, window_seconds, fps))
        if failures:
            raise failures[min(failures)]
        return embeds

    @staticmethod
    def _window(stride: float | None, seconds: float | None, fps: float | None) -> dict[str, Any]:
        return {"window_stride": stride, "window_seconds": seconds, "fps": fps}

    def encode_texts(self, texts: str | Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Float [M, D], L2-normalised, in the space of encode_videos."""
        return self._text_features(texts, batch_size)["embed"]

    def _text_features(self, texts: str | Sequence[str], batch_size: int, keep_tokens: bool = False) -> dict:
        if "vtc" not in self.heads:
            raise RunCapabilityError(f"{self.run.path} has no contrastive (vtc) head: it cannot embed")
        texts = [texts] if isinstance(texts, str) else list(texts)
        embeds, tokens, masks = [], [], []
        with self.inference():
            for start in range(0, len(texts), batch_size):
                # Padded to max_text_len, as evaluation does, so a text embeds the same alone or in a batch.
                encoded = tokenize(self.tokenizer, texts[start:start + batch_size], self.config.model.max_text_len,
                                   fixed_length=True)
                ids, mask = encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)
                out = self.model("text", ids=ids, mask=mask)
                embeds.append(out["embed"].float())
                tokens.append(out["tokens"])
                masks.append(mask)
        if not embeds:
            return {"embed": torch.empty(0, self.config.model.embed_dim)}
        features = {"embed": torch.cat(embeds).cpu()}
        if keep_tokens:
            features.update(tokens=torch.cat(tokens), mask=torch.cat(masks))
        return features

    # ----- scores and answers -----
    def score(self, videos: Video | Sequence[Video], texts: str | Sequence[str], rerank_k: int | None = None,
              batch_size: int = 16, window_stride: float | None = None) -> torch.Tensor:
        """[M texts, N videos]: the dual-encoder similarity; when the run re-ranks (rerank_k, its chosen one by
        default; -1 = all), each text's top-k videos score RERANKED_OFFSET + the VTM match log-odds (of the
        best window), so sorting a row gives evaluate.py's ranking."""
        k = self.rerank_k if rerank_k is None else rerank_k
        if "vtm" not in self.heads:
            k = 0
        videos = [videos] if isinstance(videos, (str, os.PathLike, np.ndarray, torch.Tensor)) else list(videos)
        window = self._window(window_stride, None, None)
        video_embeds = self.encode_videos(videos, batch_size, window_stride)
        text = self._text_features(texts, 64, keep_tokens=k != 0)
        similarity = text["embed"] @ video_embeds.T
        if k == 0 or similarity.numel() == 0:
            return similarity
        top = similarity.topk(similarity.shape[1] if k < 0 else min(k, similarity.shape[1]), dim=1).indices
        wanted: dict[int, list[int]] = {}
        for t, row in enumerate(top.tolist()):
            for v in row:
                wanted.setdefault(v, []).append(t)
        matched = best_window_matches(self, videos, text, wanted, batch_size, window)
        scores = similarity.clone()
        for (t, v), score in matched.items():
            scores[t, v] = RERANKED_OFFSET + score
        return scores

    def answer(self, video: Video, question: str, options: Sequence[str] | None = None,
               top_k: int = 5) -> dict[str, Any]:
        """With `options` (a qa-mc run; zero-shot any run with the dual encoder): {"choice", "option", "scores",
        "probabilities"}; without (a qa-oe run): {"answers": [{"answer", "probability"}, ...]}, best first."""
        if options is not None:
            return self._choose(video, question, list(options))
        if not self.answers:
            raise RunCapabilityError(f"{self.run.path} is a {self.task} run without an answer classifier: open-ended "
                                     "answers need a qa-oe run; give options for multiple choice")
        tokens = tokenize(self.tokenizer, [question], self.config.model.max_text_len)
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        frames = self.clips(video)[:1].to(self.device)
        with self.inference():
            video = self.model("video", frames=frames)
            if self.answers_by_text:
                candidates = answer_candidates(self.tokenizer, [question], self.answers, self.config.model.max_text_len)
                logits = text_answer_logits(self.model, video, candidates["input_ids"].to(self.device),
                                            candidates["attention_mask"].to(self.device))[0]
            else:
                logits = answer_logits(self.model, video, ids, mask)
        probabilities = logits[0].float().softmax(dim=-1).cpu()
        best = probabilities.topk(min(top_k, len(probabilities)))
        return {"answers": [{"answer": self.answers[i], "probability": float(p)}
                            for p, i in zip(best.values.tolist(), best.indices.tolist())]}

    def _choose(self, video: Video, question: str, options: list[str]) -> dict[str, Any]:
        """qa-mc's option score (violet.tasks.qa_mc.score_options), as evaluation computes it."""
        missing = [head for head in ("vtc",) if head not in self.heads]
        if missing or not options:
            raise RunCapabilityError(f"{self.run.path} ({self.task}) cannot choose an option: " + (
                f"it has no {' or '.join(missing)} head (use a qa-mc run)" if missing else "no options given"))
        tokens = tokenize(self.tokenizer, [question_with_answer(question, option) for option in options],
                          self.config.model.max_text_len)
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        frames = self.clips(video)[:1].to(self.device)
        owner = torch.zeros(len(options), dtype=torch.long, device=self.device)  # every option asks about clip 0
        with self.inference():
            scores = score_options(self.model, self.model("video", frames=frames), ids, mask, owner,
                                   matching="vtm" in self.heads)[0].cpu()
        choice = int(scores.argmax())
        return {"choice": choice, "option": options[choice], "scores": scores.tolist(),
                "probabilities": scores.softmax(dim=0).tolist()}


def as_frames(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """Decoded frames as uint8 [T, H, W, 3] (one image [H, W, 3] becomes one frame); ValueError otherwise."""
    array = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if array.ndim == 3:
        array = array[None]
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"decoded frames must be uint8 [T, H, W, 3] RGB, got {array.dtype} {list(array.shape)}")
    return array


def load(run_dir: str | os.PathLike[str], device: str | torch.device | None = None) -> TrainedModel:
    """Load the run in RUN_DIR (an output directory of train.py) for inference; device None = CUDA if present."""
    return TrainedModel(Path(run_dir), device)
