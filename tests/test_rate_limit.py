"""A subscription's rate limit holds across concurrent workers: over the rate, deliveries are postponed,
never failed nor dropped.

The postponement test runs a worker on a simulated clock that never waits for a slot itself, so every
delivery over the rate goes back to the queue and comes back for its slot.

The burst test runs two workers (two emulated Lambda invocations at a time, each with its own AWS
clients) on the real clock against a real receiver on 127.0.0.1 that notes when each delivery arrives.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from standardwebhooks import Webhook

from herald import sender
from herald.faults import install
from herald.local.loopback import LoopbackServer, QuietHandler
from herald.local.poller import SqsPoller
from herald.services import Services
from herald.storage import keys
from herald.storage.health import RateSlot
from herald.storage.table import to_item
from herald.worker import Worker, settle_all
from herald.worker.pacing import POSTPONE_JITTER_SECONDS, Skip
from tests.chaos_support import verify_signature
from tests.delivery_support import CallRecorder, deliveries, make_harness, publish, step, subscribe
from tests.support import ADMIN, INVOICE, Clock, Receiver, TenantInfo

if TYPE_CHECKING:
    import boto3

    from herald.settings import Settings

pytestmark = pytest.mark.e2e

BURST = 200
RATE = 10
#: The limiter lets deliveries start at least 1/RATE s apart: a window of W seconds holds at most W x RATE + 1
#: starts, and the whole burst spans at least (BURST - 1) / RATE seconds. Arrivals are what the receiver sees, a
#: start plus the request's way through two workers' threads and the loopback, which a busy machine stretches
#: unevenly: a stall of the sending process lets the requests started during it arrive together. The checks allow
#: up to JITTER seconds of such bunching, and still fail a limiter letting deliveries through 40 % faster than the
#: rate (70 starts in five seconds, a burst over in 14.2 s).
JITTER = 1.5
WINDOW = 5.0
MOST_PER_WINDOW = int(WINDOW * RATE + 1 + JITTER * RATE)
SHORTEST_SPAN = (BURST - 1) / RATE - JITTER


class TimedReceiver:
    """A real HTTP server that notes the arrival time (monotonic) and headers of every POST, and answers 200."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.read_body()
                with outer.lock:
                    outer.arrivals.append((arrived, {k.lower(): v for k, v in self.headers.items()}, body))
                self.answer(200)

        self.http = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return self.http.url()

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def timed_receiver() -> Iterator[TimedReceiver]:
    server = TimedReceiver()
    yield server
    server.close()


def _most_within(times: list[float], seconds: float) -> int:
    """The largest number of arrivals in any window of ``seconds`` (sliding, not aligned to seconds)."""
    times = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_a_burst_to_a_rate_limited_subscription_arrives_within_the_rate_and_in_full(
    client, tenant: TenantInfo, services: Services, settings, aws, timed_receiver: TimedReceiver
) -> None:
    # GIVEN a subscription limited to 10 deliveries a second
    # Long on purpose: one GIVEN / WHEN / THEN story, read from start to end.
    created = client.post(
        "/v1/subscriptions",
        json={"url": timed_receiver.url, "event_types": ["invoice.paid"], "rate_limit": RATE},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["rate_limit"] == RATE
    sub_id, secret = created.json()["id"], created.json()["secret"]
    # AND a burst of 200 events published to its tenant
    for index in range(BURST):
        body = {"type": "invoice.paid", "data": {**INVOICE, "invoice_id": f"in_{index}"}, "tenant_id": tenant.id}
        assert client.post("/v1/events", json=body, headers=ADMIN).status_code == 202
    # WHEN two workers drain the queue at the same time, each as one Lambda invocation after another
    workers = [Worker(services), Worker(Services.create(settings, session=aws))]
    pollers = [
        SqsPoller(
            aws.client("sqs"),
            settings.queue_url,
            worker.handle,
            batch_size=100,
            batching_window_seconds=0,
            function_timeout_seconds=60,
        )
        for worker in workers
    ]
    stop = threading.Event()

    def run(poller: SqsPoller) -> None:
        while not stop.is_set():
            if poller.poll_once().received == 0:
                stop.wait(0.2)

    try:
        with ThreadPoolExecutor(len(pollers)) as pool:
            running = [pool.submit(run, poller) for poller in pollers]
            # the pollers stop before the executor's exit waits for them, whatever happens meanwhile
            try:
                give_up = time.monotonic() + 240
                while timed_receiver.count() < BURST and time.monotonic() < give_up:
                    time.sleep(0.5)
                time.sleep(2)  # any duplicate would show up now
            finally:
                stop.set()
            for future in running:
                future.result(timeout=120)
    finally:
        stop.set()
        settle_all(workers)
    # THEN every event arrived exactly once, signed
    ids = [headers["webhook-id"] for _, headers, _ in timed_receiver.arrivals]
    assert len(ids) == BURST, f"{len(ids)} deliveries arrived"
    assert len(set(ids)) == BURST
    for _, headers, raw in timed_receiver.arrivals[:5]:
        assert Webhook(secret).verify(raw, headers)["type"] == "invoice.paid"
    # AND no window of five seconds saw more than the rate allows, nor did the burst end sooner than the rate
    # allows (both give the arrivals' jitter its due: see JITTER)
    arrived = sorted(moment for moment, _, _ in timed_receiver.arrivals)
    most = _most_within(arrived, WINDOW)
    assert most <= MOST_PER_WINDOW, f"{most} deliveries arrived within {WINDOW} s"
    assert arrived[-1] - arrived[0] >= SHORTEST_SPAN, f"the burst arrived in {arrived[-1] - arrived[0]:.1f} s"
    # AND none was dead-lettered, however often it was postponed
    dlq = aws.client("sqs").get_queue_attributes(
        QueueUrl=settings.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"
    # AND the postponements were not attempts: each delivery succeeded at its first and only attempt
    listed = deliveries(client, tenant, sub_id, limit=250)
    assert len(listed) == BURST
    assert {(item["status"], item["attempts"]) for item in listed} == {("succeeded", 1)}


def test_concurrent_takes_of_one_slot_grant_it_once(services: Services) -> None:
    # GIVEN a subscription's rate of 5 a second, and 20 workers asking for a slot at the same moment
    now = time.time()
    with ThreadPoolExecutor(20) as pool:
        slots = list(
            pool.map(lambda _: services.store.health.take_rate_slot("sub_x", interval=0.2, now=now), range(20))
        )
    # THEN exactly one got it; the others are told to wait until the next slot, 0.2 s later
    assert slots.count(RateSlot(0.0, taken=True)) == 1
    assert all(slot.wait == pytest.approx(0.2, abs=1e-6) for slot in slots if not slot.taken)
    # AND that slot is free once its time has come, and not before
    early = services.store.health.take_rate_slot("sub_x", interval=0.2, now=now + 0.1)
    assert not early.taken
    assert early.wait == pytest.approx(0.1, abs=1e-6)
    assert services.store.health.take_rate_slot("sub_x", interval=0.2, now=now + 0.2) == RateSlot(0.0, taken=True)


def test_concurrent_takes_reserve_the_slots_ahead_one_apart(services: Services) -> None:
    # GIVEN a subscription's rate of 5 a second, and 20 workers asking for a slot at the same moment, each ready to
    # wait up to 10 s for it
    now = time.time()
    with ThreadPoolExecutor(20) as pool:
        slots = list(
            pool.map(
                lambda _: services.store.health.take_rate_slot("sub_x", interval=0.2, now=now, within=10.0), range(20)
            )
        )
    # THEN each got a slot of its own: the next 20, 0.2 s apart, the first now
    assert all(slot.taken for slot in slots)
    assert sorted(round(slot.wait, 6) for slot in slots) == [round(index * 0.2, 6) for index in range(20)]
    # AND the slots are counted until the last of them: the next is 4 s away, out of reach for one ready to wait 3 s,
    # who takes none
    item = services.store.table.read(keys.rate_slot("sub_x"))
    assert item is not None
    assert item["tat"] - now == pytest.approx(4.0, abs=1e-6)
    late = services.store.health.take_rate_slot("sub_x", interval=0.2, now=now, within=3.0, busy=True)
    assert not late.taken
    assert late.wait == pytest.approx(4.0, abs=1e-6)
    assert services.store.table.read(keys.rate_slot("sub_x")) == item


def test_a_reservation_whose_answer_was_lost_is_the_callers_once(services: Services) -> None:
    # GIVEN a subscription limited to 1 a second whose slot another worker has just taken
    store = services.store
    now = time.time()
    assert store.health.take_rate_slot("sub_x", interval=1.0, now=now) == RateSlot(0.0, taken=True)
    # WHEN a worker reserves the next, and DynamoDB's answer to its write is lost (botocore sends it again, and its
    # own first send refuses the resend)
    injector = install(store.client, "dynamodb.UpdateItem:lost@send=1")
    assert injector is not None
    slot = store.health.take_rate_slot("sub_x", interval=1.0, now=now, within=5.0, busy=True)
    assert injector.count("lost", stage="send") == 1
    # THEN it holds the next slot, a second away, and took only that one: the one after is two seconds away
    assert slot.taken
    assert slot.wait == pytest.approx(1.0, abs=1e-6)
    item = store.table.read(keys.rate_slot("sub_x"))
    assert item is not None
    assert item["tat"] - now == pytest.approx(2.0, abs=1e-6)


async def _not_forwarded() -> bool:
    return False


@pytest.mark.parametrize("together", [True, False], ids=["ten-at-once", "one-at-a-time"])
def test_workers_at_a_subscriptions_rate_take_one_write_per_slot(
    settings: Settings, aws: boto3.session.Session, together: bool
) -> None:
    # GIVEN four workers, each with its own AWS clients, and ten deliveries in each of them for one subscription
    # limited to 20 a second: 40 slots over 2 s, each within the local wait; in each worker the ten ask together
    # (one line of ten), or one after another (a line of one at a time, as a worker whose batches each carry one)
    workers = [Worker(Services.create(settings, session=aws)) for _ in range(4)]
    updates = [CallRecorder(worker.store.client, ["UpdateItem"]) for worker in workers]

    async def ask(worker: Worker) -> float | Skip:
        turn = await worker.pacer.slot("sub_x", 20, deadline=time.time() + 60, forwarded=_not_forwarded)
        if turn == 0.0:
            worker.connections.release()
        return turn

    def run(worker: Worker) -> list[float | Skip]:
        async def asking() -> list[float | Skip]:
            if together:
                return list(await asyncio.gather(*(ask(worker) for _ in range(10))))
            return [await ask(worker) for _ in range(10)]

        return worker.loop.run_until_complete(asking())

    try:
        # WHEN the workers ask for their slots at once
        with ThreadPoolExecutor(len(workers)) as pool:
            turns = [turn for each in pool.map(run, workers) for turn in each]
    finally:
        settle_all(workers)
        for recorder in updates:
            recorder.close()
    # THEN every delivery got a slot in its worker, none postponed
    assert turns == [0.0] * 40
    # AND the slot item took about one write a slot (racing for the next free slot, each worker's take refused by
    # the others' costs about one write per worker a slot: 4 here)
    writes = [
        call
        for recorder in updates
        for call in recorder.of("UpdateItem")
        if call.params["Key"] == to_item(keys.rate_slot("sub_x"))
    ]
    assert len(writes) <= 1.5 * 40, len(writes)


def _slots_after_a_wait_for_the_connection(
    worker: Worker, held: float, *, askers: int = 1, before_release: Callable[[], None] = lambda: None
) -> tuple[list[float | Skip], float]:
    """Ask the worker's pacer for ``askers`` slots of ``sub_x`` (1 a second) at once while another attempt holds the
    worker's one connection for ``held`` seconds; ``before_release`` runs just before it gives the connection back.
    Returns the pacer's answers and when the connection was given back (epoch seconds). Each asker that gets a
    slot gives its connection back at once (as if its attempt took no time)."""

    async def ask() -> float | Skip:
        turn = await worker.pacer.slot("sub_x", 1, deadline=time.time() + 60, forwarded=_not_forwarded)
        if turn == 0.0:
            worker.connections.release()
        return turn

    async def scenario() -> tuple[list[float | Skip], float]:
        await worker.connections.acquire()
        asking = [asyncio.ensure_future(ask()) for _ in range(askers)]
        await asyncio.sleep(held)
        before_release()
        released = time.time()
        worker.connections.release()
        return list(await asyncio.gather(*asking)), released

    return worker.loop.run_until_complete(scenario())


def _taking_the_slot(services: Services) -> Callable[[], None]:
    """Another worker taking ``sub_x``'s slot (1 a second) now: the next is free a second later."""

    def take() -> None:
        assert services.store.health.take_rate_slot("sub_x", interval=1.0, now=time.time()) == RateSlot(0.0, taken=True)

    return take


def test_a_slot_taken_after_a_wait_for_the_connection_is_taken_at_the_time_it_is_taken(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker with one connection, held by another attempt for 1.5 s while a delivery of a subscription
    # limited to 1 a second asks for its slot
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    worker = Worker(services)
    try:
        # WHEN it gets the connection, then its slot
        (turn,), released = _slots_after_a_wait_for_the_connection(worker, 1.5)
    finally:
        settle_all([worker])
    # THEN the next slot, for every worker, is a whole interval after the moment the slot was taken (after the
    # connection came back), not after the moment the delivery began to wait: no two starts closer than 1 s
    assert turn == 0.0
    item = services.store.table.read(keys.rate_slot("sub_x"))
    assert item is not None
    assert float(item["tat"]) >= released + 1.0


def test_a_slot_taken_after_a_wait_for_one_of_the_workers_threads_is_taken_at_the_time_it_is_taken(
    services: Services,
) -> None:
    # GIVEN a worker on a simulated clock whose threads are all busy (the batch's other AWS calls): each call it
    # hands them waits 5 s for one
    clock = Clock(time.time())
    worker = Worker(services, clock=clock)
    io = worker.io

    async def after_a_wait_for_a_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        clock.advance(5)
        return await io(function, *args, **kwargs)

    worker.io = after_a_wait_for_a_thread  # type: ignore[method-assign]
    asked = clock()

    async def ask() -> float | Skip:
        turn = await worker.pacer.slot("sub_x", 1, deadline=clock() + 60, forwarded=_not_forwarded)
        if turn == 0.0:
            worker.connections.release()
        return turn

    try:
        # WHEN a delivery of a subscription limited to 1 a second asks for its slot
        turn = worker.loop.run_until_complete(ask())
    finally:
        settle_all([worker])
    # THEN the slot is taken at the time the call is made, 5 s after it was asked for: the next one, for every
    # worker, opens a whole interval after that (dated when it was asked for, it would open 4 s before this
    # attempt starts, and another worker's delivery could start with it)
    assert turn == 0.0
    item = services.store.table.read(keys.rate_slot("sub_x"))
    assert item is not None
    assert float(item["tat"]) - asked == pytest.approx(5 + 1.0)


def test_the_wait_for_a_connection_does_not_count_against_the_local_wait_for_a_slot(
    settings: Settings, aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker with one connection that waits up to 2 s for a slot, the connection held by another attempt
    # for 1.5 s while a delivery of a subscription limited to 1 a second asks for its slot; meanwhile another
    # worker takes the subscription's slot, so the next is free 1 s after the connection comes back
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    services = Services.create(settings.model_copy(update={"rate_limit_local_wait_seconds": 2}), session=aws)
    worker = Worker(services)
    another_worker_takes_the_slot = _taking_the_slot(services)
    try:
        # WHEN it gets the connection
        (turn,), _ = _slots_after_a_wait_for_the_connection(worker, 1.5, before_release=another_worker_takes_the_slot)
    finally:
        settle_all([worker])
    # THEN it waits the second for its slot in the worker (1.5 s for the connection and 1 s for the slot would be
    # over 2 s), not postponed through the queue
    assert turn == 0.0


def test_the_heads_wait_for_a_connection_does_not_count_against_the_local_wait_of_those_behind_it(
    settings: Settings, aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker with one connection that waits up to 4 s for a slot, the connection held by another attempt
    # for 3 s while two deliveries of a subscription limited to 1 a second ask for their slots; meanwhile another
    # worker takes the subscription's slot, so the next is free 1 s after the connection comes back
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    services = Services.create(settings.model_copy(update={"rate_limit_local_wait_seconds": 4}), session=aws)
    worker = Worker(services)
    another_worker_takes_the_slot = _taking_the_slot(services)
    try:
        # WHEN the connection comes back
        turns, _ = _slots_after_a_wait_for_the_connection(
            worker, 3, askers=2, before_release=another_worker_takes_the_slot
        )
    finally:
        settle_all([worker])
    # THEN both wait for their slots in the worker, a second each: the one behind waited 3 s for the head's
    # connection, which does not count (counted, 3 + 1 + 1 s would be over 4 s, and it would be postponed)
    assert turns == [0.0, 0.0]


def test_a_subscription_gone_on_the_slow_lane_while_the_head_waited_for_its_slot_sends_nothing_at_it(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker with one connection, a subscription limited to 1 a second whose slot another worker has
    # just taken, and a delivery of it that this worker finds on the slow lane after its wait for a slot
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    worker = Worker(services)
    assert services.store.health.take_rate_slot("sub_x", interval=1.0, now=time.time()) == RateSlot(0.0, taken=True)
    before = services.store.table.read(keys.rate_slot("sub_x"))
    checks: list[bool] = []

    async def forwarded_after_the_first_check() -> bool:
        checks.append(bool(checks))
        return checks[-1]

    async def scenario() -> float | Skip:
        return await worker.pacer.slot("sub_x", 1, deadline=time.time() + 60, forwarded=forwarded_after_the_first_check)

    try:
        # WHEN it asks for its slot
        turn = worker.loop.run_until_complete(scenario())
        # THEN it is forwarded after its wait, instead of starting at the slot it reserved (the next one, a second
        # after the other worker's: that one slot goes unused), and gave the connection back
        assert (turn, checks) == (Skip.FORWARDED, [False, True])
        after = services.store.table.read(keys.rate_slot("sub_x"))
        assert before is not None
        assert after is not None
        assert after["tat"] - before["tat"] == pytest.approx(1.0, abs=1e-6)
        assert not worker.connections.locked()
    finally:
        settle_all([worker])


def test_a_delivery_whose_subscription_went_on_the_slow_lane_is_forwarded_before_it_takes_a_slot(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker with one connection, and a delivery of a rate-limited subscription that the worker finds on
    # the slow lane once it holds the connection
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", 1)
    worker = Worker(services)
    forwarded: list[str] = []

    async def forward() -> bool:
        forwarded.append("sub_x")
        return True

    async def scenario() -> float | Skip:
        return await worker.pacer.slot("sub_x", 1, deadline=time.time() + 60, forwarded=forward)

    try:
        # WHEN it asks for its slot
        turn = worker.loop.run_until_complete(scenario())
        # THEN it was forwarded, took no slot of the subscription's rate, and gave the connection back
        assert (turn, forwarded) == (Skip.FORWARDED, ["sub_x"])
        assert services.store.table.read(keys.rate_slot("sub_x")) is None
        assert not worker.connections.locked()
    finally:
        settle_all([worker])


def test_rate_limit_is_validated_and_can_be_changed_or_removed(client, tenant: TenantInfo) -> None:
    # GIVEN a subscription without a limit
    created = client.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/h", "event_types": ["*"]}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    assert created.json()["rate_limit"] is None
    # WHEN a limit is set, THEN it shows; a zero or negative one is refused
    assert (
        client.patch(f"/v1/subscriptions/{sub_id}", json={"rate_limit": 0}, headers=tenant.headers).status_code == 422
    )
    patched = client.patch(f"/v1/subscriptions/{sub_id}", json={"rate_limit": 25}, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["rate_limit"] == 25
    # AND another change leaves it as it was, while null removes it
    kept = client.patch(f"/v1/subscriptions/{sub_id}", json={"description": "x"}, headers=tenant.headers)
    assert kept.json()["rate_limit"] == 25
    removed = client.patch(f"/v1/subscriptions/{sub_id}", json={"rate_limit": None}, headers=tenant.headers)
    assert removed.json()["rate_limit"] is None


def test_deliveries_over_the_rate_are_postponed_through_the_queue_and_all_arrive_once(
    client, tenant: TenantInfo, settings, aws, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a worker on a simulated clock that never waits for a slot itself (every delivery over the rate is
    # postponed through the queue), and a subscription limited to 2 deliveries a second
    services = Services.create(settings.model_copy(update={"rate_limit_local_wait_seconds": 0}), session=aws)
    harness = make_harness(services, aws, clock=clock)
    created = client.post(
        "/v1/subscriptions",
        json={"url": receiver.url, "event_types": ["invoice.paid"], "rate_limit": 2},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    sub_id, secret = created.json()["id"], created.json()["secret"]
    # AND six events published at once
    for index in range(6):
        body = {"type": "invoice.paid", "data": {**INVOICE, "invoice_id": f"in_{index}"}, "tenant_id": tenant.id}
        assert client.post("/v1/events", json=body, headers=ADMIN).status_code == 202
    try:
        # WHEN the worker runs, and runs again as each second passes
        harness.drain()
        first_round = len(receiver.received)
        for _ in range(20):
            if len(receiver.received) == 6 and harness.counts() == (0, 0):
                break
            step(harness, clock, 1.0)
    finally:
        harness.close()
    # THEN only one went at once: the others were postponed through the queue (hidden, then shown again)
    assert first_round == 1
    assert len(harness.holds) >= 5
    assert all(1 <= hold <= 4 for hold in harness.holds)
    # AND every event arrived exactly once, signed, never more than 2 in one second of the clock
    ids = [got.headers["webhook-id"] for got in receiver.received]
    assert len(ids) == len(set(ids)) == 6
    for got in receiver.received:
        assert verify_signature(secret, got)["type"] == "invoice.paid"
    assert max(Counter(int(got.headers["webhook-timestamp"]) for got in receiver.received).values()) <= 2
    # AND a postponement is not an attempt, and nothing was dead-lettered
    listed = deliveries(client, tenant, sub_id)
    assert {(item["status"], item["attempts"]) for item in listed} == {("succeeded", 1)}
    assert harness.counts(settings.dead_letter_queue_url) == (0, 0)


@pytest.mark.parametrize(
    ("settings_overrides", "waited"),
    # 2 s is the deployment's default (the tests' settings fixture takes 4 s)
    [({"slow_lane_after_seconds": 2.0}, False), ({"slow_lane_after_seconds": 10.0}, True)],
    ids=["hand-over-2s", "hand-over-10s"],
)
def test_on_the_work_queue_a_slot_is_waited_for_no_longer_than_a_hanging_endpoint_holds_an_invocation(
    client, make_tenant, services: Services, aws: Any, receiver: Receiver, waited: bool
) -> None:
    # GIVEN a subscription limited to one delivery a second whose slots other workers took for the next 4.5 s (under
    # the 5 s local wait), and another tenant's subscription, each with events on the work queue
    limited_tenant, other = make_tenant("limited"), make_tenant("other")
    limited = subscribe(client, limited_tenant, receiver.url, rate_limit=1)
    subscribe(client, other, receiver.url)
    for _ in range(3):
        publish(client, other.id)
    publish(client, limited_tenant.id)
    table = services.store.table
    harness = make_harness(services, aws, clock=time.time)
    try:
        # (the slots are taken right before the worker runs: the time between counts down the 4.5 s in real time,
        # and past 2.5 s the slot would open within the work queue's wait)
        written = time.time()
        opens = written + 4.5
        slot = {**keys.rate_slot(limited.id), "tat": opens, "expires_at": int(written) + 3600}
        table.client.put_item(TableName=table.name, Item=to_item(slot))
        # WHEN the worker takes the batch from the work queue
        assert harness.poller.poll_once().received == 4
        done = time.time()
    finally:
        harness.close()
    # THEN the other tenant's deliveries went at once, and the limited one, whose slot opens later than a hanging
    # endpoint may hold a work queue invocation (slow_lane_after_seconds, 2 s), was postponed through the queue, not
    # waited for: a wait would hold the invocation, and every tenant's next batch, to its end. Under that bound it is
    # waited for and sent in the same invocation.
    sent = {got.headers["webhook-id"] for got in receiver.received}
    assert len(receiver.received) == (4 if waited else 3)
    assert len(sent) == len(receiver.received)
    if waited:
        assert harness.holds == []
    else:
        # held until about its slot: the time the slot had left when the worker held it (between the slot's write
        # and the end of the invocation), plus a jitter under POSTPONE_JITTER_SECONDS, rounded up to the second
        (held,) = harness.holds
        assert opens - done <= held <= opens - written + POSTPONE_JITTER_SECONDS + 1
        assert [item["attempts"] for item in deliveries(client, limited_tenant, limited.id)] == [0]
