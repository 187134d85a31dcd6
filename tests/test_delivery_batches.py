"""Whole SQS batches: a bad record never takes the others down, duplicates never send twice, and a worker
killed in the middle of a batch loses nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from herald.api import create_app
from herald.local.moto_fixes import moto_fixes
from herald.local.poller import SqsPoller
from herald.local.resources import create_local_resources
from herald.messages import DeliveryMessage
from herald.records import Delivery
from herald.services import Services
from herald.settings import Settings
from herald.worker import Worker, settle_all
from tests.delivery_support import (
    CORRUPT_EVENTS,
    Harness,
    attempts,
    delivery_id_of,
    event_counts,
    make_harness,
    only_delivery,
    publish,
    put_corrupt_event,
    subscribe,
    verify,
)
from tests.process_guard import Processes, stop_group
from tests.support import ADMIN, ADMIN_KEY, Clock, Receiver, TenantInfo

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def test_a_poison_message_goes_to_the_dlq_without_blocking_its_batch(
    client, tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN two deliveries on the queue, and two messages no worker can read beside them
    receivers = [make_receiver(), make_receiver()]
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    publish(client, tenant.id)  # two routes: publishing queues the two deliveries itself
    queue_url = harness.services.settings.queue_url
    poison = ["this is not json", json.dumps({"v": 2, "kind": "delivery", "event_id": "evt_1"})]
    for body in poison:
        harness.sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    # WHEN one invocation receives all four
    result = harness.poller.poll_once()
    # THEN all left the queue (the two deliveries are one message): the deliveries were made, the poison went to
    # the dead-letter queue
    assert (result.received, result.deleted, result.failed) == (3, 3, 0)
    for receiver, sub in zip(receivers, subs, strict=True):
        (got,) = receiver.received
        verify(sub.secret, got)
    dlq = harness.sqs.receive_message(
        QueueUrl=harness.services.settings.dead_letter_queue_url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
    )["Messages"]
    assert sorted(m["Body"] for m in dlq) == sorted(poison)
    assert all("unreadable work message" in m["MessageAttributes"]["herald_error"]["StringValue"] for m in dlq)
    assert harness.counts() == (0, 0)


def test_a_message_with_fields_this_code_does_not_know_is_worked_and_a_new_version_is_parked(
    client, tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN an event's two deliveries in one message, as a newer version would write it: fields this code does not
    # know on the message and on each delivery it carries
    receivers = [make_receiver(), make_receiver()]
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    publish(client, tenant.id)
    queue_url = harness.services.settings.queue_url
    (message,) = harness.sqs.receive_message(QueueUrl=queue_url)["Messages"]
    harness.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    newer = json.loads(message["Body"])
    assert newer["kind"] == "deliveries"
    newer["reserved_until"] = 1_900_000_000.5
    newer["deliveries"] = [{**planned, "priority": "high"} for planned in newer["deliveries"]]
    harness.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(newer))
    # AND a message of a version this code does not know, with the same deliveries
    harness.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({**newer, "v": 2}))
    # WHEN the worker meets them
    harness.drain()
    # THEN each delivery of the first was made once, signed; the second, of another version, is parked
    for receiver, sub in zip(receivers, subs, strict=True):
        (got,) = receiver.received
        verify(sub.secret, got)
    (parked,) = harness.sqs.receive_message(QueueUrl=harness.services.settings.dead_letter_queue_url)["Messages"]
    assert json.loads(parked["Body"])["v"] == 2
    assert harness.counts() == (0, 0)


def test_a_copy_of_a_message_keeps_the_fields_this_code_does_not_know(
    client, tenant, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a delivery whose first attempt fails, its message carrying a field a newer version wrote
    receiver.responses = [(500, {}, b"down", 0.0)]
    subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    queue_url = harness.services.settings.queue_url
    (message,) = harness.sqs.receive_message(QueueUrl=queue_url)["Messages"]
    harness.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    single = json.loads(message["Body"])
    assert single["kind"] == "delivery"  # one route: publishing queues the delivery message itself
    harness.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({**single, "reserved_until": 1_900_000_000.5}))
    # WHEN the worker makes the attempt, and its retry waits in a copy of the message
    harness.drain()
    # THEN the copy carries the field on, for the newer code that may meet it next
    assert len(receiver.received) == 1
    (copy,) = [json.loads(sent.body) for sent in harness.queue_calls.sent() if '"resumed":true' in sent.body]
    assert copy["reserved_until"] == 1_900_000_000.5
    assert copy["delivery_id"] == single["delivery_id"]


#: Event items that cannot be read: fields missing (pydantic refuses), and a payload that is JSON but no object
#: (the read's check of the envelope, ``storage.events._check_envelope``, raises a TypeError).
@pytest.mark.parametrize("corrupt", list(CORRUPT_EVENTS))
def test_a_record_that_raises_fails_alone_and_ends_in_the_dlq(
    client, tenant: TenantInfo, harness: Harness, make_receiver, corrupt: str
) -> None:
    # GIVEN two good deliveries (one message), and one whose event item is corrupt (its reading raises, in the
    # batch's read too)
    receivers = [make_receiver(), make_receiver()]
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    publish(client, tenant.id)
    put_corrupt_event(harness.services.store, "evt_corrupt", corrupt)
    bad = DeliveryMessage(
        event_id="evt_corrupt", tenant_id=tenant.id, subscription_id=subs[0].id, delivery_id="dlv_corrupt"
    )
    harness.services.queue.send(bad)
    # WHEN one invocation receives the two messages
    result = harness.poller.poll_once()
    # THEN only the bad record is reported as a batch item failure; the good ones were delivered
    assert (result.received, result.deleted, result.failed) == (2, 1, 1)
    assert [len(r.received) for r in receivers] == [1, 1]
    # AND the bad record does not loop forever: each time it comes back it fails again, until SQS's
    # maxReceiveCount moves it to the dead-letter queue
    for _ in range(harness.services.settings.max_receive_count + 1):
        harness.reveal()
        harness.drain()
    assert harness.counts() == (0, 0)
    dlq = harness.sqs.receive_message(QueueUrl=harness.services.settings.dead_letter_queue_url)["Messages"]
    assert [json.loads(m["Body"])["event_id"] for m in dlq] == ["evt_corrupt"]
    assert [len(r.received) for r in receivers] == [1, 1]
    assert max(harness.received_counts()) == harness.services.settings.max_receive_count


def test_a_message_naming_another_tenants_event_delivers_nothing(
    client, tenant: TenantInfo, make_tenant, harness: Harness, receiver
) -> None:
    # GIVEN an event of another tenant, and a delivery message that names it for this tenant's subscription (as
    # a message that outlived its event would, its id published again since by someone else)
    sub = subscribe(client, tenant, receiver.url)
    other = make_tenant("Other")
    event_id = publish(client, other.id)
    harness.drain()
    message = DeliveryMessage(
        event_id=event_id,
        tenant_id=tenant.id,
        subscription_id=sub.id,
        delivery_id=delivery_id_of(harness.services.store, event_id, sub.id),
    )
    harness.services.queue.send(message)
    # WHEN the worker takes it
    harness.drain()
    # THEN nothing was sent, nothing was stored for the subscription, and the message is done with
    assert receiver.received == []
    assert client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"] == []
    assert harness.counts() == (0, 0)


def test_a_failing_aws_call_for_one_record_does_not_fail_the_others(
    client, tenant: TenantInfo, make_tenant, harness: Harness, clock: Clock, make_receiver
) -> None:
    # GIVEN three deliveries, each a message of its own (three tenants' events), and DynamoDB unreachable for the
    # batch's read, then for the subscription of one of them when each delivery reads for itself
    tenants = [tenant, make_tenant("Globex"), make_tenant("Initech")]
    receivers = [make_receiver() for _ in range(3)]
    subs = [subscribe(client, t, r.url) for t, r in zip(tenants, receivers, strict=True)]
    event_ids = [publish(client, t.id) for t in tenants]
    unlucky = f"SUB#{subs[1].id}"

    def unreachable(params: dict[str, Any], **_: Any) -> None:
        if "RequestItems" in params or params.get("Key", {}).get("sk", {}).get("S") == unlucky:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

    events = harness.services.store.client.meta.events
    for operation in ("GetItem", "BatchGetItem"):
        events.register(f"provide-client-params.dynamodb.{operation}", unreachable)
    try:
        # WHEN one invocation receives the three
        result = harness.poller.poll_once()
    finally:
        for operation in ("GetItem", "BatchGetItem"):
            events.unregister(f"provide-client-params.dynamodb.{operation}", unreachable)
    # THEN the two others were delivered and settled; the unlucky one failed alone and will come back
    assert (result.received, result.deleted, result.failed) == (3, 2, 1)
    assert [len(r.received) for r in receivers] == [1, 0, 1]
    assert [event_counts(client, event_id)["succeeded"] for event_id in event_ids] == [1, 0, 1]
    # AND once DynamoDB answers again it is delivered too, when the message comes back
    harness.reveal()
    harness.drain()
    assert [len(r.received) for r in receivers] == [1, 1, 1]
    assert [event_counts(client, event_id)["succeeded"] for event_id in event_ids] == [1, 1, 1]


def test_duplicate_messages_of_one_delivery_send_it_once(client, tenant, harness: Harness, clock, receiver) -> None:
    # GIVEN the same delivery message three times on the queue (SQS delivers at least once)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    delivery_id = delivery_id_of(harness.services.store, event_id, sub.id)
    duplicate = DeliveryMessage(event_id=event_id, tenant_id=tenant.id, subscription_id=sub.id, delivery_id=delivery_id)
    harness.services.queue.send(duplicate)
    harness.services.queue.send(duplicate)
    # WHEN one invocation receives all three, and later the held copies come back
    first = harness.poller.poll_once()
    step_clock = 30
    clock.advance(step_clock)
    harness.reveal()
    harness.drain()
    # THEN the receiver got one request, one attempt was recorded, and every copy is gone
    assert first.received == 3
    assert len(receiver.received) == 1
    delivery = only_delivery(client, tenant, sub.id)
    assert len(attempts(client, tenant, sub.id, delivery["id"])) == 1
    assert event_counts(client, event_id)["succeeded"] == 1
    assert harness.counts() == (0, 0)


def _both_copies_worked_at_once(
    services: Services,
    aws: boto3.session.Session,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    tenant_id: str,
    sub_id: str,
    event_id: str,
) -> tuple[list[Any], str]:
    """The event's delivery message for the subscription queued a second time (SQS delivers at least once), and both
    copies taken at the same time by two workers (two invocations), one each: their poll results and what they wrote
    to stdout (the metrics' lines)."""
    delivery_id = delivery_id_of(services.store, event_id, sub_id)
    services.queue.send(
        DeliveryMessage(event_id=event_id, tenant_id=tenant_id, subscription_id=sub_id, delivery_id=delivery_id)
    )
    workers = [make_harness(services, aws, clock=clock, batch_size=1) for _ in range(2)]
    try:
        capsys.readouterr()
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda harness: harness.poller.poll_once(), workers))
        return results, capsys.readouterr().out
    finally:
        for harness in workers:
            harness.close()


@pytest.mark.parametrize("settings_overrides", [{"slow_lane_after_seconds": 10}])
def test_two_copies_of_a_first_receive_worked_at_once_send_twice_and_are_counted(
    client, tenant, services, aws, clock, receiver, capsys
) -> None:
    # GIVEN a delivery message on the queue twice (SQS delivers at least once), a subscriber slow enough to answer
    # (3 s, not slow enough for the slow lane) that both copies are in flight together, and two workers (two
    # invocations) taking one message each
    receiver.default = (200, {}, b"ok", 3.0)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)  # one route: publishing queues the delivery message itself
    # WHEN both invocations run at the same time
    results, output = _both_copies_worked_at_once(services, aws, clock, capsys, tenant.id, sub.id, event_id)
    # THEN each took one copy, and neither could see the other's delivery: both sent it (the duplicate the
    # design allows, with the same webhook-id for the receiver to drop)
    assert [(r.received, r.deleted, r.failed) for r in results] == [(1, 1, 0), (1, 1, 0)]
    assert [got.headers["webhook-id"] for got in receiver.received] == [event_id, event_id]
    for got in receiver.received:
        verify(sub.secret, got)
    # AND one of them recorded the delivery and its one attempt, and the other counted its send as a duplicate
    delivery = only_delivery(client, tenant, sub.id)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)
    assert len(attempts(client, tenant, sub.id, delivery["id"])) == 1
    assert event_counts(client, event_id)["succeeded"] == 1
    duplicates = [
        document["DuplicateSends"]
        for line in output.splitlines()
        if line.startswith('{"_aws"') and "DuplicateSends" in (document := json.loads(line))
    ]
    assert duplicates == [[1.0]]


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_local_wait_seconds": 0, "slow_lane_after_seconds": 10}])
def test_a_copy_held_back_by_the_rate_limit_while_the_other_sent_leaves_one_send_and_its_record(
    client, tenant, services, aws, clock, receiver
) -> None:
    # GIVEN a subscription limited to one delivery a second, whose subscriber answers slowly (2 s, not slow enough for
    # the slow lane), and its delivery message on the queue twice (SQS delivers at least once); two workers (two
    # invocations) taking one copy each
    receiver.default = (200, {}, b"ok", 2.0)
    sub = subscribe(client, tenant, receiver.url, rate_limit=1)
    event_id = publish(client, tenant.id)
    delivery_id = delivery_id_of(services.store, event_id, sub.id)
    services.queue.send(
        DeliveryMessage(event_id=event_id, tenant_id=tenant.id, subscription_id=sub.id, delivery_id=delivery_id)
    )
    workers = [make_harness(services, aws, clock=clock, batch_size=1) for _ in range(2)]
    try:
        # WHEN both invocations run at the same time: one takes the rate's slot and sends, the other is postponed
        # (its delivery listed as waiting, its message held until the next slot)
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda harness: harness.poller.poll_once(), workers))
        # AND the postponed copy comes back once its slot is due
        clock.advance(30)
        workers[0].reveal()
        workers[0].drain()
    finally:
        for harness in workers:
            harness.close()
    # THEN the subscriber got one request, signed
    assert [(r.received, r.deleted, r.failed) for r in results] == [(1, 1, 0), (1, 1, 0)]
    (got,) = receiver.received
    verify(sub.secret, got)
    # AND the send's record is the delivery's: succeeded at its one attempt, logged and counted; nothing left queued
    delivery = only_delivery(client, tenant, sub.id)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)
    assert len(attempts(client, tenant, sub.id, delivery["id"])) == 1
    assert event_counts(client, event_id)["succeeded"] == 1
    stats = client.get(f"/v1/subscriptions/{sub.id}/stats", headers=tenant.headers).json()
    assert (stats["attempts"], stats["succeeded"]) == (1, 1)
    assert workers[0].counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [{"slow_lane_after_seconds": 10}])
def test_a_copy_that_waited_for_the_rate_limit_while_the_other_recorded_the_delivery_is_not_sent(
    client, tenant, services, aws, clock, receiver, capsys, caplog
) -> None:
    # GIVEN a subscription limited to one delivery a second, whose subscriber answers at once, and its first delivery
    # message on the queue twice (SQS delivers at least once); two workers (two invocations) taking one copy each. The
    # rate limit's wait within the worker is on (up to 5 s): the copy without the slot waits for the next one
    receiver.default = (200, {}, b"ok", 0.0)
    sub = subscribe(client, tenant, receiver.url, rate_limit=1)
    event_id = publish(client, tenant.id)
    # WHEN both invocations run at the same time: one sends and records at once, the other waits for its slot
    results, output = _both_copies_worked_at_once(services, aws, clock, capsys, tenant.id, sub.id, event_id)
    # THEN both copies are done with, and the subscriber got one request: the copy that waited read the delivery
    # again before sending (a first receive holds no lease) and found it recorded
    assert [(r.received, r.deleted, r.failed) for r in results] == [(1, 1, 0), (1, 1, 0)]
    (got,) = receiver.received
    verify(sub.secret, got)
    assert "not sent: another copy of the message settled the delivery while this one waited" in caplog.messages
    # AND the delivery is the sent copy's: succeeded at its one attempt, counted once, no duplicate send
    delivery = only_delivery(client, tenant, sub.id)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)
    assert len(attempts(client, tenant, sub.id, delivery["id"])) == 1
    assert event_counts(client, event_id)["succeeded"] == 1
    assert "DuplicateSends" not in output


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_local_wait_seconds": 1.5, "slow_lane_after_seconds": 10}])
def test_a_copy_that_waited_for_its_slot_sends_over_the_other_copy_s_waiting_listing(
    client, tenant, services, aws, clock, receiver, capsys, caplog
) -> None:
    # GIVEN a subscription limited to one delivery a second whose next slot is taken already, and its first delivery
    # message on the queue twice: of two workers taking one copy each, one reserves the slot a second ahead and waits
    # for it, the other finds none within its 1.5 s and is postponed (it lists the delivery as waiting, no attempt)
    sub = subscribe(client, tenant, receiver.url, rate_limit=1)
    event_id = publish(client, tenant.id)
    assert services.store.health.take_rate_slot(sub.id, interval=1.0, now=clock()).taken
    # WHEN both invocations run at the same time
    results, _ = _both_copies_worked_at_once(services, aws, clock, capsys, tenant.id, sub.id, event_id)
    # THEN the copy that waited for its slot read the delivery again, found it only listed, and sent it: the slot it
    # waited for is not wasted
    assert [(r.received, r.deleted, r.failed) for r in results] == [(1, 1, 0), (1, 1, 0)]
    (got,) = receiver.received
    verify(sub.secret, got)
    assert "attempt postponed by the rate limit" in caplog.messages
    assert not any(message.startswith("not sent:") for message in caplog.messages)
    delivery = only_delivery(client, tenant, sub.id)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)
    # AND the postponed copy, back once its slot is due, finds the attempt recorded and sends nothing more
    harness = make_harness(services, aws, clock=clock, batch_size=1)
    try:
        clock.advance(30)
        harness.reveal()
        harness.drain()
    finally:
        harness.close()
    assert len(receiver.received) == 1
    assert len(attempts(client, tenant, sub.id, delivery["id"])) == 1
    assert event_counts(client, event_id)["succeeded"] == 1


def _leased(
    harness: Harness, clock: Clock, tenant_id: str, sub_id: str, event_id: str, *, token: str, until: float
) -> bool:
    """Whether a lease on the event's new delivery to the subscription was taken as a worker takes it (its first
    attempt not made), until ``until``, by the claim of ``token``."""
    store = harness.services.store
    now = harness.worker.now()
    delivery = Delivery(
        id=delivery_id_of(store, event_id, sub_id),
        event_id=event_id,
        subscription_id=sub_id,
        tenant_id=tenant_id,
        event_type="invoice.paid",
        status="pending",
        created_at=now,
        updated_at=now,
    )
    return store.deliveries.claim(
        delivery,
        previous=None,
        scheduled_attempts=0,
        token=token,
        until=until,
        now=clock(),
        expires_at=int(clock()) + 86400,
    )


@pytest.mark.parametrize("settings_overrides", [{"slow_lane_after_seconds": 10}])
def test_a_copy_that_waited_for_its_slot_sends_over_another_copy_s_live_lease(
    client, tenant, harness: Harness, clock: Clock, receiver, capsys, caplog
) -> None:
    # GIVEN a subscription limited to one delivery a second whose next slot is taken already, so that its first
    # delivery's message, received once, waits for the slot after it (a first receive writes no lease)
    sub = subscribe(client, tenant, receiver.url, rate_limit=1)
    event_id = publish(client, tenant.id)
    store = harness.services.store
    assert store.health.take_rate_slot(sub.id, interval=1.0, now=clock()).taken
    # AND while it waits, another copy of the message (this same message shown again, say) takes the delivery's lease
    pacer = harness.worker.pacer
    slot = pacer.slot
    lease_until = clock() + 50

    async def slot_after_another_copy_leased(*args: Any, **kwargs: Any) -> Any:
        assert _leased(harness, clock, tenant.id, sub.id, event_id, token="another-copy", until=lease_until)
        return await slot(*args, **kwargs)

    pacer.slot = slot_after_another_copy_leased  # type: ignore[method-assign]
    capsys.readouterr()
    # WHEN the worker takes the message
    result = harness.poller.poll_once()
    # THEN the copy that waited read the delivery again, found it leased but not attempted, and sent it: the lease's
    # holder may be a worker that dies before its record, and this copy's message is deleted after its send
    assert (result.received, result.deleted, result.failed) == (1, 1, 0)
    (got,) = receiver.received
    verify(sub.secret, got)
    assert not any(message.startswith("not sent:") for message in caplog.messages)
    # AND its record gave way to the lease's holder (which records its own attempt), the send counted as a duplicate
    assert "duplicate send: another copy of the message recorded this attempt first, or holds its lease" in (
        caplog.messages
    )
    assert '"DuplicateSends":[1.0]' in capsys.readouterr().out
    state = store.deliveries.get_state(sub.id, delivery_id_of(store, event_id, sub.id), event_id)
    assert state is not None
    assert (state.delivery.attempts, state.lease_until) == (0, lease_until)


def test_a_lease_left_by_a_dead_worker_is_waited_out_then_the_delivery_is_made(
    client, tenant, harness: Harness, clock: Clock, receiver
) -> None:
    # GIVEN a delivery whose lease a worker took just before it died (its lease runs 50 s more)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    assert _leased(harness, clock, tenant.id, sub.id, event_id, token="dead-worker", until=clock() + 50)
    # WHEN the delivery's message is received while the lease runs
    result = harness.poller.poll_once()
    # THEN nothing is sent, and a copy of the message waits until the lease is over
    assert (result.received, result.failed) == (1, 0)
    assert receiver.received == []
    assert harness.holds == [51]
    assert harness.counts() == (0, 1)
    # WHEN the lease has run out and the message is back
    clock.advance(52)
    harness.reveal()
    harness.drain()
    # THEN the delivery is made and recorded as its first attempt
    (got,) = receiver.received
    verify(sub.secret, got)
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["status"] == "succeeded"
    assert [a["attempt_number"] for a in attempts(client, tenant, sub.id, delivery["id"])] == [1]
    assert event_counts(client, event_id)["succeeded"] == 1
    assert harness.counts() == (0, 0)


# --- a worker killed in the middle of a batch ------------------------------------------------------------------


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on 127.0.0.1 that this process and a child process both talk to, fixed as the local stack's
    (``herald.local.moto_fixes``: the worker's batched INSERTs among them)."""
    with moto_fixes():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
            yield endpoint
        finally:
            server.stop()


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing(moto_server: str, receiver: Receiver, processes: Processes) -> None:
    # GIVEN the template's resources on a moto server, with a short queue visibility for the test
    # Long on purpose: one GIVEN / WHEN / THEN story, read from start to end.
    resources = create_local_resources(admin_key=ADMIN_KEY, session=boto3.session.Session(), prefix="crash")
    sqs = boto3.session.Session().client("sqs")
    sqs.set_queue_attributes(QueueUrl=resources.queue_url, Attributes={"VisibilityTimeout": "3"})
    environment = {
        **resources.environment(),
        "HERALD_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "HERALD_ALLOW_HTTP_URLS": "true",
        "HERALD_DELIVERY_TIMEOUT_SECONDS": "3",
    }
    values: dict[str, Any] = {key.removeprefix("HERALD_").lower(): value for key, value in environment.items()}
    settings = Settings(**values)
    services = Services.create(settings)
    # AND eight subscribers behind one receiver: the first four requests are answered at once, the next
    # four after 2.5 s (within the 3 s timeout), so the second batch of four is in flight for a while
    headers: dict[str, str] = {}
    receiver.responses = [(200, headers, b"ok", 0.0)] * 4 + [(200, headers, b"ok", 2.5)] * 4
    with TestClient(create_app(services)) as client:
        created = client.post("/v1/tenants", json={"name": "Crash"}, headers=ADMIN).json()
        tenant = TenantInfo(created["id"], created["api_key"]["key"])
        subs = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(8)}
        event_id = publish(client, tenant.id)

        # WHEN a worker process (batches of four, 9 s invocations) runs until six requests reached the
        # receiver, and is then killed with SIGKILL: the second batch's requests are in flight, unrecorded
        child = processes.start(
            [sys.executable, "-c", "from tests.delivery_support import worker_process_main; worker_process_main()"],
            cwd=REPO,
            env={**os.environ, **environment, "TEST_BATCH_SIZE": "4", "TEST_FUNCTION_TIMEOUT": "9"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while len(receiver.received) < 6:
                assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
                assert time.monotonic() < deadline, "the worker process never reached the receiver"
                time.sleep(0.02)
            stop_group(child, signal.SIGKILL)
        finally:
            stop_group(child, signal.SIGKILL)
        at_kill = len(receiver.received)

        def recorded(sub_id: str) -> int:
            """The attempts recorded for the delivery (none while its first attempt was in flight: a first receive
            writes the delivery only with its attempt)."""
            path = f"/v1/subscriptions/{sub_id}/deliveries/{delivery_id_of(services.store, event_id, sub_id)}/attempts"
            response = client.get(path, headers=tenant.headers)
            assert response.status_code in {200, 404}, response.text
            return len(response.json()["data"]) if response.status_code == 200 else 0

        recorded_at_kill = sum(recorded(sub.id) for sub in subs.values())
        assert child.returncode == -signal.SIGKILL
        assert recorded_at_kill < at_kill  # some requests were made but never recorded

        # AND a fresh worker takes over: messages reappear (short visibility), leases of the dead worker
        # run out, and the work is finished
        # (both event sources, as on Lambda: an attempt answered after 2.5 s is handed to the slow lane)
        worker = Worker(services)
        pollers = [
            SqsPoller(sqs, url, worker.handle, batch_size=10, function_timeout_seconds=60)
            for url in (resources.queue_url, resources.slow_queue_url)
        ]
        try:
            deadline = time.monotonic() + 90
            while event_counts(client, event_id)["succeeded"] < len(subs):
                assert time.monotonic() < deadline, event_counts(client, event_id)
                for poller in pollers:
                    poller.poll_once(wait_seconds=1)
        finally:
            settle_all([worker])

        # THEN every subscriber has at least one verified delivery, and repeats carry the same webhook-id
        by_path = Counter(r.path for r in receiver.received)
        assert set(by_path) == set(subs)
        for got in receiver.received:
            verify(subs[got.path].secret, got)
            assert got.headers["webhook-id"] == event_id
        # AND the attempt log is consistent: per delivery, attempts numbered 1..n, the last one the only
        # success, never more recorded attempts than requests received
        for path, sub in subs.items():
            delivery = only_delivery(client, tenant, sub.id)
            log = attempts(client, tenant, sub.id, delivery["id"])
            assert delivery["status"] == "succeeded"
            assert [a["attempt_number"] for a in log] == list(range(1, len(log) + 1))
            assert [a["succeeded"] for a in log] == [False] * (len(log) - 1) + [True]
            assert delivery["attempts"] == len(log) <= by_path[path]
        # AND the event's counts add up, and nothing is left on the queues
        assert event_counts(client, event_id) == {
            "matched": 8,
            "pending": 0,
            "succeeded": 8,
            "failed": 0,
            "filtered": 0,
            "fanout_complete": True,
        }
        for url in (resources.queue_url, resources.dead_letter_queue_url):
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            assert set(attributes.values()) == {"0"}
