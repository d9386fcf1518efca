"""MSR-VTT: text-video retrieval (9k / 1k-A), multiple choice (MSRVTT-MC) and open-ended QA (MSRVTT-QA).

Sources
- Videos and captions: MSR-VTT (Xu et al., CVPR 2016, "MSR-VTT: A Large Video Description Dataset for
  Bridging Video and Language"), 10,000 clips ``video0`` .. ``video9999`` with 20 captions each. The original
  release ships ``train_val_videodatainfo.json`` + ``test_videodatainfo.json`` (``{"videos": [{"video_id",
  "split"}], "sentences": [{"video_id", "caption"}]}``) and the clips as ``TrainValVideo/videoN.mp4`` and
  ``TestVideo/videoN.mp4``; the CLIP4Clip re-packaging merges the captions into ``MSRVTT_data.json`` (same
  fields) and the clips into ``MSRVTT/videos/all/``. Either layout works.
- 9k / 1k-A retrieval split (JSFusion, Yu et al., ECCV 2018): ``MSRVTT_train.9k.csv`` (column ``video_id``;
  ``train_list_jsfusion.txt``, one id a line, holds the same 9,000 ids) and ``MSRVTT_JSFUSION_test.csv``
  (``key,vid_key,video_id,sentence``: one caption for each of the 1,000 test clips). ``MSRVTT_train.7k.csv``
  gives the 7k train set.
- MSRVTT-MC (same JSFusion release): ``MSR_MC_test.csv``, tab-separated with a header
  (``key vid_key video_id a1..a5 answer``, ``answer`` the 0-based index of the true caption); test only.
- MSRVTT-QA (Xu et al., ACM MM 2017, github.com/xudejing/video-question-answering): ``train_qa.json``,
  ``val_qa.json``, ``test_qa.json``, lists of ``{"question", "answer", "video_id": N}`` over the official
  6,513 / 497 / 2,990 video split.

Produces
- ``msrvtt-ret``: ``captions_train`` (every caption of the 9k (or 7k) train videos) and ``captions_test``
  (the 1,000 1k-A pairs); ``--protocol full`` instead uses the official train / validate / test video split
  with all captions.
- ``msrvtt-mc``: ``qa_mc_test`` (options = the 5 captions; ``question`` a fixed prompt, see ``--question``).
- ``msrvtt-qa``: ``qa_oe_{train,val,test}``.
The three write different kinds, so they can share one DATA directory (and its videos).
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prepare.convert.common import (
    Conversion,
    Converter,
    ConvertError,
    Row,
    clean_text,
    display_path,
    option_index,
    read_json_entries,
    read_table,
)
from prepare.convert.rows import text_lines

VIDEO_FOLDERS = ("", "TrainValVideo", "TestVideo", "all", "videos/all", "MSRVTT/videos/all")
CAPTION_SOURCES = ("MSRVTT_data.json", "train_val_videodatainfo.json")
OFFICIAL_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
# MSRVTT-MC and LSMDC-MC choose a caption, not an answer to a question; our qa_mc rows need one.
CAPTION_CHOICE_QUESTION = "which caption describes the video?"


def video_candidates(video_id: str) -> list[str]:
    return [f"{folder}/{video_id}.mp4".lstrip("/") for folder in VIDEO_FOLDERS]


def normalise_video_id(value: Any) -> str | None:
    """'video123', 'msr123', 123 and '123' all name clip video123 (ASCII digits only)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    match = re.fullmatch(r"(?:video|msr)?([0-9]+)", str(value).strip())
    return f"video{match.group(1)}" if match else None


def load_captions(conversion: Conversion) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """Captions per video id as (where, caption), and the official split per video id."""
    captions: dict[str, list[tuple[str, str]]] = {}
    official: dict[str, str] = {}
    paths = [conversion.source(*CAPTION_SOURCES)]
    if paths[0].name == "train_val_videodatainfo.json":
        paths.append(conversion.source("test_videodatainfo.json", required=False))
    for path in filter(None, paths):
        label = display_path(path, conversion.src)
        data = read_json_entries(path, conversion.src)
        videos = data.get("videos", []) if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list) or not isinstance(videos, list):
            raise ConvertError(f"{label}: expected an object with a 'sentences' list (and a 'videos' list)")
        for video in conversion.parsed(videos):
            split = video.value.get("split") if isinstance(video.value, dict) else None
            video_id = normalise_video_id(video.value.get("video_id")) if isinstance(video.value, dict) else None
            if video_id and isinstance(split, str) and split in OFFICIAL_SPLITS:
                official[video_id] = OFFICIAL_SPLITS[split]
            else:
                conversion.skip(video.where, "malformed", "needs 'video_id' and a known 'split'")
        for sentence in conversion.parsed(data["sentences"]):
            row = sentence.value if isinstance(sentence.value, dict) else {}
            video_id, caption = normalise_video_id(row.get("video_id")), clean_text(row.get("caption"))
            if video_id is None or not caption:
                conversion.skip(sentence.where, "malformed", "needs 'video_id' like video123 and a non-empty 'caption'")
                continue
            captions.setdefault(video_id, []).append((sentence.where, caption))
    return captions, official


def read_video_list(conversion: Conversion, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(where, video id) from a one-column CSV with a ``video_id`` header or a plain id-per-line list."""
    path = conversion.source(*names)
    label = display_path(path, conversion.src)
    entries: list[tuple[str, str]] = []
    if path.suffix == ".csv":
        for item in read_table(path, conversion.src, delimiter=",", required=("video_id",)):
            if isinstance(item, Row):
                entries.append((item.where, item.values["video_id"]))
            else:
                conversion.skip(item[0], "malformed", item[1])
    else:
        for where, line, problem in text_lines(path, label):
            if problem:
                conversion.skip(where, "malformed", problem)
            else:
                entries.append((where, line))
    ids = []
    for where, value in entries:
        video_id = normalise_video_id(value)
        if video_id is None:
            conversion.skip(where, "malformed", f"{value.strip()!r} is not a video id like video123")
        else:
            ids.append((where, video_id))
    return ids


def convert_retrieval(conversion: Conversion, args: argparse.Namespace) -> None:
    captions, official = load_captions(conversion)

    def add_all_captions(video_id: str, split: str, where: str) -> None:
        if video_id not in captions:
            conversion.skip(where, "no_captions", f"{video_id} has no caption in the caption file")
        for caption_where, caption in captions.get(video_id, []):
            conversion.add("captions", split, {"caption": caption}, where=caption_where,
                           media=video_candidates(video_id))

    if args.protocol == "full":
        for video_id, split in sorted(official.items(), key=lambda item: (len(item[0]), item[0])):  # numeric
            add_all_captions(video_id, split, f"official split of {video_id}")
        return
    names = ("MSRVTT_train.9k.csv", "train_list_jsfusion.txt") if args.protocol == "9k" else ("MSRVTT_train.7k.csv",)
    for where, video_id in read_video_list(conversion, names):
        add_all_captions(video_id, "train", where)
    test_path = conversion.source("MSRVTT_JSFUSION_test.csv")
    for item in read_table(test_path, conversion.src, delimiter=",", required=("video_id", "sentence")):
        if not isinstance(item, Row):
            conversion.skip(item[0], "malformed", item[1])
            continue
        video_id, caption = normalise_video_id(item.values["video_id"]), clean_text(item.values["sentence"])
        if video_id is None or not caption:
            conversion.skip(item.where, "malformed", "needs a video_id like video123 and a sentence")
            continue
        conversion.add("captions", "test", {"caption": caption}, where=item.where, media=video_candidates(video_id))


def convert_multiple_choice(conversion: Conversion, args: argparse.Namespace) -> None:
    path = conversion.source("MSR_MC_test.csv")
    option_columns = ("a1", "a2", "a3", "a4", "a5")
    for item in read_table(path, conversion.src, delimiter="\t", required=(*option_columns, "answer"),
                           quoting=csv.QUOTE_NONE):
        if not isinstance(item, Row):
            conversion.skip(item[0], "malformed", item[1])
            continue
        values = item.values
        video_id = normalise_video_id(values.get("video_id", values.get("vid_key", "")))
        options = [clean_text(values[column]) for column in option_columns]
        answer = option_index(values["answer"], len(options))
        if video_id is None or not all(options) or answer is None:
            conversion.skip(item.where, "malformed", "needs a video id, 5 non-empty options and an answer in 0..4")
            continue
        conversion.add("qa_mc", "test", {"question": args.question, "options": options, "answer": answer},
                       where=item.where, media=video_candidates(video_id))


def convert_qa(conversion: Conversion, args: argparse.Namespace) -> None:
    for split in ("train", "val", "test"):
        path = conversion.source(f"{split}_qa.json", required=split == "train")
        if path is not None:
            add_open_ended_json(conversion, path, split, media_for_qa)


def media_for_qa(raw_video_id: Any) -> list[str] | None:
    video_id = normalise_video_id(raw_video_id)
    return video_candidates(video_id) if video_id else None


def add_open_ended_json(conversion: Conversion, path: Path, split: str,
                        media_for: Callable[[Any], list[str] | None]) -> None:
    """MSRVTT-QA and MSVD-QA share this file format: a list of {question, answer, video_id};
    ``media_for`` maps a video_id to candidate files, or None when the id is unknown."""
    label = display_path(path, conversion.src)
    data = read_json_entries(path, conversion.src)
    if not isinstance(data, list):
        raise ConvertError(f"{label}: expected a JSON list of {{question, answer, video_id}} objects")
    for entry in conversion.parsed(data):
        where, row = entry.where, entry.value
        if not isinstance(row, dict):
            conversion.skip(where, "malformed", "not an object")
            continue
        question, answer = clean_text(row.get("question")), clean_text(row.get("answer"))
        if not question or not answer:
            conversion.skip(where, "malformed", "needs a non-empty 'question' and 'answer'")
            continue
        with conversion.row(where):
            media = media_for(row.get("video_id"))
            if media is None:
                conversion.skip(where, "unknown_video", f"video_id {row.get('video_id')!r} names no known clip")
                continue
            conversion.add("qa_oe", split, {"question": question, "answer": answer}, where=where, media=media)


def _retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=("9k", "7k", "full"), default="9k",
                        help="9k / 7k train with the 1k-A test (default 9k), or the official full split")


def _mc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question", default=CAPTION_CHOICE_QUESTION,
                        help="text put before every option (the task has no question)")


CONVERTERS = [
    Converter("msrvtt-ret", "MSR-VTT retrieval: 9k (or 7k) train / 1k-A test, or the official split",
              convert_retrieval, _retrieval_arguments),
    Converter("msrvtt-mc", "MSRVTT-MC: 5-caption multiple choice, test split", convert_multiple_choice,
              _mc_arguments),
    Converter("msrvtt-qa", "MSRVTT-QA: open-ended QA, official train / val / test", convert_qa),
]
