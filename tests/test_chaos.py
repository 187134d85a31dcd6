"""Chaos, end to end: events published over real HTTP while AWS misbehaves (herald.faults), delivered by
Herald's worker to real receivers on 127.0.0.1, checked with the independent ``standardwebhooks``.

What must hold whatever the faults: every delivery arrives with a valid signature; a delivery arrives
twice only where at-least-once allows it (its send happened and recording it failed: a fault on that
delivery's write), and the repeats are counted; no counter stays wrong (``herald.repair`` recounts what
a lost batch write left short); the API answers 503 with Retry-After, never a 500.
"""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient

from herald import faults
from herald.api import create_app
from herald.faults import CHAOS_MIX, install
from herald.local.poller import SqsPoller
from herald.local.resources import create_local_resources
from herald.repair import recount_event, recount_subscription
from herald.services import Services
from herald.settings import Settings
from herald.storage.events import COUNTED_FROM_DELIVERIES_MAX
from herald.storage.keys import delivery_partition
from herald.worker import Worker, settle_all
from tests import test_delivery_batches as batches
from tests import test_route_isolation as isolation
from tests.chaos_support import Answers, call_until_done, serve, verify_signature
from tests.delivery_support import (
    Harness,
    delivery_id_of,
    delivery_label_of,
    event_counts,
    fanned_out_counts,
    publish,
    step,
    subscribe,
)
from tests.process_guard import Processes
from tests.support import ADMIN, ADMIN_KEY, INVOICE, Clock, Receiver, TenantInfo
from tests.test_route_isolation import OPERATOR_TAGS, TenantA, body_for, fill, operations

pytestmark = pytest.mark.e2e
#: The isolation walk's tenant A: a subscription with a delivery, a rotated secret, API keys.
tenant_a = isolation.tenant_a

SUBSCRIPTIONS = 8
EVENTS = 25
ALL_DELIVERED = fanned_out_counts(SUBSCRIPTIONS, succeeded=SUBSCRIPTIONS)


def _setup(http: httpx.Client, receiver: Receiver) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """A tenant with SUBSCRIPTIONS subscriptions to one receiver (told apart by path); faults suspended."""
    with faults.suspended():
        tenant = http.post("/v1/tenants", json={"name": "Chaos"}, headers=ADMIN).json()
        headers = {"Authorization": f"Bearer {tenant['api_key']['key']}"}
        subs = {}
        for n in range(SUBSCRIPTIONS):
            body = {"url": f"{receiver.url}?n={n}", "event_types": ["invoice.paid"]}
            created = http.post("/v1/subscriptions", json=body, headers=headers)
            assert created.status_code == 201, created.text
            subs[f"/webhook?n={n}"] = (created.json()["id"], created.json()["secret"])
    return {"id": tenant["id"], "headers": headers}, subs


def _injected_on(services: Services, event_id: str, sub_id: str) -> list[faults.Injected]:
    """The call-level faults the worker's DynamoDB client drew on writes recording that delivery: its item's, or
    its attempts' (kept under the delivery's own partition while it is not settled by its first attempt)."""
    injector = faults.injector_of(services.store.client)
    assert injector is not None
    item = delivery_label_of(services.store, event_id, sub_id)
    attempts = delivery_partition(delivery_id_of(services.store, event_id, sub_id))
    return [hit for hit in injector.injected if hit.stage == "call" and {item, attempts} & set(hit.keys)]


@pytest.mark.slow
@pytest.mark.faults(CHAOS_MIX + ", seed=16")
def test_a_stream_under_the_fault_mix_arrives_whole_signed_and_counted(
    settings: Settings,
    services: Services,
    aws: boto3.session.Session,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
) -> None:
    # GIVEN the API over real HTTP and the worker, each with its own AWS clients drawing the fault mix
    # Long on purpose: one GIVEN / WHEN / THEN story, read from start to end.
    api_services = Services.create(settings, session=aws)
    with serve(api_services) as base, httpx.Client(base_url=base, timeout=30) as http:
        tenant, subs = _setup(http, receiver)
        answers = Answers(Counter())
        # WHEN a stream of events is published (a 503 is called again with the same Idempotency-Key),
        # the worker running between publishes
        event_ids = []
        for n in range(EVENTS):
            body = {"type": "invoice.paid", "data": {**INVOICE, "invoice_id": f"in_{n}"}, "tenant_id": tenant["id"]}
            published = call_until_done(
                http, answers, "POST", "/v1/events", ok=202, json=body, headers={**ADMIN, "Idempotency-Key": f"c-{n}"}
            )
            event_ids.append(published.json()["id"])
            if n % 5 == 4:
                harness.drain()
        # AND time passes until nothing is left on the queue (messages a fault put back come back)
        expected = {(path, event_id) for path in subs for event_id in event_ids}
        for _ in range(40):
            step(harness, clock, 70)
            arrived = {(got.path, got.headers["webhook-id"]) for got in receiver.received}
            if arrived >= expected and harness.counts() == (0, 0):
                break
        with faults.suspended():
            # THEN every delivery arrived, each with a signature standardwebhooks computes the same
            arrivals = Counter((got.path, got.headers["webhook-id"]) for got in receiver.received)
            assert set(arrivals) == expected
            for got in receiver.received:
                assert verify_signature(subs[got.path][1], got)["type"] == "invoice.paid"
            # AND a delivery arrived twice only where a fault hit the write recording its attempt
            repeated = {pair: count - 1 for pair, count in arrivals.items() if count > 1}
            for (path, event_id), _ in repeated.items():
                assert _injected_on(services, event_id, subs[path][0]), f"{path} {event_id} repeated with no fault"
            # AND every delivery is recorded as succeeded, nothing is left on the queues
            for path, event_id in expected:
                sub_id = subs[path][0]
                delivery = services.store.deliveries.get(sub_id, delivery_id_of(services.store, event_id, sub_id))
                assert delivery is not None
                assert delivery.status.value == "succeeded"
            assert harness.counts() == (0, 0)
            assert harness.counts(settings.dead_letter_queue_url) == (0, 0)
            # AND the counters a lost batch write left short are recounted to the truth
            wrong_events = [
                e for e in event_ids if http.get(f"/v1/events/{e}", headers=ADMIN).json()["deliveries"] != ALL_DELIVERED
            ]
            for event_id in wrong_events:
                recount_event(services.store, event_id)
            for event_id in event_ids:
                assert http.get(f"/v1/events/{event_id}", headers=ADMIN).json()["deliveries"] == ALL_DELIVERED
            truth = {"attempts": EVENTS, "succeeded": EVENTS, "failed": 0}
            wrong_stats = []
            for sub_id, _ in subs.values():
                stats = http.get(f"/v1/subscriptions/{sub_id}/stats", headers=tenant["headers"]).json()
                if {key: stats[key] for key in truth} != truth:
                    wrong_stats.append(sub_id)
                    recount_subscription(services.store, sub_id)
            for sub_id, _ in subs.values():
                stats = http.get(f"/v1/subscriptions/{sub_id}/stats", headers=tenant["headers"]).json()
                assert {key: stats[key] for key in truth} == truth
        injector = faults.injector_of(services.store.client)
        assert injector is not None
        print(
            f"chaos: {len(expected)} deliveries, {sum(repeated.values())} repeated, "
            f"{len(wrong_events)} event counters and {len(wrong_stats)} stats recounted; "
            f"API answers {dict(answers.statuses)}; "
            f"worker faults {Counter((hit.fault, hit.stage) for hit in injector.injected)}"
        )


# A fan-out message, not publishing's direct path (which counts the event's deliveries itself, in the API).
@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_fanout_page_whose_count_failed_is_counted_when_its_message_comes_back(
    client: TestClient, tenant: TenantInfo, services: Services, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN two subscriptions and an event, and DynamoDB throttling the worker's first transaction after botocore's
    # retries: the fan-out page's count, written with the page's marker
    for n in range(2):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    event_id = publish(client, tenant.id)
    injector = install(services.store.client, "dynamodb.TransactWriteItems:throttle@call=calls:1")
    assert injector is not None
    # WHEN the worker runs, and again once the failed fan-out message is back
    harness.drain()
    assert [hit.keys for hit in injector.injected] == [(f"EVENT#{event_id}", f"EVENT#{event_id}")]
    assert sorted(got.path for got in receiver.received) == []  # the page queued nothing: its message failed
    step(harness, clock, 400)
    # THEN both deliveries arrived once and the page is counted: the event's counts are complete
    assert sorted(got.path for got in receiver.received) == ["/webhook?n=0", "/webhook?n=1"]
    assert event_counts(client, event_id) == fanned_out_counts(2, succeeded=2)


# --- the API while storage misbehaves: 503 with Retry-After, never a 500 -----------------------------------------


@pytest.mark.parametrize("fault", ["throttle", "5xx", "timeout"])
def test_every_route_answers_503_with_retry_after_while_dynamodb_fails(
    settings: Settings, aws: boto3.session.Session, client: TestClient, tenant_a: TenantA, fault: str
) -> None:
    # GIVEN the API over real HTTP on a container whose DynamoDB calls all fail after botocore's retries
    api_services = Services.create(settings, session=aws)
    with serve(api_services) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/v1/tenants", headers=ADMIN).status_code == 200  # the admin key is cached: a warm container
        # (real ids for every path parameter, so that each request reaches the table)
        webhook = http.post("/v1/operator/webhooks", json={"url": "https://example.com/ops"}, headers=ADMIN)
        job = http.post(
            f"/v1/subscriptions/{tenant_a.sub_id}/recover",
            json={"since": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
            headers=tenant_a.tenant.headers,
        )
        assert webhook.status_code == 201, webhook.text
        assert job.status_code == 202, job.text
        params = tenant_a.params() | {"webhook_id": webhook.json()["id"], "job_id": job.json()["id"]}
        install(api_services.store.client, f"dynamodb:{fault}@call=1")
        answers = Answers(Counter())
        per_item = 0
        # WHEN every operation of the OpenAPI document is called with the right key
        for method, path, operation in operations(client.app):
            operator = bool(OPERATOR_TAGS & set(operation.get("tags", [])))
            headers = ADMIN if operator else tenant_a.tenant.headers
            url = fill(path, params)
            body = MORE_BODIES.get((method, path)) or body_for(method, path, operation)
            response = http.request(method, url, json=body, headers=headers)
            # THEN each answers 503 with Retry-After (Answers checks it) unless it needs no table at all
            answers.note(response)
            if (method, path) == ("POST", "/v1/events/batch") and response.status_code == 200:
                # ... but a batch whose writes went unanswered, which may have stored its events: each item is a 503
                # naming the id its event was given, never the whole call (sent again as it is, an event without an
                # id would be stored twice)
                items = response.json()["data"]
                assert items, response.text
                assert all(item["status"] == 503 and item["error"]["event_id"] for item in items), response.text
                per_item += 1
                continue
            if (method, path) not in WITHOUT_TABLE:
                assert response.status_code == 503, f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert answers.statuses[503] >= len(operations(client.app)) - len(WITHOUT_TABLE) - per_item


#: Valid bodies for the operations the isolation walk sends none for (it stops at the key check).
MORE_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/operator/webhooks"): {"url": "https://example.com/ops"},
    ("PATCH", "/v1/operator/webhooks/{webhook_id}"): {"enabled": True},
    ("POST", "/v1/admin/dead-letters/redrive"): {"limit": 1},
    ("POST", "/v1/admin/dead-letters/discard"): {"all_poison": True},
}

#: Operations that read no table: the static catalog, and the dead-letter queue (SQS only).
WITHOUT_TABLE = {
    ("GET", "/v1/event-types"),
    ("GET", "/v1/admin/dead-letters"),
    ("POST", "/v1/admin/dead-letters/redrive"),
    ("POST", "/v1/admin/dead-letters/discard"),
}


def test_an_event_whose_fanout_could_not_be_queued_is_queued_when_published_again(
    settings: Settings,
    aws: boto3.session.Session,
    tenant: TenantInfo,
    client: TestClient,
    harness: Harness,
    receiver: Receiver,
) -> None:
    # GIVEN a subscription, and the API's SQS refusing every send after botocore's retries
    sub = subscribe(client, tenant, receiver.url)
    api_services = Services.create(settings, session=aws)
    install(api_services.queue.client, "sqs:5xx@call=calls:1")
    body = {"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}
    headers = {**ADMIN, "Idempotency-Key": "stored-not-queued"}
    with serve(api_services) as base, httpx.Client(base_url=base, timeout=30) as http:
        # WHEN an event is published: stored, but its fan-out could not be queued
        first = http.post("/v1/events", json=body, headers=headers)
        # THEN the publisher is told to try again
        Answers(Counter()).note(first)
        assert first.status_code == 503
        harness.drain()
        assert receiver.received == []
        # AND publishing it again queues it, once
        again = http.post("/v1/events", json=body, headers=headers)
        assert again.status_code == 202, again.text
        assert http.post("/v1/events", json=body, headers=headers).status_code in (200, 202)
    # (held back on the queue until a minute after the first try: let the test's clock pass it)
    harness.reveal()
    harness.drain()
    (got,) = receiver.received
    assert verify_signature(sub.secret, got)["type"] == "invoice.paid"
    assert event_counts(client, again.json()["id"])["succeeded"] == 1


def test_secrets_manager_down_on_a_cold_container_is_a_503_for_the_operator_only(
    settings: Settings, aws: boto3.session.Session, tenant: TenantInfo
) -> None:
    # GIVEN a cold API container (no admin key read yet) while Secrets Manager fails its next three calls
    cold = Services.create(settings.model_copy(update={"faults": "secretsmanager:5xx@call=calls:1-3"}), session=aws)
    with serve(cold) as base, httpx.Client(base_url=base, timeout=30) as http:
        answers = Answers(Counter())
        # WHEN the operator calls, THEN it is told to come back (503, Retry-After), three times (each call tries the
        # secret, or, within a second of a try that failed, answers at once without one: herald.auth)
        for _ in range(3):
            response = http.get("/v1/tenants", headers=ADMIN)
            answers.note(response)
            assert response.status_code == 503
            # AND a tenant's calls never wait on Secrets Manager meanwhile
            assert http.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
        # AND once Secrets Manager answers, the operator calling again after each Retry-After is in
        for _ in range(60):
            response = http.get("/v1/tenants", headers=ADMIN)
            if response.status_code != 503:
                break
            answers.note(response)
            time.sleep(float(response.headers["retry-after"]))
        assert response.status_code == 200, response.text


# More subscriptions than an event names for its counts, all queued by publishing: the counters are written.
@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": COUNTED_FROM_DELIVERIES_MAX + 5}])
def test_counters_a_lost_batch_write_left_short_are_recounted_from_the_records(
    client: TestClient, tenant: TenantInfo, services: Services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN an event to eleven subscriptions, its deliveries queued (by publishing: eleven routes)
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(COUNTED_FROM_DELIVERIES_MAX + 1)]
    event_id = publish(client, tenant.id)
    # AND DynamoDB refusing every update after botocore's retries while the deliveries are made and the stream
    # handed over: the batch's event counters, and the subscription stats the stream counts, are not written
    # (the deliveries themselves are)
    install(services.store.client, "dynamodb.UpdateItem:throttle@call=1")
    harness.drain()
    with faults.suspended():
        assert len(receiver.received) == len(subs)
        assert event_counts(client, event_id)["succeeded"] == 0
        assert services.store.health.get_stats(subs[0].id).get("attempts", 0) == 0
        # WHEN the event and the subscriptions are recounted
        assert recount_event(services.store, event_id) == {"succeeded": len(subs)}
        for sub in subs:
            assert recount_subscription(services.store, sub.id) == {"attempts": 1, "succeeded": 1, "failed": 0}
        # THEN the counters are the records' again, and a second recount changes nothing
        assert event_counts(client, event_id) == fanned_out_counts(len(subs), succeeded=len(subs))
        assert recount_event(services.store, event_id) == {}
        stats = client.get(f"/v1/subscriptions/{subs[0].id}/stats", headers=tenant.headers).json()
        assert (stats["attempts"], stats["succeeded"], stats["failed"]) == (1, 1, 0)


def test_an_event_counted_from_its_deliveries_needs_no_recount_when_the_batch_writes_are_lost(
    client: TestClient, tenant: TenantInfo, services: Services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN an event to two subscriptions, which its item names (publishing queued them)
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)]
    event_id = publish(client, tenant.id)
    # AND DynamoDB refusing every update after botocore's retries while the deliveries are made
    install(services.store.client, "dynamodb.UpdateItem:throttle@call=1")
    harness.drain()
    with faults.suspended():
        # THEN both arrived, and the event's counts are exact without a recount (read from the deliveries)
        assert len(receiver.received) == len(subs)
        assert event_counts(client, event_id) == fanned_out_counts(2, succeeded=2)
        assert recount_event(services.store, event_id) == {}


# --- a worker killed in the middle of a batch, under the fault mix -------------------------------------------------

moto_server = batches.moto_server


@pytest.mark.slow
def test_a_worker_killed_mid_batch_under_the_fault_mix_loses_nothing(
    moto_server: str, receiver: Receiver, processes: Processes
) -> None:
    # GIVEN the template's resources on a moto server (short queue visibility), and the fault mix in every
    # Herald client: the worker process's (HERALD_FAULTS, as in `make run`) and this process's
    # Long on purpose: one GIVEN / WHEN / THEN story, read from start to end.
    resources = create_local_resources(admin_key=ADMIN_KEY, session=boto3.session.Session(), prefix="chaos")
    sqs = boto3.session.Session().client("sqs")
    sqs.set_queue_attributes(QueueUrl=resources.queue_url, Attributes={"VisibilityTimeout": "3"})
    environment = {
        **resources.environment(),
        "HERALD_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "HERALD_ALLOW_HTTP_URLS": "true",
        "HERALD_DELIVERY_TIMEOUT_SECONDS": "3",
        "HERALD_FAULTS": CHAOS_MIX + ", seed=5",
    }
    values: dict[str, Any] = {key.removeprefix("HERALD_").lower(): value for key, value in environment.items()}
    settings = Settings(**values)
    services = Services.create(settings)
    # AND eight subscribers: the first four answered at once, the next four after 2.5 s (in flight at the kill)
    no_headers: dict[str, str] = {}
    receiver.responses = [(200, no_headers, b"ok", 0.0)] * 4 + [(200, no_headers, b"ok", 2.5)] * 4
    with faults.suspended(), TestClient(create_app(services)) as client:
        created = client.post("/v1/tenants", json={"name": "Chaos"}, headers=ADMIN).json()
        tenant = TenantInfo(created["id"], created["api_key"]["key"])
        subs = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(8)}
        event_id = publish(client, tenant.id)
    # WHEN a worker process (batches of four) is killed with SIGKILL once six requests reached the receiver
    child = processes.start(
        [sys.executable, "-c", "from tests.delivery_support import worker_process_main; worker_process_main()"],
        cwd=batches.REPO,
        env={**os.environ, **environment, "TEST_BATCH_SIZE": "4", "TEST_FUNCTION_TIMEOUT": "9"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90  # the fixture stops its process group whatever happens
    while len(receiver.received) < 6:
        assert child.poll() is None, "the worker process died by itself"
        assert time.monotonic() < deadline, "the worker process never reached the receiver"
        time.sleep(0.02)
    child.kill()
    child.wait(timeout=10)
    # AND a fresh worker, faults and all, takes over until nothing is left on the queue (its invocations as
    # short as the killed one's: a delivery whose record a fault refused waits out its lease, which ends
    # with the invocation that took it)
    # Both of the function's queues: an attempt that outlasts the work queue's patience (a subscriber answering
    # after 2.5 s) is handed to the slow lane, and carried on from there.
    worker = Worker(services)
    queues = [resources.queue_url, resources.slow_queue_url]
    pollers = [SqsPoller(sqs, url, worker.handle, batch_size=10, function_timeout_seconds=9) for url in queues]
    expected = set(subs)
    try:
        deadline = time.monotonic() + 120
        while not (
            {got.path for got in receiver.received} >= expected and all(_queue_empty(sqs, url) for url in queues)
        ):
            assert time.monotonic() < deadline, Counter(got.path for got in receiver.received)
            for poller in pollers:
                poller.poll_once(wait_seconds=0)
            time.sleep(0.05)
    finally:
        settle_all([worker])
    with faults.suspended(), TestClient(create_app(services)) as client:
        # THEN every subscriber got it, signed; repeats carry the same webhook-id
        for got in receiver.received:
            assert verify_signature(subs[got.path].secret, got)["type"] == "invoice.paid"
            assert got.headers["webhook-id"] == event_id
        # AND nothing was dead-lettered or left scheduled for later (each said first: a delivery not recorded
        # as succeeded below was then parked, not lost)
        assert _queue_empty(sqs, resources.dead_letter_queue_url), _bodies(sqs, resources.dead_letter_queue_url)
        now = time.time()
        assert [item.body for item in services.store.schedule.falling_due(now - 3_600, now + 2 * 86_400)] == []
        # AND every delivery is recorded as succeeded, and the counts are right once recounted if need be
        for sub in subs.values():
            delivery_id = delivery_id_of(services.store, event_id, sub.id)
            delivery = services.store.deliveries.get(sub.id, delivery_id)
            assert delivery is not None
            attempts = services.store.deliveries.list_attempts(sub.id, delivery_id, limit=100, cursor=None).items
            assert delivery.status.value == "succeeded", (delivery, attempts)
        recount_event(services.store, event_id)
        assert event_counts(client, event_id) == fanned_out_counts(8, succeeded=8)


def _bodies(sqs: Any, url: str) -> list[str]:
    """The bodies of the messages on a queue, for a failure's message (a moment's look: they stay on it)."""
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
    return [message["Body"] for message in messages]


def _queue_empty(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return bool(set(attributes.values()) == {"0"})
