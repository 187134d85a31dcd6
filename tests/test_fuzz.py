"""Schemathesis against the app's own OpenAPI document: for generated requests to every operation, with the
right role's key (and moto behind the app), no 5xx, and every answer is one the document lists for that
operation (status code, content type, headers, body schema). Then the stateful phase: sequences of calls that
feed one answer's ids into the next call (links schemathesis infers from the document), with the same checks.

Bounded and deterministic so it stays fast in CI: a fixed number of examples per operation and of stateful
steps, derandomized, no example database. Every operation is fuzzed and the failures are reported together.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from herald.api import create_app
from tests.support import ADMIN, INVOICE

#: Tags of the operations called with the operator's key; the others get a tenant's key.
OPERATOR_TAGS = {"tenants", "events", "operator", "operations", "event-types"}
EXAMPLES_PER_OPERATION = 12
#: Stateful scenarios, and the calls in each (bounded for CI).
STATEFUL_EXAMPLES = 25
STATEFUL_STEPS = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def role_headers(operation: Any, tenant_headers: dict[str, str]) -> dict[str, str]:
    return dict(ADMIN) if OPERATOR_TAGS & set(operation.tags or []) else dict(tenant_headers)


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
        headers = role_headers(operation, tenant.headers)
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


@pytest.mark.slow
def test_stateful_sequences_get_documented_answers(services, make_tenant) -> None:
    # GIVEN the app on moto, a tenant, and a state machine built from the document's (inferred) links
    tenant = make_tenant("Stateful")
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(services))
    base = schema.as_state_machine()
    calls: list[str] = []

    class Machine(base):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": role_headers(case.operation, tenant.headers)}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            calls.append(f"{case.operation.label} -> {response.status_code}")
            case.validate_response(response, checks=CHECKS)

    # WHEN sequences of calls run, each answer's ids feeding later calls
    run_settings = settings(
        max_examples=STATEFUL_EXAMPLES,
        stateful_step_count=STATEFUL_STEPS,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    try:
        Machine.run(settings=run_settings)
    except BaseException as exc:
        # name the calls that led to the finding (schemathesis' own report is an exception group)
        raise AssertionError("stateful finding after:\n" + "\n".join(calls[-STATEFUL_STEPS:])) from exc
    # THEN every answer was documented (a failed check raises above), and calls chained past creation
    assert len(calls) >= STATEFUL_EXAMPLES
    assert any(" 2" in call and "{" in call for call in calls), calls[:20]
    print(f"schemathesis stateful: {len(calls)} calls")
