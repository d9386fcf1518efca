"""Converters from public data sets' original annotation files to our DATA layout.

    python -m prepare.convert <dataset> --src DOWNLOADS --out DATA [--videos DIR] [--link | --copy]

writes ``DATA/annotations/{kind}_{split}.jsonl`` and makes ``DATA/videos/...`` point at the original
video files. One module per public set; ``common`` holds what they share. docs/data.md lists, per set,
where its files come from and the commands from the download to ``train.py``.
"""

from __future__ import annotations

from prepare.convert import didemo, lsmdc, msrvtt, msvd, tgif, web
from prepare.convert.common import Conversion, Converter, ConvertError


def _registry() -> dict[str, Converter]:
    registry: dict[str, Converter] = {}
    for module in (msrvtt, msvd, tgif, didemo, lsmdc, web):
        for converter in module.CONVERTERS:
            if converter.name in registry:
                raise RuntimeError(f"converter {converter.name!r} is registered twice")
            registry[converter.name] = converter
    return registry


CONVERTERS: dict[str, Converter] = _registry()

__all__ = ["CONVERTERS", "Conversion", "ConvertError", "Converter"]
