"""DiDeMo: paragraph-to-video retrieval (default) or single moments with their times.

Sources
- Annotations: "Localizing Moments in Video with Natural Language" (Hendricks et al., ICCV 2017),
  github.com/LisaAnne/LocalizingMoments, folder ``data/``: ``train_data.json``, ``val_data.json``,
  ``test_data.json``. Each is a list of ``{"video": "<flickr name>.<ext>", "description": "...",
  "times": [[first, last], ...], "annotation_id": ...}``; ``times`` holds one ``[first, last]`` pair per
  annotator in units of the 5-second segments a video is cut into (0..5, both ends inclusive).
- Videos: the Flickr videos listed in that repository (download script and ``yfcc100m_hash.json``), kept
  under their original names; copies re-encoded to ``.mp4`` with the same stem are found as well.

Produces ``captions_{train,val,test}``.
- ``--mode paragraph`` (default; the paragraph-to-video protocol of ClipBERT, Frozen and VIOLET): one row per
  video whose caption is all its descriptions joined, in the order of their moments (earliest first, ties in
  file order), over the whole video.
- ``--mode moments``: one row per description with ``start``/``end`` in seconds: the annotators' most common
  ``[first, last]`` pair (ties: the earliest annotator) becomes ``[5 * first, 5 * (last + 1))``. Rows with
  times become their own clips once preparation supports segments; until then they cover the whole video.
"""

from __future__ import annotations

import argparse
from collections import Counter

from prepare.convert.common import (
    Conversion,
    Converter,
    ConvertError,
    clean_text,
    display_path,
    read_json_entries,
)

SEGMENT_SECONDS = 5.0
SPLIT_FILES = {"train": "train_data.json", "val": "val_data.json", "test": "test_data.json"}


def consensus_segment(times: object) -> tuple[int, int] | None:
    """The most frequent [first, last] pair, or None when ``times`` is not a list of such pairs."""
    if not isinstance(times, list) or not times:
        return None
    pairs = []
    for pair in times:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(value, int) and not isinstance(value, bool) for value in pair)
                or not 0 <= pair[0] <= pair[1]):
            return None
        pairs.append((pair[0], pair[1]))
    return Counter(pairs).most_common(1)[0][0]


def segment_seconds(segment: tuple[int, int]) -> tuple[float, float]:
    first, last = segment
    return first * SEGMENT_SECONDS, (last + 1) * SEGMENT_SECONDS


def convert(conversion: Conversion, args: argparse.Namespace) -> None:
    for split, name in SPLIT_FILES.items():
        path = conversion.source(name, required=split == "train")
        if path is None:
            continue
        label = display_path(path, conversion.src)
        entries = read_json_entries(path, conversion.src)
        if not isinstance(entries, list):
            raise ConvertError(f"{label}: expected a JSON list of {{video, description, times}} objects")
        # video -> [(segment, position, description)], in file order
        moments: dict[str, list[tuple[tuple[int, int], int, str]]] = {}
        lines: dict[int, str] = {}  # position -> the entry's place, for the paragraph rows
        for position, item in enumerate(entries):
            if item.problem:
                conversion.skip(item.where, "malformed", item.problem)
                continue
            where, entry = item.where, item.value
            if not isinstance(entry, dict):
                conversion.skip(where, "malformed", "not an object")
                continue
            video, description = entry.get("video"), clean_text(entry.get("description"))
            segment = consensus_segment(entry.get("times"))
            if not isinstance(video, str) or not video.strip() or not description or segment is None:
                conversion.skip(where, "malformed", "needs 'video', a non-empty 'description' and 'times' as "
                                                    "[[first, last], ...] segment indices")
                continue
            if args.mode == "moments":
                start, end = segment_seconds(segment)
                conversion.add("captions", split, {"caption": description, "start": start, "end": end},
                               where=where, media=[video.strip(), f"videos/{video.strip()}"])
            else:
                moments.setdefault(video.strip(), []).append((segment, position, description))
                lines[position] = where
        for video, described in moments.items():
            paragraph = " ".join(description for _, _, description in sorted(described))
            # The first entry's place, then every entry's index: "data/train_data.json:3 [0, 4, 9]".
            where = f"{lines[described[0][1]].rsplit(' [', 1)[0]} [{', '.join(str(p) for _, p, _ in described)}]"
            conversion.add("captions", split, {"caption": paragraph}, where=where, media=[video, f"videos/{video}"])


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("paragraph", "moments"), default="paragraph",
                        help="one paragraph per video (default) or one row per moment with start/end seconds")


CONVERTERS = [Converter("didemo", "DiDeMo: paragraph-to-video retrieval (or moments), train / val / test",
                        convert, _arguments)]
