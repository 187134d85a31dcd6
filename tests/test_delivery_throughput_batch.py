"""A batch as DeliveryBatching: throughput gathers it under load: 100 messages of ten deliveries, 1,000 deliveries in
one invocation, more than the HTTP client's connections. Every webhook arrives once, signed, in that one
invocation."""

from __future__ import annotations

import copy
from collections import Counter
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from herald import sender
from herald.local.event_sources import EventSourceSettings, delivery_event_source
from herald.local.resources import load_template
from herald.messages import MAX_DELIVERIES_PER_MESSAGE
from tests.delivery_support import Harness, event_counts, make_harness, subscribe, verify
from tests.support import ADMIN, INVOICE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import boto3
    from fastapi.testclient import TestClient

    from herald.services import Services
    from tests.support import Clock, Receiver, TenantInfo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: The HTTP client's connections in this test (256 in Herald): the batch's 1,000 attempts take them in waves.
CONNECTIONS = 64
SUBSCRIPTIONS = 100
EVENTS = 10


@pytest.fixture
def settings_overrides() -> dict[str, float]:
    """The receivers answer at once, but they are threads of this process, on a machine the suite may keep busy: an
    answer later than the slow lane's 2 s would be cut short and sent again from the slow lane (a duplicate the
    README documents for endpoints that slow). This test is of the happy path."""
    return {"slow_lane_after_seconds": 10}


def _throughput_source() -> EventSourceSettings:
    template = copy.deepcopy(load_template())
    template["Parameters"]["DeliveryBatching"]["Default"] = "throughput"
    return delivery_event_source(template)


@pytest.fixture
def harness(
    services: Services, aws: boto3.session.Session, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """The worker polling the work queue as the throughput setting's event source does, under load (full
    batches), with fewer connections than a batch has deliveries."""
    monkeypatch.setattr(sender, "MAX_CONNECTIONS", CONNECTIONS)
    source = _throughput_source()
    made = make_harness(services, aws, clock=clock, batch_size=source.batch_size)
    made.poller.window = source.maximum_batching_window_seconds  # a batch fills within it (the burst is queued)
    yield made
    made.close()


def test_a_full_throughput_batch_of_a_thousand_deliveries_arrives_once_each_signed_in_one_invocation(
    client: TestClient, tenant: TenantInfo, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN 100 subscriptions (on 4 endpoints, a path each) and 10 events published to all of them in one batch:
    # 1,000 deliveries, which the events' fan-out messages queue ten to a message
    assert _throughput_source().batch_size * MAX_DELIVERIES_PER_MESSAGE == SUBSCRIPTIONS * EVENTS
    receivers = [make_receiver() for _ in range(4)]
    urls = [f"{receivers[n % 4].url}/{n}" for n in range(SUBSCRIPTIONS)]
    secrets = {urlsplit(url).path: subscribe(client, tenant, url).secret for url in urls}
    events = [{"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id} for _ in range(EVENTS)]
    response = client.post("/v1/events/batch", json={"events": events}, headers=ADMIN)
    assert response.status_code == 200, response.text
    event_ids = [item["event"]["id"] for item in response.json()["data"]]
    fanouts = harness.poller.poll_once()
    assert fanouts.received == EVENTS
    # WHEN the worker takes one full batch of the work queue
    batch = harness.poller.poll_once()
    # THEN it was the 100 messages of the 1,000 deliveries, all done in that one invocation
    assert (batch.received, batch.deleted, batch.failed) == (100, 100, 0)
    assert harness.counts() == (0, 0)
    # AND each subscription got each event once, signed with its own secret, though the attempts outnumbered the
    # connections 1,000 to 64
    arrived: Counter[tuple[str, str]] = Counter()
    for receiver in receivers:
        for got in receiver.received:
            verify(secrets[got.path], got)
            arrived[got.path, got.headers["webhook-id"]] += 1
    assert set(arrived.values()) == {1}
    assert len(arrived) == SUBSCRIPTIONS * EVENTS
    assert {event for _, event in arrived} == set(event_ids)
    harness.drain()
    assert [event_counts(client, event_id)["succeeded"] for event_id in event_ids] == [SUBSCRIPTIONS] * EVENTS
