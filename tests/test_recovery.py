"""Replay after an outage: a subscription's recovery, an event's redelivery, and the manual retry's place
beside them. Deliveries go over real HTTP to 127.0.0.1 and are verified with ``standardwebhooks``; time
is simulated with the worker's ``Clock`` (see test_delivery_retries.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from herald.domain import deliveries as deliveries_domain
from herald.domain import jobs as domain_jobs
from herald.domain import publishing
from herald.errors import AttemptUnderWay, ServiceUnavailableError
from herald.faults import install
from herald.local.moto_fixes import release_delays
from herald.messages import DeliveryMessage, RecoverMessage, dump_message
from herald.records import DeliveryStatus, RecoveryJob, RecoveryStatus, Trigger
from herald.sender import send_attempt
from herald.storage import keys
from herald.storage.jobs import FAILED, SENT, Progress, use_ticket
from herald.storage.table import Table, to_item
from herald.worker import dispatch
from herald.worker import jobs as worker_jobs
from herald.worker.fanout import try_send_concurrently
from tests.api_support import assert_error, queue_messages
from tests.delivery_support import (
    Harness,
    Sub,
    attempts,
    deliveries,
    event_counts,
    invoke_bodies,
    make_harness,
    move_back,
    only_delivery,
    publish,
    step,
    subscribe,
    take_the_only_message,
)
from tests.support import ADMIN, INVOICE, Clock, Receiver, TenantInfo

pytestmark = pytest.mark.e2e

#: Three attempts over about 11 hours (jitter +/-20 %): a subscriber down for a day exhausts them all.
SCHEDULE = {"retry_schedule": "0,3600,36000"}
HOUR = 3600.0


@pytest.fixture
def clock() -> Clock:
    # The outage is simulated in the past, so that the recovery runs at the real time (and the deliveries it
    # makes pass the 5-minute tolerance of the verifying library).
    return Clock(time.time() - 30 * HOUR)


@pytest.fixture(autouse=True)
def events_on_the_clock(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """Events are published on the worker's clock, as a deployment's API and worker read the same time: a
    delivery is created when its event is, and a recovery's window is over that time."""
    monkeypatch.setattr(publishing, "utcnow", lambda: datetime.fromtimestamp(clock(), UTC))


def at(clock: Clock) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat()


def recover(client: Any, tenant: TenantInfo, sub_id: str, **window: str) -> dict[str, Any]:
    response = client.post(f"/v1/subscriptions/{sub_id}/recover", json=window, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def progress(client: Any, tenant: TenantInfo, sub_id: str, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/subscriptions/{sub_id}/recoveries/{job_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _tickets_not_replicated(call: Any) -> Any:
    """``Table.call`` whose eventually consistent queries of a recovery job's tickets find none (as a replica that
    has not received their writes yet answers)."""

    def stale(self: Table, operation: str, **kwargs: Any) -> Any:
        partition = kwargs.get("ExpressionAttributeValues", {}).get(":p", {}).get("S", "")
        if operation == "query" and partition.startswith("RECOVERY#") and not kwargs.get("ConsistentRead"):
            return {"Items": [], "Count": 0}
        return call(self, operation, **kwargs)

    return stale


def back_up(receiver: Receiver, clock: Clock) -> None:
    """After ``outage``: the subscriber answers again, and the worker's clock is real time again (a recovery's
    window ends now)."""
    receiver.default = (200, {}, b"ok", 0.0)
    clock.now = time.time()


def outage(client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver) -> dict[str, Any]:
    """A subscriber down for a simulated day: one event before the window, three in it, all exhausted."""
    receiver.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    before = publish(client, tenant.id)
    harness.drain()
    step(harness, clock, 2 * HOUR)
    since = at(clock)
    step(harness, clock, 60)
    missed = [publish(client, tenant.id) for _ in range(3)]
    harness.drain()
    for _ in range(24):
        step(harness, clock, HOUR)
    return {"sub": sub, "before": before, "missed": missed, "since": since}


def _dies_once_before_queueing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next recovery page's worker dies after taking the page's tickets and before queueing their messages (its
    invocation ends there); the pages after it queue theirs as usual."""

    async def die_once(worker: Any, messages: Any) -> None:
        monkeypatch.setattr("herald.worker.jobs.try_send_concurrently", try_send_concurrently)
        raise RuntimeError("the invocation ended here")

    monkeypatch.setattr("herald.worker.jobs.try_send_concurrently", die_once)


def done_with_each_missed_once_more(
    client: Any,
    tenant: TenantInfo,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    seen: dict[str, Any],
    job: dict[str, Any],
    received: int,
) -> None:
    """Let the recovery's message come back (three hours of the clock, the worker run each): its job is done, and
    each event ``outage`` saw missed arrived exactly once more since ``received``, one ``recover`` attempt each."""
    sub = seen["sub"]
    for _ in range(3):
        clock.advance(HOUR)
        harness.reveal()
        harness.drain()
    assert progress(client, tenant, sub.id, job["id"])["status"] == "done"
    ids = Counter(r.headers["webhook-id"] for r in receiver.received[received:])
    assert ids == dict.fromkeys(seen["missed"], 1)
    _recovered_once_each(client, tenant, seen)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_brings_every_missed_event_exactly_once_more(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber that was down for a day: four events exhausted their three attempts, three of
    # them after `since`
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    assert len(receiver.received) == 12
    assert {d["status"] for d in deliveries(client, tenant, sub.id)} == {"failed"}
    assert Counter(r.headers["webhook-id"] for r in receiver.received) == dict.fromkeys(
        [seen["before"], *seen["missed"]], 3
    )
    # WHEN the subscriber is back and the tenant asks for a recovery since `since`, twice
    back_up(receiver, clock)
    job = recover(client, tenant, sub.id, since=seen["since"])
    again = recover(client, tenant, sub.id, since=seen["since"])
    # THEN the job is queued, and the repeat is the same job
    assert job["id"].startswith("rcv_")
    assert (job["status"], job["queued"], job["sent"], job["failed"]) == ("queued", 0, 0, 0)
    assert job["subscription_id"] == sub.id
    assert again["id"] == job["id"]
    # WHEN the worker runs
    harness.drain()
    # THEN each missed event arrived exactly once more, signed so the independent library accepts it
    extra = receiver.received[12:]
    assert sorted(r.headers["webhook-id"] for r in extra) == sorted(seen["missed"])
    for got in extra:
        payload = Webhook(sub.secret).verify(got.body, dict(got.headers))
        assert payload["type"] == "invoice.paid"
    # AND the event before the window was not sent again
    assert seen["before"] not in {r.headers["webhook-id"] for r in extra}
    # AND the job's progress reads queued = sent = 3, failed = 0, done, read strongly: a replica that has not seen
    # the tickets yet (emulated: an eventually consistent query of the job's tickets finds none) changes nothing
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Table, "call", _tickets_not_replicated(Table.call))
        done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 3, 3, 0)
    # ... and read again it is the same
    assert progress(client, tenant, sub.id, job["id"]) == done
    # AND each recovered delivery succeeded with one `recover` attempt after its three scheduled ones,
    # and its event counts it as succeeded
    recovered = {d["event_id"]: d for d in deliveries(client, tenant, sub.id, status="succeeded")}
    assert set(recovered) == set(seen["missed"])
    for event_id, delivery in recovered.items():
        log = attempts(client, tenant, sub.id, delivery["id"])
        assert [a["trigger"] for a in log] == ["scheduled", "scheduled", "scheduled", "recover"]
        assert [a["succeeded"] for a in log] == [False, False, False, True]
        counts = event_counts(client, event_id)
        assert (counts["succeeded"], counts["failed"]) == (1, 0)
    assert [d["event_id"] for d in deliveries(client, tenant, sub.id, status="failed")] == [seen["before"]]
    # WHEN the same recovery is asked for once more, after the first one finished
    third = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    # THEN it is a new job that found nothing left to re-send: nothing was sent twice
    assert third["id"] != job["id"]
    assert progress(client, tenant, sub.id, third["id"])["status"] == "done"
    assert progress(client, tenant, sub.id, third["id"])["queued"] == 0
    assert len(receiver.received) == 15
    step(harness, clock, HOUR)
    assert len(receiver.received) == 15
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_whose_messages_are_discarded_as_poison_is_done_and_frees_its_deliveries(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber down for a day (three events of the window exhausted), back up, and a recovery of them
    # whose first page queued its three delivery messages
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    job = recover(client, tenant, sub.id, since=seen["since"])
    assert harness.poller.poll_once().received == 1  # the job's first message: its page listed, three queued
    taken = _taken_off(harness)
    assert len(taken) == 3
    # WHEN those messages are discarded from the dead-letter queue (poison after their redrives: what the discard
    # does with each body)
    for message in taken:
        assert deliveries_domain.fail_discarded(harness.services, message["Body"]) == []
    harness.drain()
    # THEN the job is done, its three tickets failed, nothing sent; the deliveries are left failed as they were
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 3, 0, 3)
    assert len(receiver.received) == 12
    assert {d["event_id"] for d in deliveries(client, tenant, sub.id, status="failed")} >= set(seen["missed"])
    # AND another recovery of the window takes them (their locks are free) and sends them
    since = (datetime.fromisoformat(seen["since"]) - timedelta(seconds=1)).isoformat()
    second = recover(client, tenant, sub.id, since=since)
    harness.drain()
    assert progress(client, tenant, sub.id, second["id"])["sent"] == 3
    assert sorted(r.headers["webhook-id"] for r in receiver.received[12:]) == sorted(seen["missed"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
@pytest.mark.parametrize(("first_page", "skipped"), [("send refused", 0), ("worker died", 1)])
def test_a_recovery_page_that_did_not_queue_finishes_when_a_delivery_is_retried_meanwhile(
    client,
    tenant: TenantInfo,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    first_page: str,
    skipped: int,
) -> None:
    # GIVEN deliveries that failed during an outage, the endpoint back, and a recovery whose first page took its
    # tickets, then did not queue their messages: SQS failed the send (after botocore's retries; the page gives
    # its tickets back), or its worker died before the send (nothing gives them back)
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    if first_page == "send refused":
        install(harness.services.queue.client, "sqs.SendMessageBatch:throttle@call=calls:1")
    else:
        _dies_once_before_queueing(monkeypatch)
    job = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    assert progress(client, tenant, sub.id, job["id"])["status"] == "running"
    # WHEN the tenant retries one of the missed deliveries by hand meanwhile, and it succeeds
    missed = [d for d in deliveries(client, tenant, sub.id, status="failed") if d["event_id"] in seen["missed"]]
    retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{missed[0]['id']}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    harness.drain()
    # AND the recovery's message comes back and lists its page again
    for _ in range(3):
        clock.advance(HOUR)
        harness.reveal()
        harness.drain()
    # THEN the job finishes: no ticket is left open for the delivery it no longer lists (given back, or settled as
    # skipped when the page runs again), and the others were sent
    state = progress(client, tenant, sub.id, job["id"])
    counts = harness.services.store.jobs.ticket_counts(job["id"])
    assert state["status"] == "done", (state, counts)
    assert (counts["open"], counts["skipped"], counts["sent"]) == (0, skipped, len(seen["missed"]) - 1)
    assert {d["event_id"] for d in deliveries(client, tenant, sub.id, status="failed")}.isdisjoint(seen["missed"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_later_recovery_page_that_did_not_queue_finishes_when_its_delivery_is_retried_meanwhile(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN deliveries that failed during an outage, the endpoint back, and a recovery of one delivery a page whose
    # worker died on its second page, after taking that page's ticket and before queueing its message
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    monkeypatch.setattr("herald.worker.jobs.PAGE_SIZE", 1)
    pages = 0

    async def dies_on_the_second_page(worker: Any, messages: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 2:
            monkeypatch.setattr("herald.worker.jobs.try_send_concurrently", try_send_concurrently)
            raise RuntimeError("the invocation ended here")
        return await try_send_concurrently(worker, messages)

    monkeypatch.setattr("herald.worker.jobs.try_send_concurrently", dies_on_the_second_page)
    job = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    assert progress(client, tenant, sub.id, job["id"])["status"] == "running"
    (left,) = harness.services.store.jobs.open_tickets(job["id"], None)
    # WHEN the tenant retries that page's delivery by hand meanwhile, and it succeeds (the pages after the first
    # now start at other deliveries)
    retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{left}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    harness.drain()
    # (a run again with no time left for that look leaves it to a later one, and lists its pages)
    found = harness.services.store.jobs.get(job["id"])
    assert found is not None
    settle = worker_jobs._settle_left_behind(harness.worker, found[0], None, set(), deadline=harness.worker.clock())
    harness.worker.loop.run_until_complete(settle)
    assert harness.services.store.jobs.open_tickets(job["id"], None) == [left]
    # AND the recovery's message comes back and lists its pages again
    for _ in range(3):
        clock.advance(HOUR)
        harness.reveal()
        harness.drain()
    # THEN the job finishes: the ticket its page left is settled as skipped, the others were sent, nothing twice
    state = progress(client, tenant, sub.id, job["id"])
    counts = harness.services.store.jobs.ticket_counts(job["id"])
    assert state["status"] == "done", (state, counts)
    assert (counts["open"], counts["skipped"], counts["sent"]) == (0, 1, len(seen["missed"]) - 1)
    assert {d["event_id"] for d in deliveries(client, tenant, sub.id, status="failed")}.isdisjoint(seen["missed"])
    assert sorted(r.headers["webhook-id"] for r in receiver.received[-len(seen["missed"]) :]) == sorted(seen["missed"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_page_sent_in_part_keeps_the_tickets_of_the_messages_that_went_out(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN deliveries that failed during an outage, the endpoint back, and SQS taking only part of the recovery's
    # page: the first SendMessageBatch refuses some entries, and their resend is refused too (throttled, after
    # botocore's retries: surely not taken)
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    monkeypatch.setattr("herald.queue._pause", lambda seconds: None)
    install(
        harness.services.queue.client,
        "sqs.SendMessageBatch:partial=calls:1, sqs.SendMessageBatch:throttle@call=calls:2",
    )
    job = recover(client, tenant, sub.id, since=seen["since"])
    received = len(receiver.received)
    # WHEN the worker runs what is queued: the page fails, and the messages SQS took come to a worker (on AWS, one
    # may be making its attempt while the page still runs)
    harness.drain()
    # THEN those messages make their attempts: the page gave back only the tickets of the messages SQS did not take
    # (a ticket given back under an attempt being made would leave its webhook unrecorded, and sent again)
    counts = harness.services.store.jobs.ticket_counts(job["id"])
    arrived = receiver.received[received:]
    assert 0 < counts["sent"] < len(seen["missed"]), counts
    assert (counts["open"], len(arrived)) == (0, counts["sent"])
    assert progress(client, tenant, sub.id, job["id"])["status"] == "running"
    # AND when the recovery's message comes back, the rest is sent: each missed event exactly once more
    done_with_each_missed_once_more(client, tenant, harness, clock, receiver, seen, job, received)
    assert harness.services.store.jobs.ticket_counts(job["id"])["sent"] == len(seen["missed"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_page_run_again_while_its_first_messages_make_their_attempts_keeps_their_tickets(
    client,
    tenant: TenantInfo,
    harness: Harness,
    services: Any,
    aws: Any,
    clock: Clock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN deliveries that failed during an outage, the endpoint back, and a recovery whose first page queued its
    # messages and then died: its message comes back a visibility timeout later, for a page run again
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)

    async def die_after_sending(worker: Any, messages: Any) -> list[bool | None]:
        monkeypatch.setattr("herald.worker.jobs.try_send_concurrently", try_send_concurrently)
        await try_send_concurrently(worker, messages)
        raise RuntimeError("the invocation ended here")

    monkeypatch.setattr("herald.worker.jobs.try_send_concurrently", die_after_sending)
    sent_before = len(harness.queue_calls.of("SendMessage"))
    job = recover(client, tenant, sub.id, since=seen["since"])
    [body] = [
        call.params["MessageBody"]
        for call in harness.queue_calls.of("SendMessage")[sent_before:]
        if json.loads(call.params["MessageBody"]).get("job_id") == job["id"]
    ]
    # AND that page, run again by another worker while the first messages are making their attempts (claimed,
    # their POSTs not answered yet), takes their tickets again, and SQS refuses the copies it sends
    other = make_harness(services, aws, clock=clock)
    reruns: list[asyncio.Future[Any]] = []

    def run_again() -> dict[str, Any]:
        [message_id] = {
            message["MessageId"]
            for call in harness.receives.of("ReceiveMessage")
            for message in (call.response or {}).get("Messages", [])
            if message["Body"] == body
        }
        install(services.queue.client, "sqs.SendMessageBatch:throttle@call=calls:1")
        return invoke_bodies(other, [body], receive_count=2, message_ids=[message_id])

    async def answered_after_the_rerun(*args: Any, **kwargs: Any) -> Any:
        if not reruns:
            reruns.append(asyncio.ensure_future(asyncio.to_thread(run_again)))
        await reruns[0]
        return await send_attempt(*args, **kwargs)

    monkeypatch.setattr(dispatch, "send_attempt", answered_after_the_rerun)
    received = len(receiver.received)
    try:
        harness.drain()
    finally:
        other.close()
    assert reruns, "no attempt was made"
    assert reruns[0].result()["batchItemFailures"], "the page run again did not fail its send"
    # THEN the first messages' attempts are recorded: the page run again gave back none of the tickets it took
    # again (each may have a message of the first run on the queue, or making its attempt), only those it took first
    counts = harness.services.store.jobs.ticket_counts(job["id"])
    assert (counts["sent"], counts["open"]) == (len(seen["missed"]), 0), counts
    # AND when the recovery's message comes back, the job is done, each missed event sent exactly once more
    monkeypatch.setattr(dispatch, "send_attempt", send_attempt)
    done_with_each_missed_once_more(client, tenant, harness, clock, receiver, seen, job, received)


@pytest.mark.parametrize("taken", ["once", "twice", "once before this code's counts"])
def test_a_ticket_is_given_back_only_if_this_code_wrote_it_and_took_it_once(services: Any, taken: str) -> None:
    # GIVEN a job's ticket for a delivery, taken once, twice (a page run again), or written by an earlier version
    # (no count) for a page whose message went, then taken again by this code
    jobs, table = services.store.jobs, services.store.table
    if taken == "once before this code's counts":
        now = table.now()
        table.call("put_item", Item=to_item({**keys.recovery_lock("dlv_1"), "job_id": "rcv_1", "expires_at": now + 60}))
        ticket = {**keys.job_ticket("rcv_1", "dlv_1"), "delivery_id": "dlv_1", "state": "open", "page": ""}
        table.call("put_item", Item=to_item({**ticket, "expires_at": now + 3600}))
    for _ in range(2 if taken == "twice" else 1):
        assert jobs.take_ticket("rcv_1", "dlv_1", lock_seconds=60, ticket_seconds=3600)
    # WHEN SQS refuses the message of this run, which gives its ticket back
    jobs.release_tickets("rcv_1", ["dlv_1"])
    # THEN the ticket and its lock go only if no other run may have a message for it
    kept = ("open", "rcv_1")
    assert jobs.get_ticket("rcv_1", "dlv_1") == ((None, None) if taken == "once" else kept)


def test_a_ticket_whose_lock_another_job_took_since_is_given_back_alone(services: Any) -> None:
    # GIVEN a job's ticket taken once, whose recovery lock expired and was taken by another job
    jobs, table = services.store.jobs, services.store.table
    assert jobs.take_ticket("rcv_1", "dlv_1", lock_seconds=60, ticket_seconds=3600)
    lock = {**keys.recovery_lock("dlv_1"), "job_id": "rcv_2", "expires_at": table.now() + 60}
    table.call("put_item", Item=to_item(lock))
    # WHEN the first job gives its ticket back
    jobs.release_tickets("rcv_1", ["dlv_1"])
    # THEN its ticket goes, and the other job's lock stays
    assert jobs.get_ticket("rcv_1", "dlv_1") == (None, "rcv_2")


@pytest.mark.parametrize("leased", [False, True], ids=["idle", "leased-by-another"])
def test_a_ticket_whose_lock_another_job_took_since_is_ended_alone_by_a_discard(services: Any, leased: bool) -> None:
    # GIVEN a job's ticket, whose recovery lock expired and was taken by another job, and the delivery idle or leased
    # for another attempt (the other job's, a manual retry's)
    jobs, table = services.store.jobs, services.store.table
    assert jobs.take_ticket("rcv_1", "dlv_1", lock_seconds=60, ticket_seconds=3600)
    lock = {**keys.recovery_lock("dlv_1"), "job_id": "rcv_2", "expires_at": table.now() + 60}
    table.call("put_item", Item=to_item(lock))
    delivery = keys.delivery("sub_1", "dlv_1")
    if leased:
        table.call(
            "put_item",
            Item=to_item({**delivery, "id": "dlv_1", "subscription_id": "sub_1", "lease_until": table.now() + 60}),
        )
    # WHEN the first job's message for it is discarded from the dead-letter queue
    message = DeliveryMessage(
        event_id="evt_1", tenant_id="tnt_1", subscription_id="sub_1", delivery_id="dlv_1", job_id="rcv_1"
    )
    assert deliveries_domain.fail_discarded(services, dump_message(message)) == []
    # THEN its ticket is settled failed (no attempt of its can be under way: its claim needs its lock), and the other
    # job's lock stays
    assert jobs.get_ticket("rcv_1", "dlv_1") == ("failed", "rcv_2")


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_attempt_is_not_made_on_a_delivery_a_manual_retry_delivered_after_the_jobs_check(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN deliveries that failed during an outage, the endpoint back, and a manual retry of one of them that is
    # made between the recovery job's check of its status (failed) and its attempt's claim: the race is placed
    # there by running the retry's message through the real dispatch first
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    real = dispatch.deliver
    raced: list[str] = []

    class _RetryFirst:
        @staticmethod
        async def deliver(worker: Any, message: Any, record: Any, deadline: float) -> None:
            if message.trigger is Trigger.RECOVER and not raced:
                raced.append(message.delivery_id)
                state = await worker.io(
                    worker.store.deliveries.get, message.subscription_id, message.delivery_id, event_id=message.event_id
                )
                manual = message.model_copy(update={"trigger": Trigger.MANUAL, "job_id": None})
                await real(worker, manual.model_copy(update={"attempts_seen": state.attempts}), record, deadline)
            await real(worker, message, record, deadline)

    monkeypatch.setattr(worker_jobs, "dispatch", _RetryFirst)
    # WHEN the subscription's failed deliveries are recovered
    job = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    # THEN the retried delivery has the manual retry's attempt only, and arrived once; its ticket is skipped and the
    # job is done
    assert raced
    assert [a["trigger"] for a in attempts(client, tenant, sub.id, raced[0])][-1] == "manual"
    assert [a["trigger"] for a in attempts(client, tenant, sub.id, raced[0])].count("recover") == 0
    counts = harness.services.store.jobs.ticket_counts(job["id"])
    assert (counts["open"], counts["skipped"]) == (0, 1)
    assert progress(client, tenant, sub.id, job["id"])["status"] == "done"


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_overlapping_recoveries_and_duplicated_messages_never_send_twice(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN three exhausted deliveries after an outage, and a subscriber back up
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    received_before = len(receiver.received)
    back_up(receiver, clock)
    # WHEN two recoveries over overlapping windows are asked for at once
    first = recover(client, tenant, sub.id, since=seen["since"])
    wider = (datetime.fromisoformat(seen["since"]) - timedelta(minutes=30)).isoformat()
    second = recover(client, tenant, sub.id, since=wider)
    assert first["id"] != second["id"]
    # AND their job messages run, and every delivery message they queued is duplicated (as SQS may)
    harness.poller.poll_once()
    queued = queue_messages(harness.sqs, harness.services.settings.queue_url)
    assert queued
    assert all(body["kind"] == "delivery" and body["trigger"] == "recover" for body in queued)
    for body in queued:
        harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=json.dumps(body))
    harness.drain()
    # THEN each missed event arrived exactly once more
    extra = receiver.received[received_before:]
    assert sorted(r.headers["webhook-id"] for r in extra) == sorted(seen["missed"])
    # AND the two jobs together re-sent each delivery once, and both are done
    jobs = [progress(client, tenant, sub.id, job["id"]) for job in (first, second)]
    assert [job["status"] for job in jobs] == ["done", "done"]
    assert sum(job["queued"] for job in jobs) == 3
    assert sum(job["sent"] for job in jobs) == 3
    # AND the duplicates a worker was busy with when they came go away without sending anything
    step(harness, clock, 60)
    assert len(receiver.received) == received_before + 3
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_attempt_held_back_past_its_lock_is_still_made(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose attempts wait on the queue longer than
    # their recovery locks last (24 h: a rate limit over a large recovery, a backlog), emulated by the clock moving
    # on by a day as soon as the job has listed them
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    received = len(receiver.received)
    harness.services.store.table.clock = clock
    listing = worker_jobs.run_recovery

    async def listed_then_a_day_later(*args: Any, **kwargs: Any) -> None:
        await listing(*args, **kwargs)
        clock.advance(worker_jobs.LOCK_SECONDS + 60)

    monkeypatch.setattr(worker_jobs, "run_recovery", listed_then_a_day_later)
    job = recover(client, tenant, sub.id, since=seen["since"])
    # WHEN the attempts' messages run at last
    harness.drain()
    # THEN each is made, once: the job takes its lock again (no other job holds it), and counts them sent
    assert Counter(r.headers["webhook-id"] for r in receiver.received[received:]) == dict.fromkeys(seen["missed"], 1)
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 3, 3, 0)
    _recovered_once_each(client, tenant, seen)


def test_a_copy_of_a_jobs_message_that_read_its_ticket_open_before_the_other_copy_sent_sends_nothing_more(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver, monkeypatch
) -> None:
    clock.now = time.time()
    # GIVEN a redelivery's message for a delivery, run twice: the second copy read its ticket open before the first
    # made and recorded its attempt (which used the ticket and freed the lock), and its lock then
    receiver = make_receiver()
    subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.poller.poll_once()  # the job's message: it takes the ticket and queues the delivery's message
    (message,) = queue_messages(harness.sqs, harness.services.settings.queue_url)
    job_id = message["recovery_id"]  # the job's id, as named on the queue
    jobs = harness.services.store.jobs
    ticket_read_early, _ = jobs.get_ticket(job_id, message["delivery_id"])
    assert ticket_read_early == "open"
    harness.drain()
    assert jobs.get_ticket(job_id, message["delivery_id"]) == ("sent", None)
    assert len(receiver.received) == 2
    get_ticket = jobs.get_ticket
    monkeypatch.setattr(
        jobs, "get_ticket", lambda job_id, delivery_id: (ticket_read_early, get_ticket(job_id, delivery_id)[1])
    )
    # WHEN the second copy runs: its lock read finds none (freed), as if it had expired
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=json.dumps(message))
    harness.drain()
    # THEN it takes no lock (the ticket is used) and sends nothing: the event went once more, once
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id, event_id]


def test_an_expired_recovery_lock_is_taken_again_unless_another_job_holds_it(services: Any) -> None:
    # GIVEN a job's ticket whose lock expired, and another delivery's ticket whose lock another job took since
    jobs, table = services.store.jobs, services.store.table
    for delivery_id in ("dlv_1", "dlv_2"):
        assert jobs.take_ticket("rcv_1", delivery_id, lock_seconds=60, ticket_seconds=3600)
        expired = {**keys.recovery_lock(delivery_id), "job_id": "rcv_1", "expires_at": table.now() - 1}
        table.call("put_item", Item=to_item(expired))
    assert jobs.get_ticket("rcv_1", "dlv_1") == ("open", None)
    taken = {**keys.recovery_lock("dlv_2"), "job_id": "rcv_2", "expires_at": table.now() + 60}
    table.call("put_item", Item=to_item(taken))
    # THEN the job takes the first lock again, and not the other job's
    assert jobs.relock("rcv_1", "dlv_1", lock_seconds=60)
    assert jobs.get_ticket("rcv_1", "dlv_1") == ("open", "rcv_1")
    assert not jobs.relock("rcv_1", "dlv_2", lock_seconds=60)
    assert jobs.get_ticket("rcv_1", "dlv_2") == ("open", "rcv_2")


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_attempt_that_fails_leaves_the_delivery_failed_without_new_retries(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN exhausted deliveries, and a subscriber still down
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    clock.now = time.time()
    # WHEN the tenant recovers them
    job = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    # THEN each got one more attempt, which failed: the job counts them failed, the deliveries stay failed
    assert len(receiver.received) == 15
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 3, 0, 3)
    for delivery in deliveries(client, tenant, sub.id):
        assert delivery["status"] == "failed"
        assert delivery["next_attempt_at"] is None
    # AND no retry was scheduled: a day later nothing more was sent
    assert harness.counts() == (0, 0)
    step(harness, clock, 24 * HOUR)
    assert len(receiver.received) == 15


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_whose_subscription_is_deleted_midway_is_done_with_its_attempts_failed(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, aws
) -> None:
    # GIVEN exhausted deliveries, recovered by the tenant
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    clock.now = time.time()
    received = len(receiver.received)
    job = recover(client, tenant, sub.id, since=seen["since"])
    # AND the subscription deleted right after the job's first delivery message found it (before its attempt)
    store = harness.services.store
    key = to_item(keys.subscription(tenant.id, sub.id))
    deleted = threading.Event()

    def delete_after_read(parsed: dict[str, Any], params: dict[str, Any] | None = None, **_: Any) -> None:
        if "Item" in parsed and parsed["Item"].get("sk") == key["sk"] and not deleted.is_set():
            deleted.set()
            aws.client("dynamodb").delete_item(TableName=store.table_name, Key=key)

    store.client.meta.events.register("after-call.dynamodb.GetItem", delete_after_read)
    # WHEN the job runs
    harness.drain()
    # THEN nothing was sent, and the job is done: each of its attempts failed, none left open
    assert deleted.is_set()
    assert len(receiver.received) == received
    assert store.jobs.ticket_counts(job["id"]) == {"open": 0, "sent": 0, "failed": 3, "skipped": 0}


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_whose_subscription_was_deleted_before_it_ran_stops_listing_at_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN exhausted deliveries, recovered by the tenant, whose subscription is deleted before the job's message runs
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    clock.now = time.time()
    received = len(receiver.received)
    job = recover(client, tenant, sub.id, since=seen["since"])
    response = client.delete(f"/v1/subscriptions/{sub.id}", headers=tenant.headers)
    assert response.status_code == 204, response.text
    store = harness.services.store
    sends = len(harness.queue_calls.of("SendMessageBatch")) + len(harness.queue_calls.of("SendMessage"))
    # WHEN the job runs
    harness.drain()
    # THEN its listing stopped at once: no delivery was ticketed, no attempt queued, nothing sent
    assert store.jobs.ticket_counts(job["id"]) == {"open": 0, "sent": 0, "failed": 0, "skipped": 0}
    assert len(harness.queue_calls.of("SendMessageBatch")) + len(harness.queue_calls.of("SendMessage")) == sends
    assert len(receiver.received) == received
    # AND the job is listed: done, with nothing left open to hold it running
    found = store.jobs.get(job["id"])
    assert found is not None
    assert found[1] is True


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_stopped_by_its_deleted_subscription_settles_the_tickets_an_earlier_run_left_open(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery whose first message took its page's tickets, then its worker died before queueing their
    # attempts
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    received = len(receiver.received)
    _dies_once_before_queueing(monkeypatch)
    job = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    store = harness.services.store
    assert store.jobs.ticket_counts(job["id"])["open"] == 3
    # AND the subscription is deleted
    response = client.delete(f"/v1/subscriptions/{sub.id}", headers=tenant.headers)
    assert response.status_code == 204, response.text
    # WHEN another first message of the job (a repeated request's, queued while the job was queued, behind a
    # backlog) comes once the listing has stood still for five minutes, before the first message comes back; then
    # that one comes back
    clock.advance(worker_jobs.LISTER_IDLE_SECONDS + 1)
    harness.services.queue.send(RecoverMessage(job_id=job["id"]))
    harness.drain()
    for _ in range(3):
        clock.advance(HOUR)
        harness.reveal()
        harness.drain()
    # THEN the job is listed and no ticket is left open (each failed: nothing sent to the deleted subscription)
    found = store.jobs.get(job["id"])
    assert found is not None
    assert found[1] is True
    assert store.jobs.ticket_counts(job["id"]) == {"open": 0, "sent": 0, "failed": 3, "skipped": 0}
    assert len(receiver.received) == received


def _counting_listings(monkeypatch: pytest.MonkeyPatch, harness: Harness, fail_first: bool = False) -> list[str]:
    """Record each page a recovery lists (its subscription's failed deliveries in a window); the first raises as
    an outage would, if asked."""
    deliveries_store = harness.services.store.deliveries
    listed = deliveries_store.between
    pages: list[str] = []

    def between(subscription_id: str, *args: Any, **kwargs: Any) -> Any:
        pages.append(subscription_id)
        if fail_first and len(pages) == 1:
            raise ServiceUnavailableError("DynamoDB query failed: InternalServerError")
        return listed(subscription_id, *args, **kwargs)

    monkeypatch.setattr(deliveries_store, "between", between)
    return pages


def _outage_over(client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver) -> dict[str, Any]:
    """``outage``, then ``back_up``; what ``outage`` returns, and how many requests the subscriber had got
    (``received``)."""
    seen = outage(client, tenant, harness, clock, receiver)
    back_up(receiver, clock)
    return {**seen, "received": len(receiver.received)}


def _attempts_queued(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``_outage_over``, then a recovery of its window whose message the worker ran once: its page listed, its three
    attempts queued, and its chain ended. What ``_outage_over`` returns, and the job."""
    seen = _outage_over(client, tenant, harness, clock, receiver)
    job = recover(client, tenant, seen["sub"].id, since=seen["since"])
    harness.poller.poll_once()
    return seen, job


def _listing_failed_once(
    client: Any, tenant: TenantInfo, harness: Harness, seen: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], dict[str, Any]]:
    """A recovery of ``seen``'s window whose first listing read failed (after its message marked the job running),
    worked once: the pages listed so far (that one), and the job."""
    pages = _counting_listings(monkeypatch, harness, fail_first=True)
    job = recover(client, tenant, seen["sub"].id, since=seen["since"])
    harness.drain()
    assert pages == [seen["sub"].id]
    return pages, job


def _recovered_once_each(client: Any, tenant: TenantInfo, seen: dict[str, Any]) -> None:
    """Each missed delivery of ``seen`` has exactly one recovery attempt in its log."""
    sub = seen["sub"]
    for delivery in deliveries(client, tenant, sub.id):
        if delivery["event_id"] in seen["missed"]:
            triggers = [a["trigger"] for a in attempts(client, tenant, sub.id, delivery["id"])]
            assert triggers.count("recover") == 1, triggers


def _note_operation(calls: list[str]) -> Any:
    """A botocore ``before-call`` handler noting each operation's name in ``calls``."""

    def note(model: Any, **_: Any) -> None:
        calls.append(model.name)

    return note


def _sent_once_more(client: Any, tenant: TenantInfo, receiver: Receiver, seen: dict[str, Any], job_id: str) -> None:
    """Each missed event of ``seen`` arrived once more since the subscriber was back, and the job is done with
    the three sent."""
    assert sorted(r.headers["webhook-id"] for r in receiver.received[seen["received"] :]) == sorted(seen["missed"])
    done = progress(client, tenant, seen["sub"].id, job_id)
    assert (done["status"], done["queued"], done["sent"]) == ("done", 3, 3)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_asked_for_again_while_queued_is_listed_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN exhausted deliveries, and the subscriber back
    seen = _outage_over(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    pages = _counting_listings(monkeypatch, harness)
    # WHEN the tenant asks three times before the worker runs (each answer is the queued job, and each request
    # queued its message again, in case the first never got there)
    jobs = [recover(client, tenant, sub.id, since=seen["since"]) for _ in range(3)]
    assert {job["id"] for job in jobs} == {jobs[0]["id"]}
    harness.drain()
    # THEN one message listed the deliveries (one page), and each missed event arrived once more
    assert pages == [sub.id]
    _sent_once_more(client, tenant, receiver, seen, jobs[0]["id"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_whose_listing_failed_midway_is_listed_when_its_message_comes_back(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose first listing read fails (after its
    # message marked the job running)
    seen = _outage_over(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    pages, job = _listing_failed_once(client, tenant, harness, seen, monkeypatch)
    assert progress(client, tenant, sub.id, job["id"])["status"] == "running"
    # WHEN its message comes back (the same message: SQS shows it again)
    harness.reveal()
    harness.drain()
    # THEN that message lists the deliveries, and each missed event arrived once more
    assert pages == [sub.id, sub.id]
    _sent_once_more(client, tenant, receiver, seen, job["id"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
@pytest.mark.parametrize("redrive", ["herald", "sqs"])
def test_a_recovery_whose_message_was_dead_lettered_is_listed_by_its_redrive(
    client,
    tenant: TenantInfo,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    redrive: str,
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose first listing read fails
    seen = _outage_over(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    pages, job = _listing_failed_once(client, tenant, harness, seen, monkeypatch)
    # AND its message then failed on every receive until SQS moved it to the dead-letter queue, a visibility timeout
    # (the work queue's 360 s) after its last receive
    harness.reveal()
    url = harness.services.settings.queue_url
    for _ in range(harness.services.settings.max_receive_count):
        harness.sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
    assert harness.counts() == (0, 0)
    clock.advance(360)
    # WHEN the operator redrives it at once (a new message): with Herald's redrive, or SQS's own (the console's, or
    # StartMessageMoveTask), which stamps no redrive count
    if redrive == "herald":
        moved = client.post("/v1/admin/dead-letters/redrive", headers=ADMIN)
        assert moved.status_code == 202, moved.text
        assert moved.json()["moved"] == 1
    else:
        move_back(harness)
    harness.drain()
    # THEN the redriven message lists the deliveries, and each missed event arrived once more
    assert pages == [sub.id, sub.id]
    _sent_once_more(client, tenant, receiver, seen, job["id"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
@pytest.mark.parametrize(("failed", "taken"), [("reading its first page", 0), ("queueing its first page", 3)])
def test_a_recovery_whose_listing_message_is_discarded_as_poison_is_done_and_its_window_can_be_asked_again(
    client,
    tenant: TenantInfo,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    failed: str,
    taken: int,
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose listing failed midway (running): before
    # its first page was read, or after the page's three tickets were taken and before their messages were queued
    seen = _outage_over(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    if taken:
        _dies_once_before_queueing(monkeypatch)
        job = recover(client, tenant, sub.id, since=seen["since"])
        harness.drain()
    else:
        _, job = _listing_failed_once(client, tenant, harness, seen, monkeypatch)
    started = progress(client, tenant, sub.id, job["id"])
    assert (started["status"], started["queued"]) == ("running", taken)
    # WHEN its message, poison after its redrives, is discarded from the dead-letter queue
    harness.reveal()
    body = take_the_only_message(harness)
    assert json.loads(body)["kind"] == "recover"
    calls: list[str] = []
    events = harness.services.store.client.meta.events
    events.register("before-call.dynamodb", _note_operation(calls), unique_id="recovery-discard-calls")
    try:
        assert deliveries_domain.fail_discarded(harness.services, body) == []
    finally:
        events.unregister("before-call.dynamodb", unique_id="recovery-discard-calls")
    # THEN the job is done, each ticket it had taken failed (no message would ever have settled them), instead of
    # running until it expires
    ended = progress(client, tenant, sub.id, job["id"])
    assert (ended["status"], ended["queued"], ended["sent"], ended["failed"]) == ("done", taken, 0, taken)
    # AND the discard read the job once and its open tickets' deliveries together, one settling write each
    assert calls.count("GetItem") == 1
    assert calls.count("BatchGetItem") == (1 if taken else 0)
    assert calls.count("TransactWriteItems") == taken
    # AND the same window asked again is a new job, which sends each missed event once more
    again = recover(client, tenant, sub.id, since=seen["since"])
    assert again["id"] != job["id"]
    harness.drain()
    _sent_once_more(client, tenant, receiver, seen, again["id"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_ended_by_a_discard_while_its_attempts_are_under_way_lets_them_record(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose page queued their three attempts
    seen, job = _attempts_queued(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    listing = dump_message(RecoverMessage(job_id=job["id"]))
    # WHEN the job is ended by the discard of its listing message (a copy of it, poison) while the three attempts,
    # claimed, are being sent: the tickets of attempts under way are left to them, and the message stays (to be
    # discarded again)
    ended: list[bool] = []

    async def discarded_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not ended:
            ended.append(True)
            with pytest.raises(AttemptUnderWay):
                deliveries_domain.fail_discarded(harness.services, listing)
        return await send_attempt(*args, **kwargs)

    monkeypatch.setattr(dispatch, "send_attempt", discarded_meanwhile)
    harness.drain()
    assert ended
    assert deliveries_domain.fail_discarded(harness.services, listing) == []  # discarded again: nothing left
    # THEN every attempt under way (the first one at least) was recorded, its ticket settled by it, and counted sent;
    # those not claimed yet were not made, counted failed
    sent = {r.headers["webhook-id"] for r in receiver.received[seen["received"] :]}
    assert sent
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 3, len(sent), 3 - len(sent))
    for delivery in deliveries(client, tenant, sub.id):
        if delivery["event_id"] in seen["missed"]:
            triggers = [a["trigger"] for a in attempts(client, tenant, sub.id, delivery["id"])]
            assert triggers.count("recover") == (delivery["event_id"] in sent), triggers
    # AND the window asked again sends the others: each missed event arrived exactly once more
    again = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    assert progress(client, tenant, sub.id, again["id"])["sent"] == 3 - len(sent)
    assert sorted(r.headers["webhook-id"] for r in receiver.received[seen["received"] :]) == sorted(seen["missed"])


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_attempt_whose_record_dynamodb_cancels_for_a_concurrent_one_is_recorded_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, services: Any
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose page queued their three attempts
    seen, job = _attempts_queued(client, tenant, harness, clock, receiver)
    # WHEN DynamoDB cancels the transaction recording the first attempt, made, for a concurrent one on one of its
    # items (another job's take of the delivery's lock, say; moto runs one request at a time), the attempts worked
    # one a batch: each claims its delivery (a transaction), then records its attempt (another)
    harness.poller.batch_size = 1
    injector = install(services.store.client, "dynamodb.TransactWriteItems:conflict@call=calls:2")
    assert injector is not None
    harness.drain()
    for _ in range(3):
        step(harness, clock, HOUR)
    (hit,) = injector.injected
    assert any("attempt_number" in written for written in hit.written)  # the record's transaction
    # THEN it was made again: each missed event arrived once more, with one attempt of the job in its log each
    _sent_once_more(client, tenant, receiver, seen, job["id"])
    _recovered_once_each(client, tenant, seen)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_jobs_delivery_message_discarded_while_a_copy_of_it_is_attempted_lets_the_attempt_record(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose page queued their three attempts
    seen, job = _attempts_queued(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    queued = [json.loads(sent.body) for sent in harness.queue_calls.sent()]
    bodies = {b["event_id"]: json.dumps(b) for b in queued if b.get("recovery_id") == job["id"]}
    assert sorted(bodies) == sorted(seen["missed"])
    # WHEN a copy of the first attempt's message (a page run again queues its deliveries again), poison after its
    # redrives, is discarded from the dead-letter queue while that attempt, claimed, is being sent
    discarded: list[str] = []

    async def discarded_meanwhile(*args: Any, headers: dict[str, str], **kwargs: Any) -> Any:
        if not discarded:
            discarded.append(headers["webhook-id"])
            with pytest.raises(AttemptUnderWay):  # the message stays, to be discarded again
                deliveries_domain.fail_discarded(harness.services, bodies[headers["webhook-id"]])
        return await send_attempt(*args, headers=headers, **kwargs)

    monkeypatch.setattr(dispatch, "send_attempt", discarded_meanwhile)
    harness.drain()
    assert discarded
    assert deliveries_domain.fail_discarded(harness.services, bodies[discarded[0]]) == []  # again: settled by then
    # THEN that attempt was recorded, its ticket settled by it: the job sent the three, one attempt in each log
    _sent_once_more(client, tenant, receiver, seen, job["id"])
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["sent"], done["failed"]) == (3, 0)
    _recovered_once_each(client, tenant, seen)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_jobs_delivery_message_discarded_during_a_manual_retry_of_its_delivery_ends_its_ticket_once_it_is_over(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN exhausted deliveries, the subscriber back, and a recovery whose page queued their three attempts, one of
    # whose messages is gone to the dead-letter queue
    seen, job = _attempts_queued(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    queue_url = harness.services.settings.queue_url
    (parked,) = harness.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)["Messages"]
    harness.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=parked["ReceiptHandle"])
    body = json.loads(parked["Body"])
    assert body["recovery_id"] == job["id"]
    # WHEN the tenant retries that delivery by hand, and the job's message is discarded while the retry is sent
    retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{body['delivery_id']}/retry", headers=tenant.headers)
    assert retried.status_code == 202, retried.text
    discarded: list[bool] = []

    async def discarded_meanwhile(*args: Any, headers: dict[str, str], **kwargs: Any) -> Any:
        if headers["webhook-id"] == body["event_id"] and not discarded:
            discarded.append(True)
            # THEN the discard leaves the ticket, the message staying (the retry's record would not settle it)
            with pytest.raises(AttemptUnderWay):
                deliveries_domain.fail_discarded(harness.services, parked["Body"])
        return await send_attempt(*args, headers=headers, **kwargs)

    monkeypatch.setattr(dispatch, "send_attempt", discarded_meanwhile)
    harness.drain()
    assert discarded
    assert progress(client, tenant, sub.id, job["id"])["status"] == "running"
    # AND discarded again once the retry is over, it ends the ticket: the job is done, the other two sent
    assert deliveries_domain.fail_discarded(harness.services, parked["Body"]) == []
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 3, 2, 1)
    assert harness.services.store.jobs.get_ticket(job["id"], body["delivery_id"]) == ("failed", None)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovered_event_that_expires_before_its_attempt_leaves_no_ticket_open(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN exhausted deliveries, recovered by the tenant, with the subscriber back
    seen = _outage_over(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    job = recover(client, tenant, sub.id, since=seen["since"])
    # AND the first missed event's retention ends right after the job's own read of it, before the attempt reads
    # it (the events expire together: a delivery of another one may find it expired too)
    store = harness.services.store
    # (The table stays on real time: the jump below moves the worker's clock alone, ending this one event's retention
    # as the worker sees it and nothing the table holds for the job: its leases, locks and tickets.)
    store.table.clock = time.time
    first = to_item(keys.event(seen["missed"][0]))
    started = clock.now
    expired = threading.Event()

    def expire_after_read(parsed: dict[str, Any], params: dict[str, Any] | None = None, **_: Any) -> None:
        item = parsed.get("Item", {})
        if (item.get("pk"), item.get("sk")) == (first["pk"], first["sk"]) and not expired.is_set():
            expired.set()
            clock.advance(31 * 24 * HOUR)

    store.client.meta.events.register("after-call.dynamodb.GetItem", expire_after_read)
    # WHEN the job runs, one message a batch: the clock's jump must not land in the middle of another delivery's
    # attempt (its record would be refused as too late, and its message held past the drain)
    harness.poller.batch_size = 1
    harness.drain()
    clock.now = started
    # THEN the expired event was not sent, and the job holds no open ticket: it is done, its attempt failed
    assert expired.is_set()
    assert seen["missed"][0] not in {r.headers["webhook-id"] for r in receiver.received[seen["received"] :]}
    counts = store.jobs.ticket_counts(job["id"])
    assert counts["open"] == 0
    assert counts["failed"] >= 1
    assert counts["sent"] + counts["failed"] == 3
    assert progress(client, tenant, sub.id, job["id"])["status"] == "done"


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
@pytest.mark.parametrize("publisher", ["another tenant", "the same tenant"])
def test_a_recovered_event_whose_id_another_tenant_publishes_again_before_its_attempt_is_not_sent(
    client,
    tenant: TenantInfo,
    make_tenant: Any,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    publisher: str,
) -> None:
    # GIVEN exhausted deliveries, recovered by the tenant, with the subscriber back
    seen = _outage_over(client, tenant, harness, clock, receiver)
    job = recover(client, tenant, seen["sub"].id, since=seen["since"])
    other = make_tenant("Globex")
    # AND right after the job's own read of the first missed event, that event's retention ends and another
    # tenant, or the same one, publishes an event with its id (ids are the publisher's to choose): the attempt
    # reads that one (the same tenant's is a new event: created now, its deliveries' ids are its own)
    store = harness.services.store
    # (The table stays on real time: the jump below moves the worker's clock alone, ending this one event's retention
    # as the worker sees it and nothing the table holds for the job: its leases, locks and tickets.)
    store.table.clock = time.time
    first = to_item(keys.event(seen["missed"][0]))
    started = clock.now
    reused = threading.Event()

    def reuse_after_read(parsed: dict[str, Any], **_: Any) -> None:
        item = parsed.get("Item", {})
        if (item.get("pk"), item.get("sk")) != (first["pk"], first["sk"]) or reused.is_set():
            return
        reused.set()
        clock.advance(31 * 24 * HOUR)
        expires = {"N": str(int(clock.now) + 31 * 24 * HOUR)}
        if publisher == "another tenant":
            others = {**item, "tenant_id": {"S": other.id}, "expires_at": expires}
        else:
            created = datetime.fromtimestamp(clock.now, UTC).isoformat(timespec="milliseconds")
            others = {**item, "created_at": {"S": created}, "expires_at": expires}
        store.client.put_item(TableName=store.table_name, Item=others)

    store.client.meta.events.register("after-call.dynamodb.GetItem", reuse_after_read)
    caplog.set_level(logging.WARNING, logger="herald")
    # WHEN the job runs (and, a minute on, what it held comes back: the batch's other attempts, run while the clock
    # moved, may have found their recovery locks past their time)
    harness.drain()
    clock.advance(60)
    release_delays(harness.services.settings.queue_url)
    harness.drain()
    clock.now = started
    # THEN nothing with that id reached this tenant's subscriber (another tenant's drop is logged as such), and
    # the job holds no open ticket: it is done, that attempt failed
    assert reused.is_set()
    assert seen["missed"][0] not in {r.headers["webhook-id"] for r in receiver.received[seen["received"] :]}
    assert ("delivery of another tenant's event: dropped" in caplog.text) is (publisher == "another tenant")
    counts = store.jobs.ticket_counts(job["id"])
    assert counts["open"] == 0
    assert counts["failed"] >= 1
    assert counts["sent"] + counts["failed"] == 3
    assert progress(client, tenant, seen["sub"].id, job["id"])["status"] == "done"


def test_the_window_is_checked(client, tenant: TenantInfo, receiver: Receiver) -> None:
    # GIVEN a subscription
    sub = subscribe(client, tenant, receiver.url)
    url = f"/v1/subscriptions/{sub.id}/recover"
    now = datetime.now(UTC)
    # WHEN `since` is more than 14 days ago, THEN 422
    too_old = {"since": (now - timedelta(days=14, minutes=1)).isoformat()}
    error = assert_error(client.post(url, json=too_old, headers=tenant.headers), 422, "invalid_input")
    assert "14 days" in error["message"]
    # WHEN `until` is not after `since`, or `since` is in the future, or has no time zone, THEN 422
    for window in (
        {"since": (now - timedelta(hours=1)).isoformat(), "until": (now - timedelta(hours=2)).isoformat()},
        {"since": (now + timedelta(hours=1)).isoformat()},
        {"since": "2026-01-01T00:00:00"},
        {"since": "0001-01-01T00:00:00+01:00"},
        {"since": (now - timedelta(hours=1)).isoformat(), "until": "9999-12-31T23:59:59-14:00"},
        {"since": (now - timedelta(hours=1)).isoformat(), "extra": 1},
    ):
        assert_error(client.post(url, json=window, headers=tenant.headers), 422)
    # WHEN the whole window is in the future (no delivery in it has failed yet), THEN 422, saying so
    ahead = {"since": (now + timedelta(days=1)).isoformat(), "until": (now + timedelta(days=3650)).isoformat()}
    error = assert_error(client.post(url, json=ahead, headers=tenant.headers), 422, "invalid_input")
    assert error["details"][0]["type"] == "in_future"
    # WHEN only the window's end is in the future (the job would list what failed by then, and read `done` over
    # the rest, which it never resends), THEN 422, at `until`
    ends_tomorrow = {"since": (now - timedelta(hours=1)).isoformat(), "until": (now + timedelta(days=1)).isoformat()}
    error = assert_error(client.post(url, json=ends_tomorrow, headers=tenant.headers), 422, "invalid_input")
    assert error["details"] == [{"loc": ["body", "until"], "msg": "after now", "type": "in_future"}]
    # AND 14 days minus a minute is accepted
    ok = client.post(url, json={"since": (now - timedelta(days=13, hours=23)).isoformat()}, headers=tenant.headers)
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize(
    "settings_overrides",
    [{"recovery_max_days": 2}, {"event_ttl_days": 2, "retry_schedule": "0,60", "disable_after_failing_hours": 1}],
    ids=["recovery_max_days", "event_ttl_days"],
)
def test_the_reach_of_a_recovery_is_a_setting_and_never_past_the_events_kept(
    client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a deployment whose recoveries reach 2 days back, or which keeps events 2 days (a delivery whose event is
    # gone could not be sent again; its deliveries' retries and breaker holds end within a day)
    sub = subscribe(client, tenant, receiver.url)
    url = f"/v1/subscriptions/{sub.id}/recover"
    # WHEN a recovery reaches 3 days back, THEN 422, naming the reach
    since = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    error = assert_error(client.post(url, json={"since": since}, headers=tenant.headers), 422, "invalid_input")
    assert "at most 2 days ago" in error["message"]
    # AND 2 days less a minute is accepted
    since = (datetime.now(UTC) - timedelta(days=2) + timedelta(minutes=1)).isoformat()
    assert client.post(url, json={"since": since}, headers=tenant.headers).status_code == 202


def _windows(count: int) -> list[str]:
    """``since`` of ``count`` different windows, an hour apart, all ending now."""
    now = datetime.now(UTC)
    return [(now - timedelta(hours=hours)).isoformat() for hours in range(1, count + 1)]


def test_a_subscription_has_at_most_five_recoveries_unfinished_at_once(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a subscription with five recoveries of different windows queued (no worker has run them yet)
    sub, other = subscribe(client, tenant, receiver.url), subscribe(client, tenant, receiver.url)
    url = f"/v1/subscriptions/{sub.id}/recover"
    *five, sixth = _windows(6)
    started = [recover(client, tenant, sub.id, since=since) for since in five]
    assert len({job["id"] for job in started}) == 5
    # WHEN a sixth window is asked for
    response = client.post(url, json={"since": sixth}, headers=tenant.headers)
    # THEN it is refused, naming the limit, and no job was started for it
    error = assert_error(response, 422, "limit_exceeded")
    limit = {"loc": ["body"], "msg": "at most 5 at once", "type": "max_recoveries_per_subscription"}
    assert error["details"] == [limit]
    assert "5 recoveries unfinished" in error["message"]
    assert len(queue_messages(harness.sqs, harness.services.settings.queue_url)) == 5
    # AND a window already at work is still found, not refused
    assert recover(client, tenant, sub.id, since=five[0])["id"] == started[0]["id"]
    # AND another subscription of the tenant is not held back
    recover(client, tenant, other.id, since=sixth)
    # WHEN the five jobs finish (nothing failed in their windows)
    harness.drain()
    assert {progress(client, tenant, sub.id, job["id"])["status"] for job in started} == {"done"}
    # THEN a new window starts, and the same window as a finished job is a new run
    again = recover(client, tenant, sub.id, since=sixth)
    rerun = recover(client, tenant, sub.id, since=five[0])
    assert rerun["id"] != started[0]["id"]
    assert {again["status"], rerun["status"]} == {"queued"}


def test_a_recovery_whose_start_dynamodb_cancels_for_a_concurrent_one_is_started_all_the_same(
    client, tenant: TenantInfo, receiver: Receiver, services: Any
) -> None:
    # GIVEN DynamoDB cancelling the next transaction for a concurrent one on the same item (as requests for other
    # windows of one subscription, which go for the same slot, meet on AWS; moto runs one at a time)
    sub = subscribe(client, tenant, receiver.url)
    injector = install(services.store.client, "dynamodb.TransactWriteItems:conflict@call=calls:1")
    # WHEN a recovery is asked for, THEN it is started (the transaction made again), not answered 503
    (since,) = _windows(1)
    job = recover(client, tenant, sub.id, since=since)
    assert injector is not None
    assert injector.count("conflict") == 1
    assert services.store.jobs.slot_holders(sub.id) == {0: job["id"]}


def _ticket_reads(monkeypatch: pytest.MonkeyPatch, harness: Harness) -> list[str]:
    """The jobs whose tickets are read (``JobRepository.ticket_counts``) from now on, one entry per read."""
    counted: list[str] = []
    count = type(harness.services.store.jobs).ticket_counts

    def counting(self: Any, job_id: str) -> dict[str, int]:
        counted.append(job_id)
        return count(self, job_id)

    monkeypatch.setattr(type(harness.services.store.jobs), "ticket_counts", counting)
    return counted


@pytest.mark.parametrize("settings_overrides", [{"max_recoveries_per_subscription": 2}])
def test_a_recovery_found_done_by_the_limits_check_is_not_counted_again(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription whose two recoveries (the limit) are done, nobody having read their progress
    sub = subscribe(client, tenant, receiver.url)
    first, second, third = _windows(3)
    jobs = [recover(client, tenant, sub.id, since=since) for since in (first, second)]
    harness.drain()
    counted = _ticket_reads(monkeypatch, harness)
    # WHEN a free slot is looked for twice (as two requests for new windows would, before either takes it)
    found = [domain_jobs._free_slot(harness.services, sub.id) for _ in range(2)]
    # THEN both found the first job's slot, done: the first by reading its tickets, and it marked the job so; the
    # second read no tickets
    assert found == [(0, jobs[0]["id"])] * 2
    assert counted == [jobs[0]["id"]]
    # AND a new window takes that slot
    assert recover(client, tenant, sub.id, since=third)["status"] == "queued"


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_done_recoverys_progress_is_counted_from_its_tickets_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery of three missed events, the first of whose attempts its subscriber refuses again
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    receiver.responses = [(500, {}, b"still down", 0.0)]
    counted = _ticket_reads(monkeypatch, harness)
    job = recover(client, tenant, sub.id, since=seen["since"])
    # WHEN its progress is asked for before the worker runs
    queued = progress(client, tenant, sub.id, job["id"])
    # THEN it is counted from its tickets (none yet), and nothing is stored as final
    assert (queued["status"], queued["queued"], counted) == ("queued", 0, [job["id"]])
    found = harness.services.store.jobs.get(job["id"])
    assert found is not None
    assert found.counted is False
    # WHEN the worker runs the job to its end, and its progress is asked for three times
    harness.drain()
    answers = [progress(client, tenant, sub.id, job["id"]) for _ in range(3)]
    # THEN each answer is the same: done, three queued, two sent, one failed
    assert (answers[0]["status"], answers[0]["queued"], answers[0]["sent"], answers[0]["failed"]) == ("done", 3, 2, 1)
    assert answers[1:] == [answers[0]] * 2
    # AND only the first read the job's tickets: it stored the counts with the job
    assert counted == [job["id"]] * 2
    found = harness.services.store.jobs.get(job["id"])
    assert found is not None
    assert found.counted is True
    assert (found.job.queued, found.job.sent, found.job.failed) == (3, 2, 1)
    # AND the recovery's window, asked for again, is a new job (the done one is not found as still at work)
    assert recover(client, tenant, sub.id, since=seen["since"])["id"] != job["id"]


def _recovery_under_way(
    client: Any,
    tenant: TenantInfo,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, Any], dict[str, Any], list[datetime]]:
    """A recovery of ``outage``'s three missed events, listed (its three attempts queued, none made), the API's clock
    stopped: what ``outage`` saw, the job, and the API's time (moved by changing it)."""
    seen = outage(client, tenant, harness, clock, receiver)
    back_up(receiver, clock)
    now = [datetime.now(UTC)]
    monkeypatch.setattr(domain_jobs, "utcnow", lambda: now[0])
    job = recover(client, tenant, seen["sub"].id, since=seen["since"])
    assert harness.poller.poll_once().received == 1  # the job's listing: its three attempts queued
    assert harness.counts() == (3, 0)
    assert len(receiver.received) == 12
    return seen, job, now


KEPT_PROGRESS = {**SCHEDULE, "recovery_progress_seconds": 10}


@pytest.mark.parametrize("settings_overrides", [KEPT_PROGRESS])
def test_a_running_recoverys_counts_are_read_from_its_tickets_once_for_its_pollers_a_few_seconds(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery under way, its counts kept 10 s for its pollers
    seen, job, now = _recovery_under_way(client, tenant, harness, clock, receiver, monkeypatch)
    sub = seen["sub"]
    counted = _ticket_reads(monkeypatch, harness)
    before = harness.services.store.jobs.get(job["id"])
    assert before is not None
    assert before.progress is None
    # WHEN pollers ask for its progress three times
    answers = [progress(client, tenant, sub.id, job["id"]) for _ in range(3)]
    # THEN the first read its tickets: running, three queued, none sent yet; the others answered what it kept
    assert (answers[0]["status"], answers[0]["queued"], answers[0]["sent"]) == ("running", 3, 0)
    assert answers[1:] == [answers[0]] * 2
    assert counted == [job["id"]]
    # AND keeping them changed nothing of the job (its version, which finishing it checks, included)
    found = harness.services.store.jobs.get(job["id"])
    assert found is not None
    assert found.progress is not None
    assert (found.progress.counts, found.version) == ({"queued": 3, "sent": 0, "failed": 0}, before.version)
    # WHEN the worker makes the three attempts, and its progress is asked for 9 s after it was read
    harness.drain()
    assert len(receiver.received) == 15
    now[0] += timedelta(seconds=9)
    # THEN the answer is still the one kept, its tickets not read
    assert progress(client, tenant, sub.id, job["id"]) == answers[0]
    assert counted == [job["id"]]
    # WHEN 10 s have gone by since
    now[0] += timedelta(seconds=1)
    done = progress(client, tenant, sub.id, job["id"])
    # THEN its tickets are read again: done, three queued and sent
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 3, 3, 0)
    assert counted == [job["id"]] * 2
    # AND done, they are never read again
    assert progress(client, tenant, sub.id, job["id"]) == done
    assert counted == [job["id"]] * 2


@pytest.mark.parametrize("settings_overrides", [KEPT_PROGRESS])
def test_a_recovery_just_done_is_done_for_a_new_request_of_its_window_while_its_pollers_read_it_running(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery under way whose pollers were answered its counts (kept 10 s), then its attempts made
    seen, job, now = _recovery_under_way(client, tenant, harness, clock, receiver, monkeypatch)
    sub = seen["sub"]
    assert progress(client, tenant, sub.id, job["id"])["status"] == "running"
    harness.drain()
    now[0] += timedelta(seconds=1)
    assert progress(client, tenant, sub.id, job["id"])["status"] == "running"
    # WHEN its window is asked for again
    again = recover(client, tenant, sub.id, since=seen["since"])
    # THEN it is a new job: the first is found done from its tickets, and its pollers now read it so
    assert again["id"] != job["id"]
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["sent"]) == ("done", 3)


@pytest.mark.parametrize("settings_overrides", [KEPT_PROGRESS])
def test_a_running_recoverys_stale_counts_are_read_anew_by_one_poller_while_the_others_answer_them(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery under way whose counts were read and kept, 10 s ago
    seen, job, now = _recovery_under_way(client, tenant, harness, clock, receiver, monkeypatch)
    sub, store = seen["sub"], harness.services.store
    kept = progress(client, tenant, sub.id, job["id"])
    harness.drain()
    now[0] += timedelta(seconds=10)
    counted = _ticket_reads(monkeypatch, harness)
    # AND a poller that has taken their reading anew, and is at it
    at = int(now[0].timestamp())
    assert store.jobs.take_progress_read(job["id"], now=at, hold_seconds=domain_jobs.PROGRESS_READ_HOLD_SECONDS)
    # WHEN others ask for its progress meanwhile
    answers = [progress(client, tenant, sub.id, job["id"]) for _ in range(3)]
    # THEN they answer the counts kept, reading no ticket
    assert answers == [kept] * 3
    assert counted == []
    # WHEN that poller died, and its hold is over
    now[0] += timedelta(seconds=domain_jobs.PROGRESS_READ_HOLD_SECONDS)
    done = progress(client, tenant, sub.id, job["id"])
    # THEN the next one reads the tickets: the job is done
    assert (done["status"], done["sent"], counted) == ("done", 3, [job["id"]])


@pytest.mark.parametrize("settings_overrides", [KEPT_PROGRESS])
def test_counts_read_earlier_never_replace_those_read_later(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery under way whose counts a poller read and kept
    seen, job, now = _recovery_under_way(client, tenant, harness, clock, receiver, monkeypatch)
    harness.drain()
    at_ms = int(now[0].timestamp() * 1000)
    jobs = harness.services.store.jobs
    jobs.note_progress(job["id"], {"queued": 3, "sent": 3, "failed": 0}, at_ms=at_ms)
    # WHEN a slower poller, whose read of the tickets started 3 s earlier, keeps what it read then
    jobs.note_progress(job["id"], {"queued": 3, "sent": 0, "failed": 0}, at_ms=at_ms - 3000)
    # THEN the later counts are kept, and answered
    found = jobs.get(job["id"])
    assert found is not None
    assert found.progress == Progress({"queued": 3, "sent": 3, "failed": 0}, at_ms)
    assert progress(client, tenant, seen["sub"].id, job["id"])["sent"] == 3


@pytest.mark.parametrize("settings_overrides", [KEPT_PROGRESS])
def test_a_running_recoverys_counts_are_answered_when_dynamodb_refuses_to_keep_them(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery under way, and DynamoDB refusing (after botocore's retries) the write that keeps its counts
    seen, job, _ = _recovery_under_way(client, tenant, harness, clock, receiver, monkeypatch)
    install(harness.services.store.client, "dynamodb.UpdateItem:throttle@call=calls:1")
    # WHEN its progress is asked for
    answer = client.get(f"/v1/subscriptions/{seen['sub'].id}/recoveries/{job['id']}", headers=tenant.headers)
    # THEN it is answered, with the counts read: keeping them is no part of the answer
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["queued"]) == ("running", 3)
    found = harness.services.store.jobs.get(job["id"])
    assert found is not None
    assert found.progress is None


@pytest.mark.parametrize("settings_overrides", [KEPT_PROGRESS])
def test_another_tenants_request_for_a_recovery_reads_and_keeps_nothing_of_it(
    client,
    tenant: TenantInfo,
    make_tenant: Any,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a recovery under way, and another tenant with a subscription of its own, who has the job's id
    _, job, _ = _recovery_under_way(client, tenant, harness, clock, receiver, monkeypatch)
    other = make_tenant("Globex")
    theirs = subscribe(client, other, receiver.url)
    counted = _ticket_reads(monkeypatch, harness)
    # WHEN that tenant asks for it through its own subscription
    answer = client.get(f"/v1/subscriptions/{theirs.id}/recoveries/{job['id']}", headers=other.headers)
    # THEN it is not found, and none of the job's tickets was read, nor its counts kept
    assert_error(answer, 404, "not_found")
    assert counted == []
    found = harness.services.store.jobs.get(job["id"])
    assert found is not None
    assert found.progress is None


def _running_job(services: Any) -> RecoveryJob:
    """A recovery job stored running (its listing under way), kept an hour."""
    now = datetime.now(UTC)
    job = RecoveryJob(
        id="rcv_x",
        tenant_id="t",
        subscription_id="sub_x",
        since=now,
        until=now,
        status=RecoveryStatus.RUNNING,
        created_at=now,
        updated_at=now,
    )
    later = int(now.timestamp()) + 3600
    assert services.store.jobs.create(
        job, window="w", window_holder=None, slot=0, slot_holder=None, lock_expires_at=later, expires_at=later
    )
    return job


def test_a_recovery_not_listed_is_not_stored_done(services: Any) -> None:
    # GIVEN a job whose listing has not ended (a run still taking its tickets)
    job = _running_job(services)
    store = services.store.jobs
    now = datetime.now(UTC)
    # WHEN its counts are stored as final
    # THEN they are refused: only a listed job takes no more tickets
    found = store.get(job.id)
    assert found is not None
    assert store.finish(job.id, {"queued": 0, "sent": 0, "failed": 0}, version=found.version, updated_at=now) is False
    found = store.get(job.id)
    assert found is not None
    assert (found.job.status, found.counted) == (RecoveryStatus.RUNNING, False)
    # AND once listed, they are kept
    store.update(job.id, updated_at=now, listed=True)
    found = store.get(job.id)
    assert found is not None
    assert store.finish(job.id, {"queued": 2, "sent": 1, "failed": 1}, version=found.version, updated_at=now) is True
    found = store.get(job.id)
    assert found is not None
    assert (found.job.status, found.job.queued, found.job.sent, found.job.failed, found.counted) == (
        RecoveryStatus.DONE,
        2,
        1,
        1,
        True,
    )


def _listed_job(services: Any) -> RecoveryJob:
    """A recovery job whose listing has ended, with one ticket taken and used (sent)."""
    job = _running_job(services)
    store = services.store.jobs
    now = datetime.now(UTC)
    assert store.take_ticket(job.id, "dlv_1", lock_seconds=60, ticket_seconds=3600)
    services.store.table.transact(use_ticket("dlv_1", job.id, SENT))
    store.update(job.id, updated_at=now, listed=True)
    return job


def test_a_done_recovery_a_late_page_takes_tickets_of_runs_again(services: Any) -> None:
    # GIVEN a listed job, found done (its counts stored)
    job = _listed_job(services)
    done = domain_jobs.read_recovery(services, job.id, tenant_id=job.tenant_id, subscription_id=job.subscription_id)
    assert done is not None
    assert (done.status, done.queued, done.sent) == (RecoveryStatus.DONE, 1, 1)
    # WHEN a copy of one of its listing messages, which read it unlisted, takes a ticket on its page (as its page does)
    store = services.store.jobs
    assert store.take_ticket(job.id, "dlv_2", lock_seconds=60, ticket_seconds=3600)
    store.reopen(job.id, now=datetime.now(UTC))
    # THEN the job runs again, counted from its tickets
    running = domain_jobs.read_recovery(services, job.id, tenant_id=job.tenant_id, subscription_id=job.subscription_id)
    assert running is not None
    assert (running.status, running.queued, running.sent, running.failed) == (RecoveryStatus.RUNNING, 2, 1, 0)
    # AND once that ticket is used, it is done again with both counted
    services.store.table.transact(use_ticket("dlv_2", job.id, FAILED))
    final = domain_jobs.read_recovery(services, job.id, tenant_id=job.tenant_id, subscription_id=job.subscription_id)
    assert final is not None
    assert (final.status, final.queued, final.sent, final.failed) == (RecoveryStatus.DONE, 2, 1, 1)
    again = store.get(job.id)
    assert again is not None
    assert again.counted is True


def _read(services: Any, job: RecoveryJob, *, now: bool = False) -> tuple[RecoveryStatus, int, int]:
    """The job's status, ``queued`` and ``sent``, as its progress is answered (``now``: a repeated POST's read)."""
    found = domain_jobs.read_recovery(
        services, job.id, tenant_id=job.tenant_id, subscription_id=job.subscription_id, now=now
    )
    assert found is not None
    return found.status, found.queued, found.sent


@pytest.fixture
def api_clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The API's time, stopped (moved by changing it)."""
    now = [datetime.now(UTC)]
    monkeypatch.setattr(domain_jobs, "utcnow", lambda: now[0])
    return now


@pytest.mark.parametrize("settings_overrides", [{"recovery_progress_seconds": 10}])
def test_counts_a_repeated_request_reads_anew_are_kept_for_the_pollers_after_it(
    services: Any, api_clock: list[datetime]
) -> None:
    # GIVEN a running job with two tickets open, whose counts a poller read and kept
    job = _running_job(services)
    for delivery_id in ("dlv_1", "dlv_2"):
        assert services.store.jobs.take_ticket(job.id, delivery_id, lock_seconds=60, ticket_seconds=3600)
    assert _read(services, job) == (RecoveryStatus.RUNNING, 2, 0)
    # WHEN one is sent, and the same recovery is asked for again a moment later (it reads the tickets anew)
    services.store.table.transact(use_ticket("dlv_1", job.id, SENT))
    api_clock[0] += timedelta(milliseconds=1)
    assert _read(services, job, now=True) == (RecoveryStatus.RUNNING, 2, 1)
    # THEN a poller right after is answered those counts, not the older ones kept before
    assert _read(services, job) == (RecoveryStatus.RUNNING, 2, 1)


@pytest.mark.parametrize("settings_overrides", [{"recovery_progress_seconds": 10}])
@pytest.mark.parametrize(
    ("refused", "fault"),
    [
        ("its read of the tickets", "dynamodb.Query:throttle@call=calls:1"),
        # the first write takes the reading, the next keeps what it read
        ("the write that keeps what it read", "dynamodb.UpdateItem:throttle@call=calls:2"),
    ],
)
def test_a_poller_whose_read_or_keep_dynamodb_refuses_gives_the_reading_back(
    services: Any, api_clock: list[datetime], refused: str, fault: str
) -> None:
    # GIVEN a running job whose counts were kept 10 s ago, one ticket sent since
    job = _running_job(services)
    assert services.store.jobs.take_ticket(job.id, "dlv_1", lock_seconds=60, ticket_seconds=3600)
    assert _read(services, job) == (RecoveryStatus.RUNNING, 1, 0)
    services.store.table.transact(use_ticket("dlv_1", job.id, SENT))
    api_clock[0] += timedelta(seconds=10)
    # WHEN a poller takes their reading anew, and DynamoDB refuses (after botocore's retries) its read or its keep
    install(services.store.client, fault)
    # THEN a refused read is a 503 (ServiceUnavailableError); counts read and not kept are answered
    if refused == "its read of the tickets":
        with pytest.raises(ServiceUnavailableError):
            _read(services, job)
    else:
        assert _read(services, job) == (RecoveryStatus.RUNNING, 1, 1)
    # AND it gave the reading back: the next poller reads the tickets at once, not the stale counts for a minute
    assert _read(services, job) == (RecoveryStatus.RUNNING, 1, 1)


@pytest.mark.parametrize("settings_overrides", [{"recovery_progress_seconds": 10}])
def test_a_done_recovery_reopened_is_never_answered_the_counts_kept_while_it_ran(
    services: Any, api_clock: list[datetime]
) -> None:
    # GIVEN a listed job whose counts were kept while it ran (one ticket open), then found done
    job = _running_job(services)
    store = services.store.jobs
    assert store.take_ticket(job.id, "dlv_1", lock_seconds=60, ticket_seconds=3600)
    assert _read(services, job) == (RecoveryStatus.RUNNING, 1, 0)
    services.store.table.transact(use_ticket("dlv_1", job.id, SENT))
    store.update(job.id, updated_at=datetime.now(UTC), listed=True)
    assert _read(services, job, now=True) == (RecoveryStatus.DONE, 1, 1)
    # WHEN a late page reopens it, within the 10 s its old counts were kept for, and a slower poller, whose read of
    # the tickets started before it was done, keeps what it read then
    assert store.take_ticket(job.id, "dlv_2", lock_seconds=60, ticket_seconds=3600)
    store.reopen(job.id, now=datetime.now(UTC))
    before = int(api_clock[0].timestamp() * 1000) - 1000
    assert store.note_progress(job.id, {"queued": 1, "sent": 0, "failed": 0}, at_ms=before) is False
    # THEN it is answered its final counts, never the older ones kept while it ran nor the slower poller's
    assert _read(services, job) == (RecoveryStatus.RUNNING, 1, 1)
    # AND once they are stale, its counts are read from its tickets
    api_clock[0] += timedelta(seconds=10)
    assert _read(services, job) == (RecoveryStatus.RUNNING, 2, 1)


def test_a_recovery_whose_tickets_a_late_page_took_while_they_were_counted_is_not_stored_done(
    services: Any,
) -> None:
    # GIVEN a listed job whose tickets are being counted (the job read, then its tickets)
    job = _listed_job(services)
    store = services.store.jobs
    read = store.get(job.id)
    assert read is not None
    counts = store.ticket_counts(job.id)
    # WHEN a late page takes a ticket after that count, before the counts are stored
    assert store.take_ticket(job.id, "dlv_2", lock_seconds=60, ticket_seconds=3600)
    store.reopen(job.id, now=datetime.now(UTC))
    # THEN the counts read before are not stored as final
    progress = {"queued": counts["open"] + counts["sent"] + counts["failed"], "sent": counts["sent"], "failed": 0}
    assert store.finish(job.id, progress, version=read.version, updated_at=datetime.now(UTC)) is False
    after = domain_jobs.read_recovery(services, job.id, tenant_id=job.tenant_id, subscription_id=job.subscription_id)
    assert after is not None
    assert (after.status, after.queued) == (RecoveryStatus.RUNNING, 2)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_page_that_takes_tickets_notes_it_on_the_job(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery of three missed events
    seen = outage(client, tenant, harness, clock, receiver)
    back_up(receiver, clock)
    reopened: list[str] = []
    reopen = type(harness.services.store.jobs).reopen

    def noting(self: Any, job_id: str, *, now: datetime) -> None:
        reopened.append(job_id)
        reopen(self, job_id, now=now)

    monkeypatch.setattr(type(harness.services.store.jobs), "reopen", noting)
    job = recover(client, tenant, seen["sub"].id, since=seen["since"])
    # WHEN the worker lists its one page
    harness.drain()
    # THEN the page noted on the job that it took tickets, and the job is done with the three sent
    assert reopened == [job["id"]]
    done = progress(client, tenant, seen["sub"].id, job["id"])
    assert (done["status"], done["queued"], done["sent"]) == ("done", 3, 3)


@pytest.mark.parametrize("settings_overrides", [{"max_recoveries_per_subscription": 2}])
def test_the_limit_of_recoveries_is_a_setting_that_holds_against_a_concurrent_request(
    client, tenant: TenantInfo, receiver: Receiver, services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deployment allowing two unfinished recoveries a subscription, and one queued
    sub = subscribe(client, tenant, receiver.url)
    first, second, third = _windows(3)
    recover(client, tenant, sub.id, since=first)
    # WHEN a second request read the slots before the first took its own (a concurrent request: its read is stale)
    read = type(services.store.jobs).slot_holders
    stale: list[dict[int, str]] = [{}]

    def before_the_first(self: Any, subscription_id: str) -> dict[int, str]:
        return stale.pop() if stale else read(self, subscription_id)

    monkeypatch.setattr(type(services.store.jobs), "slot_holders", before_the_first)
    response = client.post(f"/v1/subscriptions/{sub.id}/recover", json={"since": second}, headers=tenant.headers)
    # THEN it did not take the first one's slot: it took the other one
    assert response.status_code == 202, response.text
    assert not stale
    holders = services.store.jobs.slot_holders(sub.id)
    assert sorted(holders) == [0, 1]
    assert response.json()["id"] in holders.values()
    # AND a third is refused: the setting's limit
    response = client.post(f"/v1/subscriptions/{sub.id}/recover", json={"since": third}, headers=tenant.headers)
    assert assert_error(response, 422, "limit_exceeded")["details"][0]["msg"] == "at most 2 at once"


@pytest.mark.parametrize("settings_overrides", [{"event_ttl_days": 1}])
def test_a_recovery_reaches_as_far_back_as_events_are_kept_beyond_their_retention_setting(
    client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN events kept a day, but never less than their deliveries' retries and breaker holds take, plus a day (the
    # defaults: 5 days held, so 6 days)
    sub = subscribe(client, tenant, receiver.url)
    url = f"/v1/subscriptions/{sub.id}/recover"
    # WHEN a recovery reaches 5 days back (its deliveries' events still kept), THEN it is started
    since = (datetime.now(UTC) - timedelta(days=5)).isoformat()
    assert client.post(url, json={"since": since}, headers=tenant.headers).status_code == 202
    # AND 7 days back is refused, naming the reach
    since = (datetime.now(UTC) - timedelta(days=7)).isoformat()
    error = assert_error(client.post(url, json={"since": since}, headers=tenant.headers), 422, "invalid_input")
    assert "at most 6 days ago" in error["message"]


def test_a_tenant_cannot_recover_or_read_another_tenants_subscription(client, make_tenant, receiver: Receiver) -> None:
    # GIVEN tenant A's subscription and recovery
    a, b = make_tenant("A"), make_tenant("B")
    sub = subscribe(client, a, receiver.url)
    window = {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
    job = recover(client, a, sub.id, **window)
    # WHEN tenant B asks for a recovery of it, or its progress, THEN 404, as if neither existed
    assert_error(client.post(f"/v1/subscriptions/{sub.id}/recover", json=window, headers=b.headers), 404, "not_found")
    own = subscribe(client, b, receiver.url)
    for path in (
        f"/v1/subscriptions/{sub.id}/recoveries/{job['id']}",
        f"/v1/subscriptions/{own.id}/recoveries/{job['id']}",
    ):
        assert_error(client.get(path, headers=b.headers), 404, "not_found")
    # AND an unknown job is a 404, and the operator's key is not a tenant's
    assert_error(client.get(f"/v1/subscriptions/{sub.id}/recoveries/rcv_nope", headers=a.headers), 404, "not_found")
    assert_error(client.post(f"/v1/subscriptions/{sub.id}/recover", json=window, headers=ADMIN), 403, "forbidden")


def test_a_redelivery_sends_an_event_once_more_to_every_subscription(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    clock.now = time.time()  # no outage here: the worker runs at the real time
    # GIVEN an event delivered to one subscription, and a second subscription created after it
    early, late = make_receiver(), make_receiver()
    first = subscribe(client, tenant, early.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    assert len(early.received) == 1
    second = subscribe(client, tenant, late.url)
    # WHEN the operator redelivers the event, and its job message runs twice (as SQS may)
    response = client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN)
    assert response.status_code == 202, response.text
    assert response.json()["event_id"] == event_id
    assert response.json()["id"].startswith("rdl_")
    (job_message,) = queue_messages(harness.sqs, harness.services.settings.queue_url)
    assert job_message["kind"] == "redeliver"
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=json.dumps(job_message))
    harness.drain()
    # THEN the first subscription got the event exactly once more (a manual attempt, the same webhook-id),
    # and the second got it for the first time, exactly once
    assert [r.headers["webhook-id"] for r in early.received] == [event_id, event_id]
    assert [r.headers["webhook-id"] for r in late.received] == [event_id]
    Webhook(first.secret).verify(early.received[1].body, dict(early.received[1].headers))
    Webhook(second.secret).verify(late.received[0].body, dict(late.received[0].headers))
    again = only_delivery(client, tenant, first.id)
    assert [a["trigger"] for a in attempts(client, tenant, first.id, again["id"])] == ["scheduled", "manual"]
    assert again["status"] == "succeeded"
    new = only_delivery(client, tenant, second.id)
    assert [a["trigger"] for a in attempts(client, tenant, second.id, new["id"])] == ["scheduled"]
    # AND the event counts the new delivery once
    counts = event_counts(client, event_id)
    assert (counts["matched"], counts["succeeded"], counts["failed"]) == (2, 2, 0)
    # AND the duplicated messages, once back, send nothing more
    step(harness, clock, 60)
    assert (len(early.received), len(late.received)) == (2, 1)
    assert harness.counts() == (0, 0)


def test_a_redelivery_run_again_after_its_deliveries_were_made_sends_nothing_more(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    clock.now = time.time()
    # GIVEN an event delivered to one subscription, a second subscription created after it, and a redelivery of
    # the event whose deliveries were made: once more to the first, for the first time to the second
    early, late = make_receiver(), make_receiver()
    first = subscribe(client, tenant, early.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    second = subscribe(client, tenant, late.url)
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    (job_message,) = queue_messages(harness.sqs, harness.services.settings.queue_url)
    harness.drain()
    assert (len(early.received), len(late.received)) == (2, 1)
    # WHEN its job message runs again (SQS delivered it twice, or its first run failed after queueing)
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=json.dumps(job_message))
    harness.drain()
    step(harness, clock, 60)
    # THEN nothing more is sent: each subscription got the event once from this job, signed
    assert [r.headers["webhook-id"] for r in early.received] == [event_id, event_id]
    assert [r.headers["webhook-id"] for r in late.received] == [event_id]
    Webhook(first.secret).verify(early.received[1].body, dict(early.received[1].headers))
    Webhook(second.secret).verify(late.received[0].body, dict(late.received[0].headers))
    new = only_delivery(client, tenant, second.id)
    assert [a["trigger"] for a in attempts(client, tenant, second.id, new["id"])] == ["scheduled"]
    counts = event_counts(client, event_id)
    assert (counts["matched"], counts["succeeded"], counts["failed"]) == (2, 2, 0)
    assert harness.counts() == (0, 0)


def _counted(counts: dict[str, Any]) -> tuple[int, int, int, int]:
    return counts["matched"], counts["pending"], counts["succeeded"], counts["failed"]


def _taken_off(harness: Harness) -> list[Any]:
    """The work queue's messages (up to ten), taken off it: held back, as behind a backlog, until ``_put_back``."""
    queue_url = harness.services.settings.queue_url
    taken: list[Any] = harness.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    for message in taken:
        harness.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return taken


def _put_back(harness: Harness, taken: list[Any]) -> None:
    for message in taken:
        harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=message["Body"])


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_redelivery_while_the_fanouts_deliveries_are_queued_counts_each_subscription_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    clock.now = time.time()
    # GIVEN an event fanned out to three subscriptions, its deliveries queued and none made yet (behind a backlog)
    subs = [subscribe(client, tenant, receiver.url) for _ in range(3)]
    event_id = publish(client, tenant.id)
    harness.poller.poll_once()
    assert _counted(event_counts(client, event_id)) == (3, 3, 0, 0)
    assert receiver.received == []
    # WHEN the operator redelivers it, and the queue is worked
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    step(harness, clock, 60)
    # THEN each subscription got it once (the redelivery's first delivery and the fan-out's are one delivery), and
    # the event counts each once: none left pending
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == [event_id] * 3
    assert _counted(event_counts(client, event_id)) == (3, 0, 3, 0)
    assert [only_delivery(client, tenant, sub.id)["status"] for sub in subs] == ["succeeded"] * 3


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 20}])
@pytest.mark.parametrize("published", ["alone", "in a batch"])
def test_a_redelivery_while_a_direct_fanouts_deliveries_are_queued_counts_each_subscription_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, published: str
) -> None:
    clock.now = time.time()
    # GIVEN an event queued by its publish (alone, or in a batch) to eleven subscriptions (more than its item names),
    # its delivery messages not worked yet (taken off the queue: behind a backlog), and a twelfth subscription made
    # since
    for _ in range(11):
        subscribe(client, tenant, receiver.url)
    if published == "alone":
        event_id = publish(client, tenant.id)
    else:
        batch = [{"type": "invoice.paid", "tenant_id": tenant.id, "data": INVOICE}]
        answered = client.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
        assert answered.status_code == 200, answered.text
        (item,) = answered.json()["data"]
        event_id = item["event"]["id"]
    held = _taken_off(harness)
    assert sorted(json.loads(m["Body"])["kind"] for m in held) == ["deliveries", "delivery"]
    subscribe(client, tenant, receiver.url)
    assert _counted(event_counts(client, event_id)) == (11, 11, 0, 0)
    # WHEN the operator redelivers it, and then the held messages are worked
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    _put_back(harness, held)
    harness.drain()
    step(harness, clock, 60)
    # THEN each subscription got it once, and the event counts the eleven once, and the twelfth (never had it) once
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id] * 12
    assert _counted(event_counts(client, event_id)) == (12, 0, 12, 0)


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_redelivery_before_the_events_fanout_waits_for_it_and_counts_each_subscription_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    clock.now = time.time()
    # GIVEN an event to two subscriptions whose fan-out message has not run yet (held back: taken off the queue)
    for _ in range(2):
        subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    (fanout,) = _taken_off(harness)
    assert json.loads(fanout["Body"])["kind"] == "fanout"
    # WHEN the operator redelivers it, and its job runs first: it waits for the fan-out, sending nothing
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    assert receiver.received == []
    assert _counted(event_counts(client, event_id)) == (0, 0, 0, 0)
    # AND the fan-out runs, then the redelivery once its wait is over
    _put_back(harness, [fanout])
    harness.drain()
    step(harness, clock, 60)
    step(harness, clock, 60)
    # THEN each subscription got it from the fan-out, then once more from the redelivery (a manual attempt), and the
    # event counts each once
    assert _counted(event_counts(client, event_id)) == (2, 0, 2, 0)
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id] * 4


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_redelivery_of_an_event_whose_fanout_never_ends_goes_on_after_its_waits(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.now = time.time()
    # (as long as a fan-out message failing each time stays on the queue: ten receives six minutes apart here)
    assert worker_jobs._fanout_waits(harness.worker) == 60
    monkeypatch.setattr("herald.worker.jobs._fanout_waits", lambda worker: 2)
    # GIVEN an event to two subscriptions whose fan-out message is gone (discarded from the dead-letter queue)
    subs = [subscribe(client, tenant, receiver.url) for _ in range(2)]
    event_id = publish(client, tenant.id)
    assert [json.loads(m["Body"])["kind"] for m in _taken_off(harness)] == ["fanout"]
    # WHEN the operator redelivers it: its job waits for the fan-out, twice here
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    step(harness, clock, 60)
    assert receiver.received == []
    step(harness, clock, 60)
    # THEN it goes on after its last wait: each subscription gets its first delivery, counted once
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id] * 2
    assert [only_delivery(client, tenant, sub.id)["status"] for sub in subs] == ["succeeded"] * 2
    assert _counted(event_counts(client, event_id)) == (2, 0, 2, 0)


def test_a_redelivery_page_run_again_queues_what_it_counted_not_a_subscription_made_since(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver
) -> None:
    clock.now = time.time()
    # GIVEN an event delivered to one subscription, a second made after it, and a redelivery of the event: once more
    # to the first, for the first time to the second, counted
    receivers = [make_receiver() for _ in range(3)]
    subscribe(client, tenant, receivers[0].url)
    event_id = publish(client, tenant.id)
    harness.drain()
    subscribe(client, tenant, receivers[1].url)
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    (job_message,) = queue_messages(harness.sqs, harness.services.settings.queue_url)
    harness.drain()
    assert [len(r.received) for r in receivers] == [2, 1, 0]
    assert _counted(event_counts(client, event_id)) == (2, 0, 2, 0)
    # WHEN a third subscription is made, and the job's message runs again
    third = subscribe(client, tenant, receivers[2].url)
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=json.dumps(job_message))
    harness.drain()
    step(harness, clock, 60)
    # THEN the page queues what its first run counted: nothing more is sent, the third subscription included, and the
    # counts still add up
    assert [len(r.received) for r in receivers] == [2, 1, 0]
    assert deliveries(client, tenant, third.id) == []
    assert _counted(event_counts(client, event_id)) == (2, 0, 2, 0)


def _delivered_before_a_second_subscription(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> tuple[Receiver, Receiver, str, Sub]:
    """An event delivered to a first subscription, and a second subscription made after it: the receivers of both
    (``early``, ``late``), the event's id, and the second subscription."""
    early, late = make_receiver(), make_receiver()
    subscribe(client, tenant, early.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    return early, late, event_id, subscribe(client, tenant, late.url)


@pytest.mark.parametrize("failed", ["queueing", "counting"])
def test_a_redelivery_page_run_again_queues_a_first_delivery_it_counted_to_a_subscription_deleted_since(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver, monkeypatch: pytest.MonkeyPatch,
    failed: str,
) -> None:  # fmt: skip
    clock.now = time.time()
    # GIVEN an event delivered to one subscription, a second made after it, and a redelivery of the event whose page
    # planned the second's first delivery, then failed to queue its messages, or to count that delivery (the job's
    # message comes back)
    early, late, event_id, second = _delivered_before_a_second_subscription(client, tenant, harness, make_receiver)
    name = "send_concurrently" if failed == "queueing" else "_count_first"
    real = getattr(worker_jobs, name)

    async def refused_once(*args: Any) -> None:
        monkeypatch.setattr(worker_jobs, name, real)
        raise ServiceUnavailableError("AWS refused the page's write")

    monkeypatch.setattr(worker_jobs, name, refused_once)
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    assert event_counts(client, event_id)["matched"] == (2 if failed == "queueing" else 1)
    # WHEN the second subscription is deleted, and the job's message runs again
    assert client.delete(f"/v1/subscriptions/{second.id}", headers=tenant.headers).status_code == 204
    step(harness, clock, 400)
    step(harness, clock, 60)
    # THEN the first got the event once more, the second nothing, and its first delivery, counted, was cancelled and
    # counted failed: nothing is left pending
    assert [r.headers["webhook-id"] for r in early.received] == [event_id, event_id]
    assert late.received == []
    assert _counted(event_counts(client, event_id)) == (2, 0, 1, 1)


def test_a_redelivery_counts_a_first_delivery_an_earlier_one_planned_and_failed_to_count(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.now = time.time()
    # GIVEN an event delivered to one subscription, a second made after it, and a redelivery of the event whose page
    # planned the second's first delivery, counted apart, then failed to count it (its message comes back later)
    _, late, event_id, _ = _delivered_before_a_second_subscription(client, tenant, harness, make_receiver)
    real = worker_jobs._count_first

    async def refused_once(*args: Any) -> None:
        monkeypatch.setattr(worker_jobs, "_count_first", real)
        raise ServiceUnavailableError("AWS refused the count")

    monkeypatch.setattr(worker_jobs, "_count_first", refused_once)
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    assert event_counts(client, event_id)["matched"] == 1
    # WHEN the operator redelivers the event again, and that job sends the second its first delivery
    assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    # THEN that job counts it: the first job's plan named it, but did not count it
    assert len(late.received) == 1
    assert _counted(event_counts(client, event_id)) == (2, 0, 2, 0)
    # AND once the first job's message runs again (the delivery it planned made since), the counts still add up
    step(harness, clock, 400)
    step(harness, clock, 60)
    assert _counted(event_counts(client, event_id)) == (2, 0, 2, 0)


def test_two_redeliveries_at_once_count_a_subscription_made_since_once(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.now = time.time()
    # GIVEN an event delivered to one subscription, and a second made after it
    early, late, event_id, _ = _delivered_before_a_second_subscription(client, tenant, harness, make_receiver)
    # WHEN the operator redelivers the event twice before either job runs (a repeated click, a script's retry): their
    # messages worked in one batch, each reads what the event counts before either counts the second subscription
    for _ in range(2):
        assert client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN).status_code == 202
    both_read = threading.Barrier(2, timeout=30)
    read = harness.services.store.events.counted_subscriptions

    def read_together(event_id: str) -> frozenset[str]:
        found = read(event_id)
        both_read.wait()
        return found

    monkeypatch.setattr(harness.services.store.events, "counted_subscriptions", read_together)
    harness.drain()
    step(harness, clock, 60)
    # THEN each subscription got the event once more (the first's delivery taken by one job at a time), and the event
    # counts the second's delivery once: nothing left pending
    assert [r.headers["webhook-id"] for r in late.received] == [event_id]
    assert [r.headers["webhook-id"] for r in early.received] == [event_id, event_id]
    assert _counted(event_counts(client, event_id)) == (2, 0, 2, 0)


def test_only_the_operator_redelivers(client, tenant: TenantInfo, receiver: Receiver) -> None:
    subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    assert_error(client.post(f"/v1/events/{event_id}/redeliver", headers=tenant.headers), 403, "forbidden")
    assert_error(client.post("/v1/events/evt_missing/redeliver", headers=ADMIN), 404, "not_found")


@pytest.mark.parametrize("tenants_per_page", [100, 1], ids=["one-page", "a-page-a-tenant"])
def test_a_broadcast_event_is_redelivered_to_every_tenant(
    client, make_tenant, harness: Harness, clock: Clock, make_receiver, monkeypatch, tenants_per_page: int
) -> None:
    clock.now = time.time()
    # The redelivery reads the tenants a page at a time: with one a page, the second tenant's message comes from a
    # page read with a cursor (a position in the tenants' listing, which its own message must not carry).
    monkeypatch.setattr("herald.worker.jobs.TENANTS_PER_PAGE", tenants_per_page)
    # GIVEN a broadcast delivered to a subscription of each of two tenants
    tenants = [make_tenant("A"), make_tenant("B")]
    receivers = [make_receiver(), make_receiver()]
    subs = [subscribe(client, t, r.url) for t, r in zip(tenants, receivers, strict=True)]
    event_id = publish(client, None)
    harness.drain()
    assert [len(r.received) for r in receivers] == [1, 1]
    # WHEN the operator redelivers it
    response = client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN)
    assert response.status_code == 202, response.text
    harness.drain()
    # THEN each subscription got it exactly once more
    assert [len(r.received) for r in receivers] == [2, 2]
    for sub, got in zip(subs, receivers, strict=True):
        assert Webhook(sub.secret).verify(got.received[1].body, dict(got.received[1].headers))
        assert got.received[1].headers["webhook-id"] == event_id


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_recovery_does_not_send_again_a_delivery_delivered_since_its_listing_read_it(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscriber back after an outage, and the window's three failed deliveries as a listing read them
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    store = harness.services.store
    listed = store.deliveries.between(
        sub.id,
        DeliveryStatus.FAILED,
        since=datetime.fromisoformat(seen["since"]),
        until=datetime.now(UTC) + timedelta(hours=1),
        limit=100,
        cursor=None,
    )
    assert len(listed.items) == 3
    # WHEN one of them is retried by hand and delivered, and then a recovery lists the window from a replica that
    # still shows it failed (emulated: the listing answers what was read before the retry)
    retried = listed.items[0]
    response = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{retried.id}/retry", headers=tenant.headers)
    assert response.status_code == 202, response.text
    harness.drain()
    assert len(receiver.received) == 13
    monkeypatch.setattr(store.deliveries, "between", lambda *args, **kwargs: listed)
    job = recover(client, tenant, sub.id, since=seen["since"])
    harness.drain()
    # THEN only the two still failed are sent again: the retried one arrived once more in all, by hand
    extra = [got.headers["webhook-id"] for got in receiver.received[13:]]
    assert sorted(extra) == sorted(d.event_id for d in listed.items[1:])
    triggers = [a["trigger"] for a in attempts(client, tenant, sub.id, retried.id)]
    assert triggers == ["scheduled", "scheduled", "scheduled", "manual"]
    # AND the job counts the two it found still failed, both sent, and is done
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 2, 2, 0)


@pytest.mark.parametrize("settings_overrides", [SCHEDULE])
def test_a_disabled_subscription_is_not_recovered_and_one_disabled_midway_gets_nothing_more(
    client, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a subscriber back after an outage, its subscription disabled
    seen = outage(client, tenant, harness, clock, receiver)
    sub = seen["sub"]
    back_up(receiver, clock)
    switch = f"/v1/subscriptions/{sub.id}"
    assert client.patch(switch, json={"enabled": False}, headers=tenant.headers).status_code == 200
    # WHEN a recovery is asked for, THEN it is refused until the subscription is enabled
    refused = client.post(f"/v1/subscriptions/{sub.id}/recover", json={"since": seen["since"]}, headers=tenant.headers)
    assert_error(refused, 409, "conflict")
    assert "enable it first" in refused.json()["error"]["message"]
    # WHEN it is enabled, the recovery starts and lists its deliveries, and the tenant disables it again before
    # their attempts are made
    assert client.patch(switch, json={"enabled": True}, headers=tenant.headers).status_code == 200
    job = recover(client, tenant, sub.id, since=seen["since"])
    (listing,) = [poller for poller in harness.pollers if poller.queue_url == harness.services.settings.queue_url]
    assert listing.poll_once().received == 1  # the job's listing message: it queues the three attempts
    assert harness.counts()[0] == 3
    assert client.patch(switch, json={"enabled": False}, headers=tenant.headers).status_code == 200
    harness.drain()
    # THEN nothing more is sent, and the job is done, having sent nothing
    assert len(receiver.received) == 12
    done = progress(client, tenant, sub.id, job["id"])
    assert (done["status"], done["queued"], done["sent"], done["failed"]) == ("done", 0, 0, 0)
