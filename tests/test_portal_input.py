"""The subscriber portal against odd input and many endpoints, over HTTP against the real app: a value the
domain refuses is a page saying why (never a 500), and every endpoint of a tenant is reachable from the list."""

from __future__ import annotations

import re

import pytest

from tests.delivery_support import subscribe
from tests.portal_support import Browser, sign_in
from tests.support import Receiver, TenantInfo


@pytest.mark.parametrize("number", ["²", "①"])
def test_a_number_in_another_script_is_refused_in_the_form(browser: Browser, tenant: TenantInfo, number) -> None:
    # GIVEN a signed-in tenant
    me = browser()
    csrf = sign_in(me, tenant.id)
    form = {"csrf_token": csrf, "url": "http://127.0.0.1:9/hook", "event_types": "invoice.paid"}
    # WHEN an endpoint is created with a rate limit written in digits Python's str.isdigit() accepts
    response = me.post("/portal/endpoints", data={**form, "rate_limit": number})
    # THEN the form comes back with the reason, and nothing was created
    assert response.status_code == 422, response.text[:300]
    assert "The endpoint was not saved" in response.text
    assert "rate_limit" in response.text
    assert me.get("/portal/endpoints").text.count("127.0.0.1:9/hook") == 0


@pytest.mark.parametrize("hours", ["²", "①"])
def test_a_grace_period_in_another_script_is_refused(
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


def test_a_recovery_window_that_ends_before_it_starts_is_refused(
    browser: Browser, client, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint
    sub = subscribe(client, tenant, receiver.url)
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN a recovery is asked for a window whose end is at or before its start
    for until in ("2026-11-30T09:00", "2026-11-30T10:00"):
        window = {"csrf_token": csrf, "since": "2026-11-30T10:00", "until": until}
        response = me.post(f"/portal/endpoints/{sub.id}/recover", data=window, follow_redirects=False)
        # THEN the page says why, and no job was started
        assert response.status_code == 422, response.text[:300]
        assert "`until` must be after `since`" in response.text
    assert "recoveries/" not in me.get(f"/portal/endpoints/{sub.id}").text


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


@pytest.mark.parametrize("after", ["garbage", "x" * 3000, "eyJwayI6InRudF94In0"])
def test_a_page_cursor_that_was_not_issued_is_refused(browser: Browser, tenant: TenantInfo, after: str) -> None:
    me = browser()
    sign_in(me, tenant.id)
    response = me.get("/portal/endpoints", params={"after": after})
    assert response.status_code == 422, response.text[:300]
