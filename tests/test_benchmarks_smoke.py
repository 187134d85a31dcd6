"""The benchmarks run, at toy sizes, and report sane structure. No timing is asserted: speed and memory
targets live in ``make bench``, never in tests (the machine is shared and noisy)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import Ratio, Result, summary_table
from benchmarks.__main__ import main, parse_args

pytestmark = pytest.mark.slow


def _check_structure(result: Result, name: str, ratio_count: int) -> None:
    assert result.name == name
    assert result.title
    assert len(result.ratios) == ratio_count
    for ratio in result.ratios:
        assert ratio.label
        assert ratio.target
        assert math.isfinite(ratio.measured)  # may be negative: "latency added" is a difference of two times
        assert ratio.baseline > 0, ratio
        assert math.isfinite(ratio.value)
    document = json.loads(json.dumps(result.to_dict()))
    assert document["name"] == name
    assert {entry["label"] for entry in document["ratios"]} == {ratio.label for ratio in result.ratios}
    table = summary_table([result])
    assert all(ratio.label in table for ratio in result.ratios)


def test_delivery_benchmark_runs_a_small_batch() -> None:
    from benchmarks import delivery

    # GIVEN a batch of 5 deliveries to a receiver answering after 20 ms, moto in its own process
    lines: list[str] = []
    # WHEN the benchmark runs one slow/instant pair of batches
    result = delivery.run(batch=5, latency=0.02, rounds=1, moto="server", out=lines.append)
    # THEN every delivery reached the receiver (the benchmark raises otherwise) and the report is complete
    _check_structure(result, "delivery", 5)
    assert result.measured["batch_size_count"] == 5
    assert 1 <= result.measured["receiver_peak_in_flight_count"] <= 5
    assert result.measured["aws_calls_count"] > 0
    assert lines


def test_fanout_benchmark_counts_batches_and_continuations() -> None:
    from benchmarks import fanout

    # GIVEN an event for a tenant with 25 subscriptions
    # WHEN the fan-out benchmark publishes it through the API and runs the fan-out through the worker
    result = fanout.run(subscriptions=25, publish_samples=2, moto="inprocess", out=lambda _: None)
    # THEN it queued one delivery per subscription, 10 per SendMessageBatch call at most
    _check_structure(result, "fanout", 3)
    assert result.measured["delivery_messages_count"] == 25
    assert result.measured["send_message_batch_calls_count"] >= 3
    assert result.measured["fanout_invocations_count"] == result.measured["continuations_count"] + 1
    assert result.measured["function_timeout_s"] > 0


def test_api_benchmark_measures_three_routes() -> None:
    from benchmarks import api

    # GIVEN / WHEN three requests per route through the Mangum handler
    result = api.run(requests=3, out=lambda _: None)
    # THEN each route has its latencies and the publish route made AWS calls
    _check_structure(result, "api", 3)
    for route in ("GET /health", "GET /v1/event-types", "POST /v1/events"):
        assert result.measured[f"{route} median_s"] > 0
    assert result.measured["POST /v1/events aws_calls_per_request"] > 0
    assert result.measured["GET /health aws_calls_per_request"] == 0


def test_cold_import_benchmark_imports_both_trees() -> None:
    from benchmarks import cold_import

    # GIVEN / WHEN one fresh interpreter per tree (sources only, and precompiled)
    result = cold_import.run(repeats=1, out=lambda _: None)
    # THEN both variants imported the handler from their temporary copies
    _check_structure(result, "import", 2)
    for variant in ("herald", "layer"):
        assert result.measured[f"{variant}_no_bytecode_s"] > 0
        assert result.measured[f"{variant}_precompiled_s"] > 0
        assert int(result.measured[f"{variant}_modules_count"]) > 100


def test_memory_benchmark_measures_a_worker_process() -> None:
    from benchmarks import memory

    # GIVEN / WHEN batches of 1 and 3 deliveries in a worker process of their own
    result = memory.run(batch=3, latency=0.01, out=lambda _: None)
    # THEN the process's memory and the traced peaks are reported
    _check_structure(result, "memory", 2)
    assert result.measured["worker_rss_peak_mib"] >= result.measured["worker_rss_before_batch_mib"] > 0
    assert result.measured["traced_peak_batch_mib"] > 0


def test_command_line_prints_json_and_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the command line with one quick benchmark
    # WHEN it runs with --json
    status = main(["--only", "api", "--api-requests", "2", "--json"])
    # THEN the results are JSON on stdout and the report (with its summary table) on stderr
    captured = capsys.readouterr()
    assert status == 0
    document = json.loads(captured.out)
    assert [entry["name"] for entry in document["benchmarks"]] == ["api"]
    assert document["failures"] == {}
    assert "Summary" in captured.err
    assert "GET /v1/event-types / GET /health" in captured.err


def test_command_line_rejects_unknown_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN / WHEN an unknown name is asked for
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
    # THEN the error names the benchmarks there are
    assert "delivery" in capsys.readouterr().err
    # AND known names may be comma-separated, and run in the default order
    assert parse_args(["--only", "memory,delivery"]).selected == ["delivery", "memory"]


def test_ratio_divides_measured_by_baseline() -> None:
    ratio = Ratio("x", measured=3.0, baseline=1.5, unit="s", target="~2")
    assert ratio.value == 2.0
    assert ratio.to_dict()["value"] == 2.0
