"""Operational webhooks: the operator hears, on its own signed endpoints, when a subscription is disabled or
recovers and when a delivery is failing or exhausted; a report AWS keeps refusing is left to the work queue and
published later, once. Over real HTTP, verified with ``standardwebhooks``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from herald.catalog import operational_catalog
from herald.faults import FaultInjector, install
from herald.local.moto_fixes import release_delays
from herald.messages import NoticeMessage, dump_message
from herald.storage import AttemptTally
from herald.worker import bookkeeping
from tests.delivery_support import Harness, publish, subscribe
from tests.support import ADMIN, Receiver, TenantInfo
from tests.test_dead_letters import dead_letters, discard, redrive

pytestmark = pytest.mark.e2e

OPERATIONAL = {"subscription.disabled", "delivery.exhausted", "delivery.failing", "subscription.recovered"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Five attempts back to back (no waiting), no jitter: a whole retry sequence runs in one drain.
    return {"retry_schedule": (0, 0, 0, 0, 0), "retry_jitter": 0.0, "failing_after_failures": 3}


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


def register(client: Any, url: str, event_types: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url} | ({"event_types": event_types} if event_types else {})
    response = client.post("/v1/operator/webhooks", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


def drain_until(harness: Harness, done: Callable[[], bool], seconds: float = 30) -> None:
    """Drain until ``done()``: a retry comes back a second or so after its attempt (visibility is whole seconds)."""
    give_up = time.monotonic() + seconds
    while True:
        harness.drain()
        if done() or time.monotonic() > give_up:
            return
        time.sleep(0.2)


def operational(secret: str, receiver: Receiver) -> list[dict[str, Any]]:
    """Every delivery the operator's endpoint got, verified with standardwebhooks (raises if one is not)."""
    return [Webhook(secret).verify(got.body, got.headers) for got in receiver.received]


def test_a_410_disables_the_subscription_and_the_operator_gets_a_signed_webhook(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint for every operational event, and a tenant endpoint that answers 410 Gone
    ops, gone = make_receiver(), make_receiver()
    gone.default = (410, {}, b"gone", 0.0)
    endpoint = register(client, ops.url)
    assert endpoint["secret"].startswith("whsec_")
    sub = subscribe(client, tenant, gone.url)
    # WHEN an event is delivered to it
    event_id = publish(client, tenant.id)
    harness.drain()
    # THEN the subscription is disabled, with the reason and time shown to the tenant
    shown = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]
    assert shown["disabled_at"] is not None
    # AND the operator received, signed, that it was disabled and that the delivery failed for good
    payloads = {payload["type"]: payload["data"] for payload in operational(endpoint["secret"], ops)}
    assert set(payloads) == {"subscription.disabled", "delivery.exhausted"}
    disabled = payloads["subscription.disabled"]
    assert (disabled["tenant_id"], disabled["subscription_id"], disabled["url"]) == (tenant.id, sub.id, gone.url)
    assert "410" in disabled["reason"]
    assert disabled["last_status_code"] == 410
    exhausted = payloads["delivery.exhausted"]
    assert (exhausted["event_id"], exhausted["attempts"], exhausted["last_status_code"]) == (event_id, 1, 410)
    # AND no operational event reaches the tenant's endpoint
    assert len(gone.received) == 1
    # AND a PATCH re-enables it, clearing the reason and time
    enabled = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": True}, headers=tenant.headers).json()
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["disabled_at"]) == (True, None, None)
    gone.default = (200, {}, b"ok", 0.0)
    publish(client, tenant.id)
    harness.drain()
    assert len(gone.received) == 2


def _reports_of_a_gone_endpoint(
    client: Any, tenant: TenantInfo, harness: Harness, make_receiver: Callable[[], Receiver], *, refused: str
) -> tuple[dict[str, Any], Receiver, FaultInjector]:
    """An operator endpoint (as registered) and its receiver, a tenant endpoint that answers 410 Gone with an event
    queued for it, and SQS refusing the worker's sends numbered ``refused`` (``A-B``; after botocore's retries)."""
    ops, gone = make_receiver(), make_receiver()
    gone.default = (410, {}, b"gone", 0.0)
    endpoint = register(client, ops.url)
    subscribe(client, tenant, gone.url)
    publish(client, tenant.id)
    injector = install(harness.services.queue.client, f"sqs.Send*:5xx@call=calls:{refused}")
    assert injector is not None
    return endpoint, ops, injector


@pytest.mark.parametrize("time_left", [True, False], ids=["time left", "near the invocation's end"])
def test_a_report_whose_publish_fails_once_is_published_by_its_next_try(
    client, tenant: TenantInfo, harness: Harness, make_receiver, time_left: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an operator endpoint, a tenant endpoint that answers 410 Gone, and an event queued for it
    # AND SQS refuses the worker's first send (after botocore's retries): a report's queueing, stored before
    endpoint, ops, injector = _reports_of_a_gone_endpoint(client, tenant, harness, make_receiver, refused="1")
    # AND the invocation has time for a retry, or not (the margin it keeps for the batch's bookkeeping is made more
    # than its whole 60 s)
    if not time_left:
        monkeypatch.setattr(bookkeeping, "REPORT_RETRY_MARGIN_SECONDS", 120.0)
    # WHEN the delivery is made and its subscription disabled (the report queued again is held back a minute after
    # its publish, by when a copy of the first try would have been worked: released here; near the invocation's end,
    # the refused report is left to the work queue instead, held back 30 s, then published, its fan-out held back as
    # the retry's is)
    harness.drain()
    for _ in range(2):
        release_delays(harness.services.settings.queue_url)
        harness.drain()
    # THEN the refused send was one of the reports', and both reports reached the operator anyway, once each
    assert injector.count("5xx") == 1
    received = [payload["type"] for payload in operational(endpoint["secret"], ops)]
    assert sorted(received) == ["delivery.exhausted", "subscription.disabled"]


def test_a_failing_delivery_is_reported_once_after_its_4th_attempt_and_once_exhausted(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint for delivery events only, and a tenant endpoint that always answers 500
    ops, broken = make_receiver(), make_receiver()
    broken.default = (500, {}, b"down", 0.0)
    endpoint = register(client, ops.url, ["delivery.failing", "delivery.exhausted"])
    sub = subscribe(client, tenant, broken.url)
    # WHEN an event runs through its five attempts
    event_id = publish(client, tenant.id)
    drain_until(harness, lambda: len(broken.received) == 5 and len(ops.received) == 2)
    time.sleep(1.5)
    harness.drain()  # a later look at everything changes nothing
    assert len(broken.received) == 5
    # THEN the operator heard once that it was failing (after the 4th attempt) and once that it was exhausted
    payloads = operational(endpoint["secret"], ops)
    assert sorted(payload["type"] for payload in payloads) == ["delivery.exhausted", "delivery.failing"]
    by_type = {payload["type"]: payload["data"] for payload in payloads}
    assert by_type["delivery.failing"]["attempts"] == 4
    assert by_type["delivery.failing"]["next_attempt_at"] is not None
    assert by_type["delivery.exhausted"]["attempts"] == 5
    assert by_type["delivery.exhausted"]["reason"] == "every scheduled attempt failed"
    assert {data["event_id"] for data in by_type.values()} == {event_id}
    assert {data["subscription_id"] for data in by_type.values()} == {sub.id}
    # AND the subscription is failing but not disabled: its window (5 days) has not passed
    stats = client.get(f"/v1/subscriptions/{sub.id}/stats", headers=tenant.headers).json()
    assert stats["consecutive_failures"] == 5
    assert stats["failing_since"] is not None
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "retry_schedule": (0, 0, 0, 0, 0),
            "retry_jitter": 0.0,
            "failing_after_failures": 3,
            "delivery_timeout_seconds": 5.0,
            "slow_lane_after_seconds": 1.0,
        }
    ],
)
def test_a_delivery_whose_4th_attempt_is_handed_over_is_reported_failing_at_its_4th_scheduled_one(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint for delivery events, and a tenant endpoint that answers 500: at once three times,
    # then once after 2 s (the work queue hands that attempt to the slow lane after 1 s), then at once again
    ops, broken = make_receiver(), make_receiver()
    broken.responses = [(500, {}, b"down", 0.0)] * 3 + [(500, {}, b"down", 2.0)]
    broken.default = (500, {}, b"down", 0.0)
    endpoint = register(client, ops.url, ["delivery.failing", "delivery.exhausted"])
    subscribe(client, tenant, broken.url)
    # WHEN an event runs through its five scheduled attempts and the hand-over
    publish(client, tenant.id)
    drain_until(harness, lambda: len(broken.received) == 6 and len(ops.received) == 2)
    assert len(broken.received) == 6
    # THEN the operator heard that it was failing at its 4th scheduled attempt (the 5th made: the hand-over is
    # none), and that it was exhausted after its 5th
    by_type = {payload["type"]: payload["data"] for payload in operational(endpoint["secret"], ops)}
    assert sorted(by_type) == ["delivery.exhausted", "delivery.failing"]
    assert (by_type["delivery.failing"]["attempts"], by_type["delivery.exhausted"]["attempts"]) == (5, 6)
    assert by_type["delivery.failing"]["next_attempt_at"] is not None


@pytest.mark.parametrize(
    "settings_overrides", [{"retry_schedule": (0, 0, 0), "retry_jitter": 0.0, "failing_after_failures": 3}]
)
def test_a_manual_attempt_on_a_delivery_that_failed_for_good_is_not_reported_failing(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint for delivery events, and a delivery that failed for good after its 3 attempts
    ops, broken = make_receiver(), make_receiver()
    broken.default = (500, {}, b"down", 0.0)
    endpoint = register(client, ops.url, ["delivery.failing", "delivery.exhausted"])
    sub = subscribe(client, tenant, broken.url)
    publish(client, tenant.id)
    drain_until(harness, lambda: len(broken.received) == 3 and len(ops.received) == 1)
    delivery = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"][0]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 3)
    # WHEN its tenant retries it by hand, and that 4th attempt fails too
    retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    drain_until(harness, lambda: len(broken.received) == 4)
    time.sleep(1.5)
    harness.drain()  # a later look at everything changes nothing
    # THEN the operator heard only that it was exhausted: a 4th attempt with no retry after it is not "failing"
    assert [payload["type"] for payload in operational(endpoint["secret"], ops)] == ["delivery.exhausted"]


def test_a_failing_subscription_that_succeeds_again_is_reported_recovered(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint, and a tenant endpoint that fails three times (failing from then on) then works
    ops, flaky = make_receiver(), make_receiver()
    flaky.responses = [(503, {}, b"", 0.0)] * 3
    endpoint = register(client, ops.url, ["subscription.recovered"])
    sub = subscribe(client, tenant, flaky.url)
    # WHEN an event is delivered at its 4th attempt
    publish(client, tenant.id)
    drain_until(harness, lambda: len(ops.received) == 1)
    # THEN the operator heard that the subscription recovered, and since when it had been failing
    (payload,) = operational(endpoint["secret"], ops)
    assert payload["type"] == "subscription.recovered"
    assert payload["data"]["subscription_id"] == sub.id
    assert payload["data"]["failing_since"] <= payload["data"]["recovered_at"]
    # AND the stats show the streak over
    stats = client.get(f"/v1/subscriptions/{sub.id}/stats", headers=tenant.headers).json()
    assert (stats["consecutive_failures"], stats["failing_since"]) == (0, None)


def test_a_streak_the_batchs_read_missed_is_ended_by_the_stream_and_reported_recovered(
    client, tenant: TenantInfo, services, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint, and a tenant subscription failing: three failures in a row counted (by other
    # batches) since...
    ops, healthy = make_receiver(), make_receiver()
    endpoint = register(client, ops.url, ["subscription.recovered"])
    sub = subscribe(client, tenant, healthy.url)
    now = datetime.now(UTC)
    failures = [AttemptTally(False, 503, now - timedelta(seconds=n)) for n in (3, 2, 1)]
    services.store.health.count_attempts(sub.id, failures, failing_after=3, expires_at=int(time.time()) + 3600)

    # ... the batch's eventually consistent read did not see yet (DynamoDB may answer a read with an earlier
    # state for about a second; moto never does, so the stats item is dropped from the answer)
    def stale(parsed: dict[str, Any], **_: Any) -> None:
        for items in parsed.get("Responses", {}).values():
            items[:] = [item for item in items if not item["pk"]["S"].startswith("STATS#")]

    services.store.client.meta.events.register("after-call.dynamodb.BatchGetItem", stale)
    # WHEN an event's first attempt succeeds (the worker, seeing no streak, leaves the stats to the stream)
    publish(client, tenant.id)
    drain_until(harness, lambda: len(ops.received) == 1)
    # THEN the stream's write ended the streak and the operator heard the subscription recovered
    assert len(healthy.received) == 1
    (payload,) = operational(endpoint["secret"], ops)
    assert payload["type"] == "subscription.recovered"
    assert payload["data"]["subscription_id"] == sub.id
    assert payload["data"]["failing_since"] < payload["data"]["recovered_at"]
    stats = client.get(f"/v1/subscriptions/{sub.id}/stats", headers=tenant.headers).json()
    assert (stats["consecutive_failures"], stats["failing_since"]) == (0, None)
    assert (stats["attempts"], stats["succeeded"], stats["failed"], stats["last_status_code"]) == (4, 1, 3, 200)


def test_the_operators_own_endpoint_is_never_reported_to_itself(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint that answers 410 Gone, and a tenant endpoint that does too
    ops, gone = make_receiver(), make_receiver()
    ops.default = gone.default = (410, {}, b"gone", 0.0)
    endpoint = register(client, ops.url)
    sub = subscribe(client, tenant, gone.url)
    # WHEN a delivery to the tenant disables its subscription, and the reports of it disable the operator's
    publish(client, tenant.id)
    harness.drain()
    # THEN the operator's endpoint got the two reports about the tenant's subscription, none about itself (no loop)
    reports = [got.json() for got in ops.received]
    assert sorted(report["type"] for report in reports) == ["delivery.exhausted", "subscription.disabled"]
    assert {report["data"]["subscription_id"] for report in reports} == {sub.id}
    shown = client.get(f"/v1/operator/webhooks/{endpoint['id']}", headers=ADMIN).json()
    assert shown["enabled"] is False
    # AND the operator can re-enable it
    patched = client.patch(f"/v1/operator/webhooks/{endpoint['id']}", json={"enabled": True}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is True


def test_without_operator_endpoints_nothing_is_published(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN no operator endpoint, and a tenant endpoint that answers 410
    receiver.default = (410, {}, b"gone", 0.0)
    subscribe(client, tenant, receiver.url)
    # WHEN its subscription is disabled
    publish(client, tenant.id)
    harness.queue_calls.clear()  # what the API sent; the worker's own sends from here on
    harness.drain()
    # THEN no operational event was stored or queued: the worker sent no message at all (publishing queued the
    # one delivery itself)
    sent = harness.queue_calls.of("SendMessage") + harness.queue_calls.of("SendMessageBatch")
    assert [call.operation for call in sent] == []


def test_operational_event_types_are_neither_publishable_nor_subscribable(client, tenant: TenantInfo) -> None:
    # WHEN the operator publishes an operational event type through the events API
    data = {"tenant_id": tenant.id, "subscription_id": "sub_x", "url": "https://x.test/", "reason": "r"}
    published = client.post(
        "/v1/events", json={"type": "subscription.disabled", "data": data, "tenant_id": tenant.id}, headers=ADMIN
    )
    # THEN it is refused: only Herald emits them
    assert published.status_code == 422
    assert published.json()["error"]["code"] == "unknown_event_type"
    # AND a tenant cannot subscribe to one
    subscribed = client.post(
        "/v1/subscriptions",
        json={"url": "https://example.com/h", "event_types": ["delivery.failing"]},
        headers=tenant.headers,
    )
    assert subscribed.status_code == 422
    # AND a tenant cannot reach the operator's endpoints; unknown types are refused there too
    assert client.get("/v1/operator/webhooks", headers=tenant.headers).status_code == 403
    for event_types in (["invoice.paid"], ["*", "invoice.paid"]):
        refused = client.post(
            "/v1/operator/webhooks", json={"url": "https://example.com/h", "event_types": event_types}, headers=ADMIN
        )
        assert refused.status_code == 422, event_types
        assert refused.json()["error"]["code"] == "unknown_event_type"


def test_operator_endpoints_are_listed_and_deleted(client) -> None:
    # GIVEN two operator endpoints
    first = register(client, "https://ops.example.com/a")
    register(client, "https://ops.example.com/b", ["subscription.disabled"])
    # WHEN they are listed, THEN both show, without their secrets
    listed = client.get("/v1/operator/webhooks", headers=ADMIN).json()
    assert sorted(item["url"] for item in listed["data"]) == ["https://ops.example.com/a", "https://ops.example.com/b"]
    assert all("secret" not in item for item in listed["data"])
    # AND one can be deleted
    assert client.delete(f"/v1/operator/webhooks/{first['id']}", headers=ADMIN).status_code == 204
    assert client.get(f"/v1/operator/webhooks/{first['id']}", headers=ADMIN).status_code == 404
    # AND the operator's reserved tenant is not among the tenants
    tenants = client.get("/v1/tenants", headers=ADMIN).json()["data"]
    assert all(item["name"] != "operator" for item in tenants)


def test_an_operator_endpoints_deliveries_are_listed_retried_and_signed_with_a_rotated_secret(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an operator endpoint that heard of a subscription disabled by a 410
    ops, gone = make_receiver(), make_receiver()
    gone.default = (410, {}, b"gone", 0.0)
    endpoint = register(client, ops.url)
    base = f"/v1/operator/webhooks/{endpoint['id']}"
    subscribe(client, tenant, gone.url)
    publish(client, tenant.id)
    harness.drain()
    assert {payload["type"] for payload in operational(endpoint["secret"], ops)} == {
        "subscription.disabled",
        "delivery.exhausted",
    }
    # WHEN the operator lists the endpoint's deliveries, THEN both show, succeeded, newest first
    listed = client.get(f"{base}/deliveries", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    shown = listed.json()["data"]
    assert sorted(item["event_type"] for item in shown) == ["delivery.exhausted", "subscription.disabled"]
    assert {item["status"] for item in shown} == {"succeeded"}
    # AND they filter by an operational type, and a tenant's type is not one of them
    only = client.get(f"{base}/deliveries", params={"event_type": "subscription.disabled"}, headers=ADMIN).json()
    assert [item["event_type"] for item in only["data"]] == ["subscription.disabled"]
    unknown = client.get(f"{base}/deliveries", params={"event_type": "invoice.paid"}, headers=ADMIN)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_event_type"
    # AND a delivery shows its attempt, answered 200 by the endpoint
    delivery = only["data"][0]
    got = client.get(f"{base}/deliveries/{delivery['id']}", headers=ADMIN).json()
    assert (got["id"], got["attempts"]) == (delivery["id"], 1)
    attempts = client.get(f"{base}/deliveries/{delivery['id']}/attempts", headers=ADMIN).json()["data"]
    assert [(a["attempt_number"], a["succeeded"], a["status_code"]) for a in attempts] == [(1, True, 200)]
    # WHEN its secret is rotated with no grace (it leaked) and the delivery is sent again
    rotated = client.post(f"{base}/secret/rotate", json={"grace_hours": 0}, headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    secret = rotated.json()["secret"]
    assert secret.startswith("whsec_")
    assert secret != endpoint["secret"]
    ops.received.clear()
    retried = client.post(f"{base}/deliveries/{delivery['id']}/retry", headers=ADMIN)
    assert retried.status_code == 202, retried.text
    harness.drain()
    # THEN it arrives once more, signed with the new secret only
    [again] = ops.received
    assert Webhook(secret).verify(again.body, again.headers)["type"] == "subscription.disabled"
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(again.body, again.headers)
    attempts = client.get(f"{base}/deliveries/{delivery['id']}/attempts", headers=ADMIN).json()["data"]
    assert [(a["attempt_number"], a["trigger"]) for a in attempts] == [(1, "scheduled"), (2, "manual")]
    # AND another endpoint's path does not reach this delivery
    other = register(client, "https://ops.example.com/other")
    missing = client.get(f"/v1/operator/webhooks/{other['id']}/deliveries/{delivery['id']}", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_operational_events_are_documented_as_webhooks(client) -> None:
    # WHEN the OpenAPI document is read
    webhooks = client.get("/openapi.json").json()["webhooks"]
    # THEN each operational event is there with its body, tagged as operational, beside the tenants' types
    assert set(webhooks) >= OPERATIONAL
    assert "invoice.paid" in webhooks
    for name in OPERATIONAL:
        assert webhooks[name]["post"]["tags"] == ["operational"]
    # AND each documents the delivered body and the signature headers
    for name in OPERATIONAL:
        operation = webhooks[name]["post"]
        assert "application/json" in operation["requestBody"]["content"]
        assert {"webhook-signature", "webhook-id", "webhook-timestamp"} <= {p["name"] for p in operation["parameters"]}


# --- reports AWS keeps refusing: left to the work queue (NoticeMessage) ------------------------------------

RECOVERED = {
    "tenant_id": "tnt_01jb0000000000000000000000",
    "subscription_id": "sub_01jb0000000000000000000000",
    "url": "https://example.com/hooks",
    "failing_since": "2026-01-01T10:00:00Z",
    "recovered_at": "2026-01-01T12:00:00Z",
}


def _release_and_drain(harness: Harness, times: int) -> None:
    """Let the delayed messages out and drain, ``times`` over: a notice waits 30 s on the queue, and the fan-out of
    an event published again (a refused try stored it) is held back a minute."""
    for _ in range(times):
        release_delays(harness.services.settings.queue_url)
        harness.drain()


def test_a_report_aws_keeps_refusing_is_queued_and_published_later_once(
    client: Any,
    tenant: TenantInfo,
    harness: Harness,
    make_receiver: Callable[[], Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN an operator endpoint, a tenant endpoint that answers 410 Gone, and an event queued for it
    # AND SQS refuses the worker's first three sends (after botocore's retries): each try of the first report's
    endpoint, ops, injector = _reports_of_a_gone_endpoint(client, tenant, harness, make_receiver, refused="1-3")
    # WHEN the delivery is made and fails for good, and its subscription is disabled
    with caplog.at_level(logging.WARNING):
        harness.drain()
    # THEN the first report was refused on each of its three tries, and left to the work queue
    assert injector.count("5xx") == 3
    assert "operational event refused; queued to be published later" in caplog.text
    assert [payload["type"] for payload in operational(endpoint["secret"], ops)] == ["subscription.disabled"]
    # WHEN the queue's later batches run
    _release_and_drain(harness, 2)
    # THEN both reports reached the operator, signed, once each
    received = [payload["type"] for payload in operational(endpoint["secret"], ops)]
    assert sorted(received) == ["delivery.exhausted", "subscription.disabled"]


def test_a_queued_notice_refused_again_comes_back_and_its_copies_publish_it_once(
    client: Any, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN an operator endpoint, and a notice queued twice (SQS's at-least-once, or two workers that each queued it)
    ops = make_receiver()
    endpoint = register(client, ops.url)
    body = dump_message(NoticeMessage(event_type="subscription.recovered", data=RECOVERED, key=["sub_1", "t0"]))
    for _ in range(2):
        harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=body)
    # AND DynamoDB refusing each copy's first read (after botocore's retries)
    injector = install(harness.services.store.client, "dynamodb.Query:5xx@call=calls:1-2")
    assert injector is not None
    # WHEN the worker takes them
    harness.drain()
    # THEN nothing is published, and both copies stay on the queue (taken back, not deleted)
    assert injector.count("5xx") == 2
    assert ops.received == []
    assert harness.counts() == (0, 2)
    # WHEN they come back, and the fan-outs run
    harness.reveal()
    harness.drain()
    _release_and_drain(harness, 1)
    # THEN the operator got the notice once, signed, as the catalog documents it
    [received] = operational(endpoint["secret"], ops)
    assert (received["type"], received["data"]) == ("subscription.recovered", RECOVERED)
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize(
    ("event_type", "data", "why"),
    [
        ("subscription.exploded", RECOVERED, "is not an operational event type"),
        ("subscription.recovered", {**RECOVERED, "recovered_at": "yesterday"}, "recovered_at"),
    ],
    ids=["type not in the catalog", "data that does not fit"],
)
def test_a_notice_the_catalog_does_not_take_is_parked_in_the_dead_letter_queue(
    client: Any, harness: Harness, make_receiver: Callable[[], Receiver], event_type: str, data: Any, why: str
) -> None:
    # GIVEN an operator endpoint, and a notice no try will publish (another version's)
    ops = make_receiver()
    register(client, ops.url)
    body = dump_message(NoticeMessage(event_type=event_type, data=data, key=["sub_1"]))
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=body)
    # WHEN the worker takes it
    harness.drain()
    # THEN it is in the dead-letter queue, off the work queue, and nothing was published
    assert harness.counts() == (0, 0)
    assert ops.received == []
    # AND the dead-letter API shows it as poison (no redrive would work it), with the reason
    [letter] = dead_letters(client)["sample"]
    assert (letter["kind"], letter["poison"], json.loads(letter["body"])) == ("notice", True, json.loads(body))
    assert letter["reason"].startswith("poison: operational event not publishable")
    assert why in letter["reason"]
    # AND the operator can discard it
    discarded = discard(client, message_ids=[letter["message_id"]])
    assert [gone["message_id"] for gone in discarded["discarded"]] == [letter["message_id"]]


def _herald_lines_holding(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """Herald's log lines (botocore's DEBUG lines show the traffic) that hold ``text``: each as written, a traceback
    included, and its fields."""
    lines = [logging.Formatter().format(r) + repr(r.__dict__) for r in caplog.records if r.name.startswith("herald")]
    return [line for line in lines if text in line]


@pytest.mark.parametrize(
    "event_type", ["subscription.exploded", "subscription.recovered"], ids=["type not in the catalog", "data unfit"]
)
def test_a_notice_parked_in_the_dead_letter_queue_logs_no_part_of_its_data(
    client: Any,
    harness: Harness,
    make_receiver: Callable[[], Receiver],
    caplog: pytest.LogCaptureFixture,
    event_type: str,
) -> None:
    # GIVEN an operator endpoint, and a notice no try will publish, whose data names a subscriber's URL with its own
    # secret in the path
    register(client, make_receiver().url)
    secret = "T000-B000-SECRETTOKEN123"
    data = {**RECOVERED, "url": f"https://hooks.example.com/services/{secret}", "recovered_at": "yesterday"}
    body = dump_message(NoticeMessage(event_type=event_type, data=data, key=["sub_1"]))
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=body)
    # WHEN the worker parks it
    with caplog.at_level(logging.DEBUG):
        harness.drain()
    # THEN the dead-letter queue keeps it whole, for the operator to read
    [letter] = dead_letters(client)["sample"]
    assert json.loads(letter["body"]) == json.loads(body)
    # AND the log says what it was and why, with no part of its data (logs are read by more people than the queue)
    (parked,) = [r for r in caplog.records if r.getMessage() == "work message sent to the dead-letter queue"]
    assert parked.__dict__["work_message"]["kind"] == "notice"
    assert parked.__dict__["work_message"]["event_type"] == event_type
    assert "not publishable" in parked.__dict__["reason"]
    assert _herald_lines_holding(caplog, secret) == []


def test_a_report_whose_data_does_not_fit_its_type_is_logged_with_none_of_its_data(
    client: Any, harness: Harness, make_receiver: Callable[[], Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN an operator endpoint, and a report the worker builds wrongly (a bug): a field missing, its data naming a
    # subscriber's URL with its own secret in the path
    register(client, make_receiver().url)
    secret = "T000-B000-SECRETTOKEN123"
    data = {key: value for key, value in RECOVERED.items() if key not in ("failing_since", "url")}
    data["url"] = f"https://hooks.example.com/services/{secret}"  # last: pydantic quotes an input's start and end
    # WHEN the worker reports it
    with caplog.at_level(logging.DEBUG):
        handled = harness.worker.loop.run_until_complete(
            bookkeeping.report(harness.worker, [("subscription.recovered", data, ("sub_1",))], {"subscription_id": "s"})
        )
    # THEN it is not published, and the log says so, naming the field, with no part of the data
    assert handled is False
    (failed,) = [r for r in caplog.records if r.getMessage().startswith("operational event not published")]
    assert failed.levelname == "ERROR"
    assert "failing_since" in repr(failed.__dict__)
    assert _herald_lines_holding(caplog, "SECRETTOKEN") == []  # pydantic cuts a long input's middle


def test_a_notice_parked_by_a_worker_whose_catalog_lacked_its_type_waits_for_code_that_has_it(
    client: Any, harness: Harness, make_receiver: Callable[[], Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an operator endpoint, and a notice of subscription.recovered parked by a worker whose catalog lacks that
    # type (a rollback to code before the type, or a deploy under way)
    ops = make_receiver()
    endpoint = register(client, ops.url)
    body = dump_message(NoticeMessage(event_type="subscription.recovered", data=RECOVERED, key=["sub_1", "t0"]))
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=body)
    with monkeypatch.context() as older:
        older.delitem(operational_catalog._types, "subscription.recovered")
        harness.drain()
        # WHEN the API, on the same code, is asked for it and to discard all poison
        [letter] = dead_letters(client)["sample"]
        left = discard(client, all_poison=True)
        # THEN it is poison there (no redrive would work it), but left: newer code may publish it
        assert (letter["kind"], letter["poison"]) == ("notice", True)
        assert (left["discarded"], left["remaining"]) == ([], 1)
    # WHEN code whose catalog has the type runs, THEN the notice is no poison any more, and a redrive publishes it
    [letter] = dead_letters(client)["sample"]
    assert letter["poison"] is False
    assert letter["reason"].startswith("parked as unworkable by a worker running other code, workable now")
    assert redrive(client)["moved"] == 1
    harness.drain()
    [received] = operational(endpoint["secret"], ops)
    assert (received["type"], received["data"]) == ("subscription.recovered", RECOVERED)


@pytest.mark.parametrize(
    ("body", "unworkable"),
    [
        (
            json.dumps(
                {"v": 2, "kind": "notice", "event_type": "subscription.recovered", "data": RECOVERED, "key": []}
            ),
            False,
        ),
        (
            dump_message(NoticeMessage(event_type="subscription.recovered", data={**RECOVERED, "cause": "x"}, key=[])),
            True,
        ),
    ],
    ids=["a newer version, unreadable here", "a field newer code added, unworkable here"],
)
def test_all_poison_leaves_a_notice_newer_code_may_publish(
    client: Any, harness: Harness, body: str, unworkable: bool
) -> None:
    # GIVEN a notice parked by a worker that could not read or publish it, which newer code may publish
    harness.services.queue.dead_letter(body, "parked by other code", unworkable=unworkable)
    # WHEN the operator discards all poison
    left = discard(client, all_poison=True)
    # THEN it is poison to this code, but left; named, it is discarded
    assert (left["discarded"], left["remaining"]) == ([], 1)
    [letter] = dead_letters(client)["sample"]
    assert (letter["kind"], letter["poison"]) == ("notice", True)
    named = discard(client, message_ids=[letter["message_id"]])
    assert [gone["message_id"] for gone in named["discarded"]] == [letter["message_id"]]
