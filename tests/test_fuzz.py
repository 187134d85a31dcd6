"""Schemathesis against the app's own OpenAPI document: for generated requests to every operation, with the
right role's key (and moto behind the app), no 5xx and every documented response matches its schema.

Bounded and deterministic so it stays fast in CI: a fixed number of examples per operation, derandomized,
no example database. Every operation is fuzzed and the failures are reported together.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from herald.api import create_app
from tests.support import ADMIN, INVOICE

#: Tags of the operations called with the operator's key; the others get a tenant's key.
OPERATOR_TAGS = {"tenants", "events", "operator", "operations", "event-types"}
EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, response_schema_conformance]


def fuzz(operation: Any, headers: dict[str, str], real_ids: dict[str, str]) -> int:
    """Run the generated cases of one operation; returns how many ran."""
    count = 0

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        nonlocal count
        count += 1
        if real_ids and operation.method.upper() != "DELETE" and count % 2:
            # every other case addresses real resources, so handlers are reached past their 404s
            known = {name: real_ids[name] for name in case.path_parameters or {} if name in real_ids}
            case.path_parameters = {**(case.path_parameters or {}), **known}
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
    return count


@pytest.mark.slow
def test_generated_requests_get_no_5xx_and_documented_answers(services, make_tenant) -> None:
    # GIVEN the app on moto, a tenant, and the app's own OpenAPI document
    tenant = make_tenant("Fuzzed")
    client = TestClient(create_app(services))
    sub = client.post(
        "/v1/subscriptions", json={"url": "https://example.com/fuzz", "event_types": ["*"]}, headers=tenant.headers
    ).json()
    event = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=ADMIN
    ).json()
    key = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"][0]
    real_ids = {"tenant_id": tenant.id, "subscription_id": sub["id"], "event_id": event["id"], "key_id": key["id"]}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(services))
    cases = operations = 0
    failures: list[str] = []
    # WHEN every operation gets its generated requests with its role's key
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        headers = dict(ADMIN) if OPERATOR_TAGS & set(operation.tags or []) else dict(tenant.headers)
        operations += 1
        try:
            cases += fuzz(operation, headers, real_ids)
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    # THEN none answered a 5xx or an answer that does not match the document
    assert not failures, "\n\n".join(failures)
    assert operations >= 20
    assert cases >= operations
    print(f"schemathesis: {operations} operations, {cases} generated requests")
