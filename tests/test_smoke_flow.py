"""The main path end to end: tenant, subscription, publish, fan-out, signed delivery over real HTTP."""

from __future__ import annotations

from standardwebhooks import Webhook

from tests.support import ADMIN, Receiver, drain


def test_published_event_reaches_subscriber_signed(client, tenant, poller, receiver: Receiver) -> None:
    # GIVEN a subscription of the tenant to invoice.paid
    sub = client.post(
        "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"]}, headers=tenant.headers
    )
    assert sub.status_code == 201, sub.text
    secret = sub.json()["secret"]
    # WHEN the operator publishes an invoice.paid event to the tenant
    data = {
        "invoice_id": "in_1",
        "customer_id": "c_1",
        "amount_cents": 100,
        "currency": "EUR",
        "paid_at": "2026-01-01T00:00:00Z",
    }
    published = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": data, "tenant_id": tenant.id}, headers=ADMIN
    )
    assert published.status_code == 202, published.text
    drain(poller)
    # THEN the receiver got exactly one delivery, verified by the standardwebhooks library
    assert len(receiver.received) == 1
    got = receiver.received[0]
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "invoice.paid"
    assert payload["data"]["invoice_id"] == "in_1"
    event = client.get(f"/v1/events/{published.json()['id']}", headers=ADMIN).json()
    assert event["deliveries"] == {
        "matched": 1,
        "pending": 0,
        "succeeded": 1,
        "failed": 0,
        "filtered": 0,
        "fanout_complete": True,
    }
