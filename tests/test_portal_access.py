"""The subscriber portal's access rules over HTTP against the real app: one-time links, sessions bound to one
tenant and one capability, CSRF and Origin checks, security headers, and no way from a portal cookie to
another tenant or to an operator route."""

from __future__ import annotations

import collections
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from fastapi.testclient import TestClient

from herald.domain import portal
from herald.errors import NotFoundError
from herald.faults import install
from herald.portal.security import COOKIE
from herald.records import PortalCapability, PortalGrant
from herald.services import Services
from herald.storage import keys
from tests.delivery_support import subscribe
from tests.portal_support import Browser, csrf_of, follow, mint, sign_in
from tests.support import ADMIN, Clock, Receiver, TenantInfo


@pytest.fixture
def receiver_url(receiver: Receiver) -> str:
    return receiver.url


def _subscriptions(client: TestClient, tenant: TenantInfo) -> list[dict[str, object]]:
    response = client.get("/v1/subscriptions", headers=tenant.headers)
    assert response.status_code == 200
    return list(response.json()["data"])


def test_a_link_opens_a_session_with_strict_cookie_and_headers(browser: Browser, tenant: TenantInfo) -> None:
    me = browser()
    link = mint(me, tenant.id, "manage", expires_in_minutes=5)
    assert link["path"].startswith("/portal/login?token=hpl_")
    assert link["url"] == "https://testserver" + link["path"]
    response = follow(me, link["path"])
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    for attribute in ("httponly", "secure", "samesite=strict", "path=/portal"):
        assert attribute in cookie, cookie
    page = me.get("/portal/endpoints")
    assert page.status_code == 200
    assert "<h1>Endpoints</h1>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["x-frame-options"] == "DENY"


def test_only_the_tokens_digest_is_stored(browser: Browser, tenant: TenantInfo, services: Services) -> None:
    link = mint(browser(), tenant.id)
    token = parse_qs(urlsplit(link["path"]).query)["token"][0]
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert services.store.table.read(keys.portal_grant(digest)) is not None
    scan = services.store.client.scan(TableName=services.store.table_name)["Items"]
    assert token not in repr(scan)


def test_a_link_works_once(browser: Browser, tenant: TenantInfo) -> None:
    link = mint(browser(), tenant.id)
    assert follow(browser(), link["path"]).status_code == 200
    other = browser()
    again = follow(other, link["path"])
    assert again.status_code == 403
    assert "does not work" in again.text
    assert other.get("/portal/endpoints").status_code == 401


def test_fetching_a_link_spends_nothing_and_only_its_page_s_button_signs_in(
    browser: Browser, tenant: TenantInfo
) -> None:
    # GIVEN a read-only link, fetched twice before its reader opens it (a mail scanner, a chat's link preview)
    link = mint(browser(), tenant.id, "read")
    for _ in range(2):
        scanned = browser().get(link["path"])
        # THEN each fetch gets the link's page: whose portal, what access, a Sign in button; no session
        assert scanned.status_code == 200
        assert "set-cookie" not in scanned.headers
        assert 'id="tenant-name">Acme</strong>' in scanned.text
        assert "read only" in scanned.text
        assert '<form method="post" action="/portal/login" data-submit-once>' in scanned.text
    # AND the reader's Sign in opens a session, once
    me = browser()
    assert follow(me, link["path"]).status_code == 200
    assert me.get("/portal/endpoints").status_code == 200
    spent = browser().get(link["path"])
    assert spent.status_code == 403
    assert "does not work" in spent.text


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"referer": "https://evil.example/x"},
        # The same host over plain http: a page anyone on the network can write, not the portal's
        {"origin": "http://testserver"},
        {"referer": "http://testserver/portal/login"},
        # No URL at all (an IPv6 host's bracket left open): no page of the portal's sent it
        {"origin": "https://[x"},
        {"referer": "http://a]b/portal/login"},
    ],
    ids=["origin", "sec-fetch-site", "referer", "origin-http", "referer-http", "origin-no-url", "referer-no-url"],
)
def test_a_sign_in_posted_from_another_site_is_refused(
    browser: Browser, tenant: TenantInfo, headers: dict[str, str]
) -> None:
    # GIVEN a link, and another site whose page posts it to sign its visitor in to this tenant's portal
    link = mint(browser(), tenant.id)
    token = parse_qs(urlsplit(link["path"]).query)["token"][0]
    victim = browser()
    # WHEN the visitor's browser sends that post
    refused = victim.post("/portal/login", data={"token": token}, headers=headers)
    # THEN it is refused, no session is opened, and the link still works for its reader
    assert refused.status_code == 403
    assert "set-cookie" not in refused.headers
    assert victim.get("/portal/endpoints").status_code == 401
    assert follow(browser(), link["path"]).status_code == 200


@pytest.mark.parametrize(
    "body", ["", "token=", "token=hpl_nothing", "token=" + "x" * 5000, "token=%ff%fe", "token=hpl_a&token=hpl_b"]
)
def test_a_sign_in_with_a_bad_token_is_refused_with_the_link_page(browser: Browser, body: str) -> None:
    me = browser()
    response = me.post("/portal/login", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 403
    assert "does not work" in response.text
    assert "set-cookie" not in response.headers


def test_of_two_pages_of_one_link_only_one_signs_in(browser: Browser, tenant: TenantInfo) -> None:
    # GIVEN one link's page open in two browsers (the reader's two tabs, or a scanner's fetch and the reader)
    link = mint(browser(), tenant.id)
    token = parse_qs(urlsplit(link["path"]).query)["token"][0]
    first, second = browser(), browser()
    assert first.get(link["path"]).status_code == second.get(link["path"]).status_code == 200
    # WHEN both press Sign in
    answers = [me.post("/portal/login", data={"token": token}) for me in (first, second)]
    # THEN one is signed in, the other told the link does not work, with no session
    assert [answer.status_code for answer in answers] == [200, 403]
    assert "does not work" in answers[1].text
    assert "set-cookie" not in answers[1].headers
    assert first.get("/portal/endpoints").status_code == 200
    assert second.get("/portal/endpoints").status_code == 401


def _link_page_open(browser: Browser, tenant_id: str) -> tuple[dict[str, Any], str, TestClient]:
    """A new link of the tenant's (as the API answers it), its token, and a browser showing its page."""
    link = mint(browser(), tenant_id)
    token = parse_qs(urlsplit(link["path"]).query)["token"][0]
    me = browser()
    assert me.get(link["path"]).status_code == 200
    return link, token, me


@pytest.mark.parametrize("fault", ["dynamodb.PutItem:5xx@call=calls:1", "dynamodb.UpdateItem:5xx@call=calls:1"])
def test_a_sign_in_dynamodb_fails_leaves_the_link_working_for_the_readers_try_again(
    browser: Browser, tenant: TenantInfo, services: Services, fault: str
) -> None:
    # GIVEN a link's page open, and DynamoDB failing once (after botocore's retries) the sign-in's write of the
    # session, or its spending of the link
    _, token, me = _link_page_open(browser, tenant.id)
    injector = install(services.store.client, fault)
    assert injector is not None
    # WHEN the reader presses Sign in: the page says to try again
    first = me.post("/portal/login", data={"token": token})
    assert first.status_code == 503
    assert first.headers["retry-after"] == "1"
    assert "Try again" in first.text
    assert me.get("/portal/endpoints").status_code == 401
    # THEN trying again signs in: the link was not spent by the try that failed
    again = me.post("/portal/login", data={"token": token})
    assert again.status_code == 200, again.text
    assert me.get("/portal/endpoints").status_code == 200
    # AND it is spent now
    assert browser().post("/portal/login", data={"token": token}).status_code == 403


@pytest.mark.parametrize("last_moment", [False, True], ids=["in-time", "in-the-link-s-last-moment"])
def test_a_sign_in_whose_spending_of_the_link_lost_its_answer_signs_in(
    browser: Browser, tenant: TenantInfo, services: Services, last_moment: bool
) -> None:
    # GIVEN a link's page open, and DynamoDB making the sign-in's spending of the link but its answer lost (after
    # botocore's retries, each refused by the first one's mark)
    link, token, me = _link_page_open(browser, tenant.id)
    if last_moment:
        # ... the spending made in the link's last moment: by the time it is read back, the link has expired
        clock = Clock(time.time())
        services.store.table.clock = clock

        expired = datetime.fromisoformat(link["expires_at"]).timestamp() + 1

        def expire_after_the_mark(**_: object) -> None:
            clock.now = expired  # the mark's condition holds the time it was made at

        services.store.client.meta.events.register_first("before-call.dynamodb.UpdateItem", expire_after_the_mark)
    injector = install(services.store.client, "dynamodb.UpdateItem:lost=calls:1")
    assert injector is not None
    # WHEN the reader presses Sign in
    response = me.post("/portal/login", data={"token": token})
    # THEN the sign-in read the link back, found it spent by its own mark, and signed the reader in (before, it ended
    # the session it had made and said to try again, and the link, spent, then did not work)
    assert [(hit.operation, hit.fault) for hit in injector.injected] == [("UpdateItem", "lost")]
    assert response.status_code == 200, response.text
    assert me.get("/portal/endpoints").status_code == 200
    # AND the link works no more
    assert browser().post("/portal/login", data={"token": token}).status_code == 403


def test_a_link_revoked_while_its_page_is_open_signs_no_one_in(
    browser: Browser, tenant: TenantInfo, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a link's page open in a browser, the link made a moment before, so that the index the revocation finds
    # a tenant's links through does not show it yet (emulated: nothing is deleted)
    _, token, me = _link_page_open(browser, tenant.id)
    monkeypatch.setattr(services.store.portal, "revoke_all", lambda tenant_id: 0)
    # WHEN the operator revokes the tenant's portal access, then the reader presses Sign in
    assert me.delete(f"/v1/tenants/{tenant.id}/portal-sessions", headers=ADMIN).status_code == 204
    response = me.post("/portal/login", data={"token": token})
    # THEN no session is opened
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert me.get("/portal/endpoints").status_code == 401


def test_an_expired_link_is_refused(browser: Browser, tenant: TenantInfo, services: Services) -> None:
    me = browser()
    link = mint(me, tenant.id, expires_in_minutes=1)
    token = parse_qs(urlsplit(link["path"]).query)["token"][0]
    hashlib.sha256(token.encode()).hexdigest()
    # A minute passes: the item's expiry is now in the past (DynamoDB's TTL has not removed it yet).
    services.store.client.update_item(
        TableName=services.store.table_name,
        Key={
            name: {"S": value} for name, value in keys.portal_grant(hashlib.sha256(token.encode()).hexdigest()).items()
        },
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    response = follow(me, link["path"])
    assert response.status_code == 403
    assert "expired" in response.text
    assert me.get("/portal/endpoints").status_code == 401


def test_minting_is_the_operators_and_for_a_real_tenant(browser: Browser, tenant: TenantInfo) -> None:
    client = browser()
    by_tenant = client.post(f"/v1/tenants/{tenant.id}/portal-sessions", json={}, headers=tenant.headers)
    assert by_tenant.status_code == 403
    unknown = client.post("/v1/tenants/tnt_0000000000000000000000000/portal-sessions", json={}, headers=ADMIN)
    assert unknown.status_code == 404
    too_long = client.post(f"/v1/tenants/{tenant.id}/portal-sessions", json={"expires_in_minutes": 61}, headers=ADMIN)
    assert too_long.status_code == 422
    wrong = client.post(f"/v1/tenants/{tenant.id}/portal-sessions", json={"capability": "admin"}, headers=ADMIN)
    assert wrong.status_code == 422


def test_a_read_session_cannot_change_anything(browser: Browser, tenant: TenantInfo, receiver_url: str) -> None:
    me = browser()
    sub = subscribe(me, tenant, receiver_url)
    csrf = sign_in(me, tenant.id, "read")
    page = me.get(f"/portal/endpoints/{sub.id}")
    assert page.status_code == 200
    assert "Rotate the secret" not in page.text
    create = me.post(
        "/portal/endpoints",
        data={"csrf_token": csrf, "url": receiver_url, "event_types": "invoice.paid"},
    )
    assert create.status_code == 403
    assert "read-only" in create.text
    disable = me.post(f"/portal/endpoints/{sub.id}/enabled", data={"csrf_token": csrf, "enabled": "false"})
    assert disable.status_code == 403
    subs = _subscriptions(me, tenant)
    assert [s["id"] for s in subs] == [sub.id]
    assert subs[0]["enabled"] is True
    # AND the forms of a change, opened by their links (a bookmark, a link a manager shared), say so instead
    for path in ("/portal/endpoints/new", f"/portal/endpoints/{sub.id}/edit", f"/portal/endpoints/{sub.id}/delete"):
        form = me.get(path)
        assert form.status_code == 403, path
        assert "read-only" in form.text
        assert "<form" not in form.text.replace('<form method="post" action="/portal/logout"', "")


def test_a_not_found_page_does_not_repeat_what_its_link_says(browser: Browser, tenant: TenantInfo) -> None:
    # GIVEN a signed-in visitor, and a crafted link whose path holds a message instead of an endpoint's id
    me = browser()
    sign_in(me, tenant.id)
    crafted = "Your account is locked, call +1 555 0100"
    # WHEN the visitor follows it
    response = me.get(f"/portal/endpoints/{quote(crafted)}")
    # THEN the page says nothing was found, in its own words, not the link's
    assert response.status_code == 404
    assert "There is nothing here" in response.text
    assert "locked" not in response.text
    # AND it leads back to the endpoints (its page has no header navigation: it is shown signed in or not)
    assert '<a href="/portal/endpoints">Back to your endpoints</a>' in response.text


def test_a_session_never_reaches_another_tenant(
    browser: Browser, make_tenant: Callable[[str], TenantInfo], receiver_url: str
) -> None:
    tenant_a, tenant_b = make_tenant("A"), make_tenant("B")
    me = browser()
    theirs = subscribe(me, tenant_b, receiver_url)
    csrf = sign_in(me, tenant_a.id)
    assert theirs.id not in me.get("/portal/endpoints").text
    for path in (f"/portal/endpoints/{theirs.id}", f"/portal/endpoints/{theirs.id}/secret"):
        response = me.get(path)
        assert response.status_code == 404, path
        assert theirs.secret not in response.text
        assert theirs.id not in response.text  # not even its id repeated
    switched = me.post(f"/portal/endpoints/{theirs.id}/enabled", data={"csrf_token": csrf, "enabled": "false"})
    assert switched.status_code == 404
    assert _subscriptions(me, tenant_b)[0]["enabled"] is True


def test_a_change_without_the_csrf_token_or_from_another_site_is_refused(
    browser: Browser, tenant: TenantInfo, receiver_url: str
) -> None:
    me = browser()
    sub = subscribe(me, tenant, receiver_url)
    csrf = sign_in(me, tenant.id)
    path = f"/portal/endpoints/{sub.id}/enabled"
    assert me.post(path, data={"enabled": "false"}).status_code == 403
    assert me.post(path, data={"csrf_token": "forged", "enabled": "false"}).status_code == 403
    cross = me.post(path, data={"csrf_token": csrf, "enabled": "false"}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    fetched = me.post(path, data={"csrf_token": csrf, "enabled": "false"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetched.status_code == 403
    garbled = me.post(path, data={"csrf_token": csrf, "enabled": "false"}, headers={"Origin": "https://[::1"})
    assert garbled.status_code == 403
    assert _subscriptions(me, tenant)[0]["enabled"] is True
    # The same change from the portal's own page goes through.
    done = me.post(
        path,
        data={"csrf_token": csrf, "enabled": "false"},
        headers={"Origin": "https://testserver"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert _subscriptions(me, tenant)[0]["enabled"] is False


def test_a_wrong_method_on_a_page_is_a_405_page_naming_the_methods_it_answers(browser: Browser) -> None:
    for method, path, allowed in (
        ("DELETE", "/portal/", {"GET"}),
        ("PUT", "/portal/login", {"GET", "POST"}),
    ):
        answer = browser().request(method, path)
        assert answer.status_code == 405, (method, path)
        assert set(answer.headers["allow"].split(", ")) >= allowed, (method, path, answer.headers.get("allow"))
        assert method not in answer.headers["allow"].split(", ")


def test_an_unexpected_error_is_the_portals_500_page(
    browser: Browser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("herald.domain.portal.find_session", broken)
    answer = browser().get("/portal/endpoints")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in answer.text
    assert "a bug" not in answer.text
    assert "Back to your endpoints" in answer.text
    # AND on the page of a sign-in link, whose visitor may have no session, it leads nowhere it could not open
    monkeypatch.setattr("herald.domain.portal.unused_link", broken)
    answer = browser().get("/portal/login", params={"token": "hpl_" + "a" * 40})
    assert answer.status_code == 500
    assert "Back to your endpoints" not in answer.text
    assert "unexpected error in the portal" in caplog.text


def test_a_portal_cookie_opens_no_api_route(browser: Browser, tenant: TenantInfo, receiver_url: str) -> None:
    me = browser()
    sub = subscribe(me, tenant, receiver_url)
    sign_in(me, tenant.id)
    assert me.cookies.get("herald_portal")
    params = collections.defaultdict(lambda: "x", tenant_id=tenant.id, subscription_id=sub.id)
    operations = [
        (method.upper(), template.format_map(params))
        for template, item in me.get("/openapi.json").json()["paths"].items()
        for method in item
        if template != "/health"
    ]
    assert len(operations) > 20
    for method, path in operations:
        # Every operation asks for a key; the cookie is not one.
        assert me.request(method, path, json={}).status_code == 401, (method, path)


def test_revoking_ends_the_tenants_sessions(browser: Browser, tenant: TenantInfo) -> None:
    me = browser()
    csrf = sign_in(me, tenant.id)
    unused = mint(me, tenant.id)
    assert me.delete(f"/v1/tenants/{tenant.id}/portal-sessions", headers=ADMIN).status_code == 204
    assert me.get("/portal/endpoints").status_code == 401
    assert follow(browser(), unused["path"]).status_code == 403
    assert me.post("/portal/logout", data={"csrf_token": csrf}).status_code == 401


def test_a_form_sent_after_its_session_ended_says_nothing_was_saved(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a tenant who opened an endpoint's edit form, and whose session then ended
    sub = subscribe(client, tenant, receiver.url)
    me = browser()
    sign_in(me, tenant.id)
    page = me.get(f"/portal/endpoints/{sub.id}/edit")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    assert me.delete(f"/v1/tenants/{tenant.id}/portal-sessions", headers=ADMIN).status_code == 204
    # WHEN the form is sent
    sent = me.post(
        f"/portal/endpoints/{sub.id}/edit",
        data={"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid", "description": "Billing"},
        follow_redirects=False,
    )
    # THEN the answer says that nothing was saved, and how to make the change (not that the browser's Back button
    # shows the form filled in: its page is not stored, and fetched again it is this one)
    assert sent.status_code == 401
    assert "nothing was saved" in sent.text
    assert "new link to the portal" in sent.text
    assert "Back button" not in sent.text
    assert "Back to your endpoints" not in sent.text  # which would lead to this page again
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["description"] == ""
    # AND a page asked for once signed out says only that the session ended
    shown = me.get("/portal/endpoints")
    assert shown.status_code == 401
    assert "session has ended" in shown.text
    assert "nothing was saved" not in shown.text


def test_revoking_ends_the_sessions_and_links_the_index_does_not_show_yet(
    browser: Browser, tenant: TenantInfo, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a signed-in browser and an unused link, made a moment before the revocation, so that the index the
    # revocation finds a tenant's links and sessions through does not show them yet (emulated: moto's index is
    # consistent; nothing is deleted)
    me = browser()
    sign_in(me, tenant.id)
    unused = mint(me, tenant.id)
    monkeypatch.setattr(services.store.portal, "revoke_all", lambda tenant_id: 0)
    # WHEN the operator revokes the tenant's portal access
    assert me.delete(f"/v1/tenants/{tenant.id}/portal-sessions", headers=ADMIN).status_code == 204
    # THEN the session and the link no longer work, though both are still stored
    assert me.get("/portal/endpoints").status_code == 401
    assert follow(browser(), unused["path"]).status_code == 403
    # AND a link minted after the revocation opens a session that works
    again = browser()
    sign_in(again, tenant.id)
    assert again.get("/portal/endpoints").status_code == 200


def test_two_revocations_at_once_never_move_the_mark_back(services: Services, tenant: TenantInfo) -> None:
    # GIVEN two revocations, the later one's write landing first
    tenants = services.store.tenants
    earlier, later = datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)
    tenants.revoke_portal(tenant.id, later)
    # WHEN the earlier one's lands
    tenants.revoke_portal(tenant.id, earlier)
    # THEN the mark stays the later one's: a link minted between the two stays revoked
    assert tenants.portal_revoked_at(tenant.id) == later
    # AND a tenant that does not exist is still not found
    with pytest.raises(NotFoundError):
        tenants.revoke_portal("tnt_none", later)


def test_signing_out_ends_the_session(browser: Browser, tenant: TenantInfo) -> None:
    me = browser()
    csrf = sign_in(me, tenant.id)
    signed_out = me.post("/portal/logout", data={"csrf_token": csrf})
    assert signed_out.status_code == 200
    assert "Back to your endpoints" not in signed_out.text  # which a signed-out visitor cannot open
    assert me.get("/portal/endpoints").status_code == 401


@pytest.mark.parametrize("fault", ["throttle@call=1", "lost@send=1"])
def test_signing_out_ends_the_session_though_dynamodb_fails_to_delete_it_or_loses_an_answer(
    browser: Browser, tenant: TenantInfo, services: Services, fault: str
) -> None:
    # GIVEN a signed-in browser, and DynamoDB refusing every delete after botocore's retries (the session is then
    # marked taken, not deleted), or losing each answer of the session's mark and delete once (both are then made)
    me = browser()
    csrf = sign_in(me, tenant.id)
    operations = "DeleteItem" if fault.startswith("throttle") else "*Item"
    install(services.store.client, f"dynamodb.{operations}:{fault}")
    session_id = me.cookies[COOKIE]
    # WHEN it signs out
    assert me.post("/portal/logout", data={"csrf_token": csrf}).status_code == 200
    # THEN the session has ended, for a browser that kept its cookie too: marked taken, it is never found again,
    # deleted or not
    kept = browser()
    kept.cookies.set(COOKIE, session_id, domain="testserver.local", path="/portal")
    assert kept.get("/portal/endpoints").status_code == 401
    assert kept.post("/portal/logout", data={"csrf_token": csrf}).status_code == 401


def test_revoking_counts_what_still_worked_and_deletes_what_a_failed_delete_left(
    browser: Browser, tenant: TenantInfo, services: Services
) -> None:
    # GIVEN an unused link, and a session ended while DynamoDB refused its delete (marked taken, still stored)
    me = browser()
    csrf = sign_in(me, tenant.id)
    mint(me, tenant.id)
    injector = install(services.store.client, "dynamodb.DeleteItem:throttle@call=calls:1")
    assert me.post("/portal/logout", data={"csrf_token": csrf}).status_code == 200
    assert injector is not None
    assert injector.count("throttle", stage="call") == 1
    # WHEN the tenant's links and sessions are revoked
    revoked = services.store.portal.revoke_all(tenant.id)
    # THEN the unused link is counted, the ended session is not; neither is left
    assert revoked == 1
    assert services.store.portal.revoke_all(tenant.id) == 0
    left = services.store.client.query(
        TableName=services.store.table_name,
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": keys.tenant_portal_partition(tenant.id)}},
    )["Items"]
    assert left == []


def test_form_errors_are_shown_in_the_form(browser: Browser, tenant: TenantInfo) -> None:
    me = browser()
    csrf = sign_in(me, tenant.id)
    response = me.post(
        "/portal/endpoints",
        data={"csrf_token": csrf, "url": "http://169.254.169.254/latest", "event_types": "invoice.paid"},
    )
    assert response.status_code == 422
    assert "The endpoint was not saved" in response.text
    assert 'value="http://169.254.169.254/latest"' in response.text
    assert _subscriptions(me, tenant) == []
    assert csrf_of(response.text) == csrf
    # AND each problem is named by the form's label, in the form's words
    refused = me.post("/portal/endpoints", data={"csrf_token": csrf, "url": "ftp://example.com/hook"})
    assert refused.status_code == 422
    assert "Event types: tick at least one" in refused.text
    assert "URL: URL scheme should be" in refused.text
    assert "List should have" not in refused.text


def test_the_openapi_document_has_the_portal_sessions_operation_and_no_page(browser: Browser) -> None:
    document = browser().get("/openapi.json").json()
    assert not [path for path in document["paths"] if path.startswith("/portal")]
    operation = document["paths"]["/v1/tenants/{tenant_id}/portal-sessions"]
    assert {"201", "401", "403", "404", "422", "503"} <= set(operation["post"]["responses"])
    assert {"204", "401", "403", "404", "503"} <= set(operation["delete"]["responses"])


def test_api_calls_do_not_import_the_portal() -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from herald.api import create_app\n"
        "assert TestClient(create_app()).get('/health').status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.startswith(('herald.portal', 'jinja2'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_an_endpoint_is_created_and_edited_through_the_domains_rules(browser: Browser, tenant: TenantInfo) -> None:
    me = browser()
    csrf = sign_in(me, tenant.id)
    url = "http://127.0.0.1:9/hook"
    form = {
        "csrf_token": csrf,
        "url": url,
        "event_types": ["invoice.paid", "order.shipped"],
        "metadata": "team=billing",
    }
    created = me.post("/portal/endpoints", data=form, follow_redirects=False)
    assert created.status_code == 303
    (sub,) = _subscriptions(me, tenant)
    assert sub["event_types"] == ["invoice.paid", "order.shipped"]
    assert sub["metadata"] == {"team": "billing"}
    unknown = me.post(f"/portal/endpoints/{sub['id']}/edit", data={**form, "event_types": "invoice.lost"})
    assert unknown.status_code == 422
    assert "invoice.lost" in unknown.text
    edited = me.post(
        f"/portal/endpoints/{sub['id']}/edit",
        data={**form, "event_types": "order.shipped", "rate_limit": "5", "metadata": ""},
        follow_redirects=False,
    )
    assert edited.status_code == 303
    (after,) = _subscriptions(me, tenant)
    assert after["event_types"] == ["order.shipped"]
    assert after["rate_limit"] == 5


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        ("'none'", True),
        ("https://app.example.com", True),
        ("https://app.example.com https://*.example.org:8443", True),
        ("*", False),
        ("https:", False),
        ("'self'", False),
        ("http://app.example.com", False),
        ("https://app.example.com/path", False),
        ("https://app.example.com 'unsafe-inline'", False),
        ("https://*.com", False),
    ],
)
def test_the_portal_may_be_framed_by_named_https_origins_only(value: str, taken: bool) -> None:
    from pydantic import ValidationError

    from herald.settings import Settings

    # A broader ancestor would let any page that may frame the portal overlay its Delete and Rotate buttons, and
    # embedding sends the session cookie cross-site.
    if taken:
        assert Settings(portal_frame_ancestors=value).portal_frame_ancestors == value
    else:
        with pytest.raises(ValidationError, match="portal_frame_ancestors"):
            Settings(portal_frame_ancestors=value)


@pytest.mark.parametrize(
    "settings_overrides", [{"portal_frame_ancestors": "https://app.example.com", "portal_accent_color": "#0a7f3c"}]
)
def test_embedding_allows_the_named_ancestors_and_a_partitioned_cookie(browser: Browser, tenant: TenantInfo) -> None:
    me = browser()
    link = mint(me, tenant.id)
    response = follow(me, link["path"])
    cookie = response.headers["set-cookie"].lower()
    assert "samesite=none" in cookie
    assert "partitioned" in cookie
    assert "secure" in cookie
    page = me.get("/portal/endpoints")
    assert "frame-ancestors https://app.example.com" in page.headers["content-security-policy"]
    assert "x-frame-options" not in page.headers
    assert "#0a7f3c" in me.get("/portal/static/theme.css").text


def test_a_session_without_a_csrf_token_changes_nothing(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver, services: Services
) -> None:
    # GIVEN an endpoint, and a session stored without a CSRF token (none is made so: a record damaged or of
    # another kind of writer), whose browser posts a change with an empty token
    sub = subscribe(client, tenant, receiver.url)
    now = datetime.now(UTC)
    session_id = "hps_" + "s" * 43
    services.store.portal.put(
        portal.digest(session_id),
        PortalGrant(
            kind=portal.SESSION,
            tenant_id=tenant.id,
            capability=PortalCapability.MANAGE,
            created_at=now,
            expires_at=now + timedelta(minutes=30),
            issued_at=now,
        ),
    )
    me = browser()
    me.cookies.set(COOKIE, session_id, domain="testserver.local", path="/portal")
    assert me.get("/portal/endpoints").status_code == 200
    response = me.post(f"/portal/endpoints/{sub.id}/enabled", data={"csrf_token": "", "enabled": "false"})
    # THEN the change is refused, and the endpoint is as it was
    assert response.status_code == 403
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True


def test_the_portals_address_without_its_slash_leads_to_it(browser: Browser) -> None:
    # The API's paths with a trailing slash are no routes (404); the portal's own address still leads to the portal
    response = browser().get("/portal", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (307, "/portal/")


@pytest.mark.parametrize("path", ["/portal/endpoints/", "/portal/catalog/"])
def test_a_trailing_slash_is_not_found_never_a_redirect_to_the_host_the_request_names(
    browser: Browser, tenant: TenantInfo, path: str
) -> None:
    # GIVEN a signed-in browser
    me = browser()
    sign_in(me, tenant.id)
    # WHEN a portal path is asked for with a trailing slash and a Host header naming another site
    response = me.get(path, headers={"host": "evil.example"}, follow_redirects=False)
    # THEN it is the portal's not-found page, not a redirect built from that host
    assert response.status_code == 404
    assert "location" not in response.headers


def test_a_part_of_a_page_asked_for_after_the_session_ended_reloads_the_page(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver_url: str
) -> None:
    # GIVEN a signed-in tenant on a recovery's progress page, which polls its job (htmx), and on an endpoint's page,
    # whose signing secret it reveals (htmx)
    me = browser()
    sub = subscribe(me, tenant, receiver_url)
    csrf = sign_in(me, tenant.id)
    since = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    started = me.post(
        f"/portal/endpoints/{sub.id}/recover", data={"csrf_token": csrf, "since": since}, follow_redirects=False
    )
    assert started.status_code == 303, started.text[:300]
    progress = started.headers["location"].split("?")[0]
    polled = {"HX-Request": "true"}
    assert me.get(progress, headers=polled).status_code == 200
    assert "HX-Refresh" not in me.get(progress, headers=polled).headers
    # WHEN the operator revokes the tenant's portal access
    assert client.delete(f"/v1/tenants/{tenant.id}/portal-sessions", headers=ADMIN).status_code == 204
    # THEN the next poll, and a reveal, answer 401 telling htmx to load the page again (which then says the session
    # ended), instead of an answer htmx swaps nowhere while the page polls on
    for path in (progress, f"/portal/endpoints/{sub.id}/secret"):
        gone = me.get(path, headers=polled)
        assert (gone.status_code, gone.headers.get("HX-Refresh")) == (401, "true")
    # ... while the page itself, loaded whole, says so with no such header
    page = me.get(progress)
    assert page.status_code == 401
    assert "HX-Refresh" not in page.headers
    assert "Signed out" in page.text


def test_a_part_of_a_page_whose_endpoint_is_gone_reloads_the_page(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver_url: str
) -> None:
    # GIVEN a signed-in tenant on an endpoint's page
    me = browser()
    sub = subscribe(me, tenant, receiver_url)
    sign_in(me, tenant.id)
    # WHEN the endpoint is deleted (in another tab, by the API), and the page reveals its secret
    assert client.delete(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).status_code == 204
    gone = me.get(f"/portal/endpoints/{sub.id}/secret", headers={"HX-Request": "true"})
    # THEN the answer is a 404 telling htmx to load the page again, which then says it is gone
    assert (gone.status_code, gone.headers.get("HX-Refresh")) == (404, "true")
    assert me.get(f"/portal/endpoints/{sub.id}").status_code == 404
