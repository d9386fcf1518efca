"""Tokenizer loading (a BERT WordPiece vocabulary from a local directory, no hub downloads) and the QA text form."""
from __future__ import annotations

from pathlib import Path

from transformers import BertTokenizer

BUNDLED_VOCAB = Path(__file__).resolve().parent.parent / "assets" / "bert_uncased_vocab.txt"


def question_with_answer(question: str, answer: str) -> str:
    """The one text in which the QA tasks score an answer (an option, an open-ended answer) against a clip: the
    question, a space, the answer. Training, evaluation, violet.load and the companion texts all build it here, so
    what a model learned to score is what it is asked to score."""
    return f"{question} {answer}"


def load_tokenizer(source: str | Path = "") -> BertTokenizer:
    """`source` is a directory saved by `save_pretrained` (or holding vocab.txt); "" = the bundled uncased vocab."""
    if not source:
        return BertTokenizer(vocab=str(BUNDLED_VOCAB), do_lower_case=True)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    return BertTokenizer.from_pretrained(str(path))


def tokenize(tokenizer: BertTokenizer, texts: list[str], max_len: int, fixed_length: bool = False) -> dict:
    """Pad to the longest text of the batch so short captions cost less; `fixed_length` pads to max_len
    (evaluation gathers text tokens across batches and ranks, which needs one length)."""
    return tokenizer(
        texts, padding="max_length" if fixed_length else "longest", truncation=True, max_length=max_len,
        return_tensors="pt",
        return_token_type_ids=False,
    )
