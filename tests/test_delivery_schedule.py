"""Waiting retries outside the work queue's in-flight set: delayed copies for waits up to 15 minutes, the
schedule in DynamoDB and its sweeper beyond, over real HTTP on a controllable clock.

SQS caps a standard queue at about 120,000 messages in flight, and past it every consumer stalls; moto has
no cap, so these tests count what is in flight instead of hitting it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from typing import Any

import pytest

from herald import ids
from herald.faults import install
from herald.messages import DeliveryMessage, dump_message
from herald.queue import MAX_BATCH_BYTES, REDRIVES_ATTRIBUTE
from herald.storage import keys
from herald.storage.table import to_item
from herald.worker.events import EventCache
from tests.api_support import queue_messages
from tests.delivery_support import CallRecorder, Harness, deliveries, only_delivery, publish, step, subscribe, when
from tests.support import Clock, Receiver, TenantInfo

pytestmark = pytest.mark.e2e

#: Immediately, then 5 s, 5 min, 30 min, 2 h: waits on each side of SQS's 15-minute delay.
SCHEDULE = {"retry_schedule": "0,5,300,1800,7200"}


def _attempts_per_event(receiver: Receiver) -> Counter[str]:
    return Counter(got.headers["webhook-id"] for got in receiver.received)


@pytest.mark.slow
# The receiver answers at once, but it is a thread of this process, on a machine the suite may keep busy: an answer
# later than the slow lane's 2 s would be cut short and made again from the slow lane (an attempt more, the duplicate
# the README documents for endpoints that slow), which the count of five attempts an event would see.
@pytest.mark.parametrize("settings_overrides", [{**SCHEDULE, "slow_lane_after_seconds": 10}])
def test_a_hundred_failing_deliveries_wait_without_holding_messages_in_flight(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber that fails everything, and 100 events to it
    receiver.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    events = [publish(client, tenant.id) for _ in range(100)]
    # WHEN each step of the schedule runs: 5 s and 5 min (delayed copies), 30 min and 2 h (the schedule)
    harness.drain()
    seen: list[tuple[int, int, int]] = [(harness.in_flight(), harness.delayed(), harness.scheduled())]
    for wait in (5, 300, 1800, 7200):
        step(harness, clock, wait * 1.25)
        seen.append((harness.in_flight(), harness.delayed(), harness.scheduled()))
    # THEN no waiting delivery ever held a message in flight (the bar: at most 5 of 100)
    assert [in_flight for in_flight, _, _ in seen] == [0, 0, 0, 0, 0]
    # AND the short waits were delayed copies, the long ones scheduled items, and then nothing was left
    assert [(delayed, scheduled) for _, delayed, scheduled in seen] == [(100, 0), (100, 0), (0, 100), (0, 100), (0, 0)]
    # AND every event got exactly its five attempts, then failed for good
    assert _attempts_per_event(receiver) == Counter(dict.fromkeys(events, 5))
    assert {d["status"] for d in deliveries(client, tenant, sub.id, limit=250)} == {"failed"}


def _held_in_full_calls(client: Any, tenant: TenantInfo, harness: Harness, receiver: Receiver, count: int) -> list[str]:
    """A subscriber that fails everything, ``count`` events published to it (their ids), and a worker that sends the
    copies it holds, and writes its first attempts, only when a call is full or nothing else can come (no time window:
    what a call holds is then the same on any machine; with the inserts' 20 ms, a busy machine wrote a batch's first
    attempts in two calls, and those of the first made their attempts and held their copies while the others waited:
    all blocked, the copies held so far went out)."""
    receiver.default = (500, {}, b"down", 0.0)
    subscribe(client, tenant, receiver.url)
    events = [publish(client, tenant.id) for _ in range(count)]
    harness.worker.held_copies.window = 3600
    harness.worker.inserts.window = 3600
    return events


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_the_copies_a_batch_holds_go_out_ten_to_a_call(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber that fails everything, and 30 events to it
    events = _held_in_full_calls(client, tenant, harness, receiver, 30)
    sent_before = len(harness.queue_calls.sent())
    # WHEN the worker makes their first attempts, ten messages a batch, each delivery's retry waiting 5 s
    batches = harness.drain()
    # THEN each batch's ten copies went out in one SendMessageBatch, each delayed by SQS for its wait (5 s and its
    # jitter), none held in flight
    assert [batch.received for batch in batches] == [10, 10, 10]
    copies = [sent for sent in harness.queue_calls.sent()[sent_before:] if '"resumed":true' in sent.body]
    assert sorted(json.loads(sent.body)["event_id"] for sent in copies) == sorted(events)
    assert all(5 <= sent.delay <= 10 for sent in copies), [sent.delay for sent in copies]
    assert len({sent.seq for sent in copies}) == 3
    assert harness.queue_calls.of("SendMessage") == []
    assert (harness.in_flight(), harness.delayed()) == (0, 30)
    # AND each retry is made from its copy, once
    step(harness, clock, 11)
    assert _attempts_per_event(receiver) == Counter(dict.fromkeys(events, 2))


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_held_copy_sqs_refuses_in_its_batch_brings_its_own_message_back(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber that fails everything, ten events to it, and SQS refusing some entries of the worker's first
    # SendMessageBatch, the batch's held copies, and of both its resends of the entries refused
    events = _held_in_full_calls(client, tenant, harness, receiver, 10)
    injector = install(harness.services.queue.client, "sqs.SendMessageBatch:partial@call=calls:1-3")
    assert injector is not None
    # WHEN the worker makes their first attempts
    (batch,) = harness.drain()
    # THEN the records whose copy SQS refused failed (their messages come back), the others are done with
    assert injector.count("partial") == 3
    assert 0 < batch.failed < 10
    assert batch.deleted == 10 - batch.failed
    # AND once those messages are back, each delivery waits in one copy: each retry is made once, nothing is lost
    step(harness, clock, 400)
    step(harness, clock, 11)
    assert _attempts_per_event(receiver) == Counter(dict.fromkeys(events, 2))


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_a_sweep_that_dies_midway_loses_nothing_and_sends_nothing_twice(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN 25 deliveries waiting an hour in the schedule
    receiver.responses = [(500, {}, b"", 0.0)] * 25
    sub = subscribe(client, tenant, receiver.url)
    events = [publish(client, tenant.id) for _ in range(25)]
    harness.drain()
    assert harness.scheduled() == 25
    due = max(when(d["next_attempt_at"]) for d in deliveries(client, tenant, sub.id, limit=250))
    # WHEN the sweep dies at its second batch (SQS answers it with an error; its pages go out several at once)
    clock.advance(due - clock() + 1)
    batches: list[int] = []
    lock = threading.Lock()

    def second_batch_fails(params: dict[str, Any], **_: Any) -> None:
        with lock:
            batches.append(len(params["Entries"]))
            failing = len(batches) == 2
        if failing:
            raise ConnectionResetError("the invocation died")

    events_hook = harness.services.queue.client.meta.events
    events_hook.register("provide-client-params.sqs.SendMessageBatch", second_batch_fails)
    try:
        with pytest.raises(Exception, match=r"died|reached"):
            harness.worker.sweep()
    finally:
        events_hook.unregister("provide-client-params.sqs.SendMessageBatch", second_batch_fails)
    # THEN what it queued left the schedule and the rest stayed (the batch that failed, and whatever of the
    # window it had not read yet: its pages stop at each hour of the schedule, which the retries' jitter may
    # straddle), and its cursor did not move
    queued = sum(batches) - batches[1]
    assert queued >= 1
    assert harness.scheduled() == 25 - queued
    # WHEN the next sweep runs and the queue is worked
    step(harness, clock, 60)
    # THEN every delivery got its second attempt exactly once, and nothing waits any more
    assert _attempts_per_event(receiver) == Counter(dict.fromkeys(events, 2))
    assert {d["status"] for d in deliveries(client, tenant, sub.id, limit=250)} == {"succeeded"}
    assert (harness.scheduled(), harness.counts()) == (0, (0, 0))


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_a_sweep_a_fault_cuts_short_reports_what_it_queued(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN 25 deliveries waiting an hour in the schedule
    receiver.responses = [(500, {}, b"", 0.0)] * 25
    subscribe(client, tenant, receiver.url)
    for _ in range(25):
        publish(client, tenant.id)
    harness.drain()
    assert harness.scheduled() == 25
    due = max(float(item["due"]) for item in harness.scheduled_items())
    # WHEN, once they are due, SQS refuses the sweep's second page (after botocore's retries)
    clock.advance(due - clock() + 1)
    injector = install(harness.services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:2")
    assert injector is not None
    answer = harness.worker.sweep()
    # THEN the sweep is not complete, and the count it reports is what left the schedule: more than none
    assert injector.count() >= 1
    assert answer["complete"] is False
    assert answer["queued"] >= 1
    assert harness.scheduled() == 25 - answer["queued"]


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_work_scheduled_twice_is_attempted_once(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a delivery waiting in the schedule, and a second copy of its work scheduled (a duplicated message
    # that was held twice)
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    (item,) = harness.scheduled_items()
    store = harness.services.store
    store.schedule.put(item["body"], name="a-second-copy", due=float(item["due"]) + 5, now=clock())
    assert harness.scheduled() == 2
    # WHEN both come due, and two sweeps overlap
    clock.advance(float(item["due"]) - clock() + 10)
    harness.worker.sweep()
    harness.worker.sweep()
    harness.reveal()
    harness.drain()
    # AND the copy that met the first one's lease comes back after it
    step(harness, clock, 120)
    # THEN the receiver got the second attempt once, and nothing is left waiting
    assert _attempts_per_event(receiver) == Counter({event_id: 2})
    assert only_delivery(client, tenant, sub.id)["attempts"] == 2
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
@pytest.mark.parametrize("gone", ["expired", "its id published by another tenant since"])
def test_a_scheduled_retry_of_an_event_gone_meanwhile_fails_its_delivery_without_an_attempt(
    client: Any, tenant: TenantInfo, make_tenant: Any, harness: Harness, clock: Clock, receiver: Receiver, gone: str
) -> None:
    # GIVEN a delivery waiting in the schedule, whose event expires before its retry is due (its item is
    # still there: TTL deletion is lazy), or expired and another tenant published an event with its id since (ids
    # are the publisher's to choose)
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    store = harness.services.store
    theirs = None
    if gone == "expired":
        store.client.update_item(
            TableName=store.table_name,
            Key=to_item(keys.event(event_id)),
            UpdateExpression="SET expires_at = :soon",
            ExpressionAttributeValues={":soon": {"N": str(int(clock()) + 60)}},
        )
    else:
        item = store.client.get_item(TableName=store.table_name, Key=to_item(keys.event(event_id)))["Item"]
        kept = {"N": str(int(clock()) + 31 * 86_400)}
        theirs = {**item, "tenant_id": {"S": make_tenant("Globex").id}, "expires_at": kept}
        store.client.put_item(TableName=store.table_name, Item=theirs)
    harness.worker.events = EventCache(harness.worker)  # the retry runs in another container
    # WHEN its retry comes due
    due = when(only_delivery(client, tenant, sub.id)["next_attempt_at"])
    step(harness, clock, due - clock() + 1)
    # THEN nothing is sent; the delivery failed for that reason instead of staying pending (listed so, with no
    # message left to end it); nothing is left waiting or dead-lettered
    assert len(receiver.received) == 1
    delivery = only_delivery(client, tenant, sub.id)
    assert (delivery["status"], delivery["last_error_kind"]) == ("failed", "event_expired")
    assert (delivery["attempts"], delivery["next_attempt_at"]) == (1, None)
    assert [d["id"] for d in deliveries(client, tenant, sub.id, status="failed")] == [delivery["id"]]
    assert deliveries(client, tenant, sub.id, status="pending") == []
    assert harness.counts() == (0, 0)
    assert harness.counts(harness.services.settings.dead_letter_queue_url) == (0, 0)
    assert harness.scheduled() == 0
    assert ids.is_id(delivery["id"], ids.DELIVERY)
    # ... and a copy of that retry's message coming again changes nothing
    copy = DeliveryMessage(
        event_id=event_id, tenant_id=tenant.id, subscription_id=sub.id, delivery_id=delivery["id"], resumed=True
    )
    harness.services.queue.send(copy)
    harness.drain()
    assert only_delivery(client, tenant, sub.id) == delivery
    assert len(receiver.received) == 1
    # AND another tenant's event under the id is as it was published
    if theirs is not None:
        assert store.client.get_item(TableName=store.table_name, Key=to_item(keys.event(event_id)))["Item"] == theirs


def test_scheduled_work_is_swept_back_to_its_own_lane(harness: Harness, clock: Clock) -> None:
    # GIVEN two deliveries' work scheduled for later than SQS's 15-minute delay: one of the slow lane, one of the
    # work queue, and a body that cannot be read
    store, settings = harness.services.store, harness.services.settings
    slow = DeliveryMessage(event_id="evt_s", tenant_id="tnt_s", subscription_id="sub_s", delivery_id="dlv_s")
    work = DeliveryMessage(event_id="evt_w", tenant_id="tnt_w", subscription_id="sub_w", delivery_id="dlv_w")
    due = clock() + 1800
    store.schedule.put(dump_message(slow.model_copy(update={"lane": "slow"})), name="slow", due=due, now=clock())
    store.schedule.put(dump_message(work), name="work", due=due, now=clock())
    store.schedule.put("not a work message", name="poison", due=due, now=clock())
    # WHEN they come due and the sweeper runs
    clock.advance(1800)
    harness.worker.sweep()
    harness.reveal()
    # THEN the slow lane's went back to the slow lane's queue, the others to the work queue
    assert [body["delivery_id"] for body in queue_messages(harness.sqs, settings.slow_queue_url)] == ["dlv_s"]
    work_queue = _bodies(harness.sqs, settings.queue_url)
    assert sorted(work_queue) == sorted([dump_message(work), "not a work message"])
    assert harness.scheduled() == 0


def test_work_too_large_for_sqs_is_removed_from_the_schedule_and_stops_nothing_after_it(
    harness: Harness, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a work message over SQS's 256 KiB in the schedule (fields of another version carried along), and other
    # tenants' work due at the same time and in the hours after it
    store, settings = harness.services.store, harness.services.settings
    big = DeliveryMessage(
        event_id="evt_b", tenant_id="tnt_b", subscription_id="sub_b", delivery_id="dlv_b", future_field="x" * 270_000
    )
    due = clock() + 1800
    store.schedule.put(dump_message(big), name="big", due=due, now=clock())
    others = [
        DeliveryMessage(event_id="evt", tenant_id=f"tnt_{n}", subscription_id=f"sub_{n}", delivery_id=f"dlv_{n}")
        for n in range(3)
    ]
    for n, other in enumerate(others):
        store.schedule.put(dump_message(other), name=f"other{n}", due=due + 3600 * n, now=clock())
    # WHEN the sweeps run as each comes due
    for wait in (1800, 3600, 3600):
        clock.advance(wait)
        harness.worker.sweep()
    harness.reveal()
    # THEN every other work message was queued, in its hour, and the large one left the schedule, said as an error
    assert sorted(body["delivery_id"] for body in queue_messages(harness.sqs, settings.queue_url)) == [
        "dlv_0",
        "dlv_1",
        "dlv_2",
    ]
    assert harness.scheduled() == 0
    (removed,) = [r for r in caplog.records if r.getMessage().startswith("scheduled work too large for SQS")]
    assert removed.levelname == "ERROR"
    assert getattr(removed, "bytes", 0) > 262_144
    # AND it is named by its kind and ids, with none of its fields' values (another version's, anything at all)
    assert getattr(removed, "work_message", {})["delivery_id"] == "dlv_b"
    assert "xxxxxxxx" not in repr(removed.__dict__)


def test_copies_of_one_work_scheduled_for_one_moment_keep_the_larger_redrive_count(
    harness: Harness, clock: Clock
) -> None:
    # GIVEN a delivery's work scheduled for a moment by a copy redriven twice from the dead-letter queue
    store, settings = harness.services.store, harness.services.settings
    body = dump_message(DeliveryMessage(event_id="evt", tenant_id="tnt", subscription_id="sub", delivery_id="dlv"))
    due = clock() + 1800
    store.schedule.put(body, name="dlv", due=due, now=clock(), redrives=2)
    # WHEN another copy of it, never redriven, is scheduled for the same moment, and then one redriven three times
    store.schedule.put(body, name="dlv", due=due, now=clock())
    (item,) = store.schedule.falling_due(due - 1, due + 1)
    kept_after_fewer = item.redrives
    store.schedule.put(body, name="dlv", due=due, now=clock(), redrives=3)
    # THEN the one item kept the larger count each time, and the sweep queues the work once, carrying it
    assert kept_after_fewer == 2
    clock.advance(1800)
    assert harness.worker.sweep() == {"queued": 1, "complete": True}
    harness.reveal()
    (queued,) = harness.sqs.receive_message(QueueUrl=settings.queue_url, MessageAttributeNames=["All"])["Messages"]
    assert queued["MessageAttributes"][REDRIVES_ATTRIBUTE]["StringValue"] == "3"


def test_large_work_due_together_is_queued_in_calls_sqs_takes_and_stops_nothing_after_it(
    harness: Harness, clock: Clock
) -> None:
    # GIVEN six work messages of about 200 KB each (fields of another version carried along: each under SQS's 256 KiB,
    # 1.2 MB together, over the 1 MiB a SendMessageBatch call takes), due together, and another tenant's work due
    # after them in the same hour and in the next
    store, settings = harness.services.store, harness.services.settings
    due = clock() + 1800
    for n in range(6):
        big = DeliveryMessage(
            event_id="evt_b", tenant_id="tnt_b", subscription_id="sub_b", delivery_id=f"dlv_big{n}", extra="x" * 200_000
        )
        store.schedule.put(dump_message(big), name=f"big{n}", due=due, now=clock())
    for n, later in enumerate((60, 3660)):
        other = DeliveryMessage(event_id="evt", tenant_id="tnt_o", subscription_id="sub_o", delivery_id=f"dlv_o{n}")
        store.schedule.put(dump_message(other), name=f"other{n}", due=due + later, now=clock())
    sends = CallRecorder(harness.worker.queue.client, ["SendMessageBatch"])
    # WHEN the sweeps run as each comes due
    for wait in (1800, 60, 3600):
        clock.advance(wait)
        assert harness.worker.sweep()["complete"] is True
    harness.reveal()
    # THEN every message was queued once, the large ones a few to a call, and nothing is left in the schedule
    queued = Counter(body["delivery_id"] for body in queue_messages(harness.sqs, settings.queue_url))
    assert queued == Counter([*(f"dlv_big{n}" for n in range(6)), "dlv_o0", "dlv_o1"])
    assert all(sum(len(e["MessageBody"].encode()) for e in c.params["Entries"]) <= MAX_BATCH_BYTES for c in sends.calls)
    assert harness.scheduled() == 0
    sends.close()


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_a_copy_too_large_for_sqs_is_not_scheduled_and_brings_its_message_back(
    client: Any, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a delivery waiting an hour for its retry, and a copy of its message just under SQS's 256 KiB (fields of
    # another version carried along), first received: its copy, marked resumed, is over the limit
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    waiting = only_delivery(client, tenant, sub.id)
    message = DeliveryMessage(
        event_id=event_id, tenant_id=tenant.id, subscription_id=sub.id, delivery_id=waiting["id"], future_field=""
    )
    room = 262_144 - len(dump_message(message).encode())
    body = dump_message(message.model_copy(update={"future_field": "x" * (room - 4)}))
    copy = dump_message(DeliveryMessage.model_validate_json(body).model_copy(update={"resumed": True}))
    assert len(body.encode()) <= 262_144 < len(copy.encode())
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=body)
    # WHEN the worker finds the delivery not due, and holds the message for the hour
    (batch,) = harness.drain()
    # THEN the copy was not scheduled (the sweep could never queue it): SQS refused it, and the message came back,
    # as a short wait's copy SQS refuses does (its receives then take it to the dead-letter queue)
    assert (batch.received, batch.failed) == (1, 1)
    assert harness.scheduled() == 1  # the delivery's own retry, and no more
    assert only_delivery(client, tenant, sub.id) == waiting


def _bodies(sqs: Any, queue_url: str) -> list[str]:
    """Every visible message body on the queue as sent (the messages made visible again afterwards)."""
    bodies, handles = [], []
    while got := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
        "Messages", []
    ):
        bodies += [message["Body"] for message in got]
        handles += [message["ReceiptHandle"] for message in got]
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return bodies


class TickingClock(Clock):
    """A clock that moves a little with every read, as a real one does between two reads (7 ms here)."""

    def __call__(self) -> float:
        self.now += 0.007
        return self.now


@pytest.mark.parametrize("clock", [TickingClock(time.time())])
@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600,3600,3600"}])
def test_two_copies_of_a_waiting_retry_become_one_at_its_next_long_wait(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a delivery to a failing subscriber waiting an hour in the schedule, and a second copy of its work (a
    # sweep that died between its send and its delete leaves one), on a clock that moves between reads
    receiver.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    (item,) = harness.scheduled_items()
    harness.services.store.schedule.put(item["body"], name="a-copy", due=float(item["due"]) + 5, now=clock())
    # WHEN both come due: one makes the second attempt, the other finds it made (or its lease) and waits again
    step(harness, clock, 3600 * 1.3)
    step(harness, clock, 120)
    # THEN both wait for the same moment, the delivery's next attempt, as one scheduled item
    assert only_delivery(client, tenant, sub.id)["attempts"] == 2
    assert len(harness.scheduled_items()) == 1
    # AND each later step sends once
    step(harness, clock, 3600 * 1.3)
    step(harness, clock, 120)
    assert _attempts_per_event(receiver) == Counter({event_id: 3})
    assert len(harness.scheduled_items()) == 1


def _schedule_deliveries(harness: Harness, count: int, *, due: float) -> None:
    """Schedule ``count`` deliveries' work for ``due``, as ``hold`` schedules a long wait."""
    for n in range(count):
        body = DeliveryMessage(event_id="evt", tenant_id="tnt", subscription_id=f"sub_{n}", delivery_id=f"dlv_{n}")
        harness.services.store.schedule.put(dump_message(body), name=f"w{n}", due=due, now=harness.clock())


def test_a_sweep_delays_each_message_from_when_it_sends_it(harness: Harness, clock: Clock) -> None:
    # GIVEN 30 deliveries' work scheduled for the same moment (more than 15 minutes ahead, as ``hold`` schedules
    # it), now 30 s away, and a sweep whose pages take 20 s each
    store = harness.services.store
    _schedule_deliveries(harness, 30, due=clock() + 1000)
    clock.advance(970)
    remove = store.schedule.remove

    def slow_remove(sent: Any) -> None:
        remove(sent)
        clock.advance(20)

    harness.queue_calls.clear()
    # WHEN the sweep runs, its pages one after another
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store.schedule, "remove", slow_remove)
        patch.setattr("herald.worker.sweeper.SWEEP_THREADS", 1)
        harness.worker.sweep()
    # THEN each page's messages are delayed until the work is due, counted from when that page was sent: the
    # third page, sent 40 s in, is due at once, not 30 s late
    delays = [
        [entry["DelaySeconds"] for entry in call.params["Entries"]]
        for call in harness.queue_calls.of("SendMessageBatch")
    ]
    assert delays == [[30] * 10, [10] * 10, [0] * 10]
    assert harness.scheduled() == 0


def test_scheduled_work_is_kept_as_long_as_any_event_can_be() -> None:
    from herald.settings import Settings
    from herald.storage.schedule import KEEP_SECONDS

    # An item gone before its event would leave its delivery pending for good after a long stop of the schedule.
    longest = Settings.model_json_schema()["properties"]["event_ttl_days"]["maximum"]
    assert (longest + 1) * 86_400 <= KEEP_SECONDS


def test_a_sweep_far_behind_reads_back_no_further_than_work_is_kept_and_keeps_its_progress(
    harness: Harness, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Work is kept a year (KEEP_SECONDS): 14 days here, as the sweep's reading back is the same for any length, and a
    # sweep reading a year of empty hours takes minutes on moto.
    monkeypatch.setattr("herald.worker.sweeper.KEEP_SECONDS", 14 * 86_400)
    monkeypatch.setattr("herald.storage.schedule.KEEP_SECONDS", 14 * 86_400)
    # GIVEN a schedule whose sweeps stopped 30 days ago (its cursor is that old), work due 20 days ago (expired,
    # TTL not yet run), work due 13 days ago, and a sweep with time for one hour of the schedule at most
    store = harness.services.store
    old = DeliveryMessage(event_id="evt", tenant_id="tnt", subscription_id="sub_o", delivery_id="dlv_o")
    kept = DeliveryMessage(event_id="evt", tenant_id="tnt", subscription_id="sub_k", delivery_id="dlv_k")
    store.schedule.put(dump_message(old), name="old", due=clock() - 20 * 86_400, now=clock())
    store.schedule.put(dump_message(kept), name="kept", due=clock() - 13 * 86_400, now=clock())
    previous = store.schedule.cursor()
    assert previous is not None
    assert store.schedule.advance(previous, clock() - 30 * 86_400)

    def short_of_time(deadline: float | None) -> bool:
        return True  # asked once an hour of the schedule is drained: no time for another

    # WHEN a sweep short of time runs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("herald.worker.sweeper._short_of_time", short_of_time)
        result = harness.worker.sweep()
    # THEN it started 14 days back (what is older expired), drained that hour, moved the cursor past it, stopped
    cursor = store.schedule.cursor()
    assert cursor is not None
    assert result["complete"] is False
    assert cursor == (math.floor((clock() - 14 * 86_400) / 3600) + 1) * 3600
    # WHEN the next sweep has time
    assert harness.worker.sweep()["complete"] is True
    harness.reveal()
    # THEN the kept work was queued, the expired one was not read
    assert [body["delivery_id"] for body in queue_messages(harness.sqs, harness.services.settings.queue_url)] == [
        "dlv_k"
    ]
    assert len(harness.scheduled_items()) == 1


def test_a_sweep_short_of_time_starts_no_page_more_and_leaves_the_rest_scheduled(
    harness: Harness, clock: Clock
) -> None:
    from herald.worker import sweeper

    # GIVEN 50 deliveries' work falling due together (5 pages), a sweep of two threads whose pages hang until the
    # sweep has given up on what it has not started (AWS slowed down: throttled shards), and that is short of time
    # once it has read three pages ahead
    _schedule_deliveries(harness, 50, due=clock() + 1000)
    clock.advance(990)
    given_up = threading.Event()
    started: list[int] = []
    queue, give_up, pages = sweeper._queue, sweeper._give_up_unstarted, sweeper._pages
    read: list[int] = []
    two_under_way = threading.Event()

    def counted_pages(partitions: Any) -> Any:
        for page in pages(partitions):
            read.append(len(page))
            yield page

    def hanging_queue(worker: Any, page: Any) -> int:
        started.append(len(page))
        if len(started) == 2:
            two_under_way.set()
        assert given_up.wait(60)
        return queue(worker, page)

    def give_up_then_go_on(pending: Any) -> None:
        give_up(pending)
        given_up.set()

    def short_of_time(deadline: float | None) -> bool:
        # (counted in pages read, not in times asked: the sweep also asks between hours of the schedule, and whether
        # its window crosses an hour before the work falls due depends on the time of day)
        if len(read) < 3:
            return False
        # (short of time once both threads hold a page: on a busy machine, the second may not have started yet)
        assert two_under_way.wait(60)
        return True

    # WHEN it sweeps
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweeper, "SWEEP_THREADS", 2)
        patch.setattr(sweeper, "_queue", hanging_queue)
        patch.setattr(sweeper, "_give_up_unstarted", give_up_then_go_on)
        patch.setattr(sweeper, "_short_of_time", short_of_time)
        patch.setattr(sweeper, "_pages", counted_pages)
        result = harness.worker.sweep()
    # THEN it waited for the two pages under way only: the third, read ahead, was never started, and stays scheduled
    # with the two pages never read
    assert started == [10, 10]
    assert (result["queued"], result["complete"]) == (20, False)
    assert harness.scheduled() == 30
    # AND the next sweep queues the rest: each delivery's work once
    assert harness.worker.sweep()["complete"] is True
    harness.reveal()
    sent = Counter(body["delivery_id"] for body in queue_messages(harness.sqs, harness.services.settings.queue_url))
    assert sent == {f"dlv_{n}": 1 for n in range(50)}


def test_a_sweep_sends_its_pages_several_at_once(harness: Harness, clock: Clock) -> None:
    # GIVEN 80 deliveries' work falling due together (8 pages of 10)
    _schedule_deliveries(harness, 80, due=clock() + 1000)
    clock.advance(990)
    # WHEN the sweep runs, with SQS holding each of its first two calls until the other has come in too (a sweep
    # that sent its pages one after another would never get the second call to the barrier, and fail)
    together = threading.Barrier(2, timeout=60)
    calls: list[int] = []
    lock = threading.Lock()

    def meet(params: dict[str, Any], **_: Any) -> None:
        with lock:
            calls.append(len(params["Entries"]))
            first_two = len(calls) <= 2
        if first_two:
            together.wait()

    events_hook = harness.services.queue.client.meta.events
    events_hook.register("provide-client-params.sqs.SendMessageBatch", meet)
    try:
        result = harness.worker.sweep()
    finally:
        events_hook.unregister("provide-client-params.sqs.SendMessageBatch", meet)
    # THEN two pages were under way at once, and every page was queued and left the schedule
    assert result == {"queued": 80, "complete": True}
    assert calls == [10] * 8
    assert harness.scheduled() == 0


def test_work_scheduled_before_any_sweep_succeeded_is_swept_however_long_they_failed(
    services: Any, aws: Any, clock: Clock
) -> None:
    # GIVEN a deployment whose sweeps have not succeeded yet (no cursor), where a retry is scheduled 30 min ahead
    from herald.worker.runtime import Worker, settle_all

    assert services.store.schedule.cursor() is None
    message = DeliveryMessage(event_id="evt_1", tenant_id="ten_1", subscription_id="sub_1", delivery_id="dlv_1")
    services.store.schedule.put(dump_message(message), name="dlv_1", due=clock() + 1800, now=clock())
    # AND the sweeps keep failing for three hours
    clock.advance(3 * 3600)
    worker = Worker(services, clock=clock)
    try:
        # WHEN one succeeds
        result = worker.sweep()
        # THEN it queues the retry (due two and a half hours before it): the schedule's first put set the cursor
        assert result == {"queued": 1, "complete": True}
        assert [body["delivery_id"] for body in queue_messages(aws.client("sqs"), services.settings.queue_url)] == [
            "dlv_1"
        ]
    finally:
        settle_all([worker])
