"""A listing's page stays within what Lambda can answer: 6 MB of the JSON it returns, the HTTP body in it as a
string (escaped again). Pages are read through Mangum, as API Gateway's HTTP API calls the deployed function."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from mangum import Mangum

from herald.api import create_app
from herald.local.poller import LambdaContext
from tests.support import ADMIN, ADMIN_KEY, TenantInfo
from tests.test_api_mangum import http_event

#: Lambda's limit on a synchronous response: the JSON the function returns.
LAMBDA_RESPONSE_BYTES = 6_291_456
#: A deployment's largest metadata, filled with the character JSON escapes (twice, once inside Lambda's answer).
BIG = {"max_metadata_bytes": 65536}
METADATA = {f"key{index:02d}": '"' * 512 for index in range(50)}
#: Enough items that one page of all of them would be over Lambda's limit (each about 100 KB once escaped twice).
COUNT = 70


def _every_page(services: Any, path: str, key: str, query: str = "") -> list[dict[str, Any]]:
    """Every page of a listing at ``limit=250``, read through Mangum: each answered 200 within Lambda's limit."""
    handler: Any = Mangum(create_app(services), lifespan="off")
    pages: list[dict[str, Any]] = []
    iterator = ""
    while True:
        event = http_event("GET", path, query=f"{query}limit=250&iterator={iterator}", key=key)
        response = handler(event, LambdaContext("ApiFunction", 29, time.time()))
        assert len(json.dumps(response).encode()) < LAMBDA_RESPONSE_BYTES
        assert response["statusCode"] == 200, response["body"][:300]
        page = json.loads(response["body"])
        pages.append(page)
        if page["done"]:
            return pages
        iterator = page["iterator"]


@pytest.mark.parametrize("settings_overrides", [BIG])
def test_a_page_of_subscriptions_too_big_for_lambda_ends_early_and_the_rest_follows(
    client, tenant: TenantInfo, services: Any
) -> None:
    # GIVEN a tenant's subscriptions, each with the largest metadata a deployment may allow, made of quotes
    created = set()
    for index in range(COUNT):
        body = {"url": f"https://hooks.example.com/{index}", "event_types": ["*"], "metadata": METADATA}
        response = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
        assert response.status_code == 201, response.text
        created.add(response.json()["id"])
    # WHEN they are listed 250 a page
    pages = _every_page(services, "/v1/subscriptions", tenant.key)
    # THEN the first page ended early (the rest would not have fitted), each page within Lambda's limit
    assert len(pages) > 1
    assert 0 < len(pages[0]["data"]) < COUNT
    # AND every subscription was listed exactly once, whole
    listed = [item["id"] for page in pages for item in page["data"]]
    assert sorted(listed) == sorted(created)
    assert all(item["metadata"] == METADATA for page in pages for item in page["data"])


@pytest.mark.parametrize("settings_overrides", [BIG])
def test_a_page_of_tenants_too_big_for_lambda_ends_early_and_the_rest_follows(client, services: Any) -> None:
    # GIVEN tenants, each with the largest metadata a deployment may allow, made of quotes
    created = set()
    for index in range(COUNT):
        response = client.post("/v1/tenants", json={"name": f"T{index}", "metadata": METADATA}, headers=ADMIN)
        assert response.status_code == 201, response.text
        created.add(response.json()["id"])
    # WHEN the operator lists them 250 a page
    pages = _every_page(services, "/v1/tenants", ADMIN_KEY)
    # THEN a page ended early, each page within Lambda's limit, and every tenant was listed exactly once
    assert len(pages) > 1
    assert 0 < len(pages[0]["data"]) < COUNT
    listed = [item["id"] for page in pages for item in page["data"]]
    assert sorted(listed) == sorted(created)


def test_a_page_of_ordinary_subscriptions_is_not_cut(client, tenant: TenantInfo, services: Any) -> None:
    # GIVEN a tenant's ordinary subscriptions
    for index in range(30):
        body = {"url": f"https://hooks.example.com/{index}", "event_types": ["*"], "metadata": {"team": "billing"}}
        assert client.post("/v1/subscriptions", json=body, headers=tenant.headers).status_code == 201
    # WHEN they are listed 250 a page, THEN one page holds them all
    pages = _every_page(services, "/v1/subscriptions", tenant.key)
    assert [len(page["data"]) for page in pages] == [30]
