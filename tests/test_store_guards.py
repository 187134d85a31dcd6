"""Guards in the storage layer that real AWS needs and moto would not enforce on its own."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from herald import ids
from herald.domain.publishing import event_expiry, new_event
from herald.errors import ServiceUnavailableError
from herald.faults import FaultSpec, install
from herald.records import Delivery, DeliveryStatus
from herald.storage import EventExistsError, keys
from herald.storage.table import to_item
from tests.delivery_support import bulk_subscriptions, publish
from tests.support import ADMIN, INVOICE, drain


def _cursor(raw: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


@pytest.mark.parametrize("settings_overrides", [{"fanout_page_size": 10}])
def test_a_long_fanout_never_grows_the_event_item(client, tenant, services, poller, receiver) -> None:
    # GIVEN 45 subscriptions, read 10 per fan-out page
    bulk_subscriptions(services.store, tenant.id, receiver.url, 45)
    # WHEN an event fans out to them
    event_id = publish(client, tenant.id)
    drain(poller)
    # THEN every page was counted once, with a marker item of its own beside the event
    event = client.get(f"/v1/events/{event_id}", headers=ADMIN).json()
    assert event["deliveries"]["matched"] == 45
    assert event["deliveries"]["fanout_complete"] is True
    dynamodb = services.store.client
    items = dynamodb.query(
        TableName=services.store.table_name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"EVENT#{event_id}"}},
    )["Items"]
    markers = [item for item in items if item["sk"]["S"].startswith("FANOUT#")]
    assert len(markers) >= 5  # 45 subscriptions in pages of 10, plus the "*" route
    (event_item,) = [item for item in items if item["sk"]["S"] == "#EVENT"]
    assert "fanout_pages" not in event_item
    assert len(json.dumps(event_item)) < 4000


def test_a_cursor_without_the_table_keys_is_refused(client, tenant) -> None:
    # GIVEN a cursor for the deliveries index that lacks the table's own keys (real DynamoDB rejects it)
    sub = client.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]}, headers=tenant.headers
    ).json()
    forged = _cursor({"gsi1pk": f"SUB#{sub['id']}", "gsi1sk": "2026-01-01T00:00:00Z#dlv_x"})
    empty = _cursor({"gsi1pk": f"SUB#{sub['id']}", "gsi1sk": "", "pk": "DELIVERY#x", "sk": "#DELIVERY"})
    # AND cursors for the subscription's own partition: one with an empty sort key, one of another subscription's
    empty_sort = _cursor({"pk": f"DELIVERIES#{sub['id']}", "sk": ""})
    another = _cursor({"pk": "DELIVERIES#sub_other", "sk": "dlv_01hf7yat00shgtn2mr716bn31p"})
    for cursor in (forged, empty, empty_sort, another):
        # WHEN it is used
        response = client.get(
            f"/v1/subscriptions/{sub['id']}/deliveries", params={"iterator": cursor}, headers=tenant.headers
        )
        # THEN it is a 422 invalid_cursor, never a call that AWS would fail with a 5xx
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_cursor"


def _new_delivery(event_id: str, sub_id: str) -> Delivery:
    """A pending delivery, not written yet."""
    now = datetime.now(UTC)
    return Delivery(
        id=ids.delivery_id(event_id, sub_id, ids.epoch_ms(now)),
        event_id=event_id,
        subscription_id=sub_id,
        tenant_id="tnt_1",
        event_type="invoice.paid",
        status=DeliveryStatus.PENDING,
        created_at=now,
        updated_at=now,
    )


def test_a_stale_claim_cannot_reopen_a_settled_delivery(services) -> None:
    store = services.store
    delivery = _new_delivery("evt_1", "sub_1")
    expires = int(time.time()) + 3600
    # GIVEN a delivery claimed, then settled (cancelled) without an attempt: its attempt count is unchanged
    assert store.deliveries.claim(
        delivery,
        previous=None,
        scheduled_attempts=0,
        token="a",
        until=time.time() + 60,
        now=time.time(),
        expires_at=expires,
    )
    settled = delivery.model_copy(update={"status": DeliveryStatus.FAILED})
    assert store.deliveries.record(settled, None, token="a", scheduled_attempts=0, expires_at=expires)
    # WHEN a duplicate message that read it while pending tries to claim it
    stale = store.deliveries.claim(
        delivery,
        previous=delivery,
        scheduled_attempts=0,
        token="b",
        until=time.time() + 60,
        now=time.time(),
        expires_at=expires,
    )
    # THEN the claim is refused and the delivery stays settled
    assert stale is False
    assert store.deliveries.get("sub_1", delivery.id).status is DeliveryStatus.FAILED


def test_a_record_whose_answer_was_lost_is_its_own_and_a_lost_lease_is_not(services) -> None:
    store = services.store
    delivery = _new_delivery("evt_2", "sub_2")
    expires = int(time.time()) + 3600
    lease = {"previous": None, "scheduled_attempts": 0, "until": time.time() + 60, "now": time.time()}
    # GIVEN a delivery claimed under lease "a", and its record written (which releases the lease)
    assert store.deliveries.claim(delivery, token="a", expires_at=expires, **lease)
    settled = delivery.model_copy(update={"status": DeliveryStatus.FAILED, "updated_at": datetime.now(UTC)})
    record = {"token": "a", "scheduled_attempts": 0, "expires_at": expires}
    assert store.deliveries.record(settled, None, **record)
    # WHEN the same write is made again (botocore sends a call again when its answer was lost), it finds the lease
    # it removed, and the item it wrote: THEN it is this write (the attempt is not made again)
    assert store.deliveries.record(settled, None, **record)
    # AND a record of another state under that lease, now gone, is refused
    other = settled.model_copy(update={"status": DeliveryStatus.SUCCEEDED})
    assert store.deliveries.record(other, None, **record) is False
    assert store.deliveries.get("sub_2", delivery.id).status is DeliveryStatus.FAILED


def test_a_claim_whose_answer_was_lost_is_its_own_and_another_lease_is_not(services) -> None:
    store = services.store
    delivery = _new_delivery("evt_3", "sub_3")
    expires = int(time.time()) + 3600
    claim = {"previous": None, "scheduled_attempts": 0, "until": time.time() + 60, "now": time.time()}
    # GIVEN a new delivery claimed under lease "a"
    assert store.deliveries.claim(delivery, token="a", expires_at=expires, **claim)
    # WHEN the same claim is made again (botocore sends a call again when its answer was lost), it finds the item
    # it wrote: THEN it is this claim's (its message is not held back for the lease's length)
    assert store.deliveries.claim(delivery, token="a", expires_at=expires, **claim)
    # AND a claim under another token is another worker's: refused
    assert store.deliveries.claim(delivery, token="b", expires_at=expires, **claim) is False
    # AND the lease is still the first claim's
    assert store.deliveries.get_state("sub_3", delivery.id, "evt_3").lease_until == claim["until"]


def test_an_event_whose_create_answer_was_lost_is_new_and_a_repeat_of_its_id_is_a_replay(services) -> None:
    events = services.store.events
    expires = int(time.time()) + 3600
    event = new_event("invoice.paid", INVOICE, tenant_id="tnt_1", event_id="evt_lost")
    # GIVEN an event stored
    events.create(event, fingerprint="f", expires_at=expires)
    # WHEN the same write is made again (botocore sends a call again when its answer was lost), it finds the item it
    # wrote: THEN the event is new, not a replay of itself
    assert events.create(event, fingerprint="f", expires_at=expires).event == event
    # AND a later publish of the same id (another event made from the same request) is a replay of the first
    again = new_event("invoice.paid", INVOICE, tenant_id="tnt_1", event_id="evt_lost")
    with pytest.raises(EventExistsError) as replay:
        events.create(again, fingerprint="f", expires_at=expires)
    assert replay.value.stored.event == event


def test_a_fanout_page_whose_marker_answer_was_lost_is_counted_once(services, monkeypatch) -> None:
    events, table = services.store.events, services.store.table
    now = int(time.time())
    event = new_event("invoice.paid", INVOICE, tenant_id="tnt_1", event_id="evt_marker")
    events.create(event, fingerprint="f", expires_at=now + 3600)
    # GIVEN DynamoDB answering each page marker's write, but the answer lost: botocore sends the same call again,
    # which finds the marker written and is refused
    real_call = table.call

    def resent(operation: str, **params: Any) -> Any:
        if operation == "put_item" and params["Item"]["sk"]["S"].startswith("FANOUT#"):
            real_call(operation, **params)
        return real_call(operation, **params)

    monkeypatch.setattr(table, "call", resent)
    # WHEN a page is counted, then counted again (its message shown twice)
    first = events.count_fanout_page("evt_marker", "tnt_1|invoice.paid|", expires_at=now + 3600, matched=3)
    again = events.count_fanout_page("evt_marker", "tnt_1|invoice.paid|", expires_at=now + 3600, matched=3)
    # THEN the page is counted once: the first call's marker was its own
    assert (first, again) == (True, False)
    assert events.get_with_counts("evt_marker").matched == 3


def _counts_writes_resent(table: Any, monkeypatch: pytest.MonkeyPatch, *, answer: str = "refused") -> None:
    """Each write of an event's counts item applied, its answer lost: botocore sends the same call again, which
    DynamoDB answers (``answer="refused"``), or the retries run out (``"lost"``: ServiceUnavailableError)."""
    real_call = table.call

    def resent(operation: str, **params: Any) -> Any:
        if operation == "update_item" and params["Key"]["sk"]["S"] == keys.event_counts("x")["sk"]:
            real_call(operation, **params)
            if answer == "lost":
                raise ServiceUnavailableError("DynamoDB update_item failed")
        return real_call(operation, **params)

    monkeypatch.setattr(table, "call", resent)


def test_a_count_whose_answer_was_lost_is_added_once(services, monkeypatch) -> None:
    events, table = services.store.events, services.store.table
    now = int(time.time())
    event = new_event("invoice.paid", INVOICE, tenant_id="tnt_1", event_id="evt_counted")
    events.create(event, fingerprint="f", expires_at=now + 3600)
    events.count("evt_counted", expires_at=now + 3600, failed=1)
    # GIVEN DynamoDB applying each counts update, but its answer lost, and the call sent again
    _counts_writes_resent(table, monkeypatch)
    # WHEN a batch's settled deliveries are counted, and the publish's direct fan-out is marked
    events.count("evt_counted", expires_at=now + 3600, succeeded=2, failed=-1)
    marked = events.count_direct_fanout("evt_counted", expires_at=now + 3600, matched=2, fanout_open=-1)
    # THEN each is added once, and the mark knows it was its own
    stored = events.get_with_counts("evt_counted")
    assert (stored.succeeded, stored.failed, stored.matched, stored.fanout_open) == (2, 0, 2, 0)
    assert marked is True


@pytest.mark.parametrize("settings_overrides", [{"fanout_page_size": 10}])
def test_a_fanout_page_whose_count_answer_never_came_is_counted_once(services, monkeypatch) -> None:
    events, table = services.store.events, services.store.table
    now = int(time.time())
    event = new_event("invoice.paid", INVOICE, tenant_id="tnt_1", event_id="evt_page")
    events.create(event, fingerprint="f", expires_at=now + 3600)
    marker = "tnt_1|invoice.paid|"
    # GIVEN DynamoDB applying a page's counts update, but no answer reaching the worker, however often botocore
    # sends it
    _counts_writes_resent(table, monkeypatch, answer="lost")
    # WHEN the page is counted, then its message runs again (as after a failed invocation)
    first = events.count_fanout_page("evt_page", marker, expires_at=now + 3600, matched=3, fanout_open=-1)
    monkeypatch.undo()
    again = events.count_fanout_page("evt_page", marker, expires_at=now + 3600, matched=3, fanout_open=-1)
    # THEN the page is counted once: the first call found its update applied and kept its marker
    assert (first, again) == (True, False)
    stored = events.get_with_counts("evt_page")
    assert (stored.matched, stored.fanout_open) == (3, 0)


def test_a_fanout_page_of_an_event_id_used_again_is_counted_despite_the_expired_events_marker(services) -> None:
    events = services.store.events
    now = int(time.time())
    # GIVEN an event whose earlier use of its id expired, leaving a page marker that DynamoDB's TTL has not removed
    # yet (the same page: same tenant, route and cursor)
    marker = "tnt_1|invoice.paid|"
    services.store.client.put_item(
        TableName=services.store.table_name,
        Item=to_item({**keys.fanout_page("evt_again", marker), "expires_at": now - 60}),
    )
    event = new_event("invoice.paid", INVOICE, tenant_id="tnt_1", event_id="evt_again")
    events.create(event, fingerprint="f", expires_at=now + 3600)
    # WHEN the new event's page is counted, then counted again (its message shown twice)
    first = events.count_fanout_page("evt_again", marker, expires_at=now + 3600, matched=3, fanout_open=-1)
    again = events.count_fanout_page("evt_again", marker, expires_at=now + 3600, matched=3, fanout_open=-1)
    # THEN it is counted once: the expired event's marker is not this page's
    assert (first, again) == (True, False)
    stored = events.get_with_counts("evt_again")
    assert (stored.matched, stored.fanout_open) == (3, 0)


@pytest.mark.parametrize("settings_overrides", [{"event_ttl_days": 1}])
def test_an_event_outlives_its_last_possible_retry(services) -> None:
    # GIVEN a one-day retention but a retry schedule of ~27.6 hours (up to twice that with Retry-After)
    now = datetime.now(UTC)
    # WHEN an event's expiry is set
    expires = event_expiry(services, now)
    # THEN it is after the last retry could happen, plus a day
    span = services.retry_policy.longest_span_seconds
    assert span > 24 * 3600
    assert expires >= now.timestamp() + span + 24 * 3600 - 1
    # AND after the last a delivery held by an open breaker can wait (until its subscription, failing all along,
    # is disabled: 5 days), plus a day
    held = services.settings.disable_after_failing_hours * 3600
    assert held > span
    assert expires >= now.timestamp() + held + 24 * 3600 - 1


def test_a_request_dynamodb_will_refuse_again_is_logged_as_an_error(services, caplog) -> None:
    import logging

    from herald.storage.table import to_item

    store = services.store
    table = store.events._table
    # GIVEN a request DynamoDB refuses whatever the retries (an update expression over its 4 KB limit)
    doomed = ", ".join(f"recent_latency_ms[{index}]" for index in range(400))
    # WHEN the store makes it
    with caplog.at_level(logging.ERROR, logger="herald.storage.table"), pytest.raises(ServiceUnavailableError):
        table.call("update_item", Key=to_item(keys.subscription_stats("sub_x")), UpdateExpression=f"REMOVE {doomed}")
    # THEN it is still answered as unavailable, and logged as an error naming the operation and DynamoDB's code
    (logged,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert (logged.operation, logged.code) == ("update_item", "ValidationException")
    assert "Expression size has exceeded" in logged.reason
    # AND a request throttled past botocore's retries, which a later try may pass, is not logged as an error
    caplog.clear()
    injector = install(store.client, "dynamodb.GetItem:throttle@call=calls:1-1")
    assert injector is not None
    with caplog.at_level(logging.ERROR, logger="herald.storage.table"), pytest.raises(ServiceUnavailableError):
        table.read(keys.subscription_stats("sub_x"))
    injector.spec = FaultSpec()
    assert [record for record in caplog.records if record.levelno == logging.ERROR] == []
