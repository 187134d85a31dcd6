"""Metrics in CloudWatch Embedded Metric Format and correlated, secret-free logs, for a delivery that
succeeds, one that is retried and one that is exhausted. Over real HTTP, on a controllable clock."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest

from herald.faults import FaultSpec, install
from herald.messages import DeliveryMessage, dump_message
from herald.metrics import CORE, DeliveryMetrics, Metric
from herald.worker import dispatch
from tests.delivery_support import Harness, only_delivery, publish, subscribe
from tests.support import ADMIN, INVOICE, Clock, TenantInfo

pytestmark = pytest.mark.e2e

MARKER = "in_payload_marker_7f3a"
CORRELATION = ("event_id", "delivery_id", "subscription_id", "tenant_id", "attempt")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "retry_schedule": (0, 0),
        "retry_jitter": 0.0,
        "metrics_namespace": "HeraldTest",
        "metrics_service": "herald-staging",
        "detailed_metrics": True,
    }


def emf_documents(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]


@pytest.mark.parametrize(
    "settings_overrides", [{"metrics_namespace": "HeraldTest", "direct_fanout_max": 0, "detailed_metrics": True}]
)
def test_a_fanout_message_measures_how_many_deliveries_it_queued(
    client, tenant: TenantInfo, harness: Harness, make_receiver, capsys
) -> None:
    # GIVEN two subscriptions, and publishing that always hands the fan-out to a fan-out message
    receivers = [make_receiver(), make_receiver()]
    for receiver in receivers:
        subscribe(client, tenant, receiver.url)
    # WHEN an event is published and delivered
    assert (
        client.post(
            "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=ADMIN
        ).status_code
        == 202
    )
    capsys.readouterr()
    harness.drain()
    assert [len(receiver.received) for receiver in receivers] == [1, 1]
    # THEN the fan-out message's invocation measured the two deliveries it queued
    sizes = [document["FanoutSize"] for document in emf_documents(capsys.readouterr().out) if "FanoutSize" in document]
    assert sizes == [[2.0]]  # one document, holding the one fan-out size


def test_a_success_a_retry_and_an_exhaustion_are_measured_and_logged(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver, capsys, caplog
) -> None:
    # Long on purpose: one GIVEN / WHEN / THEN story, read from start to end.
    caplog.set_level(logging.INFO)
    # GIVEN two subscriptions to one event: one answers 200, the other 500 (two attempts, then it is exhausted)
    ok, broken = make_receiver(), make_receiver()
    broken.default = (500, {}, b"", 0.0)
    ok_sub = subscribe(client, tenant, ok.url)
    broken_sub = subscribe(client, tenant, broken.url)
    # WHEN an event whose payload carries a marker is published and both deliveries run their course
    body = {"type": "invoice.paid", "data": {**INVOICE, "invoice_id": MARKER}, "tenant_id": tenant.id}
    published = client.post("/v1/events", json=body, headers=ADMIN)
    assert published.status_code == 202
    # (the worker's clock, started with the test's fixtures, is brought to the event's publication: setting up
    # may take more than the 2 s the retry waits below on a busy machine)
    clock.now = max(clock.now, datetime.fromisoformat(published.json()["created_at"]).timestamp())
    capsys.readouterr()
    harness.drain()
    clock.advance(2)
    harness.reveal()
    harness.drain()
    assert (len(ok.received), len(broken.received)) == (1, 2)
    output = capsys.readouterr().out
    # THEN the invocations printed EMF documents in the configured namespace, with the service as only dimension, of
    # the configured value (the stack's name in a deployment)
    documents = emf_documents(output)
    assert documents
    values: dict[str, list[float]] = defaultdict(list)
    units: dict[str, str] = {}
    for document in documents:
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "HeraldTest"
        assert directive["Dimensions"] == [["service"]]
        assert document["service"] == "herald-staging"
        for metric in directive["Metrics"]:
            units[metric["Name"]] = metric["Unit"]
            value = document[metric["Name"]]
            values[metric["Name"]] += value if isinstance(value, list) else [value]
    # AND they count one success, two failures, one retry and one exhaustion
    assert sum(values["DeliverySucceeded"]) == 1
    assert sum(values["DeliveryFailed"]) == 2
    assert sum(values["DeliveryRetried"]) == 1
    assert sum(values["DeliveryExhausted"]) == 1
    assert "DeliveryRefused" not in values
    # AND a latency per attempt, the fan-out's size, and the queue age of each delivery message when first picked up
    assert len(values["DeliveryLatency"]) == 3
    assert units["DeliveryLatency"] == "Milliseconds"
    # AND the time from the event's publication to each attempt's response: the retry's includes its wait
    assert len(values["PublishToDeliveryLatency"]) == 3
    assert units["PublishToDeliveryLatency"] == "Milliseconds"
    assert max(values["PublishToDeliveryLatency"]) >= 1000 > min(values["PublishToDeliveryLatency"])
    assert "FanoutSize" not in values  # publishing queued this event's two deliveries itself: no fan-out message ran
    assert len(values["QueueAgeAtPickup"]) == 2
    assert all(0 <= age < 60 for age in values["QueueAgeAtPickup"])
    # AND every log line about an attempt carries the event, delivery, subscription, tenant and attempt number
    attempts = [record for record in caplog.records if record.getMessage() == "attempt made"]
    assert len(attempts) == 3
    for record in attempts:
        fields = record.__dict__
        assert all(fields.get(name) for name in CORRELATION), fields
        assert fields["tenant_id"] == tenant.id
        assert fields["event_id"] == published.json()["id"]
    assert sorted((r.__dict__["subscription_id"], r.__dict__["attempt"]) for r in attempts) == sorted(
        [(ok_sub.id, 1), (broken_sub.id, 1), (broken_sub.id, 2)]
    )
    # AND no log line or metric holds a signing secret or the payload
    logged = output + "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for secret in (ok_sub.secret, broken_sub.secret):
        assert secret not in logged
        assert secret.removeprefix("whsec_") not in logged
    assert MARKER not in logged


@pytest.mark.parametrize("settings_overrides", [{"log_successful_attempts": False}])
def test_a_deployment_that_logs_only_failures_logs_a_successful_attempt_at_debug(
    client, tenant: TenantInfo, harness: Harness, make_receiver, caplog
) -> None:
    # GIVEN a deployment with HERALD_LOG_SUCCESSFUL_ATTEMPTS=false, a subscription that answers 200 and one that
    # answers 500
    caplog.set_level(logging.DEBUG, logger=dispatch.logger.name)  # what POWERTOOLS_LOG_LEVEL=DEBUG would show
    ok, broken = make_receiver(), make_receiver()
    broken.default = (500, {}, b"down", 0.0)
    ok_sub, broken_sub = subscribe(client, tenant, ok.url), subscribe(client, tenant, broken.url)
    # WHEN an event is delivered to both
    published = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=ADMIN
    )
    assert published.status_code == 202
    harness.drain()
    # THEN the failed attempt is logged as always, and the successful one only at DEBUG (which the template's
    # POWERTOOLS_LOG_LEVEL, INFO, does not write), with the same fields
    attempts = {
        record.__dict__["subscription_id"]: record for record in caplog.records if record.getMessage() == "attempt made"
    }
    assert {sub_id: record.levelno for sub_id, record in attempts.items()} == {
        ok_sub.id: logging.DEBUG,
        broken_sub.id: logging.INFO,
    }
    assert all(attempts[ok_sub.id].__dict__.get(name) for name in CORRELATION)
    # AND the delivery log still records the successful attempt
    response = client.get(f"/v1/subscriptions/{ok_sub.id}/deliveries", headers=tenant.headers)
    assert [(d["status"], d["attempts"]) for d in response.json()["data"]] == [("succeeded", 1)]


def test_a_metric_with_more_values_than_a_document_holds_is_printed_in_several(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker's metrics holding 250 latencies (EMF takes at most 100 values of a metric a document) and
    # 3 successes
    metrics = DeliveryMetrics("HeraldTest", detailed=True)
    for value in range(250):
        metrics.add(Metric.LATENCY, value)
    for _ in range(3):
        metrics.add(Metric.SUCCEEDED)
    # WHEN they are flushed
    capsys.readouterr()
    metrics.flush()
    documents = emf_documents(capsys.readouterr().out)
    # THEN three documents carry every value once, in order, at most 100 a metric, each with its unit
    assert [len(document["DeliveryLatency"]) for document in documents] == [100, 100, 50]
    assert [value for document in documents for value in document["DeliveryLatency"]] == [float(v) for v in range(250)]
    assert documents[0]["DeliverySucceeded"] == [1.0, 1.0, 1.0]
    assert all("DeliverySucceeded" not in document for document in documents[1:])
    for document in documents:
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "HeraldTest"
        assert directive["Dimensions"] == [["service"]]
        assert document["service"] == "herald"
        units = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
        assert units["DeliveryLatency"] == "Milliseconds"
    # AND a second flush prints nothing: what was printed is gone
    metrics.flush()
    assert emf_documents(capsys.readouterr().out) == []
    # AND with Powertools' switch for metrics off, nothing is printed
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics.add(Metric.SUCCEEDED)
    metrics.flush()
    assert emf_documents(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    "settings_overrides", [{"retry_schedule": (0, 0), "retry_jitter": 0.0, "metrics_namespace": "HeraldTest"}]
)
def test_a_deployment_without_detailed_metrics_writes_the_core_ones_only(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver, capsys
) -> None:
    # GIVEN the default settings (no detailed metrics), and two subscriptions to one event: one answers 200, the other
    # 500 (two attempts, then it is exhausted)
    ok, broken = make_receiver(), make_receiver()
    broken.default = (500, {}, b"", 0.0)
    subscribe(client, tenant, ok.url)
    subscribe(client, tenant, broken.url)
    # WHEN an event is published and both deliveries run their course (a success, a retry, an exhaustion)
    published = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=ADMIN
    )
    assert published.status_code == 202
    clock.now = max(clock.now, datetime.fromisoformat(published.json()["created_at"]).timestamp())
    capsys.readouterr()
    harness.drain()
    clock.advance(2)
    harness.reveal()
    harness.drain()
    assert (len(ok.received), len(broken.received)) == (1, 2)
    # THEN the documents count the success, both failures, the exhaustion and each attempt's time from publication
    values = _summed(emf_documents(capsys.readouterr().out))
    assert sum(values["DeliverySucceeded"]) == 1
    assert sum(values["DeliveryFailed"]) == 2
    assert sum(values["DeliveryExhausted"]) == 1
    assert len(values["PublishToDeliveryLatency"]) == 3
    # AND no other metric: the retry, each attempt's latency and the queue age, written with detailed metrics, are not
    assert set(values) <= {metric.value for metric in CORE}
    assert not {"DeliveryRetried", "DeliveryLatency", "QueueAgeAtPickup"} & set(values)


def test_metrics_outside_the_core_are_kept_only_with_detailed_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a worker's metrics without detailed metrics
    metrics = DeliveryMetrics("HeraldTest", detailed=False)
    # WHEN every metric is added once and they are flushed
    for metric in Metric:
        metrics.add(metric)
    capsys.readouterr()
    metrics.flush()
    (document,) = emf_documents(capsys.readouterr().out)
    # THEN the document defines and holds the core metrics, and only them
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert {metric["Name"] for metric in directive["Metrics"]} == {metric.value for metric in CORE}
    assert not {metric.value for metric in Metric if metric not in CORE} & set(document)
    # AND a batch that added only detailed metrics prints nothing at all
    metrics.add(Metric.LATENCY, 12)
    metrics.add(Metric.FANOUT_SIZE, 3)
    metrics.flush()
    assert emf_documents(capsys.readouterr().out) == []


def _summed(documents: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each metric's values over ``documents``."""
    values: dict[str, list[float]] = defaultdict(list)
    for document in documents:
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]
            values[metric["Name"]] += value if isinstance(value, list) else [value]
    return values


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "delivery_timeout_seconds": 1.0,
            "slow_lane_after_seconds": 0.5,
            "metrics_namespace": "HeraldTest",
            "detailed_metrics": True,
        }
    ],
)
def test_a_subscription_put_on_the_slow_lane_by_a_timed_out_attempt_is_counted_once(
    client, tenant: TenantInfo, harness: Harness, make_receiver, capsys
) -> None:
    # GIVEN an endpoint that answers after 2 s, past the 1 s timeout
    receiver = make_receiver()
    receiver.default = (200, {}, b"", 2.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN a test event is sent to it (an attempt asked for: not handed over, it runs to its timeout)
    assert client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers).status_code == 202
    capsys.readouterr()
    harness.drain()
    # THEN the subscription went on the slow lane once: when the attempt was slow to answer, not again at its timeout
    assert sum(_summed(emf_documents(capsys.readouterr().out))["SubscriptionMarkedSlow"]) == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "delivery_timeout_seconds": 5.0,
            "slow_lane_after_seconds": 0.5,
            "metrics_namespace": "HeraldTest",
            "detailed_metrics": True,
        }
    ],
)
def test_an_attempt_handed_to_the_slow_lane_that_then_succeeds_counts_no_failure(
    client, tenant: TenantInfo, harness: Harness, make_receiver, capsys
) -> None:
    # GIVEN an endpoint slow but healthy: it answers 200 after 1.5 s, within the 5 s timeout, past the 0.5 s after
    # which the work queue hands an attempt to the slow lane
    receiver = make_receiver()
    receiver.default = (200, {}, b"", 1.5)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is published and delivered: cut short on the work queue, then made from the slow lane
    publish(client, tenant.id)
    capsys.readouterr()
    harness.drain()
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    # THEN the metrics show one hand-over and one success, and no failure (the failure-rate alarm's input); the
    # latencies (the attempt's, and from the event's publication to its response) are the successful attempt's only
    values = _summed(emf_documents(capsys.readouterr().out))
    assert sum(values["AttemptHandedToSlowLane"]) == 1
    assert sum(values["DeliverySucceeded"]) == 1
    assert sum(values["DeliveryFailed"]) == 0
    assert "DeliveryRetried" not in values
    assert len(values["DeliveryLatency"]) == 1
    assert values["DeliveryLatency"][0] >= 1500
    assert len(values["PublishToDeliveryLatency"]) == 1


@pytest.mark.parametrize("settings_overrides", [{"metrics_namespace": "HeraldTest"}])
def test_a_sweep_that_fails_every_minute_shows_in_its_lag_and_one_that_keeps_up_does_not(
    harness: Harness, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    def lags() -> list[float]:
        out = capsys.readouterr().out
        documents = [document for document in emf_documents(out) if "ScheduleSweepLag" in document]
        for document in documents:
            (directive,) = document["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == "HeraldTest"
            assert {"Name": "ScheduleSweepLag", "Unit": "Seconds"} in [
                {key: metric[key] for key in ("Name", "Unit")} for metric in directive["Metrics"]
            ]
        return [value for document in documents for value in document["ScheduleSweepLag"]]

    # GIVEN a minute past the next whole hour (the sweep reads the schedule an hour at a time: what follows stays
    # within one; and later than any sweep made so far has queued), work scheduled 20 minutes ahead (as a long wait
    # is), and sweeps that keep up: each one's lag is 0
    clock.now = (math.floor(clock.now / 3600) + 1) * 3600 + 60
    body = DeliveryMessage(event_id="evt", tenant_id="tnt", subscription_id="sub", delivery_id="dlv")
    harness.services.store.schedule.put(dump_message(body), name="w", due=clock() + 1200, now=clock())
    capsys.readouterr()
    assert harness.worker.sweep()["complete"] is True
    assert lags() == [0.0]
    # WHEN, once the work is due, SQS refuses every sweep's send (after botocore's retries), a minute after minute
    clock.advance(1200)
    injector = install(harness.services.queue.client, "sqs.SendMessageBatch:5xx@call=1")
    assert injector is not None
    failed = []
    for _ in range(3):
        assert harness.worker.sweep()["complete"] is False
        failed += lags()
        clock.advance(60)
    # AND then DynamoDB refuses the sweep's reads of its cursor
    store_faults = install(harness.services.store.client, "dynamodb.GetItem:5xx@call=1")
    assert store_faults is not None
    assert harness.worker.sweep()["complete"] is False
    assert store_faults.count() >= 1
    store_faults.spec = FaultSpec()
    failed += lags()
    clock.advance(60)
    # THEN each sweep's lag is the time since the cursor (the last sweep that kept up moved it 2 minutes ahead), a
    # minute more every minute, also when the cursor could not be read
    assert failed == [1200.0 - 120, 1260.0 - 120, 1320.0 - 120, 1380.0 - 120]
    # AND once SQS takes the sends again, the next sweep queues the work and its lag is 0 again
    injector.spec = FaultSpec()
    assert harness.worker.sweep() == {"queued": 1, "complete": True}
    assert lags() == [0.0]


def test_an_attempt_its_transform_failed_counts_as_failed_with_no_latency(
    client, tenant: TenantInfo, harness: Harness, make_receiver, capsys
) -> None:
    # GIVEN a subscription whose transform gives an object for the catalog example but `false` for large invoices
    receiver = make_receiver()
    made = client.post(
        "/v1/subscriptions",
        json={
            "url": receiver.url,
            "event_types": ["invoice.paid"],
            "transform": "data.amount_cents < `100000` && data",
        },
        headers=tenant.headers,
    )
    assert made.status_code == 201, made.text
    # WHEN a large invoice is published and its delivery attempted
    publish(client, tenant.id, data={**INVOICE, "amount_cents": 250_000})
    capsys.readouterr()
    harness.drain()
    assert receiver.received == []
    # THEN the attempt counts as failed (a delivery failed for good: the operator's failure rate shows it), and no
    # latency is measured for it: it made no request, so there is no response to time
    values: dict[str, list[float]] = defaultdict(list)
    for document in emf_documents(capsys.readouterr().out):
        for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = document[metric["Name"]]
            values[metric["Name"]] += value if isinstance(value, list) else [value]
    assert (sum(values["DeliveryFailed"]), sum(values["DeliveryExhausted"])) == (1, 1)
    assert "DeliveryLatency" not in values
    assert "PublishToDeliveryLatency" not in values
