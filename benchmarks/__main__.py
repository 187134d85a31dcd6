"""``python -m benchmarks`` (``make bench``): run the benchmarks and print ratios measured in one run.

Each benchmark compares what it measures with a baseline taken in the same run (the machine is
shared and noisy: absolute numbers move, ratios much less). ``--json`` puts the results on stdout as
JSON and the report on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from benchmarks.results import Result, summary_table

NAMES = ("delivery", "fanout", "import", "api", "memory")
#: Where moto runs when ``--moto auto``: the delivery worker must be alone in its process (its
#: concurrency and CPU are measured); elsewhere moto's in-process speed is what counts.
AUTO_MOTO = {"delivery": "server", "fanout": "inprocess", "api": "inprocess"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these benchmarks (repeat or comma-separate): {', '.join(NAMES)}",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="deliveries in one invocation (delivery, memory)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the receiver's answer delay")
    parser.add_argument("--rounds", type=int, default=3, help="slow/instant batch pairs (delivery)")
    parser.add_argument("--subscriptions", type=int, default=10_000, help="subscriptions of the fanned-out event")
    parser.add_argument("--publish-samples", type=int, default=15, help="API publishes per tenant (fanout)")
    parser.add_argument("--import-repeats", type=int, default=5, help="fresh interpreters per tree (import)")
    parser.add_argument("--api-requests", type=int, default=200, help="requests per route (api)")
    parser.add_argument(
        "--moto",
        choices=("auto", "inprocess", "server"),
        default="auto",
        help="where moto runs: in this process (mock_aws) or as a server process; auto: "
        + ", ".join(f"{name} {mode}" for name, mode in AUTO_MOTO.items()),
    )
    parser.add_argument(
        "--moto-deepcopy",
        action="store_true",
        help="keep moto's O(table size) transaction snapshots (see benchmarks/moto_fixes.py; very slow)",
    )
    parser.add_argument("--json", action="store_true", help="results as JSON on stdout, the report on stderr")
    args = parser.parse_args(argv)
    selected = [name.strip() for value in args.only for name in value.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    args.selected = [name for name in NAMES if name in selected] if selected else list(NAMES)
    return args


def runners(args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Callable[[], Result]]:
    from benchmarks import api, cold_import, delivery, fanout, memory

    def moto(name: str) -> str:
        return str(AUTO_MOTO[name] if args.moto == "auto" else args.moto)

    latency = args.latency_ms / 1000
    return {
        "delivery": lambda: delivery.run(
            batch=args.batch_size,
            latency=latency,
            rounds=args.rounds,
            moto=moto("delivery"),
            moto_deepcopy=args.moto_deepcopy,
            out=out,
        ),
        "fanout": lambda: fanout.run(
            subscriptions=args.subscriptions,
            publish_samples=args.publish_samples,
            moto=moto("fanout"),
            moto_deepcopy=args.moto_deepcopy,
            out=out,
        ),
        "import": lambda: cold_import.run(repeats=args.import_repeats, out=out),
        "api": lambda: api.run(requests=args.api_requests, moto=moto("api"), moto_deepcopy=args.moto_deepcopy, out=out),
        "memory": lambda: memory.run(batch=args.batch_size, latency=latency, out=out),
    }


def main(argv: list[str] | None = None) -> int:
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
    results: list[Result] = []
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, runner in runners(args, out).items():
        if name not in args.selected:
            continue
        out(f"\n[{name}]")
        began = time.perf_counter()
        try:
            result = runner()
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            out(f"  FAILED: {failures[name]}")
            out(traceback.format_exc(limit=-6))
            continue
        finally:
            seconds[name] = time.perf_counter() - began
        out(f"  ({result.title}; {seconds[name]:.0f} s)")
        for note in result.notes:
            out(f"  note: {note}")
        results.append(result)

    total = time.perf_counter() - started
    out(f"\nSummary ({total:.0f} s, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}):")
    out(summary_table(results) if results else "  (no results)")
    for name, failure in failures.items():
        out(f"FAILED {name}: {failure}")
    if args.json:
        document: dict[str, Any] = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
            "seconds": {"total": total, **seconds},
            "arguments": {key: value for key, value in vars(args).items() if key != "selected"},
            "benchmarks": [result.to_dict() for result in results],
            "failures": failures,
        }
        print(json.dumps(document, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
