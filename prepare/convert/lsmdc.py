"""LSMDC (Large Scale Movie Description Challenge, LSMDC 2016/2017): retrieval, multiple choice and
fill-in-the-blank over the same movie clips.

Sources (sites.google.com/site/describingmovies, after MPII grants access; Rohrbach et al., IJCV 2017
"Movie Description"; the MC and FiB tracks: Torabi et al. 2016, Maharaj et al., CVPR 2017 "MovieFIB").
All files are tab-separated without a header; every row starts with ``<CLIP_ID> <START_ALIGNED>
<END_ALIGNED> <START_EXTRACTED> <END_EXTRACTED>`` (times inside the movie; the clip files are already cut).
- Retrieval: ``LSMDC16_annos_training.csv``, ``LSMDC16_annos_val.csv`` and, for the standard 1,000-clip
  test, ``LSMDC16_challenge_1000_publictect.csv``, each row ending in ``<SENTENCE>``
  (``--test-set full`` uses ``LSMDC16_annos_test.csv`` instead).
- Multiple choice: ``LSMDC16_multiple_choice_train.csv`` and ``LSMDC16_multiple_choice_valid.csv`` end in the
  correct sentence then 4 distractors; ``LSMDC16_multiple_choice_test_randomized.csv`` ends in 5 sentences
  and the 1-based index of the correct one.
- Fill-in-the-blank: ``LSMDC16_annos_training_FIB.csv``, ``LSMDC16_annos_val_FIB.csv``,
  ``LSMDC16_annos_test_FIB.csv``, rows ending in ``<SENTENCE> <FILL_IN> <BLANK>`` (the sentence with the
  blank as underscores, and the removed word).
- Clips: ``<MOVIE>/<CLIP_ID>.avi`` where ``<MOVIE>`` is the clip id without its ``_<start>-<end>`` tail.

Produces
- ``lsmdc-ret``: ``captions_{train,val,test}``.
- ``lsmdc-mc``: ``qa_mc_{train,val,test}``; train/val options are shuffled with a seed derived from the clip
  id and row, so the correct one is not always first and reruns agree; ``question`` is a fixed prompt.
- ``lsmdc-fib``: ``qa_oe_{train,val,test}`` with ``question`` = the sentence with the blank and ``answer`` =
  the missing word.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random

from prepare.convert.common import Conversion, Converter, Row, clean_text, option_index, read_table
from prepare.convert.msrvtt import CAPTION_CHOICE_QUESTION

TIME_COLUMNS = ("start_aligned", "end_aligned", "start_extracted", "end_extracted")
RETRIEVAL_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv"}
RETRIEVAL_TEST = {"1k": "LSMDC16_challenge_1000_publictect.csv", "full": "LSMDC16_annos_test.csv"}
MC_FILES = {"train": "LSMDC16_multiple_choice_train.csv", "val": "LSMDC16_multiple_choice_valid.csv",
            "test": "LSMDC16_multiple_choice_test_randomized.csv"}
FIB_FILES = {"train": "LSMDC16_annos_training_FIB.csv", "val": "LSMDC16_annos_val_FIB.csv",
             "test": "LSMDC16_annos_test_FIB.csv"}


def clip_candidates(clip_id: str) -> list[str]:
    movie = clip_id.rsplit("_", 1)[0]
    return [f"{movie}/{clip_id}.avi", f"{clip_id}.avi"]


def _rows(conversion: Conversion, name: str, tail: tuple[str, ...], required: bool):
    path = conversion.source(name, required=required)
    if path is None:
        return
    columns = ("clip_id", *TIME_COLUMNS, *tail)
    for item in read_table(path, conversion.src, delimiter="\t", columns=columns, quoting=csv.QUOTE_NONE):
        if not isinstance(item, Row):
            conversion.skip(item[0], "malformed", item[1])
        elif not item.values["clip_id"].strip():
            conversion.skip(item.where, "malformed", "empty clip id")
        else:
            yield item


def convert_retrieval(conversion: Conversion, args: argparse.Namespace) -> None:
    files = {**RETRIEVAL_FILES, "test": RETRIEVAL_TEST[args.test_set]}
    for split, name in files.items():
        for row in _rows(conversion, name, ("sentence",), required=split == "train"):
            caption = clean_text(row.values["sentence"])
            if not caption:
                conversion.skip(row.where, "malformed", "empty sentence")
                continue
            conversion.add("captions", split, {"caption": caption}, where=row.where,
                           media=clip_candidates(row.values["clip_id"].strip()))


def shuffled_with_answer(correct: str, distractors: list[str], seed_text: str) -> tuple[list[str], int]:
    options = [correct, *distractors]
    seed = int.from_bytes(hashlib.sha1(seed_text.encode("utf-8")).digest()[:8], "big")
    random.Random(seed).shuffle(options)
    return options, options.index(correct)


def convert_multiple_choice(conversion: Conversion, args: argparse.Namespace) -> None:
    sentences = tuple(f"sentence{index}" for index in range(1, 6))
    for split, name in MC_FILES.items():
        tail = (*sentences, "answer") if split == "test" else sentences
        for row in _rows(conversion, name, tail, required=split == "train"):
            clip_id = row.values["clip_id"].strip()
            options = [clean_text(row.values[column]) for column in sentences]
            if not all(options):
                conversion.skip(row.where, "malformed", "an empty sentence among the 5 options")
                continue
            if split == "test":
                answer_index = option_index(row.values["answer"], 5, first=1)
                if answer_index is None:
                    conversion.skip(row.where, "malformed",
                                    f"answer index {row.values['answer'].strip()!r} is not in 1..5")
                    continue
            else:
                options, answer_index = shuffled_with_answer(options[0], options[1:], f"{clip_id}|{row.where}")
            conversion.add("qa_mc", split, {"question": args.question, "options": options, "answer": answer_index},
                           where=row.where, media=clip_candidates(clip_id))


def convert_fill_in_the_blank(conversion: Conversion, args: argparse.Namespace) -> None:
    for split, name in FIB_FILES.items():
        for row in _rows(conversion, name, ("sentence", "fill_in", "blank"), required=split == "train"):
            question, answer = clean_text(row.values["fill_in"]), clean_text(row.values["blank"])
            if "_" not in question or not answer:
                conversion.skip(row.where, "malformed", "needs a fill-in sentence with a ____ blank and the answer")
                continue
            conversion.add("qa_oe", split, {"question": question, "answer": answer}, where=row.where,
                           media=clip_candidates(row.values["clip_id"].strip()))


def _retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-set", choices=tuple(RETRIEVAL_TEST), default="1k",
                        help="test split: the 1,000-clip retrieval test (default) or the full public test")


def _mc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question", default=CAPTION_CHOICE_QUESTION,
                        help="text put before every option (the task has no question)")


CONVERTERS = [
    Converter("lsmdc-ret", "LSMDC retrieval: train / val / 1k test", convert_retrieval, _retrieval_arguments),
    Converter("lsmdc-mc", "LSMDC multiple choice (5 sentences): train / val / test", convert_multiple_choice,
              _mc_arguments),
    Converter("lsmdc-fib", "LSMDC fill-in-the-blank as open-ended QA: train / val / test",
              convert_fill_in_the_blank),
]
