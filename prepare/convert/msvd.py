"""MSVD-QA: open-ended video QA on the MSVD (YouTube2Text) clips.

Sources
- Clips: the Microsoft Research Video Description corpus (Chen & Dolan, ACL 2011), 1,970 YouTube clips
  distributed as ``YouTubeClips.tar`` with files ``<youtube id>_<start>_<end>.avi``.
- QA: MSVD-QA (Xu et al., ACM MM 2017, github.com/xudejing/video-question-answering): ``train_qa.json``,
  ``val_qa.json``, ``test_qa.json`` (lists of ``{"question", "answer", "video_id": N}``) and
  ``youtube_mapping.txt``, whose lines ``<clip name> vid<N>`` tie ``video_id`` N to a clip file.

Produces ``qa_oe_{train,val,test}`` (the release's 1,200 / 250 / 520 video split).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from prepare.convert.common import Conversion, Converter, display_path
from prepare.convert.msrvtt import add_open_ended_json
from prepare.convert.rows import text_lines


def read_mapping(conversion: Conversion) -> dict[int, str]:
    """video number -> clip file stem, from youtube_mapping.txt."""
    path = conversion.source("youtube_mapping.txt")
    label = display_path(path, conversion.src)
    mapping: dict[int, str] = {}
    for where, line, problem in text_lines(path, label):
        parts = line.split()
        match = re.fullmatch(r"vid([0-9]{1,18})", parts[-1]) if len(parts) == 2 and not problem else None
        if match is None:
            conversion.skip(where, "malformed", problem or "expected '<clip name> vid<N>'")
            continue
        mapping[int(match.group(1))] = parts[0]
    return mapping


def convert_qa(conversion: Conversion, args: argparse.Namespace) -> None:
    mapping = read_mapping(conversion)

    def media_for(raw_video_id: Any) -> list[str] | None:
        text = str(raw_video_id).strip().removeprefix("vid") if isinstance(raw_video_id, (str, int)) else ""
        number = re.fullmatch(r"[0-9]{1,18}", text) and not isinstance(raw_video_id, bool)
        clip = mapping.get(int(text)) if number else None
        return [f"{clip}.avi", f"YouTubeClips/{clip}.avi"] if clip else None

    for split in ("train", "val", "test"):
        path = conversion.source(f"{split}_qa.json", required=split == "train")
        if path is not None:
            add_open_ended_json(conversion, path, split, media_for)


CONVERTERS = [Converter("msvd-qa", "MSVD-QA: open-ended QA, train / val / test", convert_qa)]
