"""Transactions and lost answers: botocore retries a TransactWriteItems whose answer was lost, and the
ClientRequestToken Herald sends makes that retry succeed instead of failing its own conditions (which
would answer 409 for something that was created, and lose a key shown only once).

moto ignores the token; ``herald.local.moto_fixes`` honours it as DynamoDB does (a repeat of a committed
token within 10 minutes succeeds without writing; the same token with other items is refused).
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto.core.models import botocore_stubber

from herald.domain import subscriptions as subscription_rules
from herald.limits import LimitExceededError
from herald.storage.table import MAX_TRANSACTION_ACTIONS
from tests.support import ADMIN, TenantInfo


class LoseFirstAnswer:
    """Carries out the first TransactWriteItems of a client, then loses its answer on the way back
    (botocore sees a read timeout and retries the same request, token and all)."""

    def __init__(self, client: Any) -> None:
        self.lost = 0
        self.tokens: list[str] = []
        self._events = client.meta.events
        self._events.register_first("before-send.dynamodb.TransactWriteItems", self)

    def __call__(self, request: Any, event_name: str, **_: Any) -> None:
        import json

        self.tokens.append(json.loads(request.body)["ClientRequestToken"])
        if self.lost == 0:
            self.lost += 1
            botocore_stubber(event_name, request)  # DynamoDB carries it out...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...and the answer never arrives

    def close(self) -> None:
        self._events.unregister("before-send.dynamodb.TransactWriteItems", self)


@pytest.fixture
def lose_first_answer(services: Any) -> Any:
    loser = LoseFirstAnswer(services.store.client)
    yield loser
    loser.close()


def test_a_tenant_whose_creation_answer_was_lost_is_created_once_and_its_key_works(
    client: Any, services: Any, lose_first_answer: LoseFirstAnswer
) -> None:
    # WHEN the operator creates a tenant and DynamoDB's answer to the transaction is lost once
    response = client.post("/v1/tenants", json={"name": "Lost Answer Inc"}, headers=ADMIN)
    # THEN botocore retried with the same token, and the API answered 201 (not 409) with a key that works
    assert lose_first_answer.lost == 1
    assert len(lose_first_answer.tokens) == 2
    assert len(set(lose_first_answer.tokens)) == 1
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["api_key"]["key"]
    assert client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # AND there is one such tenant
    listed = client.get("/v1/tenants", params={"limit": 250}, headers=ADMIN).json()["data"]
    assert [t["id"] for t in listed if t["name"] == "Lost Answer Inc"] == [created["id"]]


def test_a_subscription_whose_creation_answer_was_lost_is_created_once(
    client: Any, tenant: TenantInfo, services: Any, lose_first_answer: LoseFirstAnswer
) -> None:
    # WHEN a tenant subscribes and the transaction's answer is lost once
    body = {"url": "https://hooks.example.com/in", "event_types": ["invoice.paid"]}
    response = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    # THEN it is one subscription, counted once on its tenant
    assert response.status_code == 201, response.text
    assert lose_first_answer.lost == 1
    listed = client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]
    assert [s["id"] for s in listed] == [response.json()["id"]]
    assert services.store.subscriptions.count(tenant.id) == 1


def test_the_same_token_with_other_items_is_refused(services: Any, tenant: TenantInfo) -> None:
    # GIVEN a committed transaction with a token
    table = services.store.table
    item = {"pk": {"S": "TOKEN#test"}, "sk": {"S": "#A"}}
    request = [{"Put": {"TableName": table.name, "Item": item}}]
    table.client.transact_write_items(TransactItems=request, ClientRequestToken="token-1")
    # WHEN the same token comes with other items
    other = [{"Put": {"TableName": table.name, "Item": {**item, "sk": {"S": "#B"}}}}]
    with pytest.raises(ClientError) as refused:
        table.client.transact_write_items(TransactItems=other, ClientRequestToken="token-1")
    # THEN DynamoDB's answer is IdempotentParameterMismatchException, and the second item was not written
    assert refused.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    assert "Item" not in table.client.get_item(TableName=table.name, Key={**item, "sk": {"S": "#B"}})


def test_an_update_moving_more_routes_than_a_transaction_holds_is_refused_whole(
    services: Any, tenant: TenantInfo
) -> None:
    # GIVEN a subscription to 50 event types (the most one takes; a deployment's catalog may have that many)
    store = services.store
    sub = subscription_rules.new_subscription(tenant.id, "https://hooks.example.com/in", [f"a.t{n}" for n in range(50)])
    store.subscriptions.create(sub)
    # WHEN an update would swap them all for 50 others: 1 + 50 deletions + 50 routes = 101 actions
    changed = sub.model_copy(update={"event_types": [f"b.t{n}" for n in range(50)], "version": 2})
    assert MAX_TRANSACTION_ACTIONS < 1 + 50 + 50
    with pytest.raises(LimitExceededError, match="two steps") as refused:
        store.subscriptions.replace(sub, changed)
    # THEN it is refused as a limit (a 422 naming event_types at the API), and nothing changed
    assert (refused.value.details or [{}])[0].get("loc") == ["body", "event_types"]
    assert store.subscriptions.get(tenant.id, sub.id) == sub
    assert [r.subscription_id for r in store.subscriptions.routed(tenant.id, "a.t0", limit=5, cursor=None)[0]] == [
        sub.id
    ]
    # AND half of it in one step goes through
    half = sub.model_copy(update={"event_types": [f"a.t{n}" for n in range(25)] + [f"b.t{n}" for n in range(25)]})
    store.subscriptions.replace(sub, half.model_copy(update={"version": 2}))
    assert [r.subscription_id for r in store.subscriptions.routed(tenant.id, "b.t0", limit=5, cursor=None)[0]] == [
        sub.id
    ]
