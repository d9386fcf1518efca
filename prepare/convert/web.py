"""Web-scale caption corpora whose media the user downloaded beforehand: WebVid and CC3M.

Neither release ships media; the download tools differ (WebVid's own script, video2dataset, img2dataset),
so a converter pairs the release's caption file with the local files, either by WebVid's usual
``<page_dir>/<videoid>.mp4`` layout or through a mapping file the user passes with ``--mapping``: a
tab-separated file of ``<key>\\t<path relative to --videos>`` lines, where the key is a WebVid ``videoid`` or
``contentUrl`` or a CC3M image URL (lines starting with ``#`` are comments). Rows whose media is not on disk
(failed or skipped downloads, usually a few percent) are counted as missing_video, not fatal.

Sources
- WebVid-2M / WebVid-10M (Bain et al., ICCV 2021 "Frozen in Time", github.com/m-bain/webvid):
  ``results_2M_train.csv`` / ``results_2M_val.csv`` (or the ``10M`` pair), with columns
  ``videoid,contentUrl,duration,page_dir,name`` (``name`` is the caption).
- Conceptual Captions 3M (Sharma et al., ACL 2018, ai.google.com/research/ConceptualCaptions):
  ``Train_GCC-training.tsv`` and ``Validation_GCC-1.1.0-Validation.tsv``, header-less ``caption<TAB>url``.
  Images are stills: the rows are written, and ``convert`` warns while ``python -m prepare`` cannot yet
  extract image files.

Produces ``captions_train`` and ``captions_val`` (the releases' validation files), for ``--task pretrain``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from prepare.convert.common import (
    Conversion,
    Converter,
    ConvertError,
    Row,
    clean_text,
    display_path,
    read_table,
)
from prepare.convert.rows import text_lines

WEBVID_FILES = {"train": ("results_2M_train.csv", "results_10M_train.csv"),
                "val": ("results_2M_val.csv", "results_10M_val.csv")}
CC3M_FILES = {"train": ("Train_GCC-training.tsv",), "val": ("Validation_GCC-1.1.0-Validation.tsv",)}


def read_mapping(path: Path, videos_root: Path) -> dict[str, str]:
    """key -> path relative to the videos root. The user wrote this file, so a bad line is fatal."""
    if not path.is_file():
        raise ConvertError(f"--mapping {path} is not a file")
    mapping: dict[str, str] = {}
    for where, line, problem in text_lines(path, str(path)):
        if line.startswith("#"):
            continue
        parts = line.rstrip("\r\n").split("\t")
        if problem or len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ConvertError(f"{where}: {problem or 'expected <key><TAB><path relative to --videos>'}")
        key, media = parts[0].strip(), Path(parts[1].strip())
        if media.is_absolute():
            try:
                media = media.relative_to(videos_root)
            except ValueError:
                raise ConvertError(f"{where}: {media} is not under --videos {videos_root}") from None
        mapping.setdefault(key, media.as_posix())
    return mapping


def _table(conversion: Conversion, names: tuple[str, ...], file_required: bool, **table_options):
    path = conversion.source(*names, required=file_required)
    if path is None:
        return
    for item in read_table(path, conversion.src, **table_options):
        if isinstance(item, Row):
            yield item
        else:
            conversion.skip(item[0], "malformed", item[1])


def convert_webvid(conversion: Conversion, args: argparse.Namespace) -> None:
    mapping = read_mapping(args.mapping, conversion.videos_root) if args.mapping else None
    for split, names in WEBVID_FILES.items():
        for row in _table(conversion, names, split == "train", delimiter=",",
                          required=("videoid", "page_dir", "name")):
            video_id, page_dir = row.values["videoid"].strip(), row.values["page_dir"].strip()
            caption = clean_text(row.values["name"])
            if not video_id or not caption:
                conversion.skip(row.where, "malformed", "empty videoid or name")
                continue
            if mapping is None:
                media = [f"{page_dir}/{video_id}.mp4", f"{video_id}.mp4"]
            else:
                found = mapping.get(video_id) or mapping.get(row.values.get("contentUrl", "").strip())
                if found is None:
                    conversion.skip(row.where, "missing_video", f"videoid {video_id} is not in {args.mapping}")
                    continue
                media = [found]
            conversion.add("captions", split, {"caption": caption}, where=row.where, media=media)


def convert_cc3m(conversion: Conversion, args: argparse.Namespace) -> None:
    if not args.mapping:
        raise ConvertError("cc3m needs --mapping: a TSV of '<image url><TAB><file relative to --videos>' lines "
                           "(see docs/data.md for making one from img2dataset output)")
    mapping = read_mapping(args.mapping, conversion.videos_root)
    for split, names in CC3M_FILES.items():
        for row in _table(conversion, names, split == "train", delimiter="\t", columns=("caption", "url"),
                          quoting=csv.QUOTE_NONE):
            caption, url = clean_text(row.values["caption"]), row.values["url"].strip()
            if not caption or not url:
                conversion.skip(row.where, "malformed", "empty caption or url")
                continue
            found = mapping.get(url)
            if found is None:
                conversion.skip(row.where, "missing_video", f"url not in {display_path(args.mapping, conversion.src)}")
                continue
            conversion.add("captions", split, {"caption": caption}, where=row.where, media=[found])


def _webvid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mapping", type=Path, default=None,
                        help="TSV '<videoid or contentUrl><TAB><path>' (default: <page_dir>/<videoid>.mp4)")


def _cc3m_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mapping", type=Path, required=True,
                        help="TSV '<image url><TAB><path relative to --videos>' of the downloaded images")


CONVERTERS = [
    Converter("webvid", "WebVid-2M/10M captions (videos downloaded beforehand): train / val", convert_webvid,
              _webvid_arguments, index_by_stem=False),
    Converter("cc3m", "Conceptual Captions 3M (images downloaded beforehand): train / val", convert_cc3m,
              _cc3m_arguments, index_by_stem=False),
]
