"""Publishing's direct fan-out: an event with few routes (``direct_fanout_max``) has its delivery messages queued
by the publish call itself, one queue hop from its subscribers; more routes, and broadcasts, go through a fan-out
message. Counted once, when stored; a retried publish queues again only the deliveries not written yet, held
until a minute after the first try (never sent twice); bounded whatever the subscribers; a batch publish takes
the same paths, event by event.
Deliveries go over real HTTP and are verified with ``standardwebhooks``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from herald.domain.publishing import new_event
from herald.faults import install
from herald.local.moto_fixes import release_delays
from herald.messages import FanoutMessage
from herald.worker import runtime
from herald.worker.reads import BatchReads, read_batch
from tests.api_support import each_delivery, queue_messages
from tests.delivery_support import (
    CallRecorder,
    Harness,
    bulk_subscriptions,
    delivery_id_of,
    event_counts,
    fanned_out_counts,
    subscribe,
    verify,
)
from tests.support import ADMIN, INVOICE, ORDER

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

pytestmark = pytest.mark.e2e


def _publish(client, tenant_id: str | None, **extra: Any):
    body = {"type": "invoice.paid", "data": INVOICE, **({"tenant_id": tenant_id} if tenant_id else {"broadcast": True})}
    return client.post("/v1/events", json={**body, **extra}, headers=ADMIN)


#: DynamoDB's write operations.
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def _queued(harness: Harness) -> Counter[str]:
    """The kinds of the work waiting on the work queue (left there): each delivery a message of several carries
    counts as one ``delivery``."""
    bodies = queue_messages(harness.sqs, harness.services.settings.queue_url)
    return Counter(body["kind"] for body in each_delivery(bodies))


def test_a_few_routes_are_queued_by_publishing_itself(client, tenant, make_tenant, harness: Harness, receiver) -> None:
    # GIVEN subscriptions to the type and to everything, one to another type and one of another tenant
    typed = subscribe(client, tenant, f"{receiver.url}?s=typed")
    wildcard = subscribe(client, tenant, f"{receiver.url}?s=wildcard", ["*"])
    subscribe(client, tenant, f"{receiver.url}?s=other-type", ["order.shipped"])
    subscribe(client, make_tenant("Other"), f"{receiver.url}?s=other-tenant")
    # WHEN an event is published
    response = _publish(client, tenant.id)
    assert response.status_code == 202, response.text
    event_id = response.json()["id"]
    # THEN the publish call queued its two deliveries itself, in one message, and no fan-out message
    assert _queued(harness) == {"delivery": 2}
    assert [body["kind"] for body in queue_messages(harness.sqs, harness.services.settings.queue_url)] == ["deliveries"]
    # AND the event is counted as fully fanned out already
    assert event_counts(client, event_id) == fanned_out_counts(2)
    # WHEN the worker runs
    batches = harness.drain()
    # THEN each subscriber received it once, signed, in one invocation (no fan-out hop before it)
    assert len(batches) == 1
    assert Counter(got.path for got in receiver.received) == {"/webhook?s=typed": 1, "/webhook?s=wildcard": 1}
    secrets = {"/webhook?s=typed": typed.secret, "/webhook?s=wildcard": wildcard.secret}
    for got in receiver.received:
        assert verify(secrets[got.path], got)["type"] == "invoice.paid"
    assert event_counts(client, event_id)["succeeded"] == 2


def test_an_older_apis_fanout_message_for_an_event_counted_when_stored_queues_what_is_unwritten_and_counts_nothing(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions, and a publish that stored the event, counted, and failed to queue its deliveries
    secrets = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}").secret for n in range(2)}
    install(services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    failed = _publish(client, tenant.id, id="inv-rollback-1")
    assert failed.status_code == 503, failed.text
    assert (_queued(harness), harness.delayed()) == (Counter(), 0)
    # WHEN a fan-out message for it comes, as an older API (after a rollback) answers a repeat of that publish
    harness.services.queue.send(FanoutMessage(event_id="inv-rollback-1", tenant_id=tenant.id))
    harness.drain()
    # THEN the worker queued the two deliveries not written, held back as this code's own repeat queues them
    assert harness.delayed() == 2
    # AND once they come out, each subscriber receives the event once, signed, and it is counted once
    harness.reveal()
    harness.drain()
    assert sorted(got.path for got in receiver.received) == sorted(secrets)
    for got in receiver.received:
        assert verify(secrets[got.path], got)["type"] == "invoice.paid"
    assert event_counts(client, "inv-rollback-1") == fanned_out_counts(2, succeeded=2)


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 3}])
def test_exactly_as_many_routes_as_the_direct_path_takes_are_queued_directly(
    client, tenant, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions to the type and one to everything: three routes, as many as publishing takes
    for n in range(2):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    subscribe(client, tenant, f"{receiver.url}?n=all", ["*"])
    # WHEN an event is published
    _publish(client, tenant.id)
    # THEN its three deliveries were queued by publishing, and arrive once each
    assert _queued(harness) == {"delivery": 3}
    harness.drain()
    assert Counter(got.path for got in receiver.received) == {"/webhook?n=0": 1, "/webhook?n=1": 1, "/webhook?n=all": 1}


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 3}])
def test_more_routes_than_the_direct_path_takes_go_through_a_fanout_message(
    client, tenant, harness: Harness, receiver
) -> None:
    # GIVEN four subscriptions to the type, one more than publishing queues itself
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(4)]
    # WHEN an event is published
    event_id = _publish(client, tenant.id).json()["id"]
    # THEN publishing queued one fan-out message and no delivery
    assert _queued(harness) == {"fanout": 1}
    # AND the worker's fan-out delivers to all four once
    harness.drain()
    assert Counter(got.path for got in receiver.received) == {f"/webhook?n={n}": 1 for n in range(4)}
    for got in receiver.received:
        verify(subs[int(got.path.rsplit("=", 1)[1])].secret, got)
    assert event_counts(client, event_id)["matched"] == 4


def test_a_broadcast_goes_through_fanout_messages(client, tenant, harness: Harness, receiver) -> None:
    # GIVEN one subscription
    subscribe(client, tenant, receiver.url)
    # WHEN a broadcast is published
    assert _publish(client, None).status_code == 202
    # THEN it is queued as a fan-out message (per tenant, by the worker), never by publishing
    assert _queued(harness) == {"fanout": 1}
    harness.drain()
    assert len(receiver.received) == 1


def test_a_retried_publish_queues_again_only_what_is_not_written_held_back_and_sends_once(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions and an event published with an id, its deliveries not worked yet
    for n in range(2):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    first = _publish(client, tenant.id, id="inv-1001-paid")
    sends = CallRecorder(services.queue.client, ["SendMessageBatch"])
    # WHEN the publisher sends it again
    again = _publish(client, tenant.id, id="inv-1001-paid")
    # THEN the original is answered, counted once
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["idempotent-replayed"] == "true"
    assert event_counts(client, "inv-1001-paid")["matched"] == 2
    # AND its two deliveries, not written yet, are queued again, a message each, held back until a minute after the
    # first try (the first try's copies are the ones to be worked now) and to be claimed with a lease
    ((delay,),) = [{entry["DelaySeconds"] for entry in call.params["Entries"]} for call in sends.of("SendMessageBatch")]
    assert 50 <= delay <= 60
    assert _queued(harness) == {"delivery": 2}
    assert harness.delayed() == 2
    held = [
        json.loads(entry["MessageBody"]) for call in sends.of("SendMessageBatch") for entry in call.params["Entries"]
    ]
    assert [(body["kind"], body["resumed"]) for body in held] == [("delivery", True)] * 2
    # WHEN the worker runs, then the held copies come out
    harness.drain()
    assert harness.reveal() >= 1
    harness.drain()
    # THEN each subscriber received it once: the second copy of each delivery found it written
    assert sorted(got.path for got in receiver.received) == ["/webhook?n=0", "/webhook?n=1"]
    assert event_counts(client, "inv-1001-paid") == fanned_out_counts(2, succeeded=2)
    # WHEN the publisher sends it once more, its deliveries written
    assert _publish(client, tenant.id, id="inv-1001-paid").headers["idempotent-replayed"] == "true"
    # THEN nothing is queued
    assert len(sends.of("SendMessageBatch")) == 1
    assert (_queued(harness), harness.delayed()) == (Counter(), 0)
    sends.close()


def test_a_publish_whose_routes_cannot_be_read_takes_a_fanout_message_and_is_delivered_once(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions, and DynamoDB refusing (after botocore's retries) the publish's read of its routes
    subs = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)}
    install(services.store.client, "dynamodb.Query:throttle@call=calls:1")
    # WHEN the event is published
    published = _publish(client, tenant.id, id="inv-1003-paid")
    # THEN it is accepted, naming no subscription, and a fan-out message is queued in place of its deliveries
    assert published.status_code == 202, published.text
    stored = services.store.events.get("inv-1003-paid")
    assert stored is not None
    assert stored.delivered_to == frozenset()
    assert _queued(harness) == {"fanout": 1}
    # AND once the worker has run, each subscriber received it once, signed, and its counts are exact
    harness.drain()
    assert sorted(got.path for got in receiver.received) == sorted(subs)
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    assert event_counts(client, "inv-1003-paid") == fanned_out_counts(2, succeeded=2)


def test_a_publish_whose_routes_and_mark_were_refused_is_retried_and_counted_once(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions, and DynamoDB refusing (after botocore's retries) the publish's read of its routes
    # (a fan-out message is queued in place of its deliveries), then its mark of the event as queued
    subs = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)}
    install(services.store.client, "dynamodb.Query:throttle@call=calls:1, dynamodb.UpdateItem:throttle@call=calls:1")
    # WHEN the publish fails, and the publisher retries it once DynamoDB answers (the routes read now)
    failed = _publish(client, tenant.id, id="inv-1004-paid")
    assert failed.status_code == 503, failed.text
    retried = _publish(client, tenant.id, id="inv-1004-paid")
    assert retried.status_code == 202, retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    # THEN the retry took a fan-out message too, held back until a minute after the first try (so the two are never
    # worked at once, in parallel invocations, each queueing every delivery for the same moment); no delivery of
    # the event's is queued
    assert (_queued(harness), harness.delayed()) == ({"fanout": 1}, 1)
    first, held = [c.params for c in harness.queue_calls.of("SendMessage") if '"fanout"' in c.params["MessageBody"]]
    assert first["DelaySeconds"] == 0
    assert 55 <= held["DelaySeconds"] <= 60
    # AND once the worker has run, and again once the held copy came out, each subscriber received it once,
    # signed, and it is counted once
    harness.drain()
    harness.reveal()
    harness.drain()
    assert sorted(got.path for got in receiver.received) == sorted(subs)
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    assert event_counts(client, "inv-1004-paid") == fanned_out_counts(2, succeeded=2)


def test_a_publish_whose_deliveries_were_not_queued_is_queued_by_its_retry_and_sent_once(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions, and SQS refusing (after botocore's retries) the publish's send of its deliveries,
    # after the event was stored
    for n in range(2):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    install(services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    # WHEN the publish fails, and the publisher retries it
    failed = _publish(client, tenant.id, id="inv-1002-paid")
    assert failed.status_code == 503, failed.text
    assert failed.headers["retry-after"]
    assert (_queued(harness), harness.delayed()) == (Counter(), 0)
    retried = _publish(client, tenant.id, id="inv-1002-paid")
    assert retried.status_code == 202, retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    # THEN the retry queued the event's two deliveries (none written: none was queued), held back until a minute
    # after the first try
    assert (_queued(harness), harness.delayed()) == (Counter(), 2)
    # AND once they come out, each subscriber receives the event once, signed; counted once
    harness.reveal()
    harness.drain()
    assert sorted(got.path for got in receiver.received) == ["/webhook?n=0", "/webhook?n=1"]
    assert event_counts(client, "inv-1002-paid") == fanned_out_counts(2, succeeded=2)


def _reads_before_the_record(monkeypatch: pytest.MonkeyPatch, delivery_id: str) -> None:
    """From now on, each batch's read does not show ``delivery_id``: as a read made before another batch recorded
    it would (moto is consistent, DynamoDB's eventually consistent read may be that late)."""
    real_read_batch = read_batch

    async def read_before_the_record(worker: Any, bodies: Any) -> BatchReads:
        reads = await real_read_batch(worker, bodies)
        return dataclasses.replace(reads, states={k: v for k, v in reads.states.items() if k != delivery_id})

    monkeypatch.setattr(runtime, "read_batch", read_before_the_record)


def test_the_copies_two_repeats_queued_are_sent_once_even_from_two_batches_at_once(
    client, tenant, services, harness: Harness, receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription, and an event whose publish SQS refused (after botocore's retries), repeated twice by the
    # publisher (the first repeat's answer lost on its way): two copies of its delivery, held back alike
    sub = subscribe(client, tenant, receiver.url)
    install(services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    assert _publish(client, tenant.id, id="inv-1005-paid").status_code == 503
    for _ in range(2):
        assert _publish(client, tenant.id, id="inv-1005-paid").status_code == 202
    assert harness.delayed() == 2
    harness.reveal()
    queue_url = harness.services.settings.queue_url
    copies = [harness.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)["Messages"][0] for _ in range(2)]
    # WHEN two batches work them, the second from a read made before the first recorded its attempt (moto is
    # consistent: that read is emulated by a batch read that does not show the delivery)
    (poller,) = [poller for poller in harness.pollers if poller.queue_url == queue_url]
    assert poller.invoke(copies[:1]).deleted == 1
    _reads_before_the_record(monkeypatch, delivery_id_of(harness.services.store, "inv-1005-paid", sub.id))
    assert poller.invoke(copies[1:]).deleted == 1
    # THEN the event was sent once: the second copy, claimed with a lease, found the delivery done
    (got,) = receiver.received
    verify(sub.secret, got)
    assert event_counts(client, "inv-1005-paid") == fanned_out_counts(1, succeeded=1)


def test_an_event_stored_and_never_queued_is_redelivered_and_counted_once(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions, and an event whose publish SQS refused (after botocore's retries), never sent again:
    # stored with its counts, none of its deliveries queued
    subs = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)}
    install(services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    assert _publish(client, tenant.id, id="inv-1006-paid").status_code == 503
    assert event_counts(client, "inv-1006-paid") == fanned_out_counts(2)
    # WHEN the operator redelivers it
    assert client.post("/v1/events/inv-1006-paid/redeliver", headers=ADMIN).status_code == 202
    harness.drain()
    # THEN each subscriber receives it once, signed, and it is counted once: its two deliveries are not matched again
    assert sorted(got.path for got in receiver.received) == sorted(subs)
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    assert event_counts(client, "inv-1006-paid") == fanned_out_counts(2, succeeded=2)


def test_a_direct_event_is_one_write_counted_when_stored(client, tenant, services, harness: Harness, receiver) -> None:
    # GIVEN two subscriptions
    for n in range(2):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    # WHEN an event is published, and an event of a type no subscription takes
    recorder = CallRecorder(services.store.client, sorted(_WRITES))
    assert _publish(client, tenant.id, id="inv-1003-paid").status_code == 202
    nobody = {"type": "order.shipped", "data": ORDER, "tenant_id": tenant.id, "id": "ord-1004-shipped"}
    assert client.post("/v1/events", json=nobody, headers=ADMIN).status_code == 202
    # THEN publishing wrote each event once, its counts in its item (no counts item, no queued mark)
    writes = [call for call in recorder.calls if call.params.get("Item", {}).get("sk", {}).get("S") == "#EVENT"]
    assert [(call.operation, call.params["Item"]["pk"]["S"]) for call in writes] == [
        ("PutItem", "EVENT#inv-1003-paid"),
        ("PutItem", "EVENT#ord-1004-shipped"),
    ]
    assert not [call for call in recorder.calls if "#COUNTS" in str(call.params)]
    assert event_counts(client, "inv-1003-paid") == fanned_out_counts(2)
    assert event_counts(client, "ord-1004-shipped") == fanned_out_counts(0)
    # AND the event no subscription takes is stored queued: its repeat queues nothing, and writes nothing (but its
    # own try to create the event, refused)
    recorder.close()
    recorder = CallRecorder(services.store.client, sorted(_WRITES))
    sends = CallRecorder(services.queue.client, ["SendMessage", "SendMessageBatch"])
    again = client.post("/v1/events", json=nobody, headers=ADMIN)
    assert again.headers["idempotent-replayed"] == "true"
    assert ([call.operation for call in recorder.calls], sends.calls) == (["PutItem"], [])
    recorder.close()
    sends.close()
    # AND an event whose direct page an earlier version counted (a page marker item, then the counts with the event
    # marked queued) is not counted again either
    expires_at = int(time.time()) + 3600
    earlier = new_event("invoice.paid", INVOICE, tenant_id=tenant.id)
    services.store.events.create(earlier, fingerprint="earlier", expires_at=expires_at)
    events = services.store.events
    assert events.count_fanout_page(earlier.id, f"{tenant.id}|direct", expires_at=expires_at, matched=2)
    events.mark_enqueued(earlier.id, expires_at=expires_at)
    assert events.count_direct_fanout(earlier.id, expires_at=expires_at, matched=2, fanout_open=-1) is False
    assert event_counts(client, earlier.id)["matched"] == 2


def test_filters_are_applied_and_counted_on_the_direct_path(client, tenant, harness: Harness, receiver) -> None:
    # GIVEN a subscription whose filter skips the event and one without a filter
    skipped = client.post(
        "/v1/subscriptions",
        json={
            "url": f"{receiver.url}?s=big",
            "event_types": ["invoice.paid"],
            "filter": {"amount_cents": {"$gte": 10**9}},
        },
        headers=tenant.headers,
    )
    assert skipped.status_code == 201, skipped.text
    subscribe(client, tenant, f"{receiver.url}?s=all")
    # WHEN the event is published and delivered
    event_id = _publish(client, tenant.id).json()["id"]
    assert _queued(harness) == {"delivery": 1}
    harness.drain()
    # THEN only the unfiltered subscription received it, and the skip is counted
    assert [got.path for got in receiver.received] == ["/webhook?s=all"]
    counts = event_counts(client, event_id)
    assert (counts["matched"], counts["filtered"], counts["succeeded"]) == (1, 1, 1)


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 10}])
def test_publishing_does_the_same_calls_whatever_the_subscribers_beyond_the_direct_page(
    client, tenant, services, harness: Harness, receiver
) -> None:
    def published_calls() -> list[str]:
        harness.table_calls.clear()
        harness.queue_calls.clear()
        assert _publish(client, tenant.id).status_code == 202
        return [call.operation for call in [*harness.table_calls.calls, *harness.queue_calls.calls]]

    # GIVEN eleven subscriptions (one more than the direct path takes), then three hundred
    bulk_subscriptions(services.store, tenant.id, receiver.url, 11)
    few = published_calls()
    bulk_subscriptions(services.store, tenant.id, receiver.url, 289)
    many = published_calls()
    # THEN publishing made the same calls both times: one page of routes read (eleven at most: one more than it
    # takes), then a fan-out message
    assert few == many
    queries = [call for call in harness.table_calls.of("Query") if call.params["Limit"] == 11]
    assert len(queries) == 1
    assert many.count("SendMessage") == 1
    assert "SendMessageBatch" not in many


def _batch(client, events: list[dict[str, Any]]):
    response = client.post("/v1/events/batch", json={"events": events}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _invoice(tenant_id: str | None, **extra: Any) -> dict[str, Any]:
    audience = {"tenant_id": tenant_id} if tenant_id else {"broadcast": True}
    return {"type": "invoice.paid", "data": INVOICE, **audience, **extra}


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 3}])
def test_a_batch_queues_its_small_events_deliveries_itself_reading_routes_once_per_tenant_and_type(
    client, tenant, make_tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN a tenant with a subscription to the type and one to everything, a tenant with four (more routes than
    # publishing takes), and one with a subscription
    typed = subscribe(client, tenant, f"{receiver.url}?s=typed")
    wildcard = subscribe(client, tenant, f"{receiver.url}?s=wildcard", ["*"])
    crowded = make_tenant("Crowded")
    many = [subscribe(client, crowded, f"{receiver.url}?s=many{n}") for n in range(4)]
    small = make_tenant("Small")
    single = subscribe(client, small, f"{receiver.url}?s=small")
    # WHEN one batch publishes three events to the first tenant, one to each other tenant, and a broadcast
    recorder = CallRecorder(services.store.client, ["Query"])
    events = [_invoice(tenant.id), _invoice(tenant.id), _invoice(crowded.id), _invoice(None), _invoice(tenant.id)]
    items = _batch(client, [*events, _invoice(small.id)])
    queries = recorder.of("Query")
    recorder.close()
    assert [item["status"] for item in items] == [202] * 6
    # THEN the batch queued the small events' deliveries itself (three to two, one to one), and fan-out messages
    # for the crowded tenant's event and the broadcast; a tenant's deliveries share a message across its events
    assert _queued(harness) == {"delivery": 7, "fanout": 2}
    bodies = queue_messages(harness.sqs, harness.services.settings.queue_url)
    packed = sorted((body["tenant_id"], body["kind"]) for body in bodies if body["kind"] != "fanout")
    assert packed == sorted([(tenant.id, "deliveries"), (small.id, "delivery")])
    # AND it read each tenant's routes of the type once for the batch, whatever its events: the type's, then "*"'s
    # (not for the crowded tenant: its type's routes were too many already)
    routes = Counter(call.params["ExpressionAttributeValues"][":p"]["S"] for call in queries)
    expected = [f"ROUTE#{tenant.id}#invoice.paid", f"ROUTE#{tenant.id}#*", f"ROUTE#{crowded.id}#invoice.paid"]
    assert routes == Counter([*expected, f"ROUTE#{small.id}#invoice.paid", f"ROUTE#{small.id}#*"])
    # AND the directly queued events are counted as fanned out already
    direct = [items[n]["event"]["id"] for n in (0, 1, 4, 5)]
    for event_id in direct:
        counts = event_counts(client, event_id)
        assert counts["fanout_complete"] is True
        assert counts["pending"] == counts["matched"]
    # WHEN the worker runs
    harness.drain()
    # THEN every subscriber received each of its events once, signed (the broadcast too)
    paths = Counter(got.path for got in receiver.received)
    assert paths == {
        "/webhook?s=typed": 4,
        "/webhook?s=wildcard": 4,
        **{f"/webhook?s=many{n}": 2 for n in range(4)},
        "/webhook?s=small": 2,
    }
    secrets = {f"/webhook?s=many{n}": sub.secret for n, sub in enumerate(many)}
    secrets |= {
        "/webhook?s=typed": typed.secret,
        "/webhook?s=wildcard": wildcard.secret,
        "/webhook?s=small": single.secret,
    }
    for got in receiver.received:
        assert verify(secrets[got.path], got)["type"] == "invoice.paid"
    # AND no webhook (a subscriber and an event: the webhook id) arrived twice
    assert len({(got.path, got.headers["webhook-id"]) for got in receiver.received}) == len(receiver.received)
    for event_id in direct:
        assert event_counts(client, event_id)["succeeded"] == event_counts(client, event_id)["matched"] > 0


def test_an_id_given_twice_in_one_batch_is_published_and_queued_once(
    client, tenant, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)]
    # WHEN one batch carries the same event twice (its id given twice), and another event
    twice = _invoice(tenant.id, id="inv-3001-paid")
    items = _batch(client, [twice, twice, _invoice(tenant.id, id="inv-3002-paid")])
    # THEN the second copy is answered as a replay of the first, and each event's deliveries are queued once
    assert [(item["status"], item["replayed"]) for item in items] == [(202, False), (202, True), (202, False)]
    assert _queued(harness) == {"delivery": 4}
    harness.drain()
    assert Counter((got.path, got.headers["webhook-id"]) for got in receiver.received) == {
        (f"/webhook?n={n}", event_id): 1 for n in range(2) for event_id in ("inv-3001-paid", "inv-3002-paid")
    }
    for got in receiver.received:
        verify(subs[int(got.path.rsplit("=", 1)[1])].secret, got)
    assert event_counts(client, "inv-3001-paid")["matched"] == 2


def _each_sent_once(client, receiver, subs, event_ids) -> None:
    """Each subscriber received each event once, signed, and each event is counted once."""
    assert Counter((got.path, got.headers["webhook-id"]) for got in receiver.received) == {
        (f"/webhook?n={n}", event_id): 1 for n in range(len(subs)) for event_id in event_ids
    }
    for got in receiver.received:
        verify(subs[int(got.path.rsplit("=", 1)[1])].secret, got)
    for event_id in event_ids:
        assert event_counts(client, event_id) == fanned_out_counts(len(subs), succeeded=len(subs))


def test_a_batch_whose_deliveries_were_not_queued_is_queued_by_its_retry_and_each_delivery_sent_once(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions, and SQS refusing (after botocore's retries) the batch's send of its deliveries, after
    # its events were stored
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)]
    batch = {"events": [_invoice(tenant.id, id="inv-2001-paid"), _invoice(tenant.id, id="inv-2002-paid")]}
    install(services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    # WHEN the batch is published: each event is answered 503, with the event as stored; and the publisher sends
    # the batch again
    failed = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    assert failed.status_code == 200, failed.text
    assert [(item["status"], item["event"]["id"]) for item in failed.json()["data"]] == [
        (503, "inv-2001-paid"),
        (503, "inv-2002-paid"),
    ]
    retried = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    assert retried.status_code == 200, retried.text
    assert [(item["status"], item["replayed"]) for item in retried.json()["data"]] == [(202, True)] * 2
    # THEN the retry queued both events' deliveries (none written), a message each, held back until a minute after
    # the first try
    assert (_queued(harness), harness.delayed()) == (Counter(), 4)
    # AND once it comes out, each subscriber receives each event once, signed, each counted once
    harness.reveal()
    harness.drain()
    _each_sent_once(client, receiver, subs, ["inv-2001-paid", "inv-2002-paid"])


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 1}])
def test_a_batch_of_fanouts_that_failed_after_queueing_is_queued_again_and_each_delivery_sent_once(
    client, tenant, services, harness: Harness, receiver
) -> None:
    # GIVEN two subscriptions (more than the direct path takes: each event goes through a fan-out message), and
    # DynamoDB refusing (after botocore's retries) the batch's marks of its events as queued, after the batch's
    # messages were queued: the call that writes them together (its second batch of INSERTs, after the events'),
    # then the first that writes one alone (the first event's)
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(2)]
    batch = {"events": [_invoice(tenant.id, id="inv-2001-paid"), _invoice(tenant.id, id="inv-2002-paid")]}
    install(
        services.store.client,
        "dynamodb.BatchExecuteStatement:throttle@call=calls:2, dynamodb.UpdateItem:throttle@call=calls:1",
    )
    # WHEN the batch is published
    failed = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    # THEN the event left unmarked is answered 503 on its own, with a machine-readable error and the event as stored,
    # and the other published
    assert failed.status_code == 200, failed.text
    items = failed.json()["data"]
    assert [item["status"] for item in items] == [503, 202]
    assert items[0]["error"]["code"] == "service_unavailable"
    assert items[0]["event"]["id"] == "inv-2001-paid"
    # WHEN the publisher sends the batch again
    retried = client.post("/v1/events/batch", json=batch, headers=ADMIN)
    assert retried.status_code == 200, retried.text
    assert [(item["status"], item["replayed"]) for item in retried.json()["data"]] == [(202, True)] * 2
    # THEN each event's fan-out message was queued by the first try, and the unmarked one's again by the retry (an
    # event an earlier try stored and did not mark takes one), held back until a minute after the first try; both
    # queue the event's deliveries under the same ids; the marked one is left alone
    assert (_queued(harness), harness.delayed()) == ({"fanout": 2}, 1)
    # AND each subscriber receives each event once, signed: the second copy of each delivery finds it done; each
    # event counted once (a fan-out page run twice is counted once)
    harness.drain()
    harness.reveal()
    harness.drain()
    _each_sent_once(client, receiver, subs, ["inv-2001-paid", "inv-2002-paid"])


def test_a_redeliverys_first_delivery_and_a_repeats_held_copy_are_sent_once(
    client, tenant, services, harness: Harness, receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription, and an event whose publish SQS refused (after botocore's retries), repeated by the
    # publisher: a copy of its delivery held back on the queue
    sub = subscribe(client, tenant, receiver.url)
    install(services.queue.client, "sqs.SendMessageBatch:5xx@call=calls:1")
    assert _publish(client, tenant.id, id="inv-1007-paid").status_code == 503
    assert _publish(client, tenant.id, id="inv-1007-paid").status_code == 202
    assert harness.delayed() == 1
    # AND the operator redelivers it meanwhile: the job finds the delivery not written and queues a first delivery
    assert client.post("/v1/events/inv-1007-paid/redeliver", headers=ADMIN).status_code == 202
    queue_url = harness.services.settings.queue_url
    (poller,) = [poller for poller in harness.pollers if poller.queue_url == queue_url]

    def received_one(kind: str) -> MessageTypeDef:
        message: MessageTypeDef
        (message,) = harness.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        assert json.loads(message["Body"])["kind"] == kind
        return message

    assert poller.invoke([received_one("redeliver")]).deleted == 1
    redelivered = received_one("delivery")
    # WHEN the held copy comes out and is worked first, then the redelivery's copy, by a batch whose read was made
    # before that record (moto is consistent: that read is emulated by a batch read that does not show the delivery)
    assert release_delays(queue_url) == 1
    assert poller.invoke([received_one("delivery")]).deleted == 1
    _reads_before_the_record(monkeypatch, delivery_id_of(harness.services.store, "inv-1007-paid", sub.id))
    assert poller.invoke([redelivered]).deleted == 1
    # THEN the event was sent once: the redelivery's copy, claimed with a lease, found the delivery done
    (got,) = receiver.received
    verify(sub.secret, got)
    assert event_counts(client, "inv-1007-paid") == fanned_out_counts(1, succeeded=1)


#: A direct fan-out past the ten subscriptions an event's item names: counted by the write that marks it queued.
WIDE_DIRECT = {"direct_fanout_max": 20}


RACES = {
    # when the first try's count lands; what refuses the repeat's publish (None: nothing); which try counts the event
    "count between the repeat's read and its fan-out": (None, "first"),
    "count after the repeat queued its fan-out": (None, "repeat"),
    "count after the repeat's send was refused": ("sqs.SendMessage:5xx@call=calls:1", "first"),
    "count after the repeat's fan-out ran, its mark refused": ("dynamodb.UpdateItem:throttle@call=calls:1", "repeat"),
}


@pytest.mark.parametrize("settings_overrides", [WIDE_DIRECT])
@pytest.mark.parametrize(
    ("race", "repeat"),
    [(race, "single") for race in RACES] + [(race, "batch") for race, (fault, _) in RACES.items() if fault is None],
)
def test_a_repeat_racing_the_first_tries_direct_count_counts_the_event_once(
    client, tenant, services, harness: Harness, receiver, monkeypatch: pytest.MonkeyPatch, race: str, repeat: str
) -> None:
    # GIVEN twelve subscriptions, all taken by publishing's direct fan-out, and a publish whose count (the write
    # that marks its event queued) is held up after its deliveries went out (botocore's retries of a slow call)
    fault, counter = RACES[race]
    subs = {f"/webhook?n={n}": subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(12)}
    events = services.store.events
    real_count, real_read = events.count_direct_fanout, events.get_with_counts
    held: list[Any] = []

    def hold_the_count(*args: Any, **kwargs: Any) -> bool:
        held.append((args, kwargs))
        return True

    monkeypatch.setattr(events, "count_direct_fanout", hold_the_count)
    first = _publish(client, tenant.id, id="inv-2001-paid")
    assert first.status_code == 202, first.text
    assert len(held) == 1
    monkeypatch.setattr(events, "count_direct_fanout", real_count)
    counted: list[bool] = []

    def land_the_count() -> None:
        args, kwargs = held.pop()
        counted.append(real_count(*args, **kwargs))

    def read_then_the_count_lands(*args: Any, **kwargs: Any) -> Any:
        found = real_read(*args, **kwargs)
        if held and race.startswith("count between"):
            land_the_count()
        return found

    monkeypatch.setattr(events, "get_with_counts", read_then_the_count_lands)
    if fault is not None:
        install(services.queue.client if fault.startswith("sqs") else services.store.client, fault)
    # WHEN the publisher, its answer late, publishes it again meanwhile (alone, or in a batch), the repeat's fan-out
    # message (held back a minute) running before the count lands if it was queued
    if repeat == "single":
        again = _publish(client, tenant.id, id="inv-2001-paid")
    else:
        body = {"id": "inv-2001-paid", "type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}
        again = client.post("/v1/events/batch", json={"events": [body]}, headers=ADMIN)
    assert again.status_code == (202 if repeat == "single" and fault is None else 503 if fault else 200), again.text
    release_delays(services.settings.queue_url)
    harness.drain()
    if held:
        land_the_count()
    # THEN one of the two counted the event: the first try's count if it landed before the repeat's fan-out ran (or
    # no fan-out was queued), which then did nothing; else the fan-out's pages, and the count was refused
    assert counted == [counter == "first"]
    # AND once the worker has run again, each subscriber received the event once, signed, and it is counted once
    release_delays(services.settings.queue_url)
    harness.drain()
    assert sorted(got.path for got in receiver.received) == sorted(subs)
    for got in receiver.received:
        verify(subs[got.path].secret, got)
    assert event_counts(client, "inv-2001-paid") == fanned_out_counts(12, succeeded=12)
