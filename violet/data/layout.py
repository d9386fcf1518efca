"""Names of the directories and files under a user's DATA directory.

The one module that names the layout: `prepare` writes it and the training, evaluation and
inference code read it, so a change to the layout touches this file only::

    DATA/videos/...                                  raw videos (ids are paths relative to this)
    DATA/annotations/{kind}_{split}.jsonl            user annotations
    DATA/clip_store/index.jsonl                      extracted clips, one {"video": id, ...} per line
    DATA/hf/{kind}/                                  prepared datasets.DatasetDict per kind
    DATA/hf/qa_oe_answers.json                       open-ended answer vocabulary
    DATA/hf/summary.json                             what preparation kept, dropped and why
"""

from __future__ import annotations

import os
from pathlib import Path

KINDS: tuple[str, ...] = ("captions", "qa_mc", "qa_oe")
SPLITS: tuple[str, ...] = ("train", "val", "test")

VIDEOS_DIRNAME = "videos"
ANNOTATIONS_DIRNAME = "annotations"
STORE_DIRNAME = "clip_store"
STORE_INDEX_FILENAME = "index.jsonl"
HF_DIRNAME = "hf"
ANSWER_VOCAB_FILENAME = "qa_oe_answers.json"
SUMMARY_FILENAME = "summary.json"
ANNOTATION_SUFFIX = ".jsonl"

PathLike = str | os.PathLike[str]


def annotations_dir(data_dir: PathLike) -> Path:
    return Path(data_dir) / ANNOTATIONS_DIRNAME


def annotation_path(data_dir: PathLike, kind: str, split: str) -> Path:
    """Path of the annotation file for one kind and split (it may not exist)."""
    if kind not in KINDS:
        raise ValueError(f"unknown annotation kind {kind!r}; expected one of {KINDS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return annotations_dir(data_dir) / f"{kind}_{split}{ANNOTATION_SUFFIX}"


def videos_dir(data_dir: PathLike) -> Path:
    return Path(data_dir) / VIDEOS_DIRNAME


def default_store_dir(data_dir: PathLike) -> Path:
    return Path(data_dir) / STORE_DIRNAME


def store_index_path(store_dir: PathLike) -> Path:
    return Path(store_dir) / STORE_INDEX_FILENAME


def default_hf_dir(data_dir: PathLike) -> Path:
    return Path(data_dir) / HF_DIRNAME


def is_prepared(data_dir: PathLike) -> bool:
    """`python -m prepare DATA` has run: the datasets and the clip store exist."""
    return default_hf_dir(data_dir).exists() and default_store_dir(data_dir).exists()


def normalize_video_id(video: str) -> str:
    """Canonical form of a video id (a path relative to DATA/videos).

    Annotations written on Windows or by hand use backslashes, "./" prefixes
    or doubled slashes; all of them must map to the same clip-store id.
    """
    parts = video.replace("\\", "/").split("/")
    return "/".join(part for part in parts if part not in ("", "."))


def segment_clip_id(video: str, start: float, end: float) -> str:
    """Id of the clip holding seconds [start, end) of `video`, in Media Fragments form: "a/b.mp4#t=1.500,9.000".

    Extraction and annotation preparation both derive it from the row, so they agree without a table; three
    decimals (milliseconds) make the same row always give the same id.
    """
    return f"{normalize_video_id(video)}#t={start:.3f},{end:.3f}"
