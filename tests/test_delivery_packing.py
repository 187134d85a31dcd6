"""Messages of several deliveries: publishing and the fan-out pack a tenant's first deliveries up to ten to a
message; the worker works each as its own message would be, and anything after a first attempt (a retry, a
hand-over, a hold) is a message of its own."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from herald.messages import (
    MAX_DELIVERIES_PER_MESSAGE,
    DeliveriesMessage,
    DeliveryMessage,
    FanoutMessage,
    PoisonMessageError,
    WorkMessage,
    dump_message,
    pack,
    parse_message,
)
from herald.records import Trigger
from herald.storage.keys import subscription
from herald.worker.runtime import ERROR_TEXT_MAX
from tests.api_support import queue_messages
from tests.delivery_support import (
    Harness,
    delivery_id_of,
    event_counts,
    publish,
    subscribe,
    verify,
)
from tests.support import ADMIN, INVOICE

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi.testclient import TestClient

    from herald.storage import Store
    from tests.support import Clock, Receiver, TenantInfo

pytestmark = pytest.mark.e2e


def _delivery(n: int, tenant_id: str = "tnt_a", **fields: Any) -> DeliveryMessage:
    return DeliveryMessage(
        event_id=f"evt_{n}", tenant_id=tenant_id, subscription_id=f"sub_{n}", delivery_id=f"dlv_{n}", **fields
    )


def test_pack_puts_a_tenants_first_deliveries_ten_to_a_message_and_leaves_everything_else_alone() -> None:
    # GIVEN 23 plain first deliveries of one tenant, 1 of another, and messages that must stay as they are
    plain = [_delivery(n) for n in range(23)]
    alone = _delivery(99, "tnt_b")
    others: list[WorkMessage] = [
        _delivery(100, resumed=True),
        _delivery(101, lane="slow"),
        _delivery(102, trigger=Trigger.MANUAL, job_id="rdl_1"),
        _delivery(103, trigger=Trigger.TEST),
        FanoutMessage(event_id="evt_f", tenant_id="tnt_a"),
    ]
    # WHEN they are packed
    packed = pack([*plain[:12], alone, *others, *plain[12:]])
    # THEN the tenant's deliveries are in messages of 10, 10 and 3, in order; the other tenant's one stays a
    # delivery message of its own; the rest is untouched
    assert MAX_DELIVERIES_PER_MESSAGE == 10
    many = [m for m in packed if isinstance(m, DeliveriesMessage)]
    assert [len(m.deliveries) for m in many] == [10, 10, 3]
    assert {m.tenant_id for m in many} == {"tnt_a"}
    assert [d for m in many for d in m.each()] == plain
    assert alone in packed
    assert [m for m in packed if m in others] == others
    assert len(packed) == 3 + 1 + len(others)
    # AND a packed message reads back as what it carries, and holds at most MAX_DELIVERIES_PER_MESSAGE
    assert parse_message(dump_message(many[0])) == many[0]
    too_many = many[0].model_dump() | {"deliveries": [d.model_dump() for d in many[0].deliveries] * 2}
    with pytest.raises(PoisonMessageError):
        parse_message(json.dumps(too_many))
    with pytest.raises(PoisonMessageError):
        parse_message(json.dumps(many[0].model_dump() | {"deliveries": []}))


@pytest.mark.parametrize(("count", "queued_by"), [(10, "publishing"), (12, "the fan-out")])
def test_an_events_deliveries_go_ten_to_a_message_and_each_subscriber_gets_one_signed_webhook(
    client: TestClient,
    tenant: TenantInfo,
    harness: Harness,
    make_receiver: Callable[[], Receiver],
    count: int,
    queued_by: str,
) -> None:
    # GIVEN subscriptions, one receiver each: as many as publishing queues itself, or more (a fan-out message)
    assert harness.services.settings.direct_fanout_max == 10
    receivers = [make_receiver() for _ in range(count)]
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    # WHEN an event is published (and, for more routes, its fan-out message is worked)
    event_id = publish(client, tenant.id)
    queued = queue_messages(harness.sqs, harness.services.settings.queue_url)
    if queued_by == "publishing":
        messages = queued
    else:
        assert [m["kind"] for m in queued] == ["fanout"]
        harness.poller.poll_once()
        sent = harness.queue_calls.of("SendMessageBatch")
        messages = [json.loads(entry["MessageBody"]) for call in sent for entry in call.params["Entries"]]
    # THEN the deliveries were queued ten to a message, each subscription named once, under its delivery's id
    assert {m["kind"] for m in messages} == {"deliveries"}
    assert sorted(len(m["deliveries"]) for m in messages) == sorted([10, count - 10] if count > 10 else [10])
    planned = [d for m in messages for d in m["deliveries"]]
    assert sorted(d["subscription_id"] for d in planned) == sorted(s.id for s in subs)
    store = harness.services.store
    assert all(d["delivery_id"] == delivery_id_of(store, event_id, d["subscription_id"]) for d in planned)
    # AND once the worker has run (one batch, one read), every subscriber got the event once, signed with its
    # own secret
    harness.drain()
    assert [result.received for _, result in harness.batches] == [len(messages)]
    assert len(harness.table_calls.of("BatchGetItem")) == 1
    for r, sub in zip(receivers, subs, strict=True):
        (got,) = r.received
        assert verify(sub.secret, got)["data"] == INVOICE
    assert event_counts(client, event_id)["succeeded"] == count
    assert harness.counts() == (0, 0)


def test_a_batch_publish_packs_each_tenants_deliveries_across_its_events(
    client: TestClient,
    make_tenant: Callable[[str], TenantInfo],
    harness: Harness,
    make_receiver: Callable[[], Receiver],
) -> None:
    # GIVEN two tenants, one subscription each
    tenants = [make_tenant("Acme"), make_tenant("Globex")]
    receivers = [make_receiver() for _ in tenants]
    subs = [subscribe(client, t, r.url) for t, r in zip(tenants, receivers, strict=True)]
    # WHEN one batch publishes 15 events of the first and 4 of the second
    events = [{"type": "invoice.paid", "data": INVOICE, "tenant_id": tenants[0].id} for _ in range(15)]
    events += [{"type": "invoice.paid", "data": INVOICE, "tenant_id": tenants[1].id} for _ in range(4)]
    response = client.post("/v1/events/batch", json={"events": events}, headers=ADMIN)
    assert response.status_code == 200, response.text
    # THEN the first tenant's deliveries are two messages (10 and 5), the second's one (4): a message never
    # carries two tenants' deliveries
    messages = queue_messages(harness.sqs, harness.services.settings.queue_url)
    assert sorted((m["tenant_id"], len(m["deliveries"])) for m in messages) == sorted(
        [(tenants[0].id, 10), (tenants[0].id, 5), (tenants[1].id, 4)]
    )
    # AND each subscriber gets each of its tenant's events once, signed
    harness.drain()
    for r, sub, count in zip(receivers, subs, (15, 4), strict=True):
        ids = Counter(verify(sub.secret, got) and got.headers["webhook-id"] for got in r.received)
        assert len(ids) == count
        assert set(ids.values()) == {1}
    assert harness.counts() == (0, 0)


def test_a_packed_delivery_that_fails_is_carried_on_by_a_message_of_its_own(
    client: TestClient, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN three subscriptions, one of them answering 500 once
    receivers = [make_receiver() for _ in range(3)]
    receivers[1].responses.append((500, {}, b"down", 0.0))
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    event_id = publish(client, tenant.id)
    # WHEN the worker takes the one message of the three deliveries
    (result,) = [harness.poller.poll_once()]
    # THEN the message is done with; the failed delivery's retry waits as a delayed copy of its own, naming it
    # alone, and nothing is held in flight
    assert (result.received, result.deleted, result.failed) == (1, 1, 0)
    assert harness.in_flight() == 0
    assert harness.delayed() == 1
    (copy,) = [json.loads(sent.body) for sent in harness.queue_calls.sent() if '"resumed":true' in sent.body]
    assert copy["kind"] == "delivery"
    assert copy["subscription_id"] == subs[1].id
    assert copy["resumed"] is True
    assert [len(r.received) for r in receivers] == [1, 1, 1]
    # AND when the retry is due it is made once, and nothing else is sent again
    clock.advance(max(harness.holds) + 1)
    harness.reveal()
    harness.drain()
    assert [len(r.received) for r in receivers] == [1, 2, 1]
    assert event_counts(client, event_id)["succeeded"] == 3
    assert harness.counts() == (0, 0)


def _make_unreadable(store: Store, tenant_id: str, sub_id: str) -> dict[str, Any]:
    """Replace a subscription's item with one that does not read as a subscription (its reading raises, in the
    batch's read too); returns the item as it was, to put back."""
    key = {name: {"S": value} for name, value in subscription(tenant_id, sub_id).items()}
    kept: dict[str, Any] = store.client.get_item(TableName=store.table_name, Key=key)["Item"]
    store.client.put_item(TableName=store.table_name, Item={**key, "url": {"S": "not a subscription"}})
    return kept


def test_a_packed_message_whose_delivery_raises_comes_back_whole_and_sends_nothing_twice(
    client: TestClient,
    tenant: TenantInfo,
    harness: Harness,
    make_receiver: Callable[[], Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN three deliveries in one message, the subscription item of one of them unreadable (its reading raises,
    # in the batch's read too)
    receivers = [make_receiver() for _ in range(3)]
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    event_id = publish(client, tenant.id)
    store = harness.services.store
    kept = _make_unreadable(store, tenant.id, subs[1].id)
    # WHEN the worker takes it
    caplog.set_level(logging.WARNING)
    first = harness.poller.poll_once()
    # THEN the message failed (it comes back), after the two others were delivered, and the log names the delivery
    # that failed
    assert (first.received, first.deleted, first.failed) == (1, 0, 1)
    assert [len(r.received) for r in receivers] == [1, 0, 1]
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("deliveries of a message failed")]
    unlucky = delivery_id_of(store, event_id, subs[1].id)
    (failed,) = logged.__dict__["failed"]
    assert (failed["delivery_id"], failed["event_id"]) == (unlucky, event_id)
    # AND why: the exception that failed it (its type and text, cut to a log line's size)
    assert failed["error"].startswith("ValidationError: ")
    assert "Subscription" in failed["error"]
    assert len(failed["error"]) == ERROR_TEXT_MAX  # six validation errors run past it
    assert failed["error"].endswith("…")
    assert (logged.__dict__["tenant_id"], logged.__dict__["deliveries"]) == (tenant.id, 3)
    # AND once the subscription reads again, the message's next receive makes only the missing delivery
    store.client.put_item(TableName=store.table_name, Item=kept)
    harness.reveal()
    harness.drain()
    assert [len(r.received) for r in receivers] == [1, 1, 1]
    for r, sub in zip(receivers, subs, strict=True):
        verify(sub.secret, r.received[0])
    assert event_counts(client, event_id)["succeeded"] == 3
    assert harness.counts() == (0, 0)


def test_a_packed_message_that_keeps_failing_ends_in_the_dead_letter_queue_named_by_its_event(
    client: TestClient, tenant: TenantInfo, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN two deliveries in one message, the subscription of one of them unreadable for good
    receivers = [make_receiver() for _ in range(2)]
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    event_id = publish(client, tenant.id)
    _make_unreadable(harness.services.store, tenant.id, subs[0].id)
    # WHEN it comes back until SQS's maxReceiveCount moves it to the dead-letter queue
    for _ in range(harness.services.settings.max_receive_count + 1):
        harness.drain()
        harness.reveal()
    # THEN the other subscriber got its webhook once, and the dead-letter queue lists the message by its event
    assert [len(r.received) for r in receivers] == [0, 1]
    assert harness.counts() == (0, 0)
    listed = client.get("/v1/admin/dead-letters", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    (letter,) = listed.json()["sample"]
    assert (letter["kind"], letter["event_id"], letter["delivery_id"]) == ("deliveries", event_id, None)
