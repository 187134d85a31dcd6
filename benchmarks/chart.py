"""The README's chart: each timing and the cost beside its baseline (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.results import Figure

CHARTED = {
    "api_cold_start": "API cold start (ms)",
    "delivery_cold_start": "Delivery cold start (ms)",
    "batch_wall_time": "Batch of 100, 200 ms receiver, AWS stand-in (ms)",
    "cost_per_million_fanout_10": "$ per million webhooks (1 event -> 10)",
}


def write_chart(figures: list[Figure], path: Path) -> Path | None:
    """Herald against its baselines, one panel per figure; None if no charted figure was measured."""
    shown = [figure for figure in figures if figure.name in CHARTED]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), squeeze=False)
    for axis, figure in zip(axes[0], shown, strict=True):
        labels = ["Herald", _wrap(figure.baseline_label)]
        colors = ["#2b6cb0" if figure.met else "#c05621", "#a0aec0"]
        bars = axis.bar(labels, [figure.value, figure.baseline], color=colors)
        axis.bar_label(bars, labels=[f"{value:,.0f}" if value >= 10 else f"{value:.2f}" for value in bars.datavalues])
        axis.set_title(CHARTED[figure.name], fontsize=9)
        axis.set_title(f"target {figure.target}", fontsize=7, loc="right", y=-0.28)
        axis.tick_params(axis="x", labelsize=7)
        axis.tick_params(axis="y", labelsize=7)
        axis.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines[:3])
