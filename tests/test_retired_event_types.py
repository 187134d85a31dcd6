"""Subscriptions that keep an event type the catalog no longer lists (retired by a deploy since they subscribed):
a filter's ``$type`` may name it, as the subscription may keep it; conditions are checked against the types the
catalog lists, but for a kept filter's branch that only the retired type's events can meet. Their deliveries of it
can still be listed by that type."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from herald.catalog import catalog
from tests.delivery_support import publish, subscribe
from tests.portal_support import Browser, sign_in
from tests.support import drain

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from herald.local.poller import SqsPoller
    from tests.support import Receiver, TenantInfo

#: Each type its own conditions: a carrier for the shipments, an amount for the invoices.
BY_TYPE = {
    "$or": [
        {"$type": "order.shipped", "carrier": "DHL"},
        {"$type": "invoice.paid", "amount_cents": {"$gte": 1000}},
    ]
}


def _filtered_then_retired(
    client: TestClient,
    tenant: TenantInfo,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    flt: dict[str, Any],
    event_types: tuple[str, ...] = ("invoice.paid", "order.shipped"),
) -> str:
    """A subscription of ``event_types`` with ``flt``, order.shipped retired since: its path."""
    made = client.post(
        "/v1/subscriptions", json={"url": url, "event_types": list(event_types), "filter": flt}, headers=tenant.headers
    )
    assert made.status_code == 201, made.text
    monkeypatch.delitem(catalog._types, "order.shipped")
    return f"/v1/subscriptions/{made.json()['id']}"


def test_a_filter_naming_a_retired_type_is_kept_when_the_event_types_change(
    client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription whose filter gives each of its two types its conditions, one type retired since
    path = _filtered_then_retired(client, tenant, receiver.url, monkeypatch, BY_TYPE)
    # WHEN the tenant subscribes to one more type, keeping the retired one
    more = ["invoice.paid", "order.shipped", "subscription.created"]
    changed = client.patch(path, json={"event_types": more}, headers=tenant.headers)
    # THEN it is saved with its filter as it was: the retired type is still subscribed, and the conditions of its
    # branch can only be met by its events
    assert changed.status_code == 200, changed.text
    assert (changed.json()["event_types"], changed.json()["filter"]) == (more, BY_TYPE)
    # AND a client that PATCHes back the object it read, the filter with it, changes nothing either
    sent_back = client.patch(path, json={"event_types": more[:2], "filter": BY_TYPE}, headers=tenant.headers)
    assert sent_back.status_code == 200, sent_back.text
    assert sent_back.json()["filter"] == BY_TYPE


def test_a_kept_filter_that_leaves_only_the_retired_type_is_refused_saying_so(
    client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription whose filter lets only order.shipped through, order.shipped retired since
    path = _filtered_then_retired(client, tenant, receiver.url, monkeypatch, {"$type": "order.shipped"})
    # WHEN the tenant adds a type the filter would never let through
    more = ["invoice.paid", "order.shipped", "subscription.created"]
    refused = client.patch(path, json={"event_types": more}, headers=tenant.headers)
    # THEN it is a 422 pointing at the event types, saying the filter leaves no type the catalog still publishes
    assert refused.status_code == 422, refused.text
    [detail] = refused.json()["error"]["details"]
    assert (detail["loc"], detail["type"]) == (["body", "event_types"], "filter_contradiction")
    assert "leave none of the subscribed event types (invoice.paid, subscription.created)" in detail["msg"]
    assert (
        "order.shipped is no longer in the event catalog: none of its events will be published again" in detail["msg"]
    )
    # AND nothing changed
    assert client.get(path, headers=tenant.headers).json()["event_types"] == ["invoice.paid", "order.shipped"]


def test_a_kept_filter_that_leaves_only_two_retired_types_is_refused_naming_both(
    client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription whose filter lets only its two types through, both retired since
    only_these = {"$type": {"$in": ["invoice.paid", "order.shipped"]}}
    path = _filtered_then_retired(client, tenant, receiver.url, monkeypatch, only_these)
    monkeypatch.delitem(catalog._types, "invoice.paid")
    # WHEN the tenant adds a type the filter would never let through
    more = ["invoice.paid", "order.shipped", "subscription.created"]
    refused = client.patch(path, json={"event_types": more}, headers=tenant.headers)
    # THEN the 422 names both retired types, and says none of their events will be published again
    assert refused.status_code == 422, refused.text
    [detail] = refused.json()["error"]["details"]
    assert (detail["loc"], detail["type"]) == (["body", "event_types"], "filter_contradiction")
    assert "leave none of the subscribed event types (subscription.created)" in detail["msg"]
    assert (
        "invoice.paid, order.shipped are no longer in the event catalog: none of their events will be published again"
        in detail["msg"]
    )
    # AND nothing changed
    assert client.get(path, headers=tenant.headers).json()["event_types"] == ["invoice.paid", "order.shipped"]


#: A branch for subscription.created alone (written as "neither of the others"), on a field only it has.
NEITHER = {
    "$or": [{"$type": {"$nin": ["invoice.paid", "order.shipped"]}, "username": "ada"}, {"$type": "invoice.paid"}]
}


@pytest.mark.parametrize(
    ("stored", "types", "field"),
    [
        ({"amount_cents": {"$gte": 1000}}, ["order.shipped", "subscription.created"], "amount_cents"),
        ({"carrier": "DHL"}, ["invoice.paid", "order.shipped", "subscription.created"], "carrier"),
        (NEITHER, ["invoice.paid", "order.shipped"], "username"),
    ],
    ids=[
        "a field only the type left out had",
        "a field only the retired type had",
        "a branch left to no subscribed type",
    ],
)
def test_a_kept_filter_whose_conditions_no_listed_type_can_meet_is_refused_when_the_event_types_change(
    client: TestClient,
    tenant: TenantInfo,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    stored: dict[str, Any],
    types: list[str],
    field: str,
) -> None:
    # GIVEN a subscription whose filter has a condition no branch leaves to the retired type alone, order.shipped
    # retired since
    initial = ("invoice.paid", "order.shipped", *(("subscription.created",) if stored is NEITHER else ()))
    path = _filtered_then_retired(client, tenant, receiver.url, monkeypatch, stored, initial)
    # WHEN its event types change so that no type the catalog lists has that field
    refused = client.patch(path, json={"event_types": types}, headers=tenant.headers)
    # THEN it is a 422 pointing at the event types: the condition would let no event of the new types through, and
    # the retired type, which has no schema left, excuses nothing outside a branch of its own
    assert refused.status_code == 422, refused.text
    [detail] = refused.json()["error"]["details"]
    assert (detail["loc"], detail["type"]) == (["body", "event_types"], "filter_unknown_path")
    assert f"has a field {field!r} (order.shipped is no longer in the event catalog" in detail["msg"]


def test_a_new_filter_may_name_a_retired_type_but_its_conditions_are_checked_against_the_catalog(
    client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription of invoice.paid and order.shipped, order.shipped retired since
    path = _filtered_then_retired(client, tenant, receiver.url, monkeypatch, {"amount_cents": {"$gte": 1}})
    # WHEN the tenant sets a filter that names the retired type beside the other
    named = {"$or": [{"$type": "order.shipped"}, {"$type": "invoice.paid", "currency": "EUR"}]}
    saved = client.patch(path, json={"filter": named}, headers=tenant.headers)
    # THEN it is saved
    assert saved.status_code == 200, saved.text
    assert saved.json()["filter"] == named
    # WHEN it sets one with a condition on a field only the retired type had, outside a branch of that type
    carrier = client.patch(path, json={"filter": {"carrier": "DHL"}}, headers=tenant.headers)
    # THEN it is refused: no type the catalog lists has that field, and the message says why the retired one does not
    # count
    assert carrier.status_code == 422, carrier.text
    [detail] = carrier.json()["error"]["details"]
    assert (detail["loc"], detail["type"]) == (["body", "filter", "carrier"], "filter_unknown_path")
    assert detail["msg"] == (
        "no subscribed event type (invoice.paid) has a field 'carrier' "
        "(order.shipped is no longer in the event catalog, and is not checked against)"
    )
    # WHEN it sets one with a condition in a branch of the retired type's own, on a field it had or one a listed type
    # has (order.shipped has no currency)
    for field in ("carrier", "currency"):
        flt = {"$or": [{"$type": "order.shipped", field: "EUR"}, {"$type": "invoice.paid"}]}
        own = client.patch(path, json={"filter": flt}, headers=tenant.headers)
        # THEN it is refused: there is no schema to check it against, and it would decide a redelivery of the retired
        # type's stored events unchecked
        assert own.status_code == 422, own.text
        [detail] = own.json()["error"]["details"]
        assert (detail["loc"], detail["type"]) == (["body", "filter", "$or", 0, field], "filter_unchecked")
        assert detail["msg"] == (
            f"'{field}': only events of order.shipped can meet this condition, and order.shipped is no longer in the "
            "event catalog: a new condition on them cannot be checked"
        )
    # AND a retired type the subscription does not hold is not subscribed
    other = subscribe(client, tenant, receiver.url)  # invoice.paid alone
    unheld = client.patch(
        f"/v1/subscriptions/{other.id}", json={"filter": {"$type": {"$ne": "order.shipped"}}}, headers=tenant.headers
    )
    assert unheld.status_code == 422, unheld.text
    assert [d["type"] for d in unheld.json()["error"]["details"]] == ["filter_unknown_event_type"]


def test_a_new_condition_left_to_one_of_two_retired_types_names_that_one(
    client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription of three types, two of them retired since
    types = ("invoice.paid", "order.shipped", "subscription.created")
    path = _filtered_then_retired(client, tenant, receiver.url, monkeypatch, {"amount_cents": 1}, types)
    monkeypatch.delitem(catalog._types, "subscription.created")
    # WHEN the tenant sets a filter with a condition in order.shipped's own branch
    flt = {"$or": [{"$type": "order.shipped", "carrier": "DHL"}, {"$type": "invoice.paid"}]}
    refused = client.patch(path, json={"filter": flt}, headers=tenant.headers)
    # THEN it is refused, naming the one retired type whose events could meet it
    assert refused.status_code == 422, refused.text
    [detail] = refused.json()["error"]["details"]
    assert detail["msg"] == (
        "'carrier': only events of order.shipped can meet this condition, and order.shipped is no longer in the event "
        "catalog: a new condition on them cannot be checked"
    )


@pytest.mark.parametrize("event_types", [("invoice.paid", "order.shipped"), ("*",)], ids=["named", "wildcard"])
def test_the_deliveries_of_a_retired_type_can_still_be_listed_by_that_type(
    client: TestClient,
    tenant: TenantInfo,
    receiver: Receiver,
    poller: SqsPoller,
    browser: Browser,
    monkeypatch: pytest.MonkeyPatch,
    event_types: tuple[str, ...],
) -> None:
    # GIVEN an endpoint with a delivery of each of two types (both named, or every type taken), one retired since
    sub = subscribe(client, tenant, receiver.url, event_types)
    publish(client, tenant.id, "order.shipped")
    publish(client, tenant.id, "invoice.paid")
    drain(poller)
    monkeypatch.delitem(catalog._types, "order.shipped")
    path = f"/v1/subscriptions/{sub.id}/deliveries"
    # WHEN the tenant lists its deliveries of the retired type
    listed = client.get(path, params={"event_type": "order.shipped"}, headers=tenant.headers)
    # THEN the one delivery of that type is listed, as the subscription still takes the type
    assert listed.status_code == 200, listed.text
    assert [item["event_type"] for item in listed.json()["data"]] == ["order.shipped"]
    # AND a type neither the catalog lists nor the subscription takes is still refused; a `*` subscription takes
    # any, and has none of this one
    other = client.get(path, params={"event_type": "order.cancelled"}, headers=tenant.headers)
    if event_types == ("*",):
        assert (other.status_code, other.json()["data"]) == (200, [])
    else:
        assert (other.status_code, other.json()["error"]["code"]) == (422, "unknown_event_type")
    # AND a name no event type could have is refused on either
    malformed = client.get(path, params={"event_type": "Order Shipped"}, headers=tenant.headers)
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (422, "unknown_event_type")
    # AND the portal's endpoint page offers the retired type in its filter, and lists only its delivery under it
    me = browser()
    sign_in(me, tenant.id, "read")
    page = me.get(f"/portal/endpoints/{sub.id}", params={"event_type": "order.shipped"})
    assert page.status_code == 200, page.text[:300]
    assert '<option value="order.shipped" selected>' in page.text
    shown = re.findall(rf'href="/portal/endpoints/{sub.id}/deliveries/(dlv_\w+)"', page.text)
    assert shown == [item["id"] for item in listed.json()["data"]]
