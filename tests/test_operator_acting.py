"""The operator acts for a tenant on tenant routes with ``?tenant_id=``; nobody else can."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herald.domain.operational import OPERATOR_TENANT_ID
from tests.api_support import assert_error
from tests.support import ADMIN

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi.testclient import TestClient

    from tests.support import TenantInfo


def _subscribe(client: TestClient, tenant: TenantInfo) -> str:
    response = client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/hooks", "event_types": ["invoice.paid"]},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_the_operator_lists_and_disables_a_tenants_subscriptions(
    client: TestClient, make_tenant: Callable[[str], TenantInfo]
) -> None:
    # GIVEN two tenants with a subscription each
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    acme_sub, globex_sub = _subscribe(client, acme), _subscribe(client, globex)
    # WHEN the operator lists Acme's subscriptions with the admin key
    listed = client.get("/v1/subscriptions", params={"tenant_id": acme.id}, headers=ADMIN)
    # THEN it sees Acme's subscription and only it
    assert listed.status_code == 200, listed.text
    assert [sub["id"] for sub in listed.json()["data"]] == [acme_sub]
    # WHEN it disables that subscription for Acme
    patched = client.patch(
        f"/v1/subscriptions/{acme_sub}", params={"tenant_id": acme.id}, json={"enabled": False}, headers=ADMIN
    )
    # THEN Acme sees it disabled, by the operator; Globex's subscription cannot be reached through Acme
    assert patched.status_code == 200, patched.text
    seen = client.get(f"/v1/subscriptions/{acme_sub}", headers=acme.headers).json()
    assert (seen["enabled"], seen["disabled_reason"]) == (False, "disabled by the operator")
    crossed = client.get(f"/v1/subscriptions/{globex_sub}", params={"tenant_id": acme.id}, headers=ADMIN)
    assert_error(crossed, 404, "not_found")


def test_the_operator_must_name_an_existing_tenant(client: TestClient, tenant: TenantInfo) -> None:
    _subscribe(client, tenant)
    # WHEN the operator calls a tenant route without naming a tenant
    # THEN it is told how to name one
    missing = client.get("/v1/subscriptions", headers=ADMIN)
    assert "tenant_id" in assert_error(missing, 403, "forbidden")["message"]
    # AND a tenant that does not exist is a 404
    assert_error(client.get("/v1/subscriptions", params={"tenant_id": "tnt_nope"}, headers=ADMIN), 404, "not_found")
    # AND the reserved tenant holding the operator's own endpoints (it has a record once one exists) is
    # reachable neither through tenant routes nor as a tenant
    endpoint = client.post("/v1/operator/webhooks", json={"url": "http://127.0.0.1:9/ops"}, headers=ADMIN)
    assert endpoint.status_code == 201, endpoint.text
    reserved = {"tenant_id": OPERATOR_TENANT_ID}
    assert_error(client.get("/v1/subscriptions", params=reserved, headers=ADMIN), 404, "not_found")
    secret = client.get(f"/v1/subscriptions/{endpoint.json()['id']}/secret", params=reserved, headers=ADMIN)
    assert_error(secret, 404, "not_found")
    assert_error(client.get(f"/v1/tenants/{OPERATOR_TENANT_ID}", headers=ADMIN), 404, "not_found")
    assert_error(client.delete(f"/v1/tenants/{OPERATOR_TENANT_ID}", headers=ADMIN), 404, "not_found")
    assert client.get(f"/v1/operator/webhooks/{endpoint.json()['id']}", headers=ADMIN).status_code == 200


def test_a_tenant_cannot_act_for_another_tenant(client: TestClient, make_tenant: Callable[[str], TenantInfo]) -> None:
    # GIVEN two tenants, Acme with a subscription
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    _subscribe(client, acme)
    # WHEN Globex names Acme with its own key
    crossed = client.get("/v1/subscriptions", params={"tenant_id": acme.id}, headers=globex.headers)
    # THEN it is the 404 of a tenant that does not exist, and nothing of Acme's shows
    assert_error(crossed, 404, "not_found")
    assert acme.id in crossed.text  # only the id Globex sent itself
    # AND naming itself changes nothing
    own = client.get("/v1/subscriptions", params={"tenant_id": globex.id}, headers=globex.headers)
    assert own.status_code == 200
    assert own.json()["data"] == []
