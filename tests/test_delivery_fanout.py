"""Fan-out: which subscriptions an event goes to, found by Query (never Scan), queued ten to a
SendMessageBatch, paged, handed over to continuation messages before the invocation's deadline, and
counted once however often a fan-out message runs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from herald.faults import install
from herald.worker.fanout import FANOUT_MIN_SECONDS_LEFT, route_page
from tests.api_support import each_delivery
from tests.delivery_support import (
    Harness,
    bulk_subscriptions,
    event_counts,
    invoke_bodies,
    make_harness,
    move_back,
    publish,
    subscribe,
    verify,
)
from tests.support import ADMIN, Clock

pytestmark = pytest.mark.e2e

#: These tests pin the fan-out message, which queues every fan-out larger than publishing's direct path takes:
#: the direct path is off here (tests/test_direct_fanout.py covers it).
FANOUT_MESSAGES = {"direct_fanout_max": 0}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FANOUT_MESSAGES)


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


def _take_fanout_message(harness: Harness) -> str:
    """The published event's fan-out message, taken off the queue (it is the only message there)."""
    (message,) = harness.sqs.receive_message(QueueUrl=harness.services.settings.queue_url)["Messages"]
    harness.sqs.delete_message(QueueUrl=harness.services.settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
    body = message["Body"]
    assert json.loads(body)["kind"] == "fanout"
    return str(body)


def _sent_bodies(harness: Harness, kind: str, since: int = 0) -> list[dict[str, Any]]:
    """Every work message of ``kind`` the worker sent (single or batched), from call number ``since`` on; each
    delivery a message of several carries as a ``delivery`` body of its own."""
    bodies: list[dict[str, Any]] = []
    for call in harness.queue_calls.calls[since:]:
        if call.operation == "SendMessage":
            bodies.append(json.loads(call.params["MessageBody"]))
        elif call.operation == "SendMessageBatch":
            bodies += [json.loads(entry["MessageBody"]) for entry in call.params["Entries"]]
    return [body for body in each_delivery(bodies) if body["kind"] == kind]


def _route_queries(harness: Harness) -> list[tuple[str, int]]:
    return [
        (call.params["ExpressionAttributeValues"][":p"]["S"], call.params["Limit"])
        for call in harness.table_calls.of("Query")
        if call.params["ExpressionAttributeValues"][":p"]["S"].startswith("ROUTE#")
    ]


def test_an_event_goes_to_enabled_subscriptions_of_its_type_or_wildcard_found_by_query(
    client, tenant, make_tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN subscriptions of the tenant to the type, to everything, to another type, a disabled one,
    # and one of another tenant
    receiver = make_receiver()
    typed = [subscribe(client, tenant, f"{receiver.url}?s=typed{n}") for n in range(2)]
    wildcard = subscribe(client, tenant, f"{receiver.url}?s=wildcard", ["*"])
    subscribe(client, tenant, f"{receiver.url}?s=other-type", ["order.shipped"])
    disabled = subscribe(client, tenant, f"{receiver.url}?s=disabled")
    client.patch(f"/v1/subscriptions/{disabled.id}", json={"enabled": False}, headers=tenant.headers)
    subscribe(client, make_tenant("Other"), f"{receiver.url}?s=other-tenant")
    harness.table_calls.clear()
    # WHEN an invoice.paid event is published to the tenant and delivered
    event_id = publish(client, tenant.id)
    harness.drain()
    # THEN exactly the typed and wildcard subscriptions received it, once each
    assert Counter(r.path for r in receiver.received) == {
        "/webhook?s=typed0": 1,
        "/webhook?s=typed1": 1,
        "/webhook?s=wildcard": 1,
    }
    secrets = {"/webhook?s=typed0": typed[0].secret, "/webhook?s=typed1": typed[1].secret}
    secrets["/webhook?s=wildcard"] = wildcard.secret
    for got in receiver.received:
        verify(secrets[got.path], got)
    # AND the subscriptions were found by querying the routing entries of the type and of "*": no Scan
    assert harness.table_calls.of("Scan") == []
    routes = [route for route, _ in _route_queries(harness)]
    assert routes == [f"ROUTE#{tenant.id}#invoice.paid", f"ROUTE#{tenant.id}#*"]
    assert event_counts(client, event_id) == {
        "matched": 3,
        "pending": 0,
        "succeeded": 3,
        "failed": 0,
        "filtered": 0,
        "fanout_complete": True,
    }


def test_a_broadcast_reaches_the_matching_subscriptions_of_every_tenant(
    client, make_tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN three tenants subscribed to invoice.paid and one without subscriptions
    receiver = make_receiver()
    tenants = [make_tenant(f"T{n}") for n in range(3)]
    make_tenant("Silent")
    subs = {f"/webhook?t={n}": subscribe(client, t, f"{receiver.url}?t={n}") for n, t in enumerate(tenants)}
    # WHEN an event is broadcast
    event_id = publish(client, None)
    harness.drain()
    # THEN each tenant's subscriber received it once, and the counts say the fan-out is complete
    assert Counter(r.path for r in receiver.received) == dict.fromkeys(subs, 1)
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    assert event_counts(client, event_id) == {
        "matched": 3,
        "pending": 0,
        "succeeded": 3,
        "failed": 0,
        "filtered": 0,
        "fanout_complete": True,
    }


@pytest.mark.parametrize("broadcast", [False, True])
def test_a_fanout_message_that_runs_twice_queues_again_but_counts_once(
    client, tenant, harness: Harness, make_receiver, broadcast: bool
) -> None:
    # GIVEN an event with four subscribers
    receiver = make_receiver()
    for n in range(4):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    event_id = publish(client, None if broadcast else tenant.id)
    body = _take_fanout_message(harness)
    # WHEN its fan-out message is processed twice (SQS delivered it twice, or a worker died after the work: the same
    # message, received again)
    assert invoke_bodies(harness, [body], message_ids=["m-fanout"]) == {"batchItemFailures": []}
    if broadcast:  # the per-tenant fan-outs it queued run twice too
        per_tenant = [json.dumps(b) for b in _sent_bodies(harness, "fanout")]
        tenant_ids = [f"m-tenant-{n}" for n in range(len(per_tenant))]
        assert invoke_bodies(harness, per_tenant + per_tenant, message_ids=tenant_ids + tenant_ids) == {
            "batchItemFailures": []
        }
    assert invoke_bodies(harness, [body], message_ids=["m-fanout"], receive_count=2) == {"batchItemFailures": []}
    harness.drain()
    # THEN each subscriber received it once, and the counts are those of four deliveries
    assert sorted(r.path for r in receiver.received) == [f"/webhook?n={n}" for n in range(4)]
    assert len(_sent_bodies(harness, "delivery")) > 4  # the duplicates were queued...
    assert event_counts(client, event_id) == {  # ...but neither sent nor counted twice
        "matched": 4,
        "pending": 0,
        "succeeded": 4,
        "failed": 0,
        "filtered": 0,
        "fanout_complete": True,
    }


@pytest.mark.parametrize("change", ["deleted", "disabled", "created", "all deleted", "all disabled"])
def test_a_fanout_page_run_again_queues_what_it_counted_whatever_changed_meanwhile(
    client, tenant, harness: Harness, make_receiver, change: str
) -> None:
    # GIVEN three subscribers, and an event whose fan-out page was counted, then SQS failed its deliveries' send
    # (after botocore's retries: the message comes back a visibility timeout later)
    receiver = make_receiver()
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(3)]
    install(harness.services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    event_id = publish(client, tenant.id)
    harness.drain()
    assert receiver.received == []
    # WHEN a subscription (or each one: the page then reads empty) is deleted, disabled or created meanwhile, and
    # the message runs again
    changed = subs if change.startswith("all ") else subs[:1]
    for sub in changed:
        if change.endswith("deleted"):
            assert client.delete(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).status_code == 204
        elif change.endswith("disabled"):
            patched = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": False}, headers=tenant.headers)
            assert patched.status_code == 200, patched.text
    if change == "created":
        subscribe(client, tenant, f"{receiver.url}?n=new")
    harness.reveal()
    harness.drain()
    # THEN the page queued what it counted: the change's deliveries are cancelled and counted failed (deleted,
    # disabled), or the new subscription is not the event's (created); the counts add up, nothing is left pending
    cancelled = set() if change == "created" else {f"/webhook?n={subs.index(sub)}" for sub in changed}
    expected = {f"/webhook?n={n}" for n in range(3)} - cancelled
    assert Counter(r.path for r in receiver.received) == dict.fromkeys(expected, 1)
    counts = event_counts(client, event_id)
    assert counts == {
        "matched": 3,
        "pending": 0,
        "succeeded": len(expected),
        "failed": 3 - len(expected),
        "filtered": 0,
        "fanout_complete": True,
    }


@pytest.mark.parametrize(
    "fault",
    [
        "dynamodb.TransactWriteItems:throttle@call=calls:1",  # the page's count failed after botocore's retries
        "dynamodb.TransactWriteItems:lost=calls:1",  # made, and its answer lost
        # what counted a page twice when its marker was written apart from its counts: the counts made, their
        # answer lost, and the read that would tell failed
        "dynamodb.UpdateItem:lost=calls:1, dynamodb.GetItem:throttle@call=calls:2",
    ],
)
def test_a_fanout_page_is_counted_once_whatever_fails_around_its_count(
    client, tenant, services, harness: Harness, make_receiver, fault: str
) -> None:
    # GIVEN an event for twelve subscriptions, more than publishing queues itself: a fan-out message counts them
    receiver = make_receiver()
    for n in range(12):
        bulk_subscriptions(services.store, tenant.id, f"{receiver.url}?n={n}", 1, event_types=("*",))
    event_id = publish(client, tenant.id)
    # WHEN DynamoDB fails the worker's writes around the page's count, and its message comes back to run again
    injector = install(services.store.client, fault)
    assert injector is not None
    harness.drain()
    for _ in range(6):  # what failed comes back (its message shown again, a visibility timeout later)
        harness.reveal()
        harness.drain()
    assert injector.injected
    # THEN every subscriber received the event once, and the counts are those of twelve deliveries, the fan-out
    # complete: neither never counted nor counted twice
    assert sorted(r.path for r in receiver.received) == sorted(f"/webhook?n={n}" for n in range(12))
    assert event_counts(client, event_id) == {
        "matched": 12,
        "pending": 0,
        "succeeded": 12,
        "failed": 0,
        "filtered": 0,
        "fanout_complete": True,
    }


def test_a_broadcasts_tenant_page_run_again_queues_the_tenants_it_counted(
    client, make_tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN three tenants with a subscriber each, and a broadcast whose page of tenants was counted (each tenant's
    # fan-out opened), then SQS failed the send of their fan-out messages
    receiver = make_receiver()
    tenants = [make_tenant(f"T{n}") for n in range(3)]
    for n, each in enumerate(tenants):
        subscribe(client, each, f"{receiver.url}?t={n}")
    install(harness.services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    event_id = publish(client, None)
    harness.drain()
    assert event_counts(client, event_id)["fanout_complete"] is False
    # WHEN one of the tenants is deleted meanwhile, and the broadcast's message runs again
    assert client.delete(f"/v1/tenants/{tenants[0].id}", headers=ADMIN).status_code == 204
    for _ in range(3):
        harness.reveal()
        harness.drain()
    # THEN each tenant it counted had its fan-out, the deleted one's closing with what it found: the fan-out is
    # complete, and its counts add up
    counts = event_counts(client, event_id)
    assert counts["fanout_complete"] is True, counts
    assert counts["pending"] == 0, counts
    assert counts["matched"] == counts["succeeded"] + counts["failed"] >= 2, counts
    assert {"/webhook?t=1", "/webhook?t=2"} <= {r.path for r in receiver.received}


@pytest.mark.parametrize("settings_overrides", [{**FANOUT_MESSAGES, "fanout_page_size": 10}])
def test_a_long_fanout_pages_and_hands_over_before_the_deadline(
    client, tenant, services, aws, settings_overrides
) -> None:
    # GIVEN 290 subscriptions to the type and 10 to "*", read 10 a page, and a clock on which each
    # SendMessageBatch takes 3 s (so a 60 s invocation cannot queue them all)
    clock = Clock(time.time())
    harness = make_harness(services, aws, clock=clock)
    try:
        url = "http://127.0.0.1:9/unused"
        typed = bulk_subscriptions(services.store, tenant.id, url, 290)
        wildcard = bulk_subscriptions(services.store, tenant.id, url, 10, ["*"])
        services.queue.client.meta.events.register(
            "provide-client-params.sqs.SendMessageBatch", lambda **_: clock.advance(3)
        )
        event_id = publish(client, tenant.id)
        pending = [_take_fanout_message(harness)]
        # WHEN the fan-out message and each continuation it hands over are processed
        runs: list[tuple[float, float]] = []  # (seconds the worker had, seconds it used) per message
        while pending:
            before = len(harness.queue_calls.calls)
            started = clock()
            assert invoke_bodies(harness, [pending.pop(0)], timeout_seconds=60) == {"batchItemFailures": []}
            runs.append((60, clock() - started))
            pending += [json.dumps(b) for b in _sent_bodies(harness, "fanout", before)]
        # THEN it took several messages, each stopping at least FANOUT_MIN_SECONDS_LEFT before its
        # deadline less one page (a page is never cut in two)
        assert len(runs) >= 2
        assert all(had - used >= FANOUT_MIN_SECONDS_LEFT - 3 for had, used in runs), runs
        # AND every subscription was queued exactly once, a page of ten in one message, one SendMessageBatch a page
        queued = Counter(b["subscription_id"] for b in _sent_bodies(harness, "delivery"))
        assert queued == Counter(s.id for s in typed + wildcard)
        batches = harness.queue_calls.of("SendMessageBatch")
        assert len(batches) == 30
        assert all(len(call.params["Entries"]) == 1 for call in batches)
        assert all(len(json.loads(call.params["Entries"][0]["MessageBody"])["deliveries"]) == 10 for call in batches)
        # AND the routing entries were read in pages of 10, by Query
        queries = _route_queries(harness)
        assert {limit for _, limit in queries} == {10}
        assert len(queries) >= 30
        assert harness.table_calls.of("Scan") == []
        counts = event_counts(client, event_id)
        assert (counts["matched"], counts["fanout_complete"]) == (300, True)
    finally:
        harness.close()


#: The receiver answers at once, but it is a thread of this process, on a machine the suite may keep busy: an answer
#: later than the slow lane's 2 s would be cut short and sent again from the slow lane (a duplicate the README
#: documents for endpoints that slow), which the test of one arrival per subscription would count.
QUICK_RECEIVER = {"slow_lane_after_seconds": 10}


@pytest.mark.parametrize("settings_overrides", [{**FANOUT_MESSAGES, "fanout_page_size": 10, **QUICK_RECEIVER}])
def test_a_continuation_sent_twice_after_its_answer_was_lost_fans_out_once(
    client,
    tenant,
    services,
    harness: Harness,
    receiver,
    monkeypatch: pytest.MonkeyPatch,
    settings_overrides,
) -> None:
    # GIVEN 60 subscriptions, read 10 a page, a fan-out message handing over after 20 of them, and SQS losing the
    # answer of the first continuation's SendMessage, which it carried out: botocore sends it again, and SQS holds
    # two copies of it (with message ids of their own)
    monkeypatch.setattr("herald.worker.fanout.FANOUT_MAX_PER_MESSAGE", 20)
    subs = bulk_subscriptions(services.store, tenant.id, receiver.url, 60)
    event_id = publish(client, tenant.id)
    install(services.queue.client, "sqs.SendMessage:lost@send=calls:1")
    # WHEN the worker runs everything queued
    harness.drain()
    # THEN every subscription's delivery was queued once and arrived once: the second copy found the first working
    # the fan-out from its position, and was dropped, instead of queueing the rest of the fan-out a second time
    queued = Counter(b["subscription_id"] for b in _sent_bodies(harness, "delivery"))
    assert queued == Counter(s.id for s in subs)
    assert Counter(r.headers["webhook-id"] for r in receiver.received) == {event_id: 60}
    counts = event_counts(client, event_id)
    assert (counts["matched"], counts["succeeded"], counts["fanout_complete"]) == (60, 60, True)


@pytest.mark.parametrize("settings_overrides", [FANOUT_MESSAGES])
def test_a_fanout_message_moved_back_from_the_dead_letter_queue_by_sqs_works_on(
    client, tenant, services, aws, make_receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an event with three subscribers, whose fan-out message claimed its place and then failed
    clock = Clock(time.time())
    harness = make_harness(services, aws, clock=clock)
    receiver = make_receiver()
    for n in range(3):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    failed: list[bool] = []

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("the invocation ended here")
        return await route_page(*args, **kwargs)

    monkeypatch.setattr("herald.worker.fanout.route_page", fails_once)
    try:
        event_id = publish(client, tenant.id)
        harness.drain()
        assert failed == [True]
        # AND then failed on every receive until SQS moved it to the dead-letter queue, a visibility timeout (the
        # work queue's 360 s) after its last receive
        harness.reveal()
        for _ in range(services.settings.max_receive_count):
            harness.sqs.receive_message(QueueUrl=services.settings.queue_url, VisibilityTimeout=0)
        assert harness.counts() == (0, 0)
        clock.advance(360)
        # WHEN the operator moves it back with SQS's own redrive (a new message, no redrive count of Herald's)
        move_back(harness)
        harness.drain()
    finally:
        harness.close()
    # THEN it takes its place over and fans the event out: each subscriber gets it once
    assert sorted(r.path for r in receiver.received) == [f"/webhook?n={n}" for n in range(3)]
    assert event_counts(client, event_id)["fanout_complete"] is True


def test_a_fanout_position_is_worked_by_one_message_until_its_claim_stands_still(client, tenant, services) -> None:
    # GIVEN an event, and a message that claimed its fan-out from a position
    event_id = publish(client, tenant.id)
    stored = services.store.events.get(event_id)
    assert stored is not None
    claim = services.store.events.claim_fanout
    now = int(time.time())

    def ask(message_id: str, at: int, idle: int = 300) -> bool:
        return bool(claim(event_id, "t|r|c", message_id, now=at, idle_before=at - idle, expires_at=stored.expires_at))

    assert ask("m-1", now)
    # THEN that message, received again, works on; another at the same position does not, until the claim has
    # stood still for longer than the idle time it is given (then it takes the position over)
    assert ask("m-1", now + 400)
    assert not ask("m-2", now + 500)
    assert ask("m-2", now + 701)
    assert not ask("m-1", now + 702)
    # AND the claim is of one position and one event: another position, or the same one of another event, is free
    assert claim(event_id, "t|r|d", "m-3", now=now, idle_before=now - 300, expires_at=stored.expires_at)
    other = publish(client, tenant.id)
    assert claim(other, "t|r|c", "m-3", now=now, idle_before=now - 300, expires_at=stored.expires_at)
    # AND a claim left by an expired event of the same id is no one's
    assert ask("m-4", stored.expires_at, idle=10**6)


@pytest.mark.slow
def test_two_thousand_subscriptions_fan_out_in_batches_and_continuations(client, tenant, services, aws) -> None:
    # 2,000 and not 10,000: moto's SendMessage counts the whole queue on every message sent (O(depth)),
    # so 10,000 deliveries take ~10 minutes here. `python -m benchmarks` runs the 10,000 (with moto fixed).
    # GIVEN 2,000 subscriptions to the type, written straight through the Store, read 250 a page, and a
    # clock on which each SendMessageBatch takes 2.5 s (the 24 of them, 3 a page, cannot fit in one 60 s invocation)
    clock = Clock(time.time())
    harness = make_harness(services, aws, clock=clock)
    try:
        subs = bulk_subscriptions(services.store, tenant.id, "http://127.0.0.1:9/unused", 2_000)
        services.queue.client.meta.events.register(
            "provide-client-params.sqs.SendMessageBatch", lambda **_: clock.advance(2.5)
        )
        event_id = publish(client, tenant.id)
        pending = [_take_fanout_message(harness)]
        # WHEN the fan-out message and its continuations are processed, each as a 60 s invocation
        runs: list[float] = []
        began = time.perf_counter()
        while pending:
            before = len(harness.queue_calls.calls)
            started = clock()
            assert invoke_bodies(harness, [pending.pop(0)], timeout_seconds=60) == {"batchItemFailures": []}
            runs.append(clock() - started)
            pending += [json.dumps(b) for b in _sent_bodies(harness, "fanout", before)]
        elapsed = time.perf_counter() - began
        # THEN every subscription was queued exactly once, ten deliveries to a message and ten messages to a
        # SendMessageBatch: a page of 250 in three calls (10, 10 and 5 messages)
        queued = Counter(b["subscription_id"] for b in _sent_bodies(harness, "delivery"))
        assert queued == Counter(s.id for s in subs)
        batches = harness.queue_calls.of("SendMessageBatch")
        assert sorted(len(call.params["Entries"]) for call in batches) == sorted([10, 10, 5] * 8)
        messages = [json.loads(entry["MessageBody"]) for call in batches for entry in call.params["Entries"]]
        assert {len(message["deliveries"]) for message in messages} == {10}
        # AND the work was split into continuation messages, each stopping well before its deadline (less the
        # sends of the page it was working on)
        assert len(runs) >= 2
        assert all(60 - used >= FANOUT_MIN_SECONDS_LEFT - 3 * 2.5 for used in runs), runs
        assert {limit for _, limit in _route_queries(harness)} == {250}
        assert harness.table_calls.of("Scan") == []
        counts = event_counts(client, event_id)
        assert (counts["matched"], counts["fanout_complete"]) == (2_000, True)
        visible, hidden = harness.counts()
        assert visible + hidden == 200 + len(runs) - 1  # the deliveries' messages, and the continuations run above
        print(f"\nfan-out of 2,000 under moto: {elapsed:.1f} s wall, {len(runs)} messages")
    finally:
        harness.close()
