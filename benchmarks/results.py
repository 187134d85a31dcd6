"""What a benchmark hands back: its measurements, and ratios against baselines measured in the same run.

Stdlib only: the memory benchmark's child process imports this package and must stay as light as a
Lambda function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Ratio:
    """``measured / baseline``, both taken in the same run, with the value we aim for."""

    label: str
    measured: float
    baseline: float
    unit: str
    target: str

    @property
    def value(self) -> float:
        return self.measured / self.baseline if self.baseline else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "value": self.value}


@dataclass
class Result:
    """One benchmark's outcome. ``measured`` keys carry their unit (``_s``, ``_ms``, ``_mib``, ``_count``)."""

    name: str
    title: str
    measured: dict[str, float] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "measured": dict(self.measured),
            "ratios": [ratio.to_dict() for ratio in self.ratios],
            "notes": list(self.notes),
        }


def format_quantity(value: float, unit: str) -> str:
    """A short human form: seconds as ms below one second, MiB with one decimal, counts as integers."""
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "":
        return f"{value:.3g}"
    return f"{value:g} {unit}"


def summary_table(results: list[Result]) -> str:
    """One line per ratio: benchmark, what, measured, baseline, ratio, target."""
    header = ("benchmark", "ratio", "measured", "baseline", "ratio", "target")
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        for ratio in result.ratios:
            rows.append(
                (
                    result.name,
                    ratio.label,
                    format_quantity(ratio.measured, ratio.unit),
                    format_quantity(ratio.baseline, ratio.unit),
                    f"{ratio.value:.3g}",
                    ratio.target,
                )
            )
    widths = [max(len(row[index]) for row in rows) for index in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.rjust(width) if index in (2, 3, 4) else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
