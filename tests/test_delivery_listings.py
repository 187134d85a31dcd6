"""Listing a subscription's deliveries by status: pending and failed come from the status index, succeeded
ones (which leave that index, so a first attempt that succeeds writes one index entry) from the
subscription's listing, in full pages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api_support import assert_error
from tests.delivery_support import delivery_pages, publish, subscribe
from tests.support import Receiver, TenantInfo


def _ids(client: Any, tenant: TenantInfo, sub_id: str, status: str, limit: int = 50) -> list[list[str]]:
    """Every page of the subscription's deliveries with ``status``, as lists of ids."""
    return delivery_pages(client, tenant, sub_id, status=status, limit=limit)


def test_a_delivery_moves_from_pending_to_succeeded(
    client, tenant, services, harness, clock, receiver: Receiver
) -> None:
    # GIVEN a receiver that fails once, then answers 200
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    # WHEN the first attempt fails
    harness.drain()
    (pending,) = _ids(client, tenant, sub.id, "pending")
    # THEN the delivery is listed as pending, not as succeeded
    assert len(pending) == 1
    assert _ids(client, tenant, sub.id, "succeeded") == [[]]
    # WHEN its retry succeeds
    clock.advance(10)
    harness.reveal()
    harness.drain()
    # THEN it is listed as succeeded and no longer as pending or failed
    assert _ids(client, tenant, sub.id, "succeeded") == [pending]
    assert _ids(client, tenant, sub.id, "pending") == [[]]
    assert _ids(client, tenant, sub.id, "failed") == [[]]
    # AND the stored delivery, under its subscription, has left the status index (no index entry to write)
    item = services.store.client.get_item(
        TableName=services.settings.table_name,
        Key={"pk": {"S": f"DELIVERIES#{sub.id}"}, "sk": {"S": pending[0]}},
    )["Item"]
    assert item["status"]["S"] == "succeeded"
    assert not {"gsi1pk", "gsi2pk"} & item.keys()


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0"}])
def test_succeeded_deliveries_page_in_full_among_failed_ones(client, tenant, harness, receiver: Receiver) -> None:
    # GIVEN seven deliveries to one subscription, alternately succeeded and failed (one attempt each)
    receiver.responses = [((200 if n % 2 == 0 else 500), {}, b"", 0.0) for n in range(7)]
    sub = subscribe(client, tenant, receiver.url)
    for _ in range(7):
        publish(client, tenant.id)
        harness.drain()
    # WHEN the succeeded ones are listed two per page
    pages = _ids(client, tenant, sub.id, "succeeded", limit=2)
    # THEN every page but the last is full, newest first, and each of the four appears once
    assert [len(page) for page in pages if page] == [2, 2]
    listed = [delivery_id for page in pages for delivery_id in page]
    everything = [delivery_id for page in _ids(client, tenant, sub.id, "failed") for delivery_id in page]
    assert len(listed) == len(set(listed)) == 4
    assert len(everything) == 3
    assert set(listed).isdisjoint(everything)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0"}])
def test_deliveries_are_listed_by_event_type_alone_or_with_a_status(
    client, tenant, harness, receiver: Receiver
) -> None:
    # GIVEN a subscription to everything, with deliveries of two event types, some failed (one attempt each)
    receiver.responses = [(200, {}, b"", 0.0), (500, {}, b"", 0.0), (200, {}, b"", 0.0), (500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url, ["*"])
    for event_type in ("invoice.paid", "order.shipped", "invoice.paid", "invoice.paid"):
        publish(client, tenant.id, event_type)
        harness.drain()
    every = [d for page in delivery_pages(client, tenant, sub.id) for d in page]
    # WHEN they are listed by event type, one per page, alone and with a status
    invoices = [d for page in delivery_pages(client, tenant, sub.id, event_type="invoice.paid", limit=1) for d in page]
    orders = [d for page in delivery_pages(client, tenant, sub.id, event_type="order.shipped") for d in page]
    failed_invoices = [
        d for page in delivery_pages(client, tenant, sub.id, event_type="invoice.paid", status="failed") for d in page
    ]
    # THEN each listing holds those deliveries only, newest first
    assert len(invoices) == 3
    assert len(orders) == 1
    assert set(invoices) | set(orders) == set(every)
    assert invoices == sorted(invoices, reverse=True)
    listed = client.get(
        f"/v1/subscriptions/{sub.id}/deliveries", params={"event_type": "order.shipped"}, headers=tenant.headers
    )
    assert [d["event_type"] for d in listed.json()["data"]] == ["order.shipped"]
    assert len(failed_invoices) == 1
    failed = client.get(
        f"/v1/subscriptions/{sub.id}/deliveries",
        params={"event_type": "invoice.paid", "status": "failed"},
        headers=tenant.headers,
    ).json()["data"]
    assert [(d["event_type"], d["status"]) for d in failed] == [("invoice.paid", "failed")]


def test_an_event_type_not_in_the_catalog_is_a_422(client, tenant, receiver: Receiver) -> None:
    # GIVEN a subscription
    sub = subscribe(client, tenant, receiver.url)
    # WHEN its deliveries are listed by a type the catalog does not hold, or by an empty one
    unknown = client.get(
        f"/v1/subscriptions/{sub.id}/deliveries", params={"event_type": "nope.nope"}, headers=tenant.headers
    )
    empty = client.get(f"/v1/subscriptions/{sub.id}/deliveries", params={"event_type": ""}, headers=tenant.headers)
    # THEN each is refused with a machine-readable reason
    assert_error(unknown, 422, "unknown_event_type")
    assert unknown.json()["error"]["details"][0]["loc"] == ["query", "event_type"]
    assert empty.status_code == 422


def test_an_empty_iterator_is_the_first_page_of_a_deliverys_attempts(
    client, tenant: TenantInfo, harness, receiver: Receiver
) -> None:
    # GIVEN a delivery whose one attempt succeeded (kept inside the delivery's own item)
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness.drain()
    (delivery,) = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
    path = f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/attempts"
    first = client.get(path, headers=tenant.headers).json()
    assert [attempt["attempt_number"] for attempt in first["data"]] == [1]
    # WHEN it is listed with an empty iterator, as every listing reads it: the first page
    empty = client.get(f"{path}?iterator=", headers=tenant.headers)
    # THEN the first page it is, the attempt included
    assert empty.status_code == 200, empty.text
    assert empty.json() == first


def _attempted(client: Any, tenant: TenantInfo, harness: Any, receiver: Receiver, attempts: int) -> str:
    """A delivery attempted ``attempts`` times (retried by the tenant), as the receiver answers: its API path."""
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness.drain()
    [delivery] = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
    base = f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}"
    for _ in range(attempts - 1):
        assert client.post(f"{base}/retry", headers=tenant.headers).status_code == 202
        harness.drain()
    return base


def _attempt_pages(client: Any, tenant: TenantInfo, base: str) -> list[Any]:
    """Every page of a delivery's attempts, 250 a page asked for."""
    pages, iterator = [], None
    while True:
        params: dict[str, Any] = {"limit": 250} | ({"iterator": iterator} if iterator else {})
        response = client.get(f"{base}/attempts", params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        pages.append(response)
        if response.json()["done"]:
            return pages
        iterator = response.json()["iterator"]


def test_a_deliverys_attempts_with_large_answers_page_within_lambdas_response_limit(
    client, tenant, harness, receiver: Receiver
) -> None:
    # GIVEN a delivery with twenty attempts, each answered 500 with a body larger than an attempt keeps (20 KB kept)
    receiver.default = (500, {}, b'"<error>"' * 4_000, 0.0)
    base = _attempted(client, tenant, harness, receiver, 20)
    # WHEN its attempts are listed, 250 a page asked for
    pages = _attempt_pages(client, tenant, base)
    # THEN each page stays far under Lambda's 6 MB (the twenty would take 2.7 MB at their worst escaped), and the
    # pages together hold every attempt once, oldest first
    assert len(pages) > 1
    assert all(len(page.content) < 2_500_000 for page in pages)
    numbers = [attempt["attempt_number"] for page in pages for attempt in page.json()["data"]]
    assert numbers == list(range(1, 21))
    assert all(len(attempt["response_body"]) >= 19_000 for page in pages for attempt in page.json()["data"])


def test_a_page_of_attempts_answered_in_emoji_keeps_its_bound_in_lambdas_response(
    client, tenant, harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a bound of 200 KB on a page of attempts, and a delivery with eight attempts, each answered 500 with 5,000
    # emoji (20,000 bytes, the most an attempt keeps; each emoji 12 bytes in Lambda's response, \ud83d\ude00)
    monkeypatch.setattr("herald.storage.deliveries.ATTEMPTS_PAGE_BYTES", 200_000)
    receiver.default = (500, {"content-type": "text/plain; charset=utf-8"}, "😀".encode() * 5_000, 0.0)
    base = _attempted(client, tenant, harness, receiver, 8)
    # WHEN its attempts are listed
    pages = _attempt_pages(client, tenant, base)
    # THEN every attempt is listed once, with its body
    numbers = [attempt["attempt_number"] for page in pages for attempt in page.json()["data"]]
    assert numbers == list(range(1, 9))
    assert all(attempt["response_body"] == "😀" * 5_000 for page in pages for attempt in page.json()["data"])
    # AND each page takes at most the bound in Lambda's response (the body a string in its JSON, escaped at its worst)
    assert all(len(json.dumps(page.text)) <= 200_000 for page in pages), [len(json.dumps(p.text)) for p in pages]
