"""Isolation: every route in the OpenAPI document, walked with no key, wrong keys, a revoked key, another
tenant's key and the wrong role, answers 401/403/404 and shows nothing of tenant A; and no secret or API key
ever reaches the logs, an error message, the attempt log or a listing.

The routes come from the app itself (``app.openapi()`` and ``app.routes``), so a route added later is walked
too, and one added without a guard fails here. Only the documentation and the liveness probe are public.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from herald import ids
from tests.api_support import served_routes
from tests.support import ADMIN, ADMIN_KEY, INVOICE, Receiver, TenantInfo, drain

#: Paths that answer without a key: the liveness probe and the documentation (none of them in the OpenAPI paths),
#: and the subscriber portal, which has its own guard (a session cookie; tests/test_portal_access.py walks it).
PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/static-offline-docs", "/portal"}
#: Operations any valid key may call; they must not show tenant data.
ANY_KEY = {("GET", "/v1/event-types")}
#: Tags of the operator's routes (the tenant's key gets a 403); every other route is a tenant's (another tenant's
#: key gets a 404 for a resource of tenant A).
OPERATOR_TAGS = {"tenants", "events", "operator", "operations"}

#: A valid body for every operation that takes one, so a request reaches the ownership check it aims at.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/tenants"): {"name": "Walker"},
    ("POST", "/v1/tenants/{tenant_id}/api-keys"): {},
    ("POST", "/v1/subscriptions"): {"url": "https://example.com/walk", "event_types": ["invoice.paid"]},
    ("PATCH", "/v1/subscriptions/{subscription_id}"): {"description": "taken over"},
    ("POST", "/v1/subscriptions/{subscription_id}/secret/rotate"): {"grace_hours": 0},
    ("POST", "/v1/events"): {"type": "invoice.paid", "data": INVOICE, "broadcast": True},
    ("POST", "/v1/events/batch"): {"events": [{"type": "invoice.paid", "data": INVOICE, "broadcast": True}]},
    ("POST", "/v1/subscriptions/{subscription_id}/recover"): {"since": "2020-01-01T00:00:00Z"},
}


@dataclass
class TenantA:
    """Tenant A and everything it owns; ``secret_values`` must never show in another caller's answer."""

    tenant: TenantInfo
    sub_id: str
    url: str
    event_id: str
    delivery_id: str
    key_id: str
    revoked_key: str
    signing_secrets: list[str] = field(default_factory=list)

    def params(self) -> dict[str, str]:
        return {
            "tenant_id": self.tenant.id,
            "subscription_id": self.sub_id,
            "delivery_id": self.delivery_id,
            "event_id": self.event_id,
            "key_id": self.key_id,
        }

    def secret_values(self) -> list[str]:
        return [self.tenant.key, self.revoked_key, ADMIN_KEY, self.url, *self.signing_secrets]


@pytest.fixture
def tenant_a(client, make_tenant, poller, receiver: Receiver) -> TenantA:
    tenant = make_tenant("Tenant A")
    url = receiver.url.replace("/webhook", f"/a-{secrets.token_hex(8)}")
    sub = client.post("/v1/subscriptions", json={"url": url, "event_types": ["invoice.paid"]}, headers=tenant.headers)
    assert sub.status_code == 201, sub.text
    first_secret = sub.json()["secret"]
    event = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=ADMIN
    )
    assert event.status_code == 202, event.text
    drain(poller)
    deliveries = client.get(f"/v1/subscriptions/{sub.json()['id']}/deliveries", headers=tenant.headers).json()["data"]
    assert len(deliveries) == 1
    rotated = client.post(f"/v1/subscriptions/{sub.json()['id']}/secret/rotate", json={}, headers=tenant.headers)
    assert rotated.status_code == 200
    keys = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]
    revoked = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN).json()
    assert client.delete(f"/v1/tenants/{tenant.id}/api-keys/{revoked['id']}", headers=ADMIN).status_code == 204
    return TenantA(
        tenant=tenant,
        sub_id=sub.json()["id"],
        url=url,
        event_id=event.json()["id"],
        delivery_id=deliveries[0]["id"],
        key_id=keys[0]["id"],
        revoked_key=revoked["key"],
        signing_secrets=[first_secret, rotated.json()["secret"]],
    )


@pytest.fixture
def tenant_b(client, make_tenant):
    other = make_tenant("Tenant B")
    response = client.post(
        "/v1/subscriptions", json={"url": "https://example.com/b", "event_types": ["*"]}, headers=other.headers
    )
    assert response.status_code == 201
    return other


def operations(app) -> list[tuple[str, str, dict[str, Any]]]:
    spec = app.openapi()
    return [(method.upper(), path, op) for path, methods in spec["paths"].items() for method, op in methods.items()]


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: values.get(match.group(1), f"{match.group(1)}_0000"), path)


def body_for(method: str, path: str, operation: dict[str, Any]) -> Any:
    return BODIES.get((method, path), {} if "requestBody" in operation else None)


def assert_nothing_of(a: TenantA, response, request_path: str, label: str) -> None:
    text = response.text
    for value in a.secret_values():
        assert value not in text, f"{label}: the answer shows a secret, key or URL of tenant A"
    for name, value in a.params().items():
        if value not in request_path:  # an id the caller sent may be named back; any other is a leak
            assert value not in text, f"{label}: the answer shows tenant A's {name}"
    assert "set-cookie" not in response.headers


def test_every_route_is_documented_or_public(client) -> None:
    # Routes left out of the OpenAPI document escape the walk below: only the public ones may be
    app = client.app
    documented = {path for _, path, _ in operations(app)}
    served = served_routes(app)
    for route, path in served:
        if isinstance(route, APIRoute | Route | Mount) and path is not None and path not in documented:
            assert path in PUBLIC, f"{path} is neither in the OpenAPI document nor public"
    assert len(documented) >= 15
    assert documented <= {path for _, path in served}  # the walk saw the routers' routes, not only the app's own


def test_every_route_refuses_missing_wrong_and_revoked_keys(client, tenant_a: TenantA) -> None:
    counts: dict[str, int] = {}
    wrong_keys = {
        "none": None,
        "empty": "",
        "not-bearer": f"Basic {tenant_a.tenant.key}",
        "garbage": "Bearer not-a-key",
        "unknown-tenant-key": f"Bearer {ids.new_api_key()}",
        "unknown-admin-key": f"Bearer {ids.new_admin_key()}",
        "signing-secret": f"Bearer {tenant_a.signing_secrets[-1]}",
        "tenant-key-truncated": f"Bearer {tenant_a.tenant.key[:-1]}",
        "revoked": f"Bearer {tenant_a.revoked_key}",
    }
    for method, path, operation in operations(client.app):
        url = fill(path, tenant_a.params())
        for kind, authorization in wrong_keys.items():
            headers = {} if authorization is None else {"Authorization": authorization}
            response = client.request(method, url, json=body_for(method, path, operation), headers=headers)
            label = f"{method} {path} with {kind}"
            assert response.status_code == 401, f"{label}: {response.status_code} {response.text[:200]}"
            assert response.json()["error"]["code"] == "unauthorized", label
            assert response.headers["www-authenticate"] == "Bearer", label
            assert_nothing_of(tenant_a, response, url, label)
            counts[kind] = counts.get(kind, 0) + 1
    # every kind of credential was tried on every operation
    assert len(set(counts.values())) == 1
    assert counts["revoked"] == len(operations(client.app))


def test_another_tenants_key_finds_nothing_of_tenant_a(client, tenant_a: TenantA, tenant_b: TenantInfo) -> None:
    walked = 0
    for method, path, operation in operations(client.app):
        url = fill(path, tenant_a.params())
        label = f"{method} {path} with tenant B's key"
        response = client.request(method, url, json=body_for(method, path, operation), headers=tenant_b.headers)
        assert response.status_code < 500, f"{label}: {response.status_code}"
        assert_nothing_of(tenant_a, response, url, label)
        walked += 1
        operator = bool(OPERATOR_TAGS & set(operation.get("tags", [])))
        if (method, path) in ANY_KEY:
            assert response.status_code == 200, label
        elif operator:
            assert response.status_code == 403, f"{label}: {response.status_code} {response.text[:200]}"
            assert response.json()["error"]["code"] == "forbidden"
        elif "{" in path:
            # THEN A's resource is as absent as a missing one: the same answer as for an id nobody has
            assert response.status_code == 404, f"{label}: {response.status_code} {response.text[:200]}"
            fresh = {name: _same_kind(value) for name, value in tenant_a.params().items()}
            missing = client.request(
                method, fill(path, fresh), json=body_for(method, path, operation), headers=tenant_b.headers
            )
            assert missing.status_code == 404, label
            assert _without_ids(missing.text) == _without_ids(response.text), label
        else:
            assert response.status_code in (200, 201, 202), f"{label}: {response.status_code} {response.text[:200]}"
    assert walked == len(operations(client.app))
    # AND tenant A's things are untouched
    assert client.get(f"/v1/subscriptions/{tenant_a.sub_id}", headers=tenant_a.tenant.headers).json()["url"] == (
        tenant_a.url
    )
    secret = client.get(f"/v1/subscriptions/{tenant_a.sub_id}/secret", headers=tenant_a.tenant.headers).json()
    assert secret["secret"] == tenant_a.signing_secrets[-1]
    assert client.get(f"/v1/tenants/{tenant_a.tenant.id}", headers=ADMIN).status_code == 200


def test_each_role_keeps_to_its_routes(client, tenant_a: TenantA) -> None:
    # The operator's key is refused on a tenant's routes and a tenant's key on the operator's (403)
    for method, path, operation in operations(client.app):
        if (method, path) in ANY_KEY:
            continue
        operator = bool(OPERATOR_TAGS & set(operation.get("tags", [])))
        wrong = tenant_a.tenant.headers if operator else ADMIN
        url = fill(path, tenant_a.params())
        response = client.request(method, url, json=body_for(method, path, operation), headers=wrong)
        label = f"{method} {path} with the {'tenant' if operator else 'operator'} key"
        assert response.status_code == 403, f"{label}: {response.status_code} {response.text[:200]}"
        assert response.json()["error"]["code"] == "forbidden", label


def test_public_routes_answer_without_a_key(client) -> None:
    for path in ("/health", "/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 200, path


def _same_kind(value: str) -> str:
    prefix = value.split("_", 1)[0]
    return ids.new_id(prefix) if re.fullmatch(r"[a-z]{3}_[0-9a-z]{26}", value) else value + "x"


def _without_ids(text: str) -> str:
    return re.sub(r"\b[a-z]{3}_[0-9a-z]{26}\b", "<id>", text)


# --- secrets stay out of logs, error messages, the attempt log and listings ---------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"retry_schedule": (0, 0, 0)}


def test_secrets_never_reach_logs_errors_or_listings(client, tenant, poller, receiver: Receiver, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG, logger="herald")
    # GIVEN a subscription whose first delivery fails, then succeeds after a rotation of its secret
    created = client.post(
        "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"]}, headers=tenant.headers
    )
    sub_id, first_secret = created.json()["id"], created.json()["secret"]
    rotated = client.post(f"/v1/subscriptions/{sub_id}/secret/rotate", json={}, headers=tenant.headers).json()
    receiver.responses = [(500, {"content-type": "text/plain"}, b"try again", 0.0)]
    event = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=ADMIN
    )
    assert event.status_code == 202
    drain(poller)
    assert len(receiver.received) == 2  # failed, then delivered
    # ... and requests that carry secrets where they do not belong
    answers = [
        client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {first_secret}"}),
        client.patch(f"/v1/subscriptions/{sub_id}", json={"secret": rotated["secret"]}, headers=tenant.headers),
        client.post("/v1/tenants", json={"name": tenant.key, "api_key": tenant.key}, headers=ADMIN),
        client.post("/v1/subscriptions", json={"url": f"https://{first_secret}@x"}, headers=tenant.headers),
    ]
    assert [answer.status_code for answer in answers] == [401, 422, 422, 422]
    # WHEN the logs, the errors, the attempt log and every listing are read
    deliveries = client.get(f"/v1/subscriptions/{sub_id}/deliveries", headers=tenant.headers)
    attempts = client.get(
        f"/v1/subscriptions/{sub_id}/deliveries/{deliveries.json()['data'][0]['id']}/attempts", headers=tenant.headers
    )
    assert len(attempts.json()["data"]) == 2
    listings = [
        deliveries,
        attempts,
        client.get("/v1/subscriptions", headers=tenant.headers),
        client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers),
        client.get(f"/v1/events/{event.json()['id']}", headers=ADMIN),
        client.get("/v1/tenants", headers=ADMIN),
        client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN),
    ]
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "delivery" in logs.lower()  # the delivery was logged
    # THEN no secret, signing secret or API key shows anywhere
    values = [first_secret, rotated["secret"], tenant.key, ADMIN_KEY]
    values += [value.removeprefix("whsec_") for value in values if value.startswith("whsec_")]
    for value in values:
        assert value not in logs
        for answer in answers + listings:
            assert value not in answer.text, f"{answer.request.method} {answer.request.url.path}"
