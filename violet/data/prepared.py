"""Readers of prepared data (DATA/hf): what training and evaluation load, kept apart from the code that writes it."""
from __future__ import annotations

import json
from pathlib import Path

import datasets

from violet.data.layout import ANSWER_VOCAB_FILENAME, HF_DIRNAME, KINDS, PathLike


def _resolve_hf_dir(data_dir_or_hf_dir: PathLike, marker: str) -> Path:
    """Accept either DATA or DATA/hf: use DATA/hf when ``marker`` is there."""
    given = Path(data_dir_or_hf_dir)
    nested = given / HF_DIRNAME
    return nested if not (given / marker).exists() and (nested / marker).exists() else given


def load_prepared(data_dir_or_hf_dir: PathLike, kind: str) -> datasets.DatasetDict:
    """Load the prepared DatasetDict of one kind from DATA or DATA/hf."""
    if kind not in KINDS:
        raise ValueError(f"unknown annotation kind {kind!r}; expected one of {KINDS}")
    hf_dir = _resolve_hf_dir(data_dir_or_hf_dir, kind)
    path = hf_dir / kind
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"no prepared {kind} dataset at {path} (nor under "
                                f"{Path(data_dir_or_hf_dir) / HF_DIRNAME}); run `python -m prepare DATA` first")
    return datasets.load_from_disk(str(path))


def load_answer_vocab(hf_dir: PathLike) -> list[str]:
    """The qa_oe answer vocabulary (answer_id indexes it); accepts DATA or DATA/hf."""
    path = _resolve_hf_dir(hf_dir, ANSWER_VOCAB_FILENAME) / ANSWER_VOCAB_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no answer vocabulary at {path}; run `python -m prepare DATA` first")
    vocab = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(vocab, list) or not all(isinstance(answer, str) for answer in vocab):
        raise ValueError(f"{path} must hold a JSON list of strings")
    return vocab
