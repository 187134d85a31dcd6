"""``python -m benchmarks`` (``make bench``): the performance figures, each against a baseline measured in
the same run, printed as a table and written to ``benchmarks/results/results.json`` with a chart
(``benchmarks/results/performance.png``); ``python -m benchmarks.readme`` then writes the README's table from it.

Figures (``--only`` picks some): ``coldstart`` (API and delivery cold starts from the ``sam build`` output),
``batch`` (one SQS batch of 100 deliveries to a receiver answering after 200 ms), ``fanout`` (one event to
10,000 subscriptions), ``cost`` (per million delivered webhooks), ``memory`` (peak RSS of a batch of 100, and of two
batches of ``DeliveryBatching: throughput`` whose 1,000 deliveries are each of a 256 KiB event of its own),
``size`` (unzipped package sizes), ``chaos`` (deliveries lost and duplicated under the fault mix),
``inflight`` (messages in flight per waiting retry), ``filters`` (payload filter evaluation per subscription at
fan-out), ``transforms`` (body transform cost per delivery; hostile expressions over a 256 KiB event),
``latency`` (publish to arrival at rest, and beside a hanging subscriber, through the emulated event sources).
Extra studies, run only when named: ``import`` (import with and without bytecode), ``api`` (warm request
latency) and ``portal`` (the portal's endpoints page against the API).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from benchmarks.results import Figure, Result, figures_table, summary_table

ROOT = Path(__file__).resolve().parents[1]
FIGURES = (
    "coldstart",
    "batch",
    "fanout",
    "cost",
    "memory",
    "size",
    "chaos",
    "inflight",
    "filters",
    "transforms",
    "latency",
)
EXTRAS = ("import", "api", "portal")
NAMES = FIGURES + EXTRAS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these (repeat or comma-separate): {', '.join(NAMES)}",
    )
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh processes per cold start (median)")
    parser.add_argument("--batch-size", type=int, default=100, help="deliveries in one invocation (batch, memory)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the receiver's answer delay (batch)")
    parser.add_argument(
        "--rounds", type=int, default=7, help="slow/instant batch pairs (batch; each is noisy on a shared machine)"
    )
    parser.add_argument("--subscriptions", type=int, default=10_000, help="subscriptions of the fanned-out event")
    parser.add_argument("--publish-samples", type=int, default=5, help="API publishes per tenant (fanout)")
    parser.add_argument("--cost-events", type=int, default=20, help="events published per cost case")
    parser.add_argument("--import-repeats", type=int, default=5, help="fresh interpreters per tree (import)")
    parser.add_argument("--api-requests", type=int, default=200, help="requests per route (api)")
    parser.add_argument("--chaos-events", type=int, default=20, help="events published under the fault mix (chaos)")
    parser.add_argument("--chaos-subscriptions", type=int, default=25, help="subscriptions each event goes to (chaos)")
    parser.add_argument("--at-rest", type=int, default=12, help="events published one at a time (latency)")
    parser.add_argument(
        "--latency-events", type=int, default=80, help="events per run, healthy alone or beside (latency)"
    )
    parser.add_argument("--latency-rate", type=float, default=2.0, help="events per second in those runs (latency)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where results.json and the chart go (default: benchmarks/results for a full run; with --only, a "
        "fresh temporary directory, so that a partial run never replaces the kept results)",
    )
    parser.add_argument("--no-chart", action="store_true", help="write no PNG")
    parser.add_argument("--json", action="store_true", help="results.json's document on stdout, the report on stderr")
    args = parser.parse_args(argv)
    selected = [name.strip() for value in args.only for name in value.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    args.selected = [name for name in NAMES if name in selected] if selected else list(FIGURES)
    return args


RESULTS = ROOT / "benchmarks" / "results"


def output_directory(args: argparse.Namespace) -> Path:
    """Where this run writes: ``--output``; else benchmarks/results for a full run (``make bench``), and a fresh
    temporary directory for a run of some figures (``--only``), whose results.json would hold only those."""
    if args.output is not None:
        return Path(args.output)
    if args.only:
        return Path(tempfile.mkdtemp(prefix="herald-bench-"))
    return RESULTS


Runner = Callable[[], "list[Figure] | Result"]


def runners(
    args: argparse.Namespace, out: Callable[[str], None], found: list[Figure] | None = None
) -> dict[str, Runner]:
    """What each name runs; ``found`` holds the figures of the names run before (the costs price the cold starts
    measured before them)."""
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    from benchmarks import figures

    latency = args.latency_ms / 1000

    def batch() -> list[Figure]:
        from benchmarks import delivery

        result = delivery.run(batch=args.batch_size, latency=latency, rounds=args.rounds, moto="server", out=out)
        return figures.batch_concurrency(result)

    def fanout() -> list[Figure]:
        from benchmarks import fanout as fanout_module

        result = fanout_module.run(
            subscriptions=args.subscriptions, publish_samples=args.publish_samples, moto="inprocess", out=out
        )
        return figures.fanout(result)

    def chaos() -> list[Figure]:
        from benchmarks import chaos as chaos_module

        return chaos_module.run(events=args.chaos_events, subscriptions=args.chaos_subscriptions, out=out)

    def inflight() -> list[Figure]:
        from benchmarks import inflight as inflight_module

        return inflight_module.run(out=out)

    def latency_figures() -> list[Figure]:
        from benchmarks import latency as latency_module

        return latency_module.run(at_rest=args.at_rest, events=args.latency_events, rate=args.latency_rate, out=out)

    def extra_import() -> Result:
        from benchmarks import cold_import

        return cold_import.run(repeats=args.import_repeats, out=out)

    def extra_api() -> Result:
        from benchmarks import api

        return api.run(requests=args.api_requests, moto="inprocess", out=out)

    def extra_portal() -> Result:
        from benchmarks import portal

        return portal.run(requests=args.api_requests // 2, out=out)

    return {
        "coldstart": lambda: figures.cold_starts(runs=args.cold_runs, out=out),
        "batch": batch,
        "fanout": fanout,
        "cost": lambda: figures.cost(events=args.cost_events, out=out, measured=found),
        "memory": lambda: figures.memory(batch=args.batch_size, latency=latency, out=out),
        "size": lambda: figures.package_size(out=out),
        "chaos": chaos,
        "inflight": inflight,
        "filters": lambda: importlib.import_module("benchmarks.filters").run(out=out),
        "transforms": lambda: importlib.import_module("benchmarks.transforms").run(out=out),
        "latency": latency_figures,
        "import": extra_import,
        "api": extra_api,
        "portal": extra_portal,
    }


def main(argv: list[str] | None = None) -> int:
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    args = parse_args(argv)
    stream: TextIO = sys.stderr if args.json else sys.stdout

    def out(text: str) -> None:
        print(text, file=stream, flush=True)

    started = time.perf_counter()
    load_before = os.getloadavg()
    out(
        f"Herald benchmarks: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.1f} (the machine is shared: read the ratios)"
    )
    found: list[Figure] = []
    studies: list[Result] = []
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, runner in runners(args, out, found).items():
        if name not in args.selected:
            continue
        out(f"\n[{name}]")
        began = time.perf_counter()
        try:
            # What the functions print (JSON logs, EMF metrics) is not the report.
            with contextlib.redirect_stdout(io.StringIO()):
                outcome = runner()
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            out(f"  FAILED: {failures[name]}")
            out(traceback.format_exc(limit=-6))
            continue
        finally:
            seconds[name] = time.perf_counter() - began
        out(f"  ({seconds[name]:.0f} s)")
        if isinstance(outcome, Result):
            studies.append(outcome)
            for note in outcome.notes:
                out(f"  note: {note}")
        else:
            found.extend(outcome)
            for figure in outcome:
                if figure.note:
                    out(f"  note ({figure.name}): {figure.note}")

    total = time.perf_counter() - started
    out(f"\nSummary ({total:.0f} s, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}):")
    if found:
        out(figures_table(found))
    if studies:
        out(summary_table(studies))
    for name, failure in failures.items():
        out(f"FAILED {name}: {failure}")
    document: dict[str, Any] = {
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
        "seconds": {"total": total, **seconds},
        "figures": [figure.to_dict() for figure in found],
        "studies": [result.to_dict() for result in studies],
        "failures": failures,
    }
    if found or studies:
        output = output_directory(args)
        if args.output is None and args.only:
            out(f"\n--only without --output: writing to {output}, not {RESULTS.relative_to(ROOT)} (a full run's)")
        output.mkdir(parents=True, exist_ok=True)
        (output / "results.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
        out(f"\nwrote {output / 'results.json'}")
        if not args.no_chart:
            from benchmarks.chart import write_chart

            chart = write_chart(found, output / "performance.png")
            if chart is not None:
                out(f"wrote {chart}")
    if args.json:
        print(json.dumps(document, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
