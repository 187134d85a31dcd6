"""The whole local stack as `make run` starts it (``python -m herald.local``: the API, the workers polling the
queues as the template's event sources describe them, the schedule's sweep, moto), in its own process, at the
scale the delivery engine is judged at: a fan-out to 1,000 subscriptions and a burst of events arrive at real
receivers exactly once, each verified with ``standardwebhooks``; a failing subscriber with 100 deliveries
waiting for their next attempt leaves almost nothing in flight on the work queue.

Everything is waited for as a condition (receivers' counts, the events' counts, the queue's attributes), never
for a fixed time; the stack's process group is stopped whatever happens."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.local_stack_support import (
    DELIVER_SECONDS,
    START_SECONDS,
    Stack,
    api_of,
    arrivals,
    new_tenant,
    running_stack,
    subscribe_all,
    wait_for,
    wait_until_settled,
)
from tests.support import INVOICE, Receiver

#: Longer than the conditions' ceilings together, so that a condition that fails says what it saw.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(START_SECONDS + 3 * DELIVER_SECONDS)]

ADMIN_KEY = f"hra_scale_{uuid.uuid4().hex}"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
#: The issue's bar: 100 deliveries waiting for a later attempt hold at most this many messages in flight.
MAX_IN_FLIGHT = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack") / "stack.log", ADMIN_KEY) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with api_of(stack) as client:
        yield client


def test_a_fanout_to_1000_subscriptions_and_a_burst_arrive_exactly_once_signed(
    stack: Stack, api: httpx.Client, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN a tenant with 1,000 subscriptions spread over four receivers, and another with three
    receivers = [make_receiver() for _ in range(5)]
    big, big_headers = new_tenant(api, ADMIN, "Thousand")
    secrets = subscribe_all(api, big_headers, [f"{receivers[n % 4].url}/big/{n}" for n in range(1000)])
    small, small_headers = new_tenant(api, ADMIN, "Burst")
    secrets |= subscribe_all(api, small_headers, [f"{receivers[4].url}/small/{n}" for n in range(3)])
    assert len(secrets) == 1003

    # WHEN an event is published to the first tenant (a fan-out message, pages of routes), and a burst of 120
    # to the second: a batch of 100 and 20 single calls, sent together
    fanout = api.post("/v1/events", json={"type": "invoice.paid", "tenant_id": big, "data": INVOICE}, headers=ADMIN)
    assert fanout.status_code == 202, fanout.text

    def single(n: int) -> str:
        body = {"type": "invoice.paid", "tenant_id": small, "id": f"burst-single-{n}", "data": INVOICE}
        published = api.post("/v1/events", json=body, headers=ADMIN)
        assert published.status_code == 202, published.text
        return str(published.json()["id"])

    batch = [{"type": "invoice.paid", "tenant_id": small, "id": f"burst-{n}", "data": INVOICE} for n in range(100)]
    with ThreadPoolExecutor(8) as pool:
        singles = pool.map(single, range(20))
        answered = api.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
        burst = list(singles)
    assert answered.status_code == 200, answered.text
    assert {item["status"] for item in answered.json()["data"]} == {202}
    burst += [item["event"]["id"] for item in answered.json()["data"]]
    event_ids = [fanout.json()["id"], *burst]
    expected = 1000 + 3 * 120

    # THEN every delivery arrives, and the events' counts settle with each matched delivery succeeded
    wait_for(lambda: len(arrivals(receivers)) >= expected, lambda: f"{len(arrivals(receivers))} arrived", stack)
    wait_until_settled(api, ADMIN, event_ids, stack)
    # AND each subscription got each of its events exactly once, with a signature its secret verifies
    arrived = arrivals(receivers)
    assert len(arrived) == expected
    assert [key for key, times in arrived.items() if times > 1] == []
    by_path: dict[str, set[str]] = {}
    for path, webhook_id in arrived:
        by_path.setdefault(path, set()).add(webhook_id)
    big_paths = {path for path in by_path if "/big/" in path}
    assert big_paths == {httpx.URL(receivers[n % 4].url).path + f"/big/{n}" for n in range(1000)}
    assert all(by_path[path] == {event_ids[0]} for path in big_paths)
    assert sorted(len(ids) for path, ids in by_path.items() if "/small/" in path) == [120, 120, 120]
    for receiver in receivers:
        for got in receiver.received:
            payload: Any = Webhook(secrets[got.path]).verify(got.body, got.headers)
            assert (payload["type"], payload["data"]) == ("invoice.paid", INVOICE)


def test_a_hundred_deliveries_waiting_to_retry_hold_almost_nothing_in_flight(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    # GIVEN a subscriber that answers 500 to everything
    receiver.default = (500, {}, b"down", 0.0)
    tenant, headers = new_tenant(api, ADMIN, "Failing")
    (secret,) = subscribe_all(api, headers, [f"{receiver.url}/down"]).values()
    # WHEN 100 events are published to it
    batch = [{"type": "invoice.paid", "tenant_id": tenant, "data": INVOICE} for _ in range(100)]
    answered = api.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
    assert answered.status_code == 200, answered.text
    events = {item["event"]["id"] for item in answered.json()["data"]}
    assert len(events) == 100

    # THEN each is attempted at once and again after the schedule's first wait (5 s), then waits 5 minutes for
    # its third attempt: as a delayed copy on the work queue, not a message held in flight
    def tries() -> Counter[str]:
        with receiver.lock:
            return Counter(got.headers["webhook-id"] for got in receiver.received)

    wait_for(lambda: set(tries()) == events and min(tries().values()) >= 2, lambda: f"attempts {tries()}", stack)
    seen: list[dict[str, int]] = []

    def waiting() -> bool:
        seen.append(stack.work_queue_attributes())
        return seen[-1]["delayed"] == 100 and seen[-1]["in_flight"] <= MAX_IN_FLIGHT

    wait_for(waiting, lambda: f"the work queue showed {seen[-5:]}", stack)
    assert max(tries().values()) == 2
    # AND a few looks more, while nothing is due, find no more in flight
    for _ in range(10):
        assert stack.work_queue_attributes()["in_flight"] <= MAX_IN_FLIGHT
    for got in receiver.received:
        Webhook(secret).verify(got.body, got.headers)
