"""``python -m benchmarks.readme``: write the README's Performance table from ``benchmarks/results/results.json``.

The table sits between two markers in README.md and is never edited by hand: every row is one figure of
the run that wrote results.json (its date and machine are in the line above the table), with its value,
baseline, ratio, the ratio's bounds, the target and the verdict. ``--check`` only says whether the README
holds the table results.json gives (exit 1 if not).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks.results import bounds_text

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results" / "results.json"
BEGIN = "<!-- performance table: written by `python -m benchmarks.readme` from benchmarks/results/results.json -->"
END = "<!-- end of the performance table -->"


def _quantity(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.3f}"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _verdict(figure: dict[str, Any]) -> str:
    verdict = str(figure.get("verdict") or ("met" if figure["met"] else "missed"))
    return "yes" if figure["met"] else f"NO ({verdict})" if verdict != "missed" else "NO"


def render(document: dict[str, Any]) -> str:
    """The Markdown the README holds between the markers for this results.json document."""
    load = document.get("load_average", {})
    lines = [
        f"Run of {document['written']}: Python {document['python']}, {document['machine']}, {document['cpus']} CPUs, "
        f"load average {load.get('before', math.nan):.1f} -> {load.get('after', math.nan):.1f}, "
        f"{document['seconds']['total']:.0f} s.",
        "",
        "| figure | value | baseline | ratio | bounds | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for figure in document["figures"]:
        unit = figure["unit"]
        baseline = f"{_quantity(figure['baseline'], unit)} ({figure['baseline_label']})"
        bounds = bounds_text(figure.get("low", 0.0), figure.get("high"))
        cells = [
            figure["name"],
            _quantity(figure["value"], unit),
            baseline,
            f"{figure['ratio']:.3g}",
            bounds,
            figure["target"],
            _verdict(figure),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def section(text: str) -> str:
    """What the README holds between the markers (raises ValueError without them)."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n")


def rewrite(text: str, table: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="only check that the README holds the table")
    args = parser.parse_args(argv)
    table = render(json.loads(args.results.read_text(encoding="utf-8")))
    text = args.readme.read_text(encoding="utf-8")
    if args.check:
        same = section(text) == table
        print("the README's table is results.json's" if same else "the README's table is not results.json's")
        return 0 if same else 1
    args.readme.write_text(rewrite(text, table), encoding="utf-8")
    print(f"wrote the Performance table of {args.readme} from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
