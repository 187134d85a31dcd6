"""A caller's event id is its deliveries' ``webhook-id``, and the signature covers ``{id}.{timestamp}.{body}``:
Standard Webhooks asks that a caller-chosen id hold no ``.``, lest the signed content be split at another dot into
another id and timestamp under the same signature. A new id with a dot is refused; an event stored under one before
is still looked up, redelivered and verified, and a publish of it repeated is answered as any repeat is."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest
from standardwebhooks import Webhook

from herald.cli.commands import event_id
from herald.domain.publishing import NotQueuedError, publish
from herald.faults import install
from herald.schemas import EventIn
from tests.api_support import assert_error
from tests.delivery_support import subscribe
from tests.support import ADMIN, INVOICE, Receiver, TenantInfo, drain

pytestmark = pytest.mark.e2e

DOTTED = "order.1796631543"


def test_a_publish_with_a_dot_in_its_id_is_refused_and_nothing_stored(client: Any, tenant: TenantInfo) -> None:
    # WHEN an event is published with an id holding a dot (an id and a timestamp-like part)
    body = {"type": "invoice.paid", "tenant_id": tenant.id, "id": DOTTED, "data": INVOICE}
    response = client.post("/v1/events", json=body, headers=ADMIN)
    # THEN it is a 422 at its id, saying why; no event is stored under it
    error = assert_error(response, 422, "validation_error")
    assert error["details"][0]["loc"] == ["body", "id"]
    assert "(no ., as Standard Webhooks asks of an id it signs)" in error["details"][0]["msg"]
    assert_error(client.get(f"/v1/events/{DOTTED}", headers=ADMIN), 404, "not_found")
    # AND the same id with a colon or a dash is taken
    for taken in ("order:1796631543", "order-1796631543"):
        assert client.post("/v1/events", json={**body, "id": taken}, headers=ADMIN).status_code == 202


def test_a_dotted_id_is_refused_before_its_tenant_is_looked_for_alone_as_in_a_batch(client: Any) -> None:
    # WHEN a new event with a dotted id names a tenant that does not exist, alone and in a batch
    body = {"type": "invoice.paid", "tenant_id": "tnt_0000000000000000000000nope", "id": DOTTED, "data": INVOICE}
    alone = client.post("/v1/events", json=body, headers=ADMIN)
    batch = client.post("/v1/events/batch", json={"events": [body]}, headers=ADMIN)
    # THEN both say the id is refused, as the batch promises its items answer what a single publish would
    assert_error(alone, 422, "validation_error")
    (item,) = batch.json()["data"]
    assert (item["status"], item["error"]["code"]) == (422, "validation_error")


def test_a_batch_refuses_its_dotted_id_alone(client: Any, tenant: TenantInfo) -> None:
    # WHEN a batch holds an event with a dotted id beside a good one
    good = {"type": "invoice.paid", "tenant_id": tenant.id, "id": "inv-1-paid", "data": INVOICE}
    response = client.post("/v1/events/batch", json={"events": [good, {**good, "id": DOTTED}]}, headers=ADMIN)
    # THEN that one alone is refused, at its id
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    assert [item["status"] for item in items] == [202, 422]
    assert items[1]["error"]["details"][0]["loc"] == ["body", "events", 1, "id"]


def test_the_cli_leaves_a_dotted_id_to_the_api_and_says_the_rule() -> None:
    # A dotted id may repeat the publish of an event stored under it before: the API decides
    assert event_id(DOTTED) == DOTTED
    # AND an id out of the rule's characters is refused before any request, the rule said whole
    for refused in ("_order", "an id"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape("a letter or a digit, then letters, digits")):
            event_id(refused)


def test_an_event_stored_under_a_dotted_id_before_is_still_served(
    client: Any, tenant: TenantInfo, services: Any, poller: Any, receiver: Receiver
) -> None:
    # GIVEN a subscriber, and an event stored under a dotted id as an earlier version took it (the schema's check
    # left out: the stored form is the same)
    sub = subscribe(client, tenant, receiver.url)
    old = EventIn.model_construct(type="invoice.paid", tenant_id=tenant.id, id=DOTTED, data=INVOICE, broadcast=False)
    publish(services, old, idempotency_key=None)
    drain(poller)
    # WHEN the operator reads it and redelivers it
    read = client.get(f"/v1/events/{DOTTED}", headers=ADMIN)
    redelivered = client.post(f"/v1/events/{DOTTED}/redeliver", headers=ADMIN)
    drain(poller)
    # THEN it is found and redelivered: both deliveries carry its id and verify
    assert read.status_code == 200, read.text
    assert read.json()["id"] == DOTTED
    assert redelivered.status_code == 202, redelivered.text
    assert len(receiver.received) == 2
    for received in receiver.received:
        assert received.headers["webhook-id"] == DOTTED
        assert Webhook(sub.secret).verify(received.body, received.headers)["data"] == INVOICE


@pytest.mark.parametrize("batch", [False, True])
def test_a_repeat_of_an_event_stored_under_a_dotted_id_and_not_fully_queued_finishes_it(
    client: Any, tenant: TenantInfo, services: Any, harness: Any, receiver: Receiver, batch: bool
) -> None:
    # GIVEN a subscriber, and an event stored under a dotted id by an earlier version whose queueing failed (its
    # publish answered 503 naming it: publish it again with that id)
    sub = subscribe(client, tenant, receiver.url)
    install(services.queue.client, "sqs.Send*:5xx@call=calls:1")
    old = EventIn.model_construct(type="invoice.paid", tenant_id=tenant.id, id=DOTTED, data=INVOICE, broadcast=False)
    with pytest.raises(NotQueuedError):
        publish(services, old, idempotency_key=None)
    harness.drain()
    assert receiver.received == []
    # WHEN its publish is repeated with that id, alone or in a batch
    body = {"type": "invoice.paid", "tenant_id": tenant.id, "id": DOTTED, "data": INVOICE}
    if batch:
        response = client.post("/v1/events/batch", json={"events": [body]}, headers=ADMIN)
        assert response.status_code == 200, response.text
        (item,) = response.json()["data"]
        assert (item["status"], item["replayed"]) == (202, True), item
    else:
        response = client.post("/v1/events", json=body, headers=ADMIN)
        assert response.status_code == 202, response.text
        assert response.headers["Idempotent-Replayed"] == "true"
    harness.reveal()  # a repeat's queued work is held back a moment, as any repeat's is
    harness.drain()
    # THEN it is answered as a repeat and its delivery goes out once, under its id, verified
    (received,) = receiver.received
    assert received.headers["webhook-id"] == DOTTED
    assert Webhook(sub.secret).verify(received.body, received.headers)["data"] == INVOICE
