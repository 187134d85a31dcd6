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


def judge(
    met: bool, ratio: float, low: float, high: float, noise: float | None, signal: float | None, unit: str
) -> tuple[bool, str]:
    """Whether a figure is counted as met, and why: its target's own test (``met``), within its bounds,
    with a signal above the noise."""
    if ratio < low:
        return False, f"below its lower bound {low:.3g}: a wrong sign or a broken measurement"
    if noise is not None and signal is not None and abs(signal) <= noise:
        return False, f"inside the noise: signal {signal:.3g} {unit}, noise +/-{noise:.3g}"
    if ratio > high:
        return False, "missed"
    return met, "met" if met else "missed"


@dataclass
class Figure:
    """One figure of ``benchmarks/results/results.json``: a value, the baseline it is compared with (measured in
    the same run unless ``baseline_label`` says otherwise), their ratio, the target, and whether it is met.

    Every figure has a lower and an upper bound on its ratio (``low``, ``high``): below the lower one is a
    wrong sign or a broken measurement, never a success; above the upper one the target is missed.
    ``noise`` is the run-to-run noise of the value (the spread of the baseline's repeated runs, same unit)
    and ``signal`` what the figure claims (the value minus what it is compared with, or minus its target's
    threshold when that is what decides the verdict): a signal inside the noise is said so and not counted as
    met. ``met`` as given is the target's own test; after construction it holds the verdict's."""

    name: str
    value: float
    unit: str
    baseline: float
    baseline_label: str
    target: str
    met: bool
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    low: float = 0.0
    high: float = math.inf
    noise: float | None = None
    signal: float | None = None
    verdict: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.met, self.verdict = judge(self.met, self.ratio, self.low, self.high, self.noise, self.signal, self.unit)

    @property
    def ratio(self) -> float:
        if self.baseline:
            return self.value / self.baseline
        return 0.0 if self.value == 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, 4),
            "unit": self.unit,
            "baseline": round(self.baseline, 4),
            "baseline_label": self.baseline_label,
            "ratio": round(self.ratio, 4),
            "low": self.low,
            "high": self.high if math.isfinite(self.high) else None,
            "noise": None if self.noise is None else round(self.noise, 4),
            "signal": None if self.signal is None else round(self.signal, 4),
            "target": self.target,
            "met": self.met,
            "verdict": self.verdict,
            "note": self.note,
            "details": self.details,
        }


def _short(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.3f}"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def bounds_text(low: float, high: float | None) -> str:
    """A figure's ratio bounds, as ``[low, high]``."""
    upper = "inf" if high is None or not math.isfinite(high) else f"{high:.3g}"
    return f"[{low:.3g}, {upper}]"


def figures_table(figures: list[Figure]) -> str:
    """The figures as a plain-text table (the README's is written from results.json by benchmarks.readme)."""
    header = ("figure", "value", "baseline", "ratio", "bounds", "target", "verdict")
    rows = [
        (
            figure.name,
            _short(figure.value, figure.unit),
            f"{_short(figure.baseline, figure.unit)} ({figure.baseline_label})",
            f"{figure.ratio:.3g}",
            bounds_text(figure.low, figure.high),
            figure.target,
            figure.verdict if figure.met else f"NO: {figure.verdict}",
        )
        for figure in figures
    ]
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
