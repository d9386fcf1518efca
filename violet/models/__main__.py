"""`python -m violet.models [--json]`: every preset with its parameter counts, built on the meta device."""
from __future__ import annotations

import argparse
import json
import sys

from violet.models.presets import PRESETS, parameter_report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = {}
    for name, entry in PRESETS.items():
        rows[name] = {**parameter_report(name), "published": entry.published, "summary": entry.summary}
    if args.json:
        print(json.dumps(rows, indent=2))
        return rows
    print(f"{'preset':<14}{'video':>10}{'text+fusion':>13}{'heads':>10}{'total':>10}  published")
    for name, row in rows.items():
        published = ", ".join(f"{k} {v / 1e6:.0f}M" for k, v in row["published"].items())
        print(f"{name:<14}{row['video_encoder'] / 1e6:>9.1f}M{row['text_fusion'] / 1e6:>12.1f}M"
              f"{row['heads'] / 1e6:>9.1f}M{row['total'] / 1e6:>9.1f}M  {published}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
