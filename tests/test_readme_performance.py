"""The README's Performance table is the one ``python -m benchmarks.readme`` writes from the kept
results.json, row for row, and that results.json has the shape the table is written from."""

from __future__ import annotations

import json
import math

from benchmarks.readme import BEGIN, END, README, RESULTS, main, render, rewrite, section


def _document() -> dict[str, object]:
    document: dict[str, object] = json.loads(RESULTS.read_text(encoding="utf-8"))
    return document


def test_results_json_has_every_field_the_table_needs() -> None:
    document = _document()
    assert {"written", "python", "machine", "cpus", "load_average", "seconds", "figures"} <= set(document)
    figures = document["figures"]
    assert isinstance(figures, list)
    assert figures
    for figure in figures:
        assert {"name", "value", "unit", "baseline", "baseline_label", "ratio", "low", "high", "target", "met"} <= set(
            figure
        ), figure["name"]
        assert {"verdict", "noise", "signal"} <= set(figure), figure["name"]
        # every figure has both bounds (high may be null only for "no upper bound", which no figure uses)
        assert figure["high"] is not None, figure["name"]
        assert math.isfinite(figure["low"]), figure["name"]
        # a met figure is inside its bounds
        if figure["met"]:
            assert figure["low"] <= figure["ratio"] <= figure["high"] + 1e-9, figure["name"]


def test_the_readme_table_is_the_one_results_json_gives() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text
    assert END in text
    assert section(text) == render(_document())
    assert main(["--check"]) == 0


def test_the_table_names_every_figure_once_with_its_bounds_and_verdict() -> None:
    document = _document()
    table = render(document)
    figures = document["figures"]
    assert isinstance(figures, list)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == [figure["name"] for figure in figures]
    for row, figure in zip(rows, figures, strict=True):
        assert row.endswith(" yes |") == bool(figure["met"])
        assert f"[{figure['low']:.3g}, " in row


def test_rewriting_replaces_only_the_table() -> None:
    text = f"before\n{BEGIN}\nold table\n{END}\nafter\n"
    assert rewrite(text, "new table") == f"before\n{BEGIN}\nnew table\n{END}\nafter\n"
