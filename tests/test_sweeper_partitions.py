"""The schedule's sweep against the limits of AWS that moto does not enforce: a DynamoDB partition takes at most
1,000 writes a second, so the pages a sweep deletes at once must fall on different partitions; and a Lambda
invocation ends at its timeout, so a sweep must make no AWS call that might outlast it, nor start pages once a page
or its time has run out.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from herald.deadline import attempt_seconds
from herald.faults import install
from herald.messages import DeliveryMessage, dump_message
from herald.settings import Settings
from herald.storage.schedule import SHARDS, _shard
from herald.worker import sweeper
from tests.api_support import queue_messages
from tests.delivery_support import Harness
from tests.support import Clock

pytestmark = pytest.mark.e2e


def _names(per_shard: int) -> list[str]:
    """Names of work that fall ``per_shard`` in each of the schedule's shards."""
    by_shard: dict[int, list[str]] = {shard: [] for shard in range(SHARDS)}
    n = 0
    while any(len(names) < per_shard for names in by_shard.values()):
        name = f"w{n}"
        n += 1
        names = by_shard[_shard(name)]
        if len(names) < per_shard:
            names.append(name)
    return [name for names in by_shard.values() for name in names]


def _schedule(harness: Harness, names: list[str], *, due: float) -> None:
    """Schedule the work of one delivery per name for ``due``, as ``hold`` schedules a long wait."""
    for name in names:
        body = DeliveryMessage(event_id="evt", tenant_id="tnt", subscription_id=f"sub_{name}", delivery_id=name)
        harness.services.store.schedule.put(dump_message(body), name=name, due=due, now=harness.clock())


def _sent_once(harness: Harness, names: list[str]) -> bool:
    harness.reveal()
    sent = Counter(body["delivery_id"] for body in queue_messages(harness.sqs, harness.services.settings.queue_url))
    return sent == dict.fromkeys(names, 1)


def _partitions(request_items: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {request["DeleteRequest"]["Key"]["pk"]["S"] for requests in request_items.values() for request in requests}


def test_the_pages_a_sweep_has_under_way_at_once_delete_from_different_partitions(
    harness: Harness, clock: Clock
) -> None:
    # GIVEN 800 deliveries' work falling due together, 100 in each of the hour's shards (10 pages each)
    names = _names(100)
    _schedule(harness, names, due=clock() + 1000)
    clock.advance(990)
    # WHEN the sweep runs, each page starting only once SWEEP_THREADS pages are under way together (each group of
    # SWEEP_THREADS pages in the order they started is then sent, and deleted, at once)
    together = threading.Barrier(sweeper.SWEEP_THREADS, timeout=60)
    lock = threading.Lock()
    pages: list[set[str]] = []
    deletes: list[set[str]] = []
    queue = sweeper._queue

    def queue_together(worker: Any, page: Any) -> int:
        with lock:
            pages.append({item.key["pk"] for item in page})
        together.wait()
        return queue(worker, page)

    def note_delete(params: dict[str, Any], **_: Any) -> None:
        with lock:
            deletes.append(_partitions(params["RequestItems"]))

    events = harness.services.store.table.client.meta.events
    events.register("provide-client-params.dynamodb.BatchWriteItem", note_delete)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sweeper, "_queue", queue_together)
            result = harness.worker.sweep()
    finally:
        events.unregister("provide-client-params.dynamodb.BatchWriteItem", note_delete)
    # THEN every page, and every delete, was of one partition, and those under way at once were of as many
    assert result == {"queued": 800, "complete": True}
    assert len(pages) == len(deletes) == 80
    assert all(len(page) == 1 for page in pages + deletes)
    at_once = sweeper.SWEEP_THREADS
    for started in (pages, deletes):
        groups = [started[n : n + at_once] for n in range(0, len(started), at_once)]
        assert [len(set().union(*group)) for group in groups] == [at_once] * len(groups)
    # AND everything was queued once and left the schedule
    assert harness.scheduled() == 0
    assert _sent_once(harness, names)


def test_a_sweep_whose_page_failed_starts_none_of_the_pages_it_read_ahead(harness: Harness, clock: Clock) -> None:
    # GIVEN 400 deliveries' work falling due together (40 pages), SQS refusing the sweep's first SendMessageBatch
    # (after botocore's retries), and the other pages under way held until the sweep has given up on the pages it
    # has not started
    names = _names(50)
    _schedule(harness, names, due=clock() + 1000)
    clock.advance(990)
    install(harness.services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    given_up = threading.Event()
    lock = threading.Lock()
    started: list[int] = []
    queue, give_up = sweeper._queue, sweeper._give_up_unstarted

    def queue_after_the_first(worker: Any, page: Any) -> int:
        with lock:
            started.append(len(page))
            first = len(started) == 1
        if not first:
            given_up.wait(30)  # what a sweep that never gives up waits out
        return queue(worker, page)

    def give_up_then_go_on(pending: Any) -> None:
        give_up(pending)
        given_up.set()

    # WHEN it sweeps
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweeper, "_queue", queue_after_the_first)
        patch.setattr(sweeper, "_give_up_unstarted", give_up_then_go_on)
        result = harness.worker.sweep()
    # THEN it failed (the next sweep carries on), having started only the pages under way when the first failed (and
    # one its thread may have taken up meanwhile), not the pages it had read ahead
    assert len(started) <= sweeper.SWEEP_THREADS + 1, len(started)
    # AND what the pages it started sent left the schedule, and is the count it reports; the rest stayed: the failed
    # page's and the unstarted ones
    assert result == {"queued": 10 * (len(started) - 1), "complete": False}
    assert harness.scheduled() == 400 - 10 * (len(started) - 1)
    # AND the next sweep queues the rest: each delivery's work once
    assert harness.worker.sweep()["complete"] is True
    assert _sent_once(harness, names)


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sweep's monotonic time, and the one its AWS clients check their attempts against (``herald.deadline``):
    it moves only when the test moves it."""
    from herald import deadline

    now = [1000.0]
    frozen = SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(sweeper, "time", frozen)
    monkeypatch.setattr(deadline, "time", frozen)
    return now


def test_a_sweep_makes_no_aws_call_that_might_end_past_its_invocation(
    harness: Harness, clock: Clock, monotonic: list[float]
) -> None:
    # GIVEN a page of work falling due, an invocation with 60 s left, and SQS answering the page's send after 48 s
    # (attempts that hung until their timeouts)
    names = _names(2)[:10]
    _schedule(harness, names, due=clock() + 1000)
    clock.advance(990)
    invocation_end = monotonic[0] + 60
    attempts: list[tuple[str, float]] = []

    def note_attempt(event_name: str, **_: Any) -> None:
        attempts.append((event_name.rsplit(".", 1)[-1], monotonic[0]))

    def answered_late(**_: Any) -> None:
        monotonic[0] += 48

    clients = [harness.services.store.table.client, harness.services.queue.client]
    for client in clients:
        client.meta.events.register_first("before-send", note_attempt)  # after the deadline's own check
    clients[1].meta.events.register("after-call.sqs.SendMessageBatch", answered_late)
    try:
        # WHEN it sweeps
        result = sweeper.sweep(harness.worker, deadline=invocation_end)
    finally:
        for client in clients:
            client.meta.events.unregister("before-send", note_attempt)
        clients[1].meta.events.unregister("after-call.sqs.SendMessageBatch", answered_late)
    # THEN it is cut short, having made only attempts that would end before the invocation, were they to wait out their
    # timeouts: the page's delete, which might not have, failed unmade, so the page counts as queued by none
    assert (result.queued, result.complete) == (0, False)
    longest = attempt_seconds(harness.services.settings)
    assert [name for name, _ in attempts if name in {"SendMessageBatch", "BatchWriteItem"}] == ["SendMessageBatch"]
    assert all(at + longest <= invocation_end for _, at in attempts), attempts
    # AND the page stays scheduled: the next sweep queues it again, which the deliveries' leases make harmless
    assert harness.scheduled() == 10


@pytest.mark.parametrize("beyond", [-0.5, 0.5])
def test_a_sweep_starts_a_page_only_with_time_for_its_calls(
    harness: Harness, clock: Clock, monotonic: list[float], beyond: float
) -> None:
    # GIVEN 30 deliveries' work falling due, and an invocation with just less (or just more) time left than a page
    # needs: the longest attempt of an AWS call, the margin of a page's calls, and the time kept for the end
    names = _names(4)[:30]
    _schedule(harness, names, due=clock() + 1000)
    clock.advance(990)
    needed = attempt_seconds(harness.services.settings) + sweeper.MIN_SECONDS_LEFT + sweeper.END_SECONDS
    # WHEN it sweeps
    result = sweeper.sweep(harness.worker, deadline=monotonic[0] + needed + beyond)
    # THEN it starts no page without that time, and every page with it
    if beyond < 0:
        assert (result.queued, result.complete, harness.scheduled()) == (0, False, 30)
    else:
        assert (result.queued, result.complete, harness.scheduled()) == (30, True, 0)


def test_the_longest_aws_read_timeout_leaves_the_sweep_time_to_start_pages() -> None:
    # GIVEN the longest read timeout the settings take, and one more second
    longest = Settings(aws_read_timeout_seconds=30)
    with pytest.raises(ValidationError, match="aws_read_timeout_seconds"):
        Settings(aws_read_timeout_seconds=31)
    # THEN a sweep in the DeliveryFunction's 60 s can still start pages for a third of them
    needed = attempt_seconds(longest) + sweeper.MIN_SECONDS_LEFT + sweeper.END_SECONDS
    assert 60 - needed >= 20
