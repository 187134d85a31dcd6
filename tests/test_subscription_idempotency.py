"""Creating a subscription with an ``Idempotency-Key`` makes it once: a retry after a timeout, a lost answer or a
double click gets the subscription the first request made, never a second one that would receive every event
again. The key is the tenant's own, holds a day, and refuses another request (409)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from herald.faults import install
from herald.services import Services
from tests.api_support import assert_error
from tests.portal_support import Browser, sign_in
from tests.support import Clock, Receiver, TenantInfo


def _create(client, tenant: TenantInfo, url: str, key: str | None, **extra: Any) -> Any:
    headers = {**tenant.headers, **({"Idempotency-Key": key} if key else {})}
    return client.post(
        "/v1/subscriptions", json={"url": url, "event_types": ["invoice.paid"], **extra}, headers=headers
    )


def _request_keys(page: str) -> list[str]:
    """The creation keys (``request_key``) of the new-endpoint forms in ``page``, as the page writes them."""
    return re.findall(r'name="request_key" value="([^"]+)"', page)


def _listed(client, tenant: TenantInfo) -> list[str]:
    return [sub["id"] for sub in client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]]


def test_a_creation_sent_again_with_its_key_answers_the_subscription_it_made(client, tenant, receiver) -> None:
    # WHEN a subscription is created with an Idempotency-Key, and the same request is sent again
    first = _create(client, tenant, receiver.url, "create-hook-1")
    again = _create(client, tenant, receiver.url, "create-hook-1")
    # THEN the second answers the subscription the first made, with its secret, and says it is a replay
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["secret"] == first.json()["secret"]
    # AND the tenant has that one subscription
    assert _listed(client, tenant) == [first.json()["id"]]


def test_a_key_with_another_request_is_a_409_and_makes_nothing(client, tenant, receiver) -> None:
    # GIVEN a subscription created with a key
    first = _create(client, tenant, receiver.url, "create-hook-1")
    # WHEN the key comes with another request
    other = _create(client, tenant, receiver.url, "create-hook-1", description="another")
    # THEN it is a 409, and no other subscription was made
    assert_error(other, 409, "idempotency_key_reused")
    assert _listed(client, tenant) == [first.json()["id"]]


def test_a_key_is_the_tenants_own(client, make_tenant, receiver) -> None:
    # WHEN two tenants create a subscription each with the same key
    made = [_create(client, make_tenant(name), receiver.url, "create-hook-1") for name in ("a", "b")]
    # THEN each has its own
    assert [response.status_code for response in made] == [201, 201]
    assert made[0].json()["id"] != made[1].json()["id"]
    assert "idempotent-replayed" not in made[1].headers


def test_two_creations_with_one_key_at_once_make_one_subscription(client, tenant, services, receiver, monkeypatch):
    # GIVEN a second request with the key that looked the key up before the first one's write (both at once)
    repository = services.store.subscriptions
    looked_up = repository.creation
    calls: list[Any] = []

    def before_the_first_write(tenant_id: str, key: str) -> Any:
        calls.append(key)
        return None if len(calls) == 2 else looked_up(tenant_id, key)

    monkeypatch.setattr(repository, "creation", before_the_first_write)
    first = _create(client, tenant, receiver.url, "create-hook-1")
    # WHEN it writes
    second = _create(client, tenant, receiver.url, "create-hook-1")
    # THEN its write is refused by the key's record, and it answers the first one's subscription
    assert second.status_code == 201, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert _listed(client, tenant) == [first.json()["id"]]
    assert repository.count(tenant.id) == 1


def test_a_key_whose_subscription_was_deleted_is_a_409(client, tenant, receiver) -> None:
    # GIVEN a subscription created with a key, then deleted
    first = _create(client, tenant, receiver.url, "create-hook-1").json()
    assert client.delete(f"/v1/subscriptions/{first['id']}", headers=tenant.headers).status_code == 204
    # WHEN the request is sent again
    again = _create(client, tenant, receiver.url, "create-hook-1")
    # THEN it is a 409 saying so, not a subscription made again behind the tenant's back
    error = assert_error(again, 409, "idempotency_key_reused")
    assert "deleted" in error["message"]
    assert _listed(client, tenant) == []


def test_a_key_holds_a_day(client, tenant, services, receiver) -> None:
    # GIVEN a subscription created with a key
    first = _create(client, tenant, receiver.url, "create-hook-1").json()
    # WHEN the request is sent again a day on
    services.store.table.clock = Clock(services.store.table.clock() + 24 * 3600 + 1)
    again = _create(client, tenant, receiver.url, "create-hook-1")
    # THEN it makes another subscription
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    assert sorted(_listed(client, tenant)) == sorted([first["id"], again.json()["id"]])


@pytest.mark.parametrize("key", ["", "a b", "x" * 256])
def test_a_key_that_is_not_printable_ascii_of_up_to_255_is_a_422(client, tenant, receiver, key: str) -> None:
    headers = {**tenant.headers, "Idempotency-Key": key}
    response = client.post("/v1/subscriptions", json={"url": receiver.url, "event_types": ["*"]}, headers=headers)
    assert_error(response, 422)
    assert _listed(client, tenant) == []


@pytest.mark.parametrize("depth", [13, 300])
def test_a_filter_nested_too_deep_is_the_same_422_with_a_key(client, tenant, receiver, depth: int) -> None:
    # GIVEN a filter nested deeper than filters may be (300: deeper than a request's digest can serialise)
    nested: dict[str, Any] = {"currency": "EUR"}
    for _ in range(depth):
        nested = {"x": nested}
    # WHEN it is sent without and with an Idempotency-Key
    answers = [_create(client, tenant, receiver.url, key, filter=nested) for key in (None, "create-hook-deep")]
    # THEN both are the same 422 naming the filter, and nothing was made
    problems = [assert_error(answer, 422, "invalid_filter") for answer in answers]
    assert problems[0] == problems[1]
    assert [detail["type"] for detail in problems[1]["details"]] == ["filter_too_deep"]
    assert _listed(client, tenant) == []


def test_the_portals_new_endpoint_form_sent_twice_makes_one_endpoint(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN the new-endpoint form, filled in
    me = browser()
    csrf = sign_in(me, tenant.id)
    page = me.get("/portal/endpoints/new").text
    (key,) = _request_keys(page)
    form = {"csrf_token": csrf, "request_key": html.unescape(key), "url": receiver.url, "event_types": "invoice.paid"}
    # WHEN it is sent twice (a double click with scripting off, a reload that posts again)
    sent = [me.post("/portal/endpoints", data=form, follow_redirects=False) for _ in range(2)]
    # THEN both lead to the one endpoint it made
    assert [response.status_code for response in sent] == [303, 303]
    assert sent[0].headers["location"] == sent[1].headers["location"]
    assert len(_listed(client, tenant)) == 1
    # AND the form changed and sent again with that key (the back button) says so, and makes nothing
    changed = me.post("/portal/endpoints", data={**form, "description": "changed"}, follow_redirects=False)
    assert changed.status_code == 409
    assert "The endpoint this form created exists" in html.unescape(changed.text)
    assert len(_listed(client, tenant)) == 1
    # AND a new form has a new key
    assert _request_keys(me.get("/portal/endpoints/new").text) != [key]


def test_a_key_with_a_header_value_changed_is_a_409(client, tenant, receiver) -> None:
    # GIVEN a subscription created with a key, and a header whose value is a secret (never shown back)
    headers = {"Authorization": {"value": "Bearer wrong", "sensitive": True}, "X-Route": {"value": "old"}}
    first = _create(client, tenant, receiver.url, "create-hook-1", headers=headers)
    assert first.status_code == 201, first.text
    # WHEN the request is sent again with the key and the values corrected
    corrected = {"Authorization": {"value": "Bearer right", "sensitive": True}, "X-Route": {"value": "new"}}
    again = _create(client, tenant, receiver.url, "create-hook-1", headers=corrected)
    # THEN it is another request: a 409, not the first subscription answered as if it had been made as asked
    assert_error(again, 409, "idempotency_key_reused")


def test_the_portals_form_sent_again_once_its_endpoint_was_deleted_says_so(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN the new-endpoint form sent, and the endpoint it made deleted
    me = browser()
    csrf = sign_in(me, tenant.id)
    (key,) = _request_keys(me.get("/portal/endpoints/new").text)
    form = {"csrf_token": csrf, "request_key": html.unescape(key), "url": receiver.url, "event_types": "invoice.paid"}
    assert me.post("/portal/endpoints", data=form, follow_redirects=False).status_code == 303
    (made,) = _listed(client, tenant)
    assert client.delete(f"/v1/subscriptions/{made}", headers=tenant.headers).status_code == 204
    # WHEN the same form is sent again (a reload)
    again = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN the page says the endpoint was deleted since, and makes nothing
    assert again.status_code == 409
    assert "was deleted since" in html.unescape(again.text)
    assert _listed(client, tenant) == []


@pytest.mark.parametrize(
    "fault",
    [
        "dynamodb.TransactWriteItems:lost=calls:1",  # made, its answer lost after botocore's retries
        "dynamodb.TransactWriteItems:throttle@call=calls:1",  # not made: throttled through botocore's retries
    ],
)
def test_the_portals_form_whose_creation_got_no_answer_comes_back_to_be_sent_again_and_makes_one_endpoint(
    browser: Browser, client, tenant: TenantInfo, services: Services, receiver: Receiver, fault: str
) -> None:
    # GIVEN the new-endpoint form filled in, and DynamoDB giving its creation no answer
    me = browser()
    csrf = sign_in(me, tenant.id)
    (key,) = _request_keys(me.get("/portal/endpoints/new").text)
    form = {
        "csrf_token": csrf,
        "request_key": html.unescape(key),
        "url": receiver.url,
        "event_types": "invoice.paid",
        "description": "billing",
    }
    injector = install(services.store.client, fault)
    assert injector is not None
    # WHEN the tenant sends it
    failed = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN the form comes back (503, Retry-After) with what was typed and its own key, saying the endpoint may have
    # been made and that sending it again makes one
    assert [hit.operation for hit in injector.injected] == ["TransactWriteItems"]
    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "1"
    page = html.unescape(failed.text)
    assert "may have been saved" in page
    assert "Send the form again: it makes one endpoint" in page
    assert _request_keys(failed.text) == [key]
    assert f'value="{receiver.url}"' in page
    assert ">billing</textarea>" in page
    # WHEN the tenant sends the form it got back
    again = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN there is one endpoint, the one the form asked for
    assert again.status_code == 303, again.text
    (made,) = _listed(client, tenant)
    assert again.headers["location"].startswith(f"/portal/endpoints/{made}")
    sub = client.get(f"/v1/subscriptions/{made}", headers=tenant.headers).json()
    assert (sub["url"], sub["event_types"], sub["description"]) == (receiver.url, ["invoice.paid"], "billing")


def test_a_new_endpoint_form_sent_without_its_key_promises_nothing_of_a_second_try(
    browser: Browser, client, tenant: TenantInfo, services: Services, receiver: Receiver
) -> None:
    # GIVEN a new-endpoint form sent without its creation's key (a page from before, a hand-made post), and DynamoDB
    # giving its creation no answer
    me = browser()
    csrf = sign_in(me, tenant.id)
    install(services.store.client, "dynamodb.TransactWriteItems:lost=calls:1")
    failed = me.post(
        "/portal/endpoints",
        data={"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid"},
        follow_redirects=False,
    )
    # THEN the form comes back saying the endpoint may have been saved, but not that sending it again makes one: its
    # new key is not the one the first try was made with
    assert failed.status_code == 503
    page = html.unescape(failed.text)
    assert "may have been saved" in page
    assert "makes one endpoint" not in page


@pytest.mark.parametrize("key", ["a b", "x" * 256, "clé"])
def test_a_portal_creation_key_out_of_the_apis_bounds_is_a_422_with_a_new_key(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, key: str
) -> None:
    # GIVEN a hand-made post of the new-endpoint form whose creation key the API's Idempotency-Key would refuse
    me = browser()
    csrf = sign_in(me, tenant.id)
    form = {"csrf_token": csrf, "request_key": key, "url": receiver.url, "event_types": "invoice.paid"}
    refused = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN the form comes back refused, saying why, and nothing was made
    assert refused.status_code == 422
    assert "creation key is not valid" in html.unescape(refused.text)
    assert _listed(client, tenant) == []
    # AND with a key of its own, with which it makes the endpoint
    (new_key,) = _request_keys(refused.text)
    assert html.unescape(new_key) != key
    sent = me.post("/portal/endpoints", data={**form, "request_key": html.unescape(new_key)}, follow_redirects=False)
    assert sent.status_code == 303
    assert len(_listed(client, tenant)) == 1
