"""The subscriber portal against odd input and many endpoints, over HTTP against the real app: a value the
domain refuses is a page saying why (never a 500), and every endpoint of a tenant is reachable from the list."""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from fastapi.testclient import TestClient

from herald.urls import UrlPolicy
from tests.delivery_support import publish, subscribe
from tests.portal_support import Browser, sign_in
from tests.support import Receiver, TenantInfo, drain


@pytest.mark.parametrize("number", ["²", "①", "9" * 5000])
def test_a_rate_limit_that_is_not_a_plain_whole_number_is_refused_in_the_form(
    browser: Browser, tenant: TenantInfo, number
) -> None:
    # GIVEN a signed-in tenant
    me = browser()
    csrf = sign_in(me, tenant.id)
    form = {"csrf_token": csrf, "url": "http://127.0.0.1:9/hook", "event_types": "invoice.paid"}
    # WHEN an endpoint is created with a rate limit in digits str.isdigit() accepts and int() does not, or in
    # more digits than int() reads
    response = me.post("/portal/endpoints", data={**form, "rate_limit": number})
    # THEN the form comes back with the reason, and nothing was created
    assert response.status_code == 422, response.text[:300]
    assert "The endpoint was not saved" in response.text
    assert "rate_limit" in response.text
    assert me.get("/portal/endpoints").text.count("127.0.0.1:9/hook") == 0


@pytest.mark.parametrize("hours", ["²", "①", "9" * 5000, "0" * 5000 + "1"])
def test_a_grace_period_that_is_not_a_plain_whole_number_is_refused(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, hours: str
) -> None:
    # GIVEN an endpoint and its secret
    sub = subscribe(client, tenant, receiver.url)
    secret = client.get(f"/v1/subscriptions/{sub.id}/secret", headers=tenant.headers).json()
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN its secret is rotated with such a grace period
    response = me.post(f"/portal/endpoints/{sub.id}/rotate", data={"csrf_token": csrf, "grace_hours": hours})
    # THEN the page says why, and the secret is the same
    assert response.status_code == 422, response.text[:300]
    assert "whole number of hours" in response.text
    assert client.get(f"/v1/subscriptions/{sub.id}/secret", headers=tenant.headers).json() == secret


def _recover(me: TestClient, csrf: str, sub_id: str, since: str, until: str) -> httpx.Response:
    """The endpoint's recovery form, posted with this window."""
    window = {"csrf_token": csrf, "since": since, "until": until}
    response: httpx.Response = me.post(f"/portal/endpoints/{sub_id}/recover", data=window, follow_redirects=False)
    return response


def test_a_recovery_window_that_ends_before_it_starts_is_refused(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint
    sub = subscribe(client, tenant, receiver.url)
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN a recovery is asked for a window whose end is at or before its start
    for until in ("2026-11-30T09:00", "2026-11-30T10:00"):
        response = _recover(me, csrf, sub.id, "2026-11-30T10:00", until)
        # THEN the page says why (the API's names shown as code), leads back to the endpoint, and no job was started
        assert response.status_code == 422, response.text[:300]
        assert "<code>until</code> must be after <code>since</code>" in response.text
        assert f'<a href="/portal/endpoints/{sub.id}">Back to the endpoint</a>' in response.text
    assert "recoveries/" not in me.get(f"/portal/endpoints/{sub.id}").text


def test_a_recovery_window_with_an_offset_is_the_moment_it_names(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint
    sub = subscribe(client, tenant, receiver.url)
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN a recovery's start carries an offset (two hours ago, written at +05:00: a later hour on its face) and
    # its end, an hour later, none (UTC)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    east = start.astimezone(timezone(timedelta(hours=5)))
    since, until = east.strftime("%Y-%m-%dT%H:%M+05:00"), (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = _recover(me, csrf, sub.id, since, until)
    # THEN the window is the hour between them (not one ending before it starts), and the job started
    assert response.status_code == 303, response.text[:300]
    job = me.get(response.headers["location"])
    shown = f"{start:%Y-%m-%d %H:%M} UTC to {start + timedelta(hours=1):%Y-%m-%d %H:%M} UTC"
    assert shown in job.text
    # AND a moment with an offset and no UTC value (the calendar's first minute, east of UTC) is refused
    response = _recover(me, csrf, sub.id, "0001-01-01T00:00+05:00", until)
    assert response.status_code == 422, response.text[:300]
    assert "<code>since</code> is out of range" in response.text


def test_every_endpoint_is_reachable_page_by_page(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tenant with more endpoints than fit on one page (2 a page here)
    monkeypatch.setattr("herald.portal.endpoints.ENDPOINTS_PER_PAGE", 2)
    ids = {subscribe(client, tenant, f"{receiver.url}/{n}").id for n in range(5)}
    me = browser()
    sign_in(me, tenant.id)
    # WHEN the list is followed from its first page by its "Next page" links
    seen: list[str] = []
    path: str | None = "/portal/endpoints"
    pages = 0
    while path is not None:
        html = me.get(path).text
        pages += 1
        seen += re.findall(r'href="/portal/endpoints/(sub_\w+)"', html)
        following = re.search(r'href="(/portal/endpoints\?after=[^"]+)" rel="next"', html)
        path = following.group(1).replace("&amp;", "&") if following else None
        assert pages <= 5
    # THEN each endpoint was listed once
    assert sorted(seen) == sorted(ids)
    assert pages == 3


def test_every_attempt_of_a_delivery_is_reachable_page_by_page(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a delivery with four attempts (its first, then three retries asked for), more than fit on one page (2 a
    # page here)
    monkeypatch.setattr("herald.portal.logs.ATTEMPTS_PER_PAGE", 2)
    receiver.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    drain(poller)
    (delivery,) = client.get(f"/v1/subscriptions/{sub.id}/deliveries", headers=tenant.headers).json()["data"]
    for _ in range(3):
        retried = client.post(f"/v1/subscriptions/{sub.id}/deliveries/{delivery['id']}/retry", headers=tenant.headers)
        assert retried.status_code == 202, retried.text
        drain(poller)
    me = browser()
    sign_in(me, tenant.id, "read")
    # WHEN its page is followed from the first by its "Later attempts" links
    seen: list[int] = []
    path: str | None = f"/portal/endpoints/{sub.id}/deliveries/{delivery['id']}"
    pages = 0
    while path is not None:
        shown = me.get(path)
        assert shown.status_code == 200, shown.text[:300]
        pages += 1
        seen += [int(number) for number in re.findall(r'<h3 id="attempt-(\d+)">', shown.text)]
        following = re.search(r'href="(/portal/endpoints/[^"]+\?after=[^"]+)" rel="next"', shown.text)
        path = html.unescape(following.group(1)) if following else None
        assert pages <= 4
    # THEN each attempt was shown once, oldest first, the newest too
    assert seen == [1, 2, 3, 4]
    # AND a page that does not exist is a page saying so, not a 500
    missing = me.get(f"/portal/endpoints/{sub.id}/deliveries/{delivery['id']}?after=" + "x" * 5000)
    assert missing.status_code == 422


def test_every_delivery_of_an_endpoint_is_reachable_page_by_page_under_its_filter(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an endpoint with four deliveries of invoices and three of orders, more than fit on one page (2 a page here)
    monkeypatch.setattr("herald.portal.endpoints.DELIVERIES_PER_PAGE", 2)
    sub = subscribe(client, tenant, receiver.url, ("invoice.paid", "order.shipped"))
    for n in range(7):
        publish(client, tenant.id, "invoice.paid" if n % 3 else "order.shipped")
    drain(poller)
    listed = client.get(f"/v1/subscriptions/{sub.id}/deliveries?limit=100", headers=tenant.headers).json()["data"]
    newest_first = [item["id"] for item in listed]
    invoices = [item["id"] for item in listed if item["event_type"] == "invoice.paid"]
    assert (len(newest_first), len(invoices)) == (7, 4)
    me = browser()
    sign_in(me, tenant.id, "read")
    # WHEN its page is followed from the first by its "Older deliveries" links, then again with invoices only
    every, _ = _followed(me, sub.id, f"/portal/endpoints/{sub.id}")
    only_invoices, _ = _followed(me, sub.id, f"/portal/endpoints/{sub.id}?event_type=invoice.paid")
    # THEN each delivery was shown once, newest first, the oldest too; and the filter held on every page
    assert every == newest_first
    assert only_invoices == invoices
    # AND a page that does not exist is a page saying so, not a 500: a cursor too long, or one issued for the
    # deliveries of another endpoint
    assert me.get(f"/portal/endpoints/{sub.id}", params={"after": "x" * 5000}).status_code == 422
    other = subscribe(client, tenant, f"{receiver.url}/other")
    publish(client, tenant.id)
    publish(client, tenant.id)
    drain(poller)
    others = client.get(f"/v1/subscriptions/{other.id}/deliveries?limit=1", headers=tenant.headers).json()["iterator"]
    assert others
    assert me.get(f"/portal/endpoints/{sub.id}", params={"after": others}).status_code == 422


def test_a_filtered_page_that_read_no_match_yet_leads_to_the_older_deliveries(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, poller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an endpoint's one invoice behind eleven newer orders, at 1 delivery a page: the listing reads a page's
    # worth of deliveries a call, ten calls at most, so the first page under an invoices-only filter reads no invoice
    monkeypatch.setattr("herald.portal.endpoints.DELIVERIES_PER_PAGE", 1)
    sub = subscribe(client, tenant, receiver.url, ("invoice.paid", "order.shipped"))
    publish(client, tenant.id, "invoice.paid")
    for _ in range(11):
        publish(client, tenant.id, "order.shipped")
    drain(poller)
    listed = client.get(f"/v1/subscriptions/{sub.id}/deliveries?limit=100", headers=tenant.headers).json()["data"]
    (invoice,) = [item["id"] for item in listed if item["event_type"] == "invoice.paid"]
    me = browser()
    sign_in(me, tenant.id, "read")
    # WHEN the invoices-only page is followed by its "Older deliveries" links
    seen, texts = _followed(me, sub.id, f"/portal/endpoints/{sub.id}?event_type=invoice.paid")
    # THEN the first page says it read no match yet, and its link leads on to the invoice
    assert "No delivery matching the filter on this page: older ones may match." in texts[0]
    assert seen == [invoice]


def _followed(me: TestClient, sub_id: str, path: str | None) -> tuple[list[str], list[str]]:
    """The deliveries the endpoint page at ``path``, and those its "Older deliveries" links lead to, list; and each
    page's text."""
    seen: list[str] = []
    texts: list[str] = []
    while path is not None:
        shown = me.get(path)
        assert shown.status_code == 200, shown.text[:300]
        texts.append(shown.text)
        seen += re.findall(rf'href="/portal/endpoints/{sub_id}/deliveries/(dlv_\w+)"', shown.text)
        following = re.search(r'href="(/portal/endpoints/[^"]+after=[^"#]+)[^"]*" rel="next"', shown.text)
        path = html.unescape(following.group(1)) if following else None
        assert len(texts) <= 12
    return seen, texts


def _cursor(fields: str) -> str:
    """An ``after``/``iterator`` as the listing writes one (base64url of the JSON of a key), of this JSON text."""
    return base64.urlsafe_b64encode(fields.encode("utf-8", "surrogatepass")).decode().rstrip("=")


@pytest.mark.parametrize(
    "after",
    [
        "garbage",
        "x" * 3000,
        "eyJwayI6InRudF94In0",
        # the tenant's own partition, a sort key holding an unpaired surrogate: escaped, or as its bytes
        '{"pk": "TENANT#{tenant}", "sk": "SUB#\\ud800"}',
        '{"pk": "TENANT#{tenant}", "sk": "SUB#\ud800"}',
    ],
    ids=["garbage", "too-long", "another-tenant", "surrogate-escape", "surrogate-bytes"],
)
def test_a_page_cursor_that_was_not_issued_is_refused(browser: Browser, client, tenant: TenantInfo, after: str) -> None:
    if after.startswith("{"):
        after = _cursor(after.replace("{tenant}", tenant.id))
    me = browser()
    sign_in(me, tenant.id)
    response = me.get("/portal/endpoints", params={"after": after})
    assert response.status_code == 422, response.text[:300]
    # ... and the API's own listing refuses it as an iterator, in its error shape
    listed = client.get("/v1/subscriptions", params={"iterator": after}, headers=tenant.headers)
    assert listed.status_code == 422, listed.text[:300]
    assert listed.json()["error"]["code"]


def test_another_tenants_real_cursor_is_refused(browser: Browser, client, make_tenant, receiver: Receiver) -> None:
    # GIVEN a cursor the API issued for another tenant's list of endpoints
    other = make_tenant("Other")
    for n in range(3):
        subscribe(client, other, f"{receiver.url}/{n}")
    page = client.get("/v1/subscriptions", params={"limit": 1}, headers=other.headers).json()
    assert page["iterator"]
    # WHEN a tenant's portal session asks for the page after it, THEN it is refused, nothing of the other shown
    mine = make_tenant("Mine")
    me = browser()
    sign_in(me, mine.id)
    response = me.get("/portal/endpoints", params={"after": page["iterator"]})
    assert response.status_code == 422, response.text[:300]
    assert receiver.url not in response.text


def _metadata_field(html_page: str) -> tuple[bool, str]:
    """The edit form's metadata field: whether the form warns that its lines cannot hold the metadata, and its text
    as a browser submits it (line endings as CRLF)."""
    found = re.search(r'<textarea id="metadata" name="metadata"([^>]*)>(.*?)</textarea>', html_page, re.S)
    assert found, "the form has its metadata field"
    assert "readonly" not in found.group(1)
    return "metadata-lossy" in found.group(1), html.unescape(found.group(2)).replace("\n", "\r\n")


def test_metadata_the_form_cannot_hold_is_kept_when_the_endpoint_is_saved_and_edited_when_it_is_edited(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose metadata, set through the API, has a key with "=", a value with a line break and
    # spaces at the ends of a key and a value (none of which the form's key=value lines can hold)
    sub = subscribe(client, tenant, receiver.url)
    metadata = {"a=b": "c", "note": "x\ny", " k": "v "}
    response = client.patch(f"/v1/subscriptions/{sub.id}", json={"metadata": metadata}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN the tenant opens the endpoint's form: it says so beside the field
    warned, text = _metadata_field(me.get(f"/portal/endpoints/{sub.id}/edit").text)
    assert warned
    # AND saves it with a new URL, the metadata field as the page gave it
    form = {"csrf_token": csrf, "url": f"{receiver.url}?v=2", "event_types": "invoice.paid", "metadata": text}
    assert me.post(f"/portal/endpoints/{sub.id}/edit", data=form, follow_redirects=False).status_code == 303
    # THEN the URL changed and the metadata is as the API set it, not rewritten from the form's lines
    saved = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert saved["url"] == f"{receiver.url}?v=2"
    assert saved["metadata"] == metadata

    # WHEN the tenant edits the field instead, THEN its lines are saved
    form["metadata"] = "team=payments\r\nregion=eu"
    assert me.post(f"/portal/endpoints/{sub.id}/edit", data=form, follow_redirects=False).status_code == 303
    saved = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert saved["metadata"] == {"team": "payments", "region": "eu"}
    # ... and metadata the lines hold is shown without the warning
    assert _metadata_field(me.get(f"/portal/endpoints/{sub.id}/edit").text) == (False, "team=payments\r\nregion=eu")


def test_a_test_event_the_transform_gives_no_body_for_is_refused_in_the_portal(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose transform gives `null` on a ping (checked on the invoice example only)
    body = {"url": receiver.url, "event_types": ["invoice.paid"], "transform": "data.amount_cents < `100000` && data"}
    created = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN the tenant sends a test event from the portal
    response = me.post(f"/portal/endpoints/{sub_id}/test", data={"csrf_token": csrf}, follow_redirects=False)
    # THEN the page says why, and nothing was sent
    assert response.status_code == 422, response.text[:300]
    assert "test event" in html.unescape(response.text)
    assert client.get(f"/v1/subscriptions/{sub_id}/deliveries", headers=tenant.headers).json()["data"] == []


def _description_field(html_page: str) -> str:
    """The description field's text as a browser submits it: its line breaks as CR LF (HTML's form encoding)."""
    found = re.search(r'<textarea id="description" name="description"[^>]*>(.*?)</textarea>', html_page, re.S)
    assert found, "the form has its description field"
    return html.unescape(found.group(1)).replace("\n", "\r\n")


@pytest.mark.parametrize(
    "description",
    ["Billing webhooks\nowner: team-payments", "a" * 250 + "\n" + "b" * 249, "  spaced at both ends  "],
    ids=["two-lines", "500-characters-on-two-lines", "spaces"],
)
def test_a_description_saved_unchanged_in_the_form_stays_as_the_api_set_it(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, description: str
) -> None:
    # GIVEN an endpoint whose description, set through the API, has a line break (or 500 characters with one, the
    # most a description holds; or spaces at its ends)
    sub = subscribe(client, tenant, receiver.url)
    response = client.patch(f"/v1/subscriptions/{sub.id}", json={"description": description}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN the tenant saves the form with another event type, the description as the page gave it (line breaks as a
    # browser sends them: CR LF)
    text = _description_field(me.get(f"/portal/endpoints/{sub.id}/edit").text)
    form = {
        "csrf_token": csrf,
        "url": receiver.url,
        "event_types": ["invoice.paid", "order.shipped"],
        "description": text,
    }
    saved = me.post(f"/portal/endpoints/{sub.id}/edit", data=form, follow_redirects=False)
    # THEN it is saved, and the description is as the API set it
    assert saved.status_code == 303, re.findall(r"<li>(.*?)</li>", saved.text)
    after = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert after["event_types"] == ["invoice.paid", "order.shipped"]
    assert after["description"] == description


def test_a_description_typed_on_two_lines_is_saved_with_the_apis_line_break(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a signed-in tenant
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN it creates an endpoint whose description has two lines of 250 characters (500 as the browser's maxlength
    # counts them, a line break one), sent as a browser sends them: CR LF
    typed = "a" * 250 + "\r\n" + "b" * 249
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid", "description": typed}
    response = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN it is created, its description with one line break, as the API keeps it
    assert response.status_code == 303, re.findall(r"<li>(.*?)</li>", response.text)
    (created,) = client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]
    assert created["description"] == "a" * 250 + "\n" + "b" * 249


def test_a_link_token_longer_than_any_herald_mints_opens_the_portals_page(browser: Browser) -> None:
    # WHEN a link is opened with a token of 300 characters
    response = browser().get("/portal/login", params={"token": "hpl_" + "a" * 300})
    # THEN the portal's page says the link does not work, as for any other link that does not, and does not echo it
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "This link does not work" in response.text
    assert "a" * 300 not in response.text
    assert "Back to your endpoints" not in response.text  # a visitor not signed in


def test_an_endpoint_whose_url_no_longer_passes_the_policy_can_change_its_other_fields(
    browser: Browser, client, services, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an endpoint whose URL the deployment's URL policy no longer allows (here: plain http, now refused)
    sub = subscribe(client, tenant, receiver.url)
    strict = UrlPolicy.from_settings(services.settings.model_copy(update={"allow_http_urls": False}))
    monkeypatch.setattr(services, "url_policy", strict)
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN the tenant saves the form with another description, the URL as the page gave it
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid", "description": "Billing"}
    saved = me.post(f"/portal/endpoints/{sub.id}/edit", data=form, follow_redirects=False)
    # THEN it is saved: the unchanged URL is not checked again (each send checks it)
    assert saved.status_code == 303, re.findall(r"<li>(.*?)</li>", saved.text)
    after = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert (after["url"], after["description"]) == (receiver.url, "Billing")
    # ... a form refused for another field comes back with the URL as it was, to be sent again as it is
    bad_rate = me.post(f"/portal/endpoints/{sub.id}/edit", data={**form, "rate_limit": "abc"}, follow_redirects=False)
    assert bad_rate.status_code == 422
    assert f'value="{receiver.url}"' in bad_rate.text
    # ... while a new URL the policy refuses is refused, and nothing changed
    form["url"] = receiver.url + "/other"
    refused = me.post(f"/portal/endpoints/{sub.id}/edit", data=form, follow_redirects=False)
    assert refused.status_code == 422
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["url"] == receiver.url


@pytest.mark.parametrize(
    ("option", "value"),
    [("filter", {"amount_cents": {"$gte": 1000}}), ("transform", "{amount: abs(data.amount_cents)}")],
)
def test_new_event_types_a_filter_or_transform_does_not_fit_are_saved_once_it_is_removed(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, option: str, value: object
) -> None:
    # GIVEN an endpoint of invoice.paid with a filter, or a transform, on its amount (set through the API)
    sub = subscribe(client, tenant, receiver.url)
    set_it = client.patch(f"/v1/subscriptions/{sub.id}", json={option: value}, headers=tenant.headers)
    assert set_it.status_code == 200, set_it.text
    me = browser()
    csrf = sign_in(me, tenant.id)
    assert f'id="remove-{option}"' in me.get(f"/portal/endpoints/{sub.id}/edit").text
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "order.shipped", "description": ""}
    # WHEN the tenant moves it to order.shipped, which has no amount, in the portal's form
    refused = me.post(f"/portal/endpoints/{sub.id}/edit", data=form, follow_redirects=False)
    # THEN it is refused, saying why, and the form offers to remove the option (kept as the tenant left it)
    assert refused.status_code == 422
    assert f"the subscription&#39;s {option}" in refused.text
    assert f'id="remove-{option}"' in refused.text
    # AND saved with the option removed, the endpoint takes the new types, without the option
    saved = me.post(f"/portal/endpoints/{sub.id}/edit", data={**form, "remove": option}, follow_redirects=False)
    assert saved.status_code == 303, re.findall(r"<li>(.*?)</li>", saved.text)
    after = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert (after["event_types"], after[option]) == (["order.shipped"], None)
