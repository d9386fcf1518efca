"""One self-contained HTML page of an evaluation: `evaluate.py --html FILE.html` writes it.

The page holds a summary (task, split, checkpoint, metrics) and one card per query, failures first (retrieval:
the worst-ranked first), up to a cap that the page states. A card shows frame strips of the videos involved:
retrieval, the caption, its gold video and the top-k videos with right/wrong marks and scores; multiple-choice
QA, the question, every option with its score, the prediction and the answer; open-ended QA, the question, the
predicted and gold answers and the top answers with their probabilities.

Nothing is loaded from elsewhere: each strip (a few frames of a video, read from the data directory's clip
store) is one small JPEG embedded as a base64 data URI. A video can appear in many ranked lists, so each strip is
stored once, in a map at the end of the page, and a short inline script gives it to every <img> that shows it.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from violet.data.clip_store import ClipStore
from violet.data.video import sample_frame_indices

STRIP_FRAMES = 4
STRIP_HEIGHT = 64  # pixels of each frame in a strip: enough to see what moves, small enough for 200 cards
JPEG_QUALITY = 75
SETUP_SHOWN = ("task", "split", "checkpoint", "trained_for", "zero_shot", "rerank_k", "num_frames", "model")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .5em; }
table.summary { border-collapse: collapse; margin: .3em 2em .8em 0; display: inline-table; vertical-align: top; }
table.summary td, table.summary th { padding: .15em .7em; border-bottom: 1px solid #ddd; text-align: left; }
.card { background: #fff; border: 1px solid #ccc; border-left: 6px solid #2a8a3a; border-radius: 4px;
        margin: .8em 0; padding: .6em .9em; }
.card[data-correct="false"] { border-left-color: #c0392b; }
.query { font-size: 1.05em; margin: 0 0 .4em; }
.entry { display: flex; align-items: center; gap: .7em; margin: .25em 0; }
.entry .label { min-width: 16em; font-size: .9em; }
img.strip { height: 64px; border: 1px solid #bbb; }
.mark { font-weight: bold; width: 1.2em; display: inline-block; }
.right { color: #2a8a3a; } .wrong { color: #c0392b; }
.missing { color: #888; font-style: italic; }
ol.options { margin: .2em 0; list-style: none; padding-left: 1em; }
.predicted { font-weight: bold; }
"""


def write_report(path: Path, metrics: dict[str, Any], rows: list[dict[str, Any]], store_dir: Path,
                 max_cards: int = 200) -> int:
    """Write the page of `rows` (evaluate's per-query predictions) to `path`; return how many cards it shows."""
    page, shown = build_page(metrics, rows, store_dir, max_cards)
    path.write_text(page, encoding="utf-8")
    return shown


def build_page(metrics: dict[str, Any], rows: list[dict[str, Any]], store_dir: Path,
               max_cards: int = 200) -> tuple[str, int]:
    """The page's HTML and the number of query cards in it."""
    strips = Strips(store_dir)
    chosen = review_order(rows)[:max_cards]
    cards = [card(row, strips) for row in chosen]
    setup = metrics.get("setup", {})
    title = f"{setup.get('task', 'evaluation')} on {setup.get('split', '?')}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>violet: {esc(title)}</title><style>{STYLE}</style></head><body>",
        summary(title, metrics, len(chosen), len(rows), max_cards), '<main id="cards">', *cards, "</main>",
        strips.script(), "</body></html>",
    ]
    return "\n".join(parts), len(chosen)


def review_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures first, the worst-ranked retrieval queries first among them; otherwise row order."""
    return sorted(rows, key=lambda row: (bool(row["correct"]), -row.get("rank", 0), row["index"]))


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def summary(title: str, metrics: dict[str, Any], shown: int, total: int, max_cards: int) -> str:
    setup = metrics.get("setup", {})
    # rerank_k is in every setup (it is a config value) but means something only where retrieval used it.
    facts = [(key, setup[key]) for key in SETUP_SHOWN if key in setup and (key != "rerank_k" or key in metrics)]
    if metrics.get("rerank_source"):
        facts.append(("rerank_source", metrics["rerank_source"]))
    values = [(key, value) for key, value in metrics.items() if key not in ("setup", "rerank_source")]
    setup_rows = "".join(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>" for key, value in facts)
    metric_rows = "".join(f'<tr><th>{esc(key)}</th><td data-metric="{esc(key)}">{esc(number(value))}</td></tr>'
                          for key, value in values)
    capped = f" (the first {shown} after sorting: capped by --html-max {max_cards})" if shown < total else ""
    return (
        f'<section id="summary"><h1>violet evaluation: {esc(title)}</h1>'
        f'<table class="summary setup">{setup_rows}</table>'
        f'<table class="summary metrics">{metric_rows}</table>'
        f'<p id="shown">Showing {shown} of {total} queries{esc(capped)}, failures first.</p></section>'
    )


def card(row: dict[str, Any], strips: Strips) -> str:
    if "rank" in row:
        body = retrieval_card(row, strips)
    elif "options" in row:
        body = choice_card(row, strips)
    else:
        body = open_answer_card(row, strips)
    correct = "true" if row["correct"] else "false"
    return f'<article class="card" data-index="{row["index"]}" data-correct="{correct}">{body}</article>'


def mark(correct: bool) -> str:
    return '<span class="mark right">&#10003;</span>' if correct else '<span class="mark wrong">&#10007;</span>'


def retrieval_card(row: dict[str, Any], strips: Strips) -> str:
    entries = [f'<div class="entry gold"><span class="mark"></span><span class="label">gold: {esc(row["video"])} '
               f'(rank {row["rank"]})</span>{strips.img(row["video"])}</div>']
    for position, item in enumerate(row["top"], start=1):
        kind = "VTM log-odds" if item["reranked"] else "cosine"
        entries.append(
            f'<div class="entry ranked">{mark(item["correct"])}<span class="label">#{position} '
            f'{esc(item["video"])}<br>{kind} {item["score"]:.3f}</span>{strips.img(item["video"])}</div>')
    return f'<p class="query">{mark(row["correct"])} &ldquo;{esc(row["text"])}&rdquo;</p>' + "".join(entries)


def choice_card(row: dict[str, Any], strips: Strips) -> str:
    options = []
    for position, (option, score) in enumerate(zip(row["options"], row["scores"])):
        classes = "predicted" if position == row["prediction"] else ""
        # The answer is marked right; a different predicted option is marked wrong.
        flag = mark(True) if position == row["answer"] else mark(False) if classes else '<span class="mark"></span>'
        options.append(f'<li class="{classes}">{flag}{esc(option)} <small>score {score:.3f}</small></li>')
    answer = row["options"][row["answer"]] if 0 <= row["answer"] < len(row["options"]) else "?"
    return (
        f'<p class="query">{mark(row["correct"])} {esc(row["question"])}</p>'
        f'<div class="entry">{strips.img(row["video"])}<span class="label">{esc(row["video"])}</span></div>'
        f'<ol class="options">{"".join(options)}</ol>'
        f'<p>predicted: <b>{esc(row["options"][row["prediction"]])}</b>; answer: <b>{esc(answer)}</b></p>'
    )


def open_answer_card(row: dict[str, Any], strips: Strips) -> str:
    top = "".join(f'<li>{esc(item["answer"])} <small>{item["probability"]:.3f}</small></li>' for item in row["top"])
    vocabulary = "" if row.get("in_vocabulary", True) else " (not in the answer vocabulary)"
    return (
        f'<p class="query">{mark(row["correct"])} {esc(row["question"])}</p>'
        f'<div class="entry">{strips.img(row["video"])}<span class="label">{esc(row["video"])}</span></div>'
        f'<p>predicted: <b>{esc(row["prediction"])}</b>; answer: <b>{esc(row["answer"])}</b>{esc(vocabulary)}</p>'
        f'<ol class="answers">{top}</ol>'
    )


class Strips:
    """Frame strips of the videos a page shows, each read and encoded once."""

    def __init__(self, store_dir: Path) -> None:
        try:
            self.store: ClipStore | None = ClipStore(store_dir)
        except FileNotFoundError:  # the data directory moved: the page still shows every prediction
            self.store = None
        self.keys: dict[str, str] = {}
        self.uris: dict[str, str] = {}

    def img(self, video: str) -> str:
        """An <img> for the video's strip, or a note when its frames cannot be read."""
        if video not in self.keys:
            self.keys[video] = f"s{len(self.keys)}"
            data = frame_strip(self.store, video) if self.store is not None else None
            if data is not None:
                self.uris[self.keys[video]] = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        key = self.keys[video]
        if key not in self.uris:
            return f'<span class="missing">no frames for {esc(video)}</span>'
        return f'<img class="strip" data-strip="{key}" alt="{esc(video)}" title="{esc(video)}">'

    def script(self) -> str:
        # json.dumps output is safe inside <script>: base64 and "data:image/jpeg" hold no "<" or "&".
        return (
            f"<script>const STRIPS = {json.dumps(self.uris)};\n"
            "for (const img of document.querySelectorAll('img[data-strip]')) img.src = STRIPS[img.dataset.strip];"
            "</script><noscript>Frame strips need JavaScript (they are embedded once per video).</noscript>"
        )


def frame_strip(store: ClipStore, video: str, frames: int = STRIP_FRAMES, height: int = STRIP_HEIGHT) -> bytes | None:
    """JPEG bytes of `frames` evenly spaced frames of the video side by side, `height` pixels high."""
    try:
        location = store.locate(video)
        indices = sample_frame_indices(len(location.frame_lengths), frames, train=False)
        jpegs = store.read_frames(video, indices, location)
        images = [Image.open(io.BytesIO(jpeg)).convert("RGB") for jpeg in jpegs]
    except (KeyError, OSError, ValueError):  # a clip missing from the store or unreadable: the card says so
        return None
    scaled = [image.resize((max(1, round(image.width * height / image.height)), height)) for image in images]
    strip = Image.new("RGB", (sum(image.width for image in scaled), height))
    left = 0
    for image in scaled:
        strip.paste(image, (left, 0))
        left += image.width
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
