"""TGIF-QA: Repetition Action, State Transition (multiple choice) and FrameQA (open-ended).

Sources
- QA: TGIF-QA (Jang et al., CVPR 2017, github.com/YunseokJANG/tgif-qa, folder ``dataset/``): tab-separated
  files with a header line, ``{Train,Test}_action_question.csv`` and ``{Train,Test}_transition_question.csv``
  (``gif_name question a1 a2 a3 a4 a5 answer vid_id key``, ``answer`` the 0-based index of the right option)
  and ``{Train,Test}_frameqa_question.csv`` (``gif_name question answer type vid_id key description``).
- GIFs: the TGIF corpus (Li et al., CVPR 2016, github.com/raingo/TGIF-Release), ``<gif_name>.gif``; a copy
  re-encoded to ``<gif_name>.mp4`` is found as well (and decodes faster).

Produces ``qa_mc_{train,test}`` (tgif-action, tgif-transition) or ``qa_oe_{train,test}`` (tgif-frameqa).
The release has no validation split; ``--val-fraction`` holds out train GIFs for one.
"""

from __future__ import annotations

import argparse
import csv

from prepare.convert.common import Conversion, Converter, Row, clean_text, option_index, read_table

OPTION_COLUMNS = ("a1", "a2", "a3", "a4", "a5")
SPLIT_PREFIXES = {"train": "Train", "test": "Test"}


def gif_candidates(gif_name: str) -> list[str]:
    return [f"{gif_name}.gif", f"gifs/{gif_name}.gif"]


def _rows(conversion: Conversion, task: str, split: str, required: tuple[str, ...]):
    path = conversion.source(f"{SPLIT_PREFIXES[split]}_{task}_question.csv", required=split == "train")
    if path is None:
        return
    for item in read_table(path, conversion.src, delimiter="\t", required=required, quoting=csv.QUOTE_NONE):
        if isinstance(item, Row):
            yield item
        else:
            conversion.skip(item[0], "malformed", item[1])


def convert_multiple_choice(conversion: Conversion, task: str) -> None:
    for split in SPLIT_PREFIXES:
        for row in _rows(conversion, task, split, ("gif_name", "question", *OPTION_COLUMNS, "answer")):
            values = row.values
            question = clean_text(values["question"])
            options = [clean_text(values[column]) for column in OPTION_COLUMNS]
            answer = option_index(values["answer"], len(options))
            if not values["gif_name"].strip() or not question or not all(options):
                conversion.skip(row.where, "malformed", "empty gif_name, question or option")
                continue
            if answer is None:
                conversion.skip(row.where, "malformed", f"answer {values['answer'].strip()!r} is not an index in 0..4")
                continue
            conversion.add("qa_mc", split, {"question": question, "options": options, "answer": answer},
                           where=row.where, media=gif_candidates(values["gif_name"].strip()))


def convert_frameqa(conversion: Conversion, args: argparse.Namespace) -> None:
    for split in SPLIT_PREFIXES:
        for row in _rows(conversion, "frameqa", split, ("gif_name", "question", "answer")):
            values = row.values
            question, answer = clean_text(values["question"]), clean_text(values["answer"])
            if not values["gif_name"].strip() or not question or not answer:
                conversion.skip(row.where, "malformed", "empty gif_name, question or answer")
                continue
            conversion.add("qa_oe", split, {"question": question, "answer": answer}, where=row.where,
                           media=gif_candidates(values["gif_name"].strip()))


CONVERTERS = [
    Converter("tgif-action", "TGIF-QA Repetition Action: 5-way multiple choice, train / test",
              lambda conversion, args: convert_multiple_choice(conversion, "action")),
    Converter("tgif-transition", "TGIF-QA State Transition: 5-way multiple choice, train / test",
              lambda conversion, args: convert_multiple_choice(conversion, "transition")),
    Converter("tgif-frameqa", "TGIF-QA FrameQA: open-ended, train / test", convert_frameqa),
]
