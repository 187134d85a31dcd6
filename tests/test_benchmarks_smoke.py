"""The benchmarks run, at toy sizes, and report sane structure. No timing is asserted: speed and memory
targets live in ``make bench``, never in tests (the machine is shared and noisy)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from benchmarks import Ratio, Result, summary_table
from benchmarks.__main__ import main, parse_args
from herald.local.resources import LocalResources

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
    # AND the same batch was handled again against the AWS stand-in, which answered every call it made
    assert result.measured["standin_aws_calls_count"] > 0
    assert 1 <= result.measured["standin_receiver_peak_in_flight_count"] <= 5
    assert result.measured["standin_answered_count"] == result.measured["standin_aws_calls_count"]
    # AND its figures: the stand-in batch's wall time and the worker's CPU per delivery in it
    from benchmarks import figures

    wall, cpu, _ = figures.batch_concurrency(result)
    assert (wall.name, cpu.name) == ("batch_wall_time", "cpu_ms_per_delivery")
    assert wall.value == pytest.approx(result.measured["standin_batch_s"] * 1000)
    assert cpu.value == pytest.approx(result.measured["standin_worker_cpu_per_delivery_s"] * 1000)
    # AND both carry the spread of their own rounds as their noise, against the distance to their target
    assert wall.noise == pytest.approx(result.measured["standin_batch_spread_s"] * 1000)
    assert wall.signal == pytest.approx(wall.value - figures.BATCH_TARGET * wall.baseline)
    assert cpu.noise == pytest.approx(result.measured["standin_worker_cpu_spread_s"] * 1000 / 5)
    assert cpu.signal == pytest.approx(cpu.value - figures.CPU_TARGET_MS)
    # AND the same rounds were run with each delivery on a new connection (the benchmark raises unless the batch
    # opened one per delivery), and both figures say what they were sent over and what new connections took
    connected_ms = result.measured["standin_new_connections_batch_s"] * 1000
    assert connected_ms > 0
    assert result.measured["standin_new_connections_worker_cpu_per_delivery_s"] > 0
    for figure in (wall, cpu):
        assert "a connection the batch before left open" in figure.note
        assert f"the batch took {connected_ms:.0f} ms" in figure.note
    assert lines


def test_batch_timings_within_their_noise_of_the_target_are_not_met() -> None:
    from benchmarks import figures

    def batch(*, cpu_per_delivery_ms: float, cpu_spread_ms: float, wall_ms: float, wall_spread_ms: float) -> Result:
        measured = {
            "receiver_latency_s": 0.2,
            "batch_size_count": 100,
            "rounds_count": 7,
            "standin_worker_cpu_s": cpu_per_delivery_ms * 100 / 1000,
            "standin_worker_cpu_spread_s": cpu_spread_ms * 100 / 1000,
            "standin_batch_s": wall_ms / 1000,
            "standin_batch_spread_s": wall_spread_ms / 1000,
            "standin_aws_calls_count": 9,
            "aws_client_cpu_per_call_s": 0.001,
            "standin_call_latency_s": 0.01,
            "standin_call_median_s": 0.02,
            "batch_s": 0.5,
            "standin_receiver_peak_in_flight_count": 100,
            "worker_cpu_per_delivery_s": 0.004,
            "latency_added_s": 0.2,
            "batch_instant_spread_s": 0.05,
        }
        return Result("delivery", "batch", measured=measured)

    # GIVEN a CPU per delivery and a batch time under their targets (3 ms; 1.5 x 200 ms), by less than their rounds'
    # spread
    wall, cpu, _ = figures.batch_concurrency(
        batch(cpu_per_delivery_ms=2.6, cpu_spread_ms=0.5, wall_ms=280, wall_spread_ms=40)
    )
    # THEN neither is counted as met: the verdict says the margin is inside the noise
    assert (cpu.met, cpu.verdict.startswith("inside the noise")) == (False, True)
    assert (wall.met, wall.verdict.startswith("inside the noise")) == (False, True)
    # AND with a margin beyond the spread, both are met
    wall, cpu, _ = figures.batch_concurrency(
        batch(cpu_per_delivery_ms=2.0, cpu_spread_ms=0.5, wall_ms=250, wall_spread_ms=40)
    )
    assert (cpu.met, wall.met) == (True, True)


def test_fanout_benchmark_counts_batches_and_continuations() -> None:
    from benchmarks import fanout

    # GIVEN an event for a tenant with 24 subscriptions, half of them with a filter (6 take it, 6 skip it)
    # WHEN the fan-out benchmark publishes it through the API and runs the fan-out through the worker
    result = fanout.run(subscriptions=24, publish_samples=2, moto="inprocess", out=lambda _: None)
    # THEN it queued one delivery per matching subscription, 10 to a message, in one SendMessageBatch call
    _check_structure(result, "fanout", 3)
    assert result.measured["skipped_by_filter_count"] == 6
    assert result.measured["deliveries_count"] == 18
    assert result.measured["delivery_messages_count"] == 2
    assert result.measured["send_message_batch_calls_count"] == 1
    assert result.measured["send_message_batch_calls_fewest_count"] == 1  # one page of routes, two messages
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


def test_command_line_prints_json_and_a_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # GIVEN the command line with one quick study
    # WHEN it runs with --json
    status = main(["--only", "api", "--api-requests", "2", "--json", "--output", str(tmp_path)])
    # THEN the results are JSON on stdout (and in results.json) and the report (with its summary table) on stderr
    captured = capsys.readouterr()
    assert status == 0
    document = json.loads(captured.out)
    assert [entry["name"] for entry in document["studies"]] == ["api"]
    assert document["failures"] == {}
    assert json.loads((tmp_path / "results.json").read_text())["studies"][0]["name"] == "api"
    assert "Summary" in captured.err
    assert "GET /v1/event-types / GET /health" in captured.err


def test_a_run_of_some_figures_never_writes_the_kept_results(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from benchmarks.__main__ import RESULTS, output_directory

    kept = {name: (RESULTS / name).stat().st_mtime_ns for name in ("results.json", "performance.png")}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # GIVEN / WHEN one figure runs with --only and no --output
    status = main(["--only", "filters"])
    # THEN it wrote its results.json to a fresh temporary directory, and said where
    captured = capsys.readouterr().out
    assert status == 0
    (written,) = [path for path in tmp_path.iterdir() if path.name.startswith("herald-bench-")]
    assert f"writing to {written}" in captured
    assert [entry["name"] for entry in json.loads((written / "results.json").read_text())["figures"]] == [
        "filter_eval_us"
    ]
    # AND the kept results (a full run's, the README's table) are untouched
    assert {name: (RESULTS / name).stat().st_mtime_ns for name in kept} == kept
    # AND only a full run (make bench) writes there by default; --output is always followed
    assert output_directory(parse_args([])) == RESULTS
    assert output_directory(parse_args(["--only", "size", "--output", str(tmp_path / "x")])) == tmp_path / "x"


def test_command_line_rejects_unknown_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN / WHEN an unknown name is asked for
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
    # THEN the error names the benchmarks there are
    assert "coldstart" in capsys.readouterr().err
    # AND known names may be comma-separated, and run in the default order
    assert parse_args(["--only", "memory,batch"]).selected == ["batch", "memory"]
    # AND without --only, the figures run (the extra studies do not)
    assert parse_args([]).selected == [
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
    ]


def test_ratio_divides_measured_by_baseline() -> None:
    ratio = Ratio("x", measured=3.0, baseline=1.5, unit="s", target="~2")
    assert ratio.value == 2.0
    assert ratio.to_dict()["value"] == 2.0


def test_cost_benchmark_prices_every_request_of_a_small_run() -> None:
    from benchmarks import cost

    # GIVEN / WHEN two events to two subscriptions each, and ten events to one (published in one batch, then one a
    # request), on the happy path
    lines: list[str] = []
    typical, pessimistic, single, throughput, batch_published, alone, wru, calls, wru_alone, calls_alone = cost.run(
        events=2, fanout=2, out=lines.append
    )
    # THEN each case has a priced breakdown of the requests the real code path made
    assert typical.name == "cost_per_million_fanout_2"
    assert pessimistic.name == "cost_per_million_fanout_1"
    assert single.name == "cost_per_million_fanout_1_single_publish"
    assert throughput.name == "cost_per_million_fanout_2_throughput"
    assert batch_published.name == "cost_per_million_fanout_2_batch_publish"
    for figure in (typical, pessimistic, single, throughput, batch_published, alone):
        breakdown = figure.details["breakdown_per_million"]
        assert figure.value == pytest.approx(sum(breakdown.values()), rel=1e-3)
        usage = figure.details["per_delivery"]
        assert usage["wru"] >= 1  # at least the delivery's own record is written
        assert usage["sqs_requests"] > 0
        assert usage["log_bytes"] > 0
        assert breakdown["API Gateway HTTP API requests"] > 0
        # AND what the lines of successful attempts cost is measured: a deployment that logs only failures pays less
        assert 0 < usage["success_log_bytes"] < usage["log_bytes"]
        assert 0 < usage["logs_failures_only_per_million"] < breakdown["CloudWatch Logs ingestion"]
        assert "with LogSuccessfulAttempts: false" in figure.note
    # AND one API request per event costs a whole request per webhook when an event has one subscriber; the ten
    # events published in one batch request cost a tenth of that
    assert single.details["breakdown_per_million"]["API Gateway HTTP API requests"] == pytest.approx(1.0)
    assert pessimistic.details["breakdown_per_million"]["API Gateway HTTP API requests"] == pytest.approx(0.1)
    assert pessimistic.details["invocations"]["api"] == 1
    assert "published in 1 request(s) of POST /v1/events/batch" in pessimistic.details["notes"][0]
    assert "published one a request" in single.details["notes"][0]
    # AND the same fan-out was also worked as DeliveryBatching: throughput has the event source do it (batches of 100
    # messages)
    assert "batch size 10," in typical.details["notes"][0]
    assert "batch size 100," in throughput.details["notes"][0]
    assert any("total" in line for line in lines)
    # AND the default case's write units and AWS requests per delivered webhook are figures of their own
    assert (wru.name, calls.name) == ("dynamodb_wru_per_delivery", "aws_calls_per_delivery")
    assert wru.value == typical.details["per_delivery"]["wru"] >= 1
    usage = typical.details["per_delivery"]
    assert calls.value == pytest.approx(usage["dynamodb_requests"] + usage["sqs_requests"])
    assert calls.details["throughput"] > 0
    # AND publishing's share and the worker's add up to them (neither counts a request that is not billed)
    assert usage["api_aws_calls_per_event"] / 2 + usage["worker_aws_calls_per_delivery"] == pytest.approx(calls.value)
    # AND the same fan-out published in batches makes fewer requests per delivery: the API's per-event calls are
    # shared by the batch
    assert batch_published.details["invocations"]["api"] == 1
    assert 0 < calls.details["batch_published"] < calls.value
    assert "with the events published in batches" in calls.note
    # AND each case's write units split by operation add up to its write units per delivery (the warm-up's left out)
    for figure in (typical, pessimistic, single, throughput, batch_published, alone):
        usage = figure.details["per_delivery"]
        split = {name: units for name, units in usage.items() if name.startswith("wru_")}
        assert split
        assert sum(split.values()) == pytest.approx(usage["wru"], abs=1e-5)
    # AND the webhooks' bytes out to the internet are priced (the peer's published price has no per-byte line)
    for figure in (typical, pessimistic, single, throughput, batch_published, alone):
        sent = figure.details["per_delivery"]["webhook_request_bytes"]
        assert sent > 100  # a request line, headers and a signed body
        assert figure.details["breakdown_per_million"]["Data transfer out (webhooks)"] == pytest.approx(
            sent / 1e9 * cost.DATA_TRANSFER_OUT_GB * 1e6, rel=1e-2
        )
        assert any(note.startswith("data transfer out") for note in figure.details["notes"])
    # AND the fixed monthly charges are itemized: both queues' empty receives, cold starts, the measured sweeps, the
    # custom metrics, the alarms and the secrets
    from herald.local.resources import load_template
    from herald.metrics import CORE, Metric

    template = load_template()
    counts = cost.fixed_counts(template)
    assert counts["sqs_event_sources"] == 2
    assert counts["sweeps_per_month"] == 43_200
    assert counts["custom_metrics"] == len(CORE) < len(Metric)  # DetailedMetrics: false, the default
    template["Parameters"]["DetailedMetrics"]["Default"] = "true"
    assert cost.fixed_counts(template)["custom_metrics"] == len(Metric)
    assert counts["alarm_metrics"] >= counts["alarms"] > 0
    assert counts["secrets"] == 2
    fixed = typical.details["breakdown_per_million"]
    per = 1e6 / cost.MONTHLY_WEBHOOKS
    assert fixed["CloudWatch custom metrics"] == pytest.approx(len(CORE) * 0.30 * per, rel=1e-3)
    assert fixed["CloudWatch alarms"] == pytest.approx(counts["alarm_metrics"] * 0.10 * per, rel=1e-3)
    assert fixed["Secrets Manager secrets"] == pytest.approx(2 * 0.40 * per, rel=1e-3)
    assert fixed["Schedule sweeps"] > 43_200 * (cost.SCHEDULER_INVOCATION + cost.LAMBDA_REQUEST) * per
    assert typical.details["per_delivery"]["sweep_ms"] > 0
    assert any(note.startswith("fixed monthly charges") for note in typical.details["notes"])
    # AND the figures say which workload they measure: a burst, or each event worked before the next is published
    assert "in a burst" in typical.details["notes"][0]
    assert "in a burst" in wru.note
    assert alone.name == "cost_per_million_fanout_2_one_at_a_time"
    assert "one at a time, each worked" in alone.details["notes"][0]
    assert (wru_alone.name, calls_alone.name) == (
        "dynamodb_wru_per_delivery_one_at_a_time",
        "aws_calls_per_delivery_one_at_a_time",
    )
    # AND one event at a time shares an invocation's calls and a stream window's stats writes among fewer deliveries
    assert wru_alone.value == alone.details["per_delivery"]["wru"] >= wru.value
    usage_alone = alone.details["per_delivery"]
    assert calls_alone.value == pytest.approx(usage_alone["dynamodb_requests"] + usage_alone["sqs_requests"])
    assert calls_alone.value > calls.value
    for figure in (wru_alone, calls_alone):
        assert (figure.baseline, figure.high) == ((cost.WRU_TARGET, 1.0) if figure is wru_alone else (0.3, 1.0))


def test_item_sizes_follow_dynamodb_rules() -> None:
    from benchmarks.cost import item_size

    # GIVEN items of known size (the DynamoDB developer guide's rules: names + values)
    # THEN strings count their UTF-8 bytes, numbers about one byte per two digits plus one
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"flag": {"BOOL": True}}) == 4 + 1
    assert item_size({"m": {"M": {"a": {"S": "é"}}}}) == 1 + 3 + 1 + 1 + 2


def test_stored_bytes_count_index_entries_and_the_deliveries_the_table_holds(services) -> None:
    from benchmarks.cost import ITEM_OVERHEAD_BYTES, item_size, stored_bytes

    # GIVEN a table holding three deliveries (two of the older kind: one listed in gsi1, one in gsi1 and gsi2; one
    # under its subscription, listed by its own key) and one other item
    listed = {"pk": {"S": "DELIVERY#a"}, "sk": {"S": "#DELIVERY"}, "gsi1pk": {"S": "SUB#s"}, "gsi1sk": {"S": "1"}}
    failing = {**listed, "pk": {"S": "DELIVERY#b"}, "gsi2pk": {"S": "SUB#s#failed"}, "gsi2sk": {"S": "1"}}
    keyed = {"pk": {"S": "DELIVERIES#s"}, "sk": {"S": "dlv_c"}, "status": {"S": "succeeded"}}
    other = {"pk": {"S": "EVENT#e"}, "sk": {"S": "#EVENT"}}
    for item in (listed, failing, keyed, other):
        services.store.client.put_item(TableName=services.store.table_name, Item=item)
    # WHEN its storage is measured
    total, deliveries = stored_bytes(services.store.client, services.store.table_name)

    # THEN every item and index entry counts with its overhead, and the deliveries held are counted (the figure's
    # divisor: the table holds every pass's deliveries, not one pass's)
    def billed(item: dict[str, dict[str, str]]) -> int:
        return item_size(item) + ITEM_OVERHEAD_BYTES

    assert total == 2 * billed(listed) + 3 * billed(failing) + billed(keyed) + billed(other)
    assert deliveries == 3


def test_a_batch_read_of_a_key_with_no_item_is_billed(services) -> None:
    import boto3

    from benchmarks.cost import Meter

    client, table = services.store.client, services.store.table_name
    client.put_item(TableName=table, Item={"pk": {"S": "DELIVERY#a"}, "sk": {"S": "#DELIVERY"}})
    meter = Meter(boto3.session.Session(region_name="us-east-1").client("dynamodb"), {})
    meter.instrument(client)
    keys = [
        {"pk": {"S": "DELIVERY#a"}, "sk": {"S": "#DELIVERY"}},
        {"pk": {"S": "DELIVERY#b"}, "sk": {"S": "#DELIVERY"}},
    ]
    try:
        # GIVEN / WHEN one BatchGetItem of two keys, one of an item and one of none, eventually consistent, then
        # strongly consistent
        client.batch_get_item(RequestItems={table: {"Keys": keys}})
        eventually = meter.rru
        client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
    finally:
        meter.detach()
    # THEN each key read costs a unit (half when eventually consistent), the one with no item too, as DynamoDB bills it
    assert eventually == 1.0
    assert meter.rru - eventually == 2.0


def test_a_query_is_billed_for_every_item_it_reads_before_its_filter(services) -> None:
    import boto3

    from benchmarks.cost import Meter

    client, table = services.store.client, services.store.table_name
    for n in range(10):  # ten items of about 3 KB in one partition, one of which the filter keeps
        item = {"pk": {"S": "P#q"}, "sk": {"S": f"{n:02d}"}, "kind": {"S": "kept" if n == 0 else "dropped"}}
        client.put_item(TableName=table, Item={**item, "blob": {"S": "x" * 3000}})
    meter = Meter(boto3.session.Session(region_name="us-east-1").client("dynamodb"), {})
    meter.instrument(client)
    query = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "FilterExpression": "#k = :kind",
        "ExpressionAttributeNames": {"#k": "kind"},
        "ExpressionAttributeValues": {":pk": {"S": "P#q"}, ":kind": {"S": "kept"}},
        "ConsistentRead": True,
    }
    try:
        # WHEN a strongly consistent query reads the ten and returns one; then one returning only a key, and one that
        # reads the same without a filter
        returned = client.query(**query)["Items"]
        filtered = meter.rru
        client.query(**{**query, "ProjectionExpression": "sk"})
        projected = meter.rru - filtered
        plain = {name: value for name, value in query.items() if name not in ("FilterExpression",)}
        plain.pop("ExpressionAttributeNames")
        plain["ExpressionAttributeValues"] = {":pk": {"S": "P#q"}}
        client.query(**plain)
        unfiltered = meter.rru - filtered - projected
    finally:
        meter.detach()
    # THEN each is billed for the ten items read (about 30 KB: 8 units of 4 KB), as DynamoDB bills it, not for what
    # it returned
    assert len(returned) == 1
    assert filtered == projected == unfiltered == 8.0


def test_the_costs_price_the_cold_starts_measured_in_the_same_run() -> None:
    from benchmarks.cost import COLD_START_SECONDS, fixed_costs_per_million
    from benchmarks.figures import cold_start_seconds
    from benchmarks.results import Figure
    from herald.local.resources import load_template

    # GIVEN the coldstart figures of a run
    measured = [
        Figure("api_cold_start", 2000.0, "ms", 800.0, "minimal app", "ratio <= 1.3", met=False, low=0.8, high=1.3),
        Figure(
            "delivery_cold_start", 1000.0, "ms", 500.0, "bare handler", "ratio <= 1.3", met=False, low=0.8, high=1.3
        ),
    ]
    # THEN the costs price those (in seconds), and the constants only when either did not run
    assert cold_start_seconds(measured) == {"ApiFunction": 2.0, "DeliveryFunction": 1.0}
    assert cold_start_seconds(measured[:1]) is None
    template = load_template()
    doubled = fixed_costs_per_million(
        template, cold_starts={name: 2 * value for name, value in COLD_START_SECONDS.items()}
    )
    kept = fixed_costs_per_million(template)
    assert doubled["Lambda cold starts (INIT)"] == pytest.approx(2 * kept["Lambda cold starts (INIT)"])
    # AND the constants are of the order of the coldstart figures (a second or so), not of a bare import
    assert COLD_START_SECONDS["ApiFunction"] >= 1.0
    assert COLD_START_SECONDS["DeliveryFunction"] >= 0.7


def test_figures_table_and_chart(tmp_path: Path) -> None:
    from benchmarks.chart import write_chart
    from benchmarks.results import Figure, figures_table

    # GIVEN two figures, one met and one missed
    figures = [
        Figure("api_cold_start", 600.0, "ms", 500.0, "minimal app", "ratio <= 1.3", met=True, low=0.8, high=1.3),
        Figure("cost_per_million_fanout_10", 2.5, "$", 1.2, "EventBridge", "ratio <= 1", met=False, high=1.0),
    ]
    # WHEN they are tabulated and charted
    table = figures_table(figures)
    chart = write_chart(figures, tmp_path / "chart.png")
    # THEN the table says which target is met, with the bounds, and the chart is a PNG
    assert "1.2" in table
    assert "[0.8, 1.3]" in table
    assert "NO" in table
    assert [figure.met for figure in figures] == [True, False]
    assert chart is not None
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures[1].to_dict()["ratio"] == pytest.approx(2.5 / 1.2, rel=1e-3)


def _stale_build_files() -> list[str]:
    """The herald package's sources that the build's copy of it lacks, has of another content, or has in excess (the
    layer's Makefile leaves out ``herald/local`` and ``herald/cli``)."""
    root = Path(__file__).resolve().parents[1]
    source, built = (
        root / "layers" / "herald" / "herald",
        root / ".aws-sam" / "build" / "HeraldLayer" / "python" / "herald",
    )
    left_out = ("local/", "cli/")

    def sources(base: Path) -> dict[str, bytes]:
        files = {path.relative_to(base).as_posix(): path for path in base.rglob("*") if path.is_file()}
        return {
            name: path.read_bytes()
            for name, path in files.items()
            if "__pycache__" not in name and not name.endswith((".pyc", ".pyo")) and not name.startswith(left_out)
        }

    expected, found = sources(source), sources(built)
    return sorted(name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name))


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[1] / ".aws-sam" / "build" / "HeraldLayer").exists(),
    reason="needs the sam build output (make build; make bench runs it)",
)
def test_cold_start_runs_the_built_handlers() -> None:
    from benchmarks import coldstart
    from benchmarks.core import local_stack

    # (The build output is the source's: a run of this file alone after a change without `make build` would time
    # the code as it was.)
    stale = _stale_build_files()
    assert not stale, (
        f"the sam build output is older than the source ({len(stale)} files, e.g. {stale[:3]}): make build"
    )
    # GIVEN the build output and moto in its own process
    with local_stack(moto="server") as stack:
        # WHEN each function starts once, cold, beside its baseline, and the delivery function works a batch
        api, api_own = coldstart.api_cold_start(stack, runs=1, out=lambda _: None)
        delivery, delivery_own = coldstart.delivery_cold_start(stack, runs=1, out=lambda _: None)
        # THEN both served their first request (the benchmark raises otherwise) and were timed against a baseline
        memory = coldstart.delivery_memory(stack, batch=3, latency=0.01, out=lambda _: None)
    for figure in (api, delivery):
        assert figure.value > figure.details["import_ms"] > 0
        assert figure.baseline > 0
        assert figure.details["modules"] > figure.details["baseline_modules"] > 0
    # AND each baseline made the AWS calls Herald's run made (the benchmark checks they are the same)
    assert "dynamodb.Query" in api.details["aws_calls"]
    assert {"dynamodb.BatchGetItem", "dynamodb.BatchExecuteStatement"} <= set(delivery.details["aws_calls"])
    # AND each was also timed against a baseline on Herald's libraries, from the same runs of Herald's: it loads more
    # modules than the bare one and fewer than Herald
    for figure, own in ((api, api_own), (delivery, delivery_own)):
        assert (own.name, own.value) == (f"{figure.name}_own", figure.value)
        assert figure.details["modules"] > own.details["baseline_modules"] > figure.details["baseline_modules"]
        assert own.details["aws_calls"] == figure.details["aws_calls"]
    # AND the delivery function's peak memory during a batch is measured against its MemorySize
    assert memory.value >= memory.details["rss_warm_mib"] > 0
    assert memory.baseline >= 128


def test_a_figure_out_of_its_bounds_or_inside_the_noise_is_not_met() -> None:
    from benchmarks.results import Figure

    # GIVEN figures whose target test passes
    negative = Figure("batch_latency_added", -43.0, "ms", 200.0, "latency", "ratio <= 1.5", met=True, low=0.5, high=1.5)
    noisy = Figure(
        "batch_latency_added",
        126.0,
        "ms",
        200.0,
        "latency",
        "ratio <= 1.5",
        met=True,
        low=0.5,
        high=1.5,
        noise=150.0,
        signal=126.0,
    )
    clear = Figure(
        "batch_latency_added",
        190.0,
        "ms",
        200.0,
        "latency",
        "ratio <= 1.5",
        met=True,
        low=0.5,
        high=1.5,
        noise=40.0,
        signal=190.0,
    )
    # THEN a wrong sign is out of bounds and a signal inside the noise says so: neither is met
    assert (negative.met, negative.verdict.startswith("below its lower bound")) == (False, True)
    assert (noisy.met, noisy.verdict.startswith("inside the noise")) == (False, True)
    assert (clear.met, clear.verdict) == (True, "met")
    assert noisy.to_dict()["verdict"] == noisy.verdict


def test_chaos_benchmark_counts_lost_and_duplicated_deliveries() -> None:
    from benchmarks import chaos

    # GIVEN / WHEN four events to four subscriptions under the fault mix
    lost, duplicates = chaos.run(events=4, subscriptions=4, out=lambda _: None)
    # THEN nothing was lost, and duplicates stayed within what at-least-once allows
    assert lost.name == "chaos_lost_per_10k"
    assert lost.details["deliveries"] == 16
    assert lost.value == 0
    assert lost.met
    assert duplicates.value <= duplicates.baseline, duplicates.details["duplicated"]
    assert duplicates.met


def test_chaos_allowance_counts_failed_records_of_sends_and_never_claims(
    resources: LocalResources, aws: boto3.session.Session
) -> None:
    from benchmarks.chaos import records_a_send
    from herald.aws import dynamodb_client
    from herald.errors import ServiceUnavailableError
    from herald.faults import injector_of
    from herald.records import Attempt, Delivery, DeliveryStatus, Trigger
    from herald.storage.deliveries import DeliveryRepository
    from herald.storage.table import Table

    now = datetime.now(UTC)
    new = Delivery(
        id="dlv_1",
        event_id="evt_1",
        subscription_id="sub_1",
        tenant_id="tnt_1",
        event_type="invoice.paid",
        status=DeliveryStatus.PENDING,
        created_at=now,
        updated_at=now,
    )
    tried = new.model_copy(update={"attempts": 1, "last_attempt_at": now})
    sent = tried.model_copy(update={"status": DeliveryStatus.SUCCEEDED})
    retried = tried.model_copy(update={"attempts": 2})
    first, second = (
        Attempt(
            id=f"att_{n}",
            delivery_id="dlv_1",
            event_id="evt_1",
            subscription_id="sub_1",
            tenant_id="tnt_1",
            attempt_number=n,
            trigger=Trigger.SCHEDULED,
            url="https://example.com/h",
            started_at=now,
            finished_at=now,
            duration_ms=1,
            succeeded=n == 2,
        )
        for n in (1, 2)
    )
    lease: dict[str, Any] = {"token": "t", "scheduled_attempts": 1, "expires_at": int(now.timestamp()) + 3600}
    claim: dict[str, Any] = {**lease, "until": now.timestamp() + 60, "now": now.timestamp()}
    writes: dict[str, tuple[str, Callable[[DeliveryRepository], object]]] = {
        "claim of a new delivery": ("1", lambda store: store.claim(new, previous=None, **claim)),
        "claim after an attempt": ("1", lambda store: store.claim(tried, previous=tried, **claim)),
        "claim for a recovery": ("1", lambda store: store.claim(tried, previous=tried, job_id="job_1", **claim)),
        "release": ("1", lambda store: store.release(tried, "t")),
        "listing of a delivery held back": ("1", lambda store: store.list_new(new, scheduled_attempts=0, expires_at=1)),
        "cancellation before any attempt": ("1", lambda store: store.record(new, None, **lease)),
        "cancellation at a first receive": ("1", lambda store: store.record(new, None, **{**lease, "token": None})),
        "record of a first send": ("1", lambda store: store.record(sent, first, **{**lease, "token": None})),
        "record of a failed first send": ("1", lambda store: store.record(tried, first, **{**lease, "token": None})),
        "record of a send, its attempt": ("1", lambda store: store.record(retried, second, **lease)),
        "record of a send, the delivery": ("calls:2", lambda store: store.record(retried, second, **lease)),
        "record of a recovery's send": ("1", lambda store: store.record(sent, second, job_id="job_1", **lease)),
    }
    counted = {}
    for name, (when, write) in writes.items():
        # GIVEN the deliveries' storage on a client whose DynamoDB writes fail (after botocore's retries)
        client = dynamodb_client(aws, faults=f"dynamodb:throttle@call={when}")
        # WHEN the worker's write of a delivery fails
        with pytest.raises(ServiceUnavailableError):
            write(DeliveryRepository(Table(resources.table_name, client=client)))
        injector = injector_of(client)
        assert injector is not None
        # (the delivery's item is under its subscription; its attempts under its id)
        assert {fault.keys[0] for fault in injector.injected} <= {"DELIVERIES#sub_1/dlv_1", "DELIVERY#dlv_1"}
        assert injector.injected
        counted[name] = [(fault.operation, records_a_send(fault)) for fault in injector.injected]
    # THEN only the writes that record a send count for the chaos allowance: a claim, a release, a listing or a
    # cancellation comes with no send, and failing sends nothing twice; nor does the read a failed conditional write
    # makes to see whether it was made all the same (Table.put_if), which finds nothing here. A batch of INSERTs
    # refused at its first try (these faults answer so) surely wrote nothing, and is not read back (Table.insert_all)
    read_back = ("BatchGetItem", False)
    assert counted == {
        "claim of a new delivery": [("PutItem", False), read_back],
        "claim after an attempt": [("PutItem", False), read_back],
        "claim for a recovery": [("TransactWriteItems", False)],
        "release": [("UpdateItem", False)],
        "listing of a delivery held back": [("PutItem", False)],
        "cancellation before any attempt": [("PutItem", False), read_back],
        "cancellation at a first receive": [("BatchExecuteStatement", False)],
        "record of a first send": [("BatchExecuteStatement", True)],
        "record of a failed first send": [("BatchExecuteStatement", True)],
        "record of a send, its attempt": [("PutItem", True)],
        "record of a send, the delivery": [("PutItem", True)],
        "record of a recovery's send": [("TransactWriteItems", True)],
    }


def test_filter_and_transform_benchmarks_report_their_figures() -> None:
    from benchmarks import filters, transforms

    # GIVEN / WHEN the two delivery-option benchmarks run with few loops
    lines: list[str] = []
    (filter_figure,) = filters.run(loops=20, rounds=2, out=lines.append)
    (transform_figure,) = transforms.run(loops=5, rounds=2, out=lines.append)
    # THEN each reports its figure against a baseline measured in the same run, with its details
    assert filter_figure.name == "filter_eval_us"
    assert filter_figure.baseline > 0
    assert math.isfinite(filter_figure.value)
    assert set(filter_figure.details) >= {"typical_us", "in_stored_bytes"}
    assert transform_figure.name == "transform_per_delivery_us"
    assert transform_figure.baseline > 0
    assert math.isfinite(transform_figure.value)
    # AND the doubling expressions over the large event were stopped by a bound
    hostile = transform_figure.details["hostile_256kib"]
    stopped = {name for name, entry in hostile.items() if entry["outcome"] in {"too_costly", "too_large"}}
    assert stopped >= {"doubling pipe", "doubling flatten"}, hostile
    assert any("filter per subscription" in line for line in lines)


def test_latency_benchmark_measures_publish_to_arrival_through_both_event_sources() -> None:
    from benchmarks import latency

    # GIVEN / WHEN the latency benchmark runs at a toy size (three events at rest, four per stream)
    at_rest, batched, noisy = latency.run(at_rest=3, events=4, rate=4.0, workers=3, out=lambda _: None)
    # THEN every event reached the healthy subscriber (the benchmark raises otherwise), through pollers on both
    # event sources, and each figure has its baseline, bounds and noise
    assert at_rest.name == "latency_p50_at_rest"
    assert at_rest.details["samples"] == 3
    assert at_rest.value >= at_rest.details["receiver_round_trip_ms"] > 0
    assert (at_rest.baseline, at_rest.high) == (1000.0, 1.0)
    assert at_rest.noise is not None
    # AND at rest with DeliveryBatching: throughput, each event waited out the 1 s batching window
    assert batched.name == "latency_p50_at_rest_throughput"
    assert batched.details["samples"] == 3
    assert batched.details["batching_window_s"] == 1
    assert batched.value >= 1000
    assert batched.baseline == 2000.0
    assert noisy.name == "noisy_neighbour_p95_ratio"
    assert noisy.details["events_per_run"] == 4
    assert noisy.details["pollers"] == {"WorkQueue": 3, "SlowQueue": 3}
    assert (noisy.low, noisy.high) == (0.5, 1.5)
    assert noisy.verdict


def test_the_host_copy_of_the_layer_s_dependencies_is_built_again_when_the_lock_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the layer's lock (copied), and the cache of host builds noting the key each lookup asks for
    from benchmarks import lambda_build

    lock = tmp_path / "requirements.lock"
    lock.write_text(lambda_build.LOCK.read_text())
    monkeypatch.setattr(lambda_build, "LOCK", lock)
    asked: list[str] = []

    def cached(name: str, key: str, build: object) -> Path:
        asked.append(f"{name}-{key}")
        return tmp_path

    monkeypatch.setattr(lambda_build, "_cached", cached)
    lambda_build.host_layer_dependencies()
    lambda_build.host_layer_dependencies()
    # WHEN a pin of the lock changes (`make lock UPGRADE=1`), requirements.txt untouched
    lock.write_text(lock.read_text().replace("==", "===", 1))
    lambda_build.host_layer_dependencies()
    # THEN the same lock finds the same copy, and the changed one another: the benchmarks and the cold-start test run
    # the versions the layer ships
    assert asked[0] == asked[1] != asked[2]
