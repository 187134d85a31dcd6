"""The portal's endpoint page over HTTP against the real app: the chart of recent attempts, the delivery log's
time window (the API's listing has the same), the subscription's delivery options, and the operator's logo."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.catalog import EventCatalog, EventData, catalog
from herald.portal.endpoints import CHART_SLOTS, recent_attempts
from herald.queue import REDRIVES_ATTRIBUTE
from herald.records import Delivery, DeliveryStatus
from herald.storage import keys
from herald.storage.table import to_item
from tests.delivery_support import publish, subscribe
from tests.portal_support import Browser, sign_in
from tests.support import ADMIN, INVOICE, Receiver, TenantInfo, drain

LOGO = "https://cdn.example.com/brand/logo.png"
#: Lambda's limit on a synchronous invocation's response: past it, API Gateway answers a bare 500.
LAMBDA_RESPONSE_LIMIT = 6_291_456


def _delivery(status: DeliveryStatus, at: datetime | None) -> Delivery:
    return Delivery(
        id="dlv_x",
        event_id="evt_x",
        subscription_id="sub_x",
        tenant_id="tnt_x",
        event_type="invoice.paid",
        status=status,
        attempts=1 if at else 0,
        last_attempt_at=at,
        created_at=at or datetime.now(UTC),
        updated_at=at or datetime.now(UTC),
    )


def test_the_chart_counts_latest_attempts_in_two_hour_slots_over_a_day() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    recent = [
        _delivery(DeliveryStatus.SUCCEEDED, now - timedelta(minutes=10)),
        _delivery(DeliveryStatus.SUCCEEDED, now - timedelta(minutes=50)),
        _delivery(DeliveryStatus.FAILED, now - timedelta(minutes=30)),
        _delivery(DeliveryStatus.PENDING, now - timedelta(hours=23)),
        _delivery(DeliveryStatus.SUCCEEDED, now - timedelta(hours=30)),  # older than a day: left out
        _delivery(DeliveryStatus.PENDING, None),  # never attempted: left out
    ]
    bars = recent_attempts(recent, now)
    assert len(bars) == CHART_SLOTS
    assert [(bar.succeeded, bar.failed) for bar in bars] == [(0, 1)] + [(0, 0)] * 10 + [(2, 1)]
    tallest = max(bar.ok_height + bar.bad_height for bar in bars)
    assert tallest == pytest.approx(50)
    assert bars[-1].ok_height == pytest.approx(2 * bars[0].bad_height)


def test_the_endpoint_page_draws_the_chart_and_shows_the_options(
    browser: Browser, client: Any, tenant: TenantInfo, poller: Any, receiver: Receiver
) -> None:
    # GIVEN an endpoint with a custom header (one of them sensitive), a filter and a transform, and deliveries
    sub = subscribe(client, tenant, receiver.url)
    options = {
        "headers": {"X-Route": {"value": "eu-1"}, "Authorization": {"value": "Bearer s3cr3t", "sensitive": True}},
        "filter": {"amount_cents": {"$gte": 1}},
        "transform": "{kind: type, invoice: data.invoice_id}",
    }
    response = client.patch(f"/v1/subscriptions/{sub.id}", json=options, headers=tenant.headers)
    assert response.status_code == 200, response.text
    receiver.responses = [(500, {}, b"no", 0.0)]
    publish(client, tenant.id)
    publish(client, tenant.id)
    drain(poller)
    # WHEN the tenant opens the endpoint's page
    me = browser()
    sign_in(me, tenant.id)
    page = me.get(f"/portal/endpoints/{sub.id}")
    # THEN the chart says what it draws: one success and one failure in the last day
    assert page.status_code == 200
    assert re.search(r"in two-hour slots: 1 succeeded, 1 failed", page.text)
    assert page.text.count('class="ok"') >= CHART_SLOTS
    # AND the options are shown, the sensitive value never
    assert "X-Route: eu-1" in page.text
    assert "Authorization: (sensitive, set)" in page.text
    assert "s3cr3t" not in page.text
    assert "amount_cents" in page.text
    assert "invoice: data.invoice_id" in page.text


def test_the_chart_of_a_busy_endpoint_says_from_when_it_counts(
    browser: Browser, client: Any, tenant: TenantInfo, poller: Any, receiver: Receiver, monkeypatch: Any
) -> None:
    # GIVEN an endpoint with more deliveries than the chart counts (three, of two here)
    monkeypatch.setattr("herald.portal.endpoints.CHART_DELIVERIES", 2)
    sub = subscribe(client, tenant, receiver.url)
    for _ in range(3):
        publish(client, tenant.id)
    drain(poller)
    listed = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
    second = sorted(datetime.fromisoformat(d["created_at"]) for d in listed)[1]
    # WHEN the tenant opens the endpoint's page
    me = browser()
    sign_in(me, tenant.id)
    page = me.get(f"/portal/endpoints/{sub.id}")
    # THEN the chart counts the newest two, and says they are the newest two, created since the older one of them
    assert page.status_code == 200
    since = second.strftime("%Y-%m-%d %H:%M")
    assert f"the newest 2 deliveries (created since {since} UTC)" in page.text
    assert "in two-hour slots: 2 succeeded, 0 failed" in page.text
    assert "older ones are not in it" in page.text
    # AND an endpoint with fewer says nothing of it
    quiet = subscribe(client, tenant, receiver.url, event_types=["order.shipped"])
    assert "older ones are not in it" not in me.get(f"/portal/endpoints/{quiet.id}").text


def test_the_delivery_log_and_the_listing_take_a_time_window(
    browser: Browser, client: Any, tenant: TenantInfo, poller: Any, receiver: Receiver
) -> None:
    # GIVEN three deliveries to one endpoint
    sub = subscribe(client, tenant, receiver.url)
    for _ in range(3):
        publish(client, tenant.id)
    drain(poller)
    listed = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
    created = sorted(datetime.fromisoformat(d["created_at"]) for d in listed)
    assert len(created) == 3
    # WHEN the listing is asked for a window that holds only the newest, or none
    since = (created[-1] - timedelta(microseconds=1)).isoformat()
    newest = client.get(f"/v1/subscriptions/{sub.id}/deliveries", params={"since": since}, headers=tenant.headers)
    until = (created[0] - timedelta(seconds=1)).isoformat()
    older = client.get(f"/v1/subscriptions/{sub.id}/deliveries", params={"until": until}, headers=tenant.headers)
    # THEN the API lists exactly what the window holds
    assert [datetime.fromisoformat(d["created_at"]) for d in newest.json()["data"]] == [created[-1]]
    assert older.json()["data"] == []
    params = {"since": "2026-01-01T00:00:00"}  # no offset: which time is it?
    naive = client.get(f"/v1/subscriptions/{sub.id}/deliveries", params=params, headers=tenant.headers)
    assert naive.status_code == 422
    # AND so does the portal's log, read as UTC
    me = browser()
    sign_in(me, tenant.id)
    window = {"since": (created[0] + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")}
    empty = me.get(f"/portal/endpoints/{sub.id}", params=window)
    full = me.get(f"/portal/endpoints/{sub.id}", params={"since": "2020-01-01T00:00"})
    assert empty.status_code == 200
    assert "No delivery matching the filter yet." in empty.text
    assert full.text.count("/deliveries/dlv_") == 3
    bad = me.get(f"/portal/endpoints/{sub.id}", params={"since": "yesterday"})
    assert bad.status_code == 422


def test_a_delivery_page_never_shows_another_event_published_later_under_its_event_id(
    browser: Browser, client: Any, make_tenant: Any, harness: Any, receiver: Receiver
) -> None:
    # GIVEN a delivery of Acme's, whose event has since expired and been removed (its log outlives it), and the
    # operator publishing another tenant's event under the same id (ids are the publisher's once their event is gone)
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    sub = subscribe(client, acme, receiver.url)
    event_id = publish(client, acme.id)
    harness.drain()
    (delivery,) = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=acme.headers).json()["data"]
    store = harness.services.store
    store.client.delete_item(TableName=store.table_name, Key=to_item(keys.event(event_id)))
    body = {
        "type": "invoice.paid",
        "tenant_id": globex.id,
        "id": event_id,
        "data": {**INVOICE, "customer_id": "cus_GLOBEX"},
    }
    assert client.post("/v1/events", json=body, headers=ADMIN).status_code == 202
    # WHEN Acme opens its delivery in the portal
    me = browser()
    sign_in(me, acme.id, "read")
    shown = me.get(f"/portal/endpoints/{sub.id}/deliveries/{delivery['id']}")
    # THEN the page shows the delivery and its attempt, and says its event expired: nothing of Globex's event
    assert shown.status_code == 200, shown.text
    assert "The event has expired." in shown.text
    assert "cus_GLOBEX" not in shown.text
    assert globex.id not in shown.text


def test_a_delivery_failed_without_an_attempt_says_why_and_that_none_was_made(
    browser: Browser, client: Any, tenant: TenantInfo, harness: Any, receiver: Receiver
) -> None:
    # GIVEN a first delivery whose message went to the dead-letter queue before any attempt, back after its
    # redrives, and discarded by the operator: the delivery failed without an attempt
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    settings = harness.services.settings
    (message,) = harness.sqs.receive_message(QueueUrl=settings.queue_url)["Messages"]
    harness.sqs.delete_message(QueueUrl=settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
    used_up = {"DataType": "Number", "StringValue": str(settings.dead_letter_max_redrives)}
    harness.sqs.send_message(
        QueueUrl=settings.dead_letter_queue_url,
        MessageBody=message["Body"],
        MessageAttributes={REDRIVES_ATTRIBUTE: used_up},
    )
    discarded = client.post("/v1/admin/dead-letters/discard", json={"all_poison": True}, headers=ADMIN)
    assert discarded.status_code == 200, discarded.text
    (delivery,) = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 0)
    # WHEN its tenant opens it in the portal
    me = browser()
    sign_in(me, tenant.id, "read")
    shown = me.get(f"/portal/endpoints/{sub.id}/deliveries/{delivery['id']}")
    # THEN the page says it failed, why, and that no attempt was made (not that one is still to come)
    assert shown.status_code == 200, shown.text
    assert re.search(r'id="delivery-status" class="status-failed">failed<', shown.text)
    assert '<dd id="delivery-error">discarded</dd>' in shown.text
    assert "No attempt was made." in shown.text
    assert "No attempt yet." not in shown.text


@pytest.mark.parametrize("settings_overrides", [{"portal_logo_url": LOGO}])
def test_the_operators_logo_is_shown_and_allowed_by_the_csp(browser: Browser, tenant: TenantInfo) -> None:
    me = browser()
    sign_in(me, tenant.id)
    page = me.get("/portal/endpoints")
    assert f'<img class="logo" src="{LOGO}"' in page.text
    assert "img-src 'self' data: https://cdn.example.com;" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "logo",
    [
        "javascript:alert(1)",
        "http://cdn.example.com/logo.png",
        'https://x/"onerror=1',
        # Longer than a Lambda function's environment variables may be (4 KB in all): it could never be deployed
        "data:image/png;base64," + "A" * 4096,
    ],
)
def test_a_logo_that_is_not_an_https_url_or_an_image_is_refused(logo: str) -> None:
    from pydantic import ValidationError

    from herald.settings import Settings

    with pytest.raises(ValidationError):
        Settings(table_name="t", queue_url="q", portal_logo_url=logo)


def test_an_inline_logo_that_fits_beside_the_templates_variables_is_taken_and_one_character_more_is_not() -> None:
    from pydantic import ValidationError

    from herald.settings import MAX_PORTAL_LOGO_CHARS, Settings

    prefix = "data:image/png;base64,"
    logo = prefix + "A" * (MAX_PORTAL_LOGO_CHARS - len(prefix))
    assert MAX_PORTAL_LOGO_CHARS <= 4096 - 1024  # Lambda's 4 KB of variables, less the template's own
    assert Settings(table_name="t", queue_url="q", portal_logo_url=logo).portal_logo_url == logo
    with pytest.raises(ValidationError):
        Settings(table_name="t", queue_url="q", portal_logo_url=logo + "A")


class _Nested(EventData):
    """Data of any shape: a catalog type with a free-form field."""

    values: list[Any]


@pytest.fixture
def nested_type(monkeypatch: pytest.MonkeyPatch) -> str:
    """``test.nested``, a type of free-form data, in the catalog for one test."""
    declared = EventCatalog()
    declared.event("test.nested", example={"values": [1]})(_Nested)
    monkeypatch.setitem(catalog._types, "test.nested", declared.get("test.nested"))
    return "test.nested"


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def _shown_payload(page: str) -> str:
    (shown,) = re.findall(r'<pre class="payload"[^>]*>(.*?)</pre>', page, re.DOTALL)
    return html.unescape(shown)


def test_a_delivery_page_shows_a_payload_as_sent_when_indenting_it_would_pass_lambdas_response_limit(
    browser: Browser, client: Any, tenant: TenantInfo, harness: Any, receiver: Receiver, nested_type: str
) -> None:
    # GIVEN two events of a type with free-form data: a small one, and 240 KB of it nested 30 deep (within the data
    # limit as sent; indented two spaces a level, 7.7 MB)
    sub = subscribe(client, tenant, receiver.url, [nested_type])
    publish(client, tenant.id, nested_type, {"values": [{"a": 1}]})
    publish(client, tenant.id, nested_type, {"values": _nested([0] * 120_000, 30)})
    harness.drain()
    sent = {
        json.loads(arrival.body)["data"]["values"][0] == {"a": 1}: arrival.body.decode()
        for arrival in receiver.received
    }
    deliveries = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
    large, small = deliveries  # newest first
    # WHEN each delivery's page is opened in the portal
    me = browser()
    sign_in(me, tenant.id, "read")
    small_page, large_page = (me.get(f"/portal/endpoints/{sub.id}/deliveries/{d['id']}") for d in (small, large))
    # THEN the small payload is shown indented
    assert small_page.status_code == 200
    assert json.loads(_shown_payload(small_page.text)) == json.loads(sent[True])
    assert '\n  "data": {\n' in _shown_payload(small_page.text)
    # AND the large one as it was sent, saying so, on a page within what Lambda can return (HTML-escaped, then escaped
    # again as a string in Lambda's response)
    assert large_page.status_code == 200
    assert _shown_payload(large_page.text) == sent[False]
    assert "As it was sent: indented, this payload would be too large for the page." in large_page.text
    assert len(json.dumps(large_page.text)) < LAMBDA_RESPONSE_LIMIT - 10_000
