"""Helpers for the subscriber portal tests: minting a link as the operator, signing in, reading a page's
CSRF token."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from tests.support import ADMIN

if TYPE_CHECKING:
    import httpx

#: Opens a browser: a client with a cookie jar of its own on the app, over https (the portal's cookie is Secure).
type Browser = Callable[[], TestClient]


def mint(client: httpx.Client, tenant_id: str, capability: str = "manage", **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/v1/tenants/{tenant_id}/portal-sessions", json={"capability": capability, **body}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def follow(client: httpx.Client, path: str) -> httpx.Response:
    """Follow a link as its reader does: its page (which redeems nothing), then its Sign in button, the POST that
    redeems it. If the page says the link does not work (its answer is returned), the redemption is checked to
    refuse it too, as it must for a page loaded before the link was spent, expired or revoked."""
    page = client.get(path)
    found = re.search(r'name="token" value="([^"]+)"', page.text)
    if page.status_code == 200 and found is not None:
        return client.post("/portal/login", data={"token": html.unescape(found.group(1))})
    token = parse_qs(urlsplit(path).query).get("token", [""])[0]
    posted = client.post("/portal/login", data={"token": token})
    assert posted.status_code == 403, posted.text[:300]
    assert "set-cookie" not in posted.headers
    return page


def sign_in(client: httpx.Client, tenant_id: str, capability: str = "manage") -> str:
    """Open a fresh link with ``client`` (its cookie jar keeps the session); the session's CSRF token."""
    link = mint(client, tenant_id, capability)
    response = follow(client, link["path"])
    assert response.status_code == 200, response.text
    return csrf_of(client.get("/portal/endpoints").text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page carries a CSRF token"
    return found.group(1)
