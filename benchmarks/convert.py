"""Time `python -m prepare.convert msrvtt-ret` on a synthetic source the size of MSR-VTT
(10,000 placeholder clips, 20 captions each, the 9k / 1k-A split files) and print JSON.

    PYTHONPATH=. python benchmarks/convert.py [--videos 10000] [--captions-per-video 20]

Measures the first run (10,000 symlinks created) and a rerun (links already in place).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from prepare.convert.__main__ import main as convert_main


def make_source(root: Path, videos: int, captions_per_video: int) -> None:
    clips = root / "MSRVTT" / "videos" / "all"
    clips.mkdir(parents=True)
    for number in range(videos):
        (clips / f"video{number}.mp4").write_bytes(b"")
    sentences = [{"video_id": f"video{number}", "caption": f"caption {index} of clip {number}", "sen_id": 0}
                 for number in range(videos) for index in range(captions_per_video)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    train = int(videos * 0.9)
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"video{n}\n" for n in range(train)))
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + "".join(f"ret{n},msr{n},video{n},a test caption {n}\n"
                                                     for n in range(train, videos)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--captions-per-video", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        src, data = Path(scratch) / "src", Path(scratch) / "DATA"
        make_source(src, args.videos, args.captions_per_video)
        argv = ["msrvtt-ret", "--src", str(src), "--videos", str(src / "MSRVTT" / "videos" / "all"), "--out", str(data)]
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            assert convert_main(argv) == 0
            timings.append(time.perf_counter() - start)
        rows = args.videos * args.captions_per_video
    print(json.dumps({"videos": args.videos, "caption_rows": rows, "first_run_s": round(timings[0], 2),
                      "rerun_s": round(timings[1], 2), "rows_per_s_first_run": round(rows / timings[0])}))


if __name__ == "__main__":
    main()
