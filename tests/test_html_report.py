"""`evaluate.py --html`: one self-contained page per evaluation, checked as text and as rendered by headless
Chromium (card count, decoded thumbnails, the metric in the summary).

The browser test needs /usr/bin/chromium (or another Chromium on PATH), chromedriver and the `selenium` package
(`make test` installs them where it can); without them it skips and says which is missing. Set
VIOLET_SCREENSHOT_DIR=docs/images to refresh the screenshot docs/using.md shows.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import SMOKE_MODEL
from PIL import Image

import evaluate
import train
from violet.html_report import STRIP_FRAMES, STRIP_HEIGHT, build_page

# Without these Chromium tries to reach the network (and hangs where there is none) or needs a sandbox.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1100,1400")
CARD = re.compile(r'<article class="card" data-index="(\d+)" data-correct="(true|false)">')


@pytest.fixture(scope="module")
def pages(demo_data, tmp_path_factory):
    """Pages of a tiny retrieval run (VTM re-ranking on) and a tiny qa-mc run, and their predictions."""
    root = tmp_path_factory.mktemp("html_runs")
    common = ["--data", str(demo_data), "--batch-size", "8", *SMOKE_MODEL]
    train.main(["--task", "retrieval", "--output-dir", str(root / "retrieval"), "--max-steps", "3", *common,
                "objective.vtm_weight=1"])
    train.main(["--task", "qa-mc", "--output-dir", str(root / "qa-mc"), "--max-steps", "2", *common])
    made = {}
    for name, task, extra in [("retrieval", "retrieval", ["--top-k", "3", "--rerank-k", "4"]),
                              ("qa-mc", "qa-mc", []), ("qa-mc-capped", "qa-mc", ["--html-max", "3"])]:
        page, rows = root / f"{name}.html", root / f"{name}.jsonl"
        try:
            metrics = evaluate.main(["--task", task, "--data", str(demo_data), "--checkpoint", str(root / task),
                                     "--output", str(root / f"{name}.json"), "--predictions", str(rows),
                                     "--html", str(page), *extra])
        except SystemExit as refused:  # said as a failure: SystemExit escaping a fixture confuses pytest
            pytest.fail(f"evaluate.py refused: {refused}")
        made[name] = {"page": page, "metrics": metrics,
                      "rows": [json.loads(line) for line in rows.read_text().splitlines()]}
    return made


def strips(page: str) -> dict[str, str]:
    return json.loads(re.search(r"const STRIPS = (\{.*?\});", page).group(1))


@pytest.mark.parametrize("name", ["retrieval", "qa-mc"])
def test_page_is_self_contained_with_failures_first(pages, name):
    made = pages[name]
    page, rows = made["page"].read_text(), made["rows"]
    cards = CARD.findall(page)
    assert len(cards) == len(rows) == made["metrics"]["n"]
    correct = [flag == "true" for _, flag in cards]
    assert correct == sorted(correct)  # every failure before every success
    assert sum(correct) == sum(row["correct"] for row in rows)
    if name == "retrieval":  # the worst-ranked failure first
        ranks = {row["index"]: row["rank"] for row in rows}
        failures = [ranks[int(index)] for index, flag in cards if flag == "false"]
        assert failures == sorted(failures, reverse=True)
    # Nothing is fetched from elsewhere: no links, no remote or file sources, only embedded JPEGs.
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "http" not in page and "<link" not in page
    embedded = strips(page)
    assert embedded and all(uri.startswith("data:image/jpeg;base64,") for uri in embedded.values())
    for uri in embedded.values():
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert image.format == "JPEG" and image.height == STRIP_HEIGHT and image.width >= STRIP_FRAMES * STRIP_HEIGHT
    used = set(re.findall(r'data-strip="(s\d+)"', page))
    assert used == set(embedded)  # every thumbnail has its image, and each video is embedded once
    metric = "t2v_r1" if name == "retrieval" else "accuracy"
    assert f'data-metric="{metric}">{made["metrics"][metric]:.2f}<' in page


def test_cap_is_applied_and_said(pages):
    made = pages["qa-mc-capped"]
    page = made["page"].read_text()
    assert len(CARD.findall(page)) == 3
    total = made["metrics"]["n"]
    assert f"Showing 3 of {total} queries" in page and "--html-max 3" in page


def test_missing_clip_store_still_builds_the_page(pages, tmp_path):
    made = pages["qa-mc"]
    page, shown = build_page(made["metrics"], made["rows"], tmp_path / "moved", max_cards=2)
    assert shown == 2 and "no frames for" in page and strips(page) == {}


def browser_or_reason() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why the browser test cannot run."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -r requirements.txt)"
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return "no Chromium or chromedriver on PATH (as root: apt-get install chromium chromium-driver)"
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    found = browser_or_reason()
    if isinstance(found, str):
        pytest.skip(found)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    profile = tempfile.mkdtemp(prefix="violet-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


RENDERED = """
const images = [...document.querySelectorAll('img.strip')];
return {cards: document.querySelectorAll('article.card').length,
        images: images.length,
        decoded: images.filter(img => img.complete && img.naturalWidth > 0).length,
        summary: document.getElementById('summary').innerText};
"""


@pytest.mark.parametrize("name", ["retrieval", "qa-mc", "qa-mc-capped"])
def test_page_renders_in_chromium(pages, browser, name):
    made = pages[name]
    browser.get(made["page"].resolve().as_uri())
    rendered = browser.execute_script(RENDERED)
    assert rendered["cards"] == min(len(made["rows"]), 3 if name.endswith("capped") else 200)
    per_card = 1 + 3 if name == "retrieval" else 1  # the gold video and the top 3, or the question's video
    assert rendered["images"] == rendered["cards"] * per_card
    assert rendered["decoded"] == rendered["images"]  # every thumbnail decoded: naturalWidth > 0
    metric = "t2v_r1" if name == "retrieval" else "accuracy"
    assert re.search(rf"{metric}\s+{made['metrics'][metric]:.2f}", rendered["summary"])
    screenshots = os.environ.get("VIOLET_SCREENSHOT_DIR")
    if screenshots and name == "retrieval":
        assert browser.save_screenshot(str(Path(screenshots) / "eval_report.png"))
    if screenshots and name == "qa-mc":
        assert browser.save_screenshot(str(Path(screenshots) / "eval_report_qa.png"))
