"""Answers built from oversized input stay within what Lambda can return (6,291,456 bytes of response, the JSON the
function returns, in which Mangum puts the HTTP body as a string), measured through Mangum as the deployed handler
runs: over it, API Gateway answers a bare 500 in place of Herald's answer."""

from __future__ import annotations

import itertools
import json
import logging
import string
from typing import Any

import pytest
from pydantic import ValidationError

from herald import dlq
from herald.delivery_options.openapi import DRY_RUN_RESULTS_BYTES, TransformDryRunOut
from herald.queue import ERROR_ATTRIBUTE
from herald.settings import MAX_REQUEST_BYTES, Settings
from tests import test_api_mangum as mangum
from tests.support import ADMIN_KEY, INVOICE

#: Lambda's limit on a synchronous invocation's response.
LAMBDA_RESPONSE_LIMIT = 6_291_456
JSON = {"content-type": "application/json"}

# The API behind Mangum, called as API Gateway calls it (the fixtures of tests/test_api_mangum.py).
handler = mangum.handler
invoke = mangum.invoke


def _keys(count: int) -> list[str]:
    """``count`` distinct keys of three characters: as many unknown keys as a request of 512 KiB holds."""
    alphabet = string.ascii_letters + string.digits
    return ["".join(chars) for chars in itertools.islice(itertools.product(alphabet, repeat=3), count)]


def _unknown_keys(known: dict[str, Any], count: int) -> str:
    """``known`` as a JSON object followed by ``count`` unknown keys, each a problem (``extra_forbidden``)."""
    extra = ",".join(f'"{key}":0' for key in _keys(count))
    return json.dumps(known, separators=(",", ":"))[:-1] + "," + extra + "}"


def _lambda_bytes(response: dict[str, Any]) -> int:
    """What the Lambda runtime returns for ``response``, at its worst (non-ASCII escaped)."""
    return len(json.dumps(response).encode())


def _post(invoke: Any, path: str, body: str) -> dict[str, Any]:
    assert len(body.encode()) <= 512 * 1024  # within the largest request taken: a 413 would prove nothing
    response: dict[str, Any] = invoke(mangum.http_event("POST", path, key=ADMIN_KEY, body=body, headers=JSON))
    return response


def _assert_capped(error: dict[str, Any], total: int) -> None:
    assert len(error["details"]) == 20, len(error["details"])
    assert error["details_total"] == total
    assert f"{total:,} problems" in error["message"], error["message"]
    assert all({"loc", "msg", "type"} <= set(detail) for detail in error["details"])


def test_a_publish_with_64_000_unknown_keys_is_a_small_422(invoke) -> None:
    # GIVEN a publish request of 512 KiB holding 64,000 unknown keys (each a validation problem)
    count = 64_000
    body = _unknown_keys({"type": "invoice.paid", "tenant_id": "tnt_x", "data": INVOICE}, count)
    # WHEN it is posted through Mangum
    response = _post(invoke, "/v1/events", body)
    # THEN the answer is a 422 with Herald's error shape, listing the first problems and how many there were in all
    assert response["statusCode"] == 422, response["body"][:500]
    assert _lambda_bytes(response) < LAMBDA_RESPONSE_LIMIT, _lambda_bytes(response)
    error = mangum.body_of(response)["error"]
    assert error["code"] == "validation_error"
    _assert_capped(error, count)
    assert error["details"][0] == {
        "loc": ["body", "aaa"],
        "msg": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    }
    # AND it is small, far from the limit
    assert _lambda_bytes(response) < 10_000, _lambda_bytes(response)


def test_a_tenant_with_64_000_unknown_keys_is_a_small_422(invoke) -> None:
    # GIVEN a request creating a tenant, with 64,000 unknown keys
    count = 64_000
    response = _post(invoke, "/v1/tenants", _unknown_keys({"name": "Acme"}, count))
    # THEN a small 422 says how many problems there were
    assert response["statusCode"] == 422, response["body"][:500]
    assert _lambda_bytes(response) < 10_000, _lambda_bytes(response)
    _assert_capped(mangum.body_of(response)["error"], count)


def test_a_batch_whose_events_hold_many_problems_answers_what_it_published(invoke) -> None:
    # GIVEN a tenant, and a batch of one valid event and five whose data hold 12,800 unknown keys each
    tenant = mangum.make_tenant(invoke)
    count = 12_800
    valid = json.dumps({"type": "invoice.paid", "tenant_id": tenant["id"], "id": "inv-1", "data": INVOICE})
    bad = json.dumps({"type": "invoice.paid", "tenant_id": tenant["id"], "data": "@"}).replace(
        '"@"', _unknown_keys(INVOICE, count)
    )
    body = '{"events":[' + ",".join([valid, *[bad] * 5]) + "]}"
    # WHEN it is posted through Mangum
    response = _post(invoke, "/v1/events/batch", body)
    # THEN the answer reaches the client: the valid event published, each other one a 422 item whose error lists
    # the first problems and says how many there were
    assert response["statusCode"] == 200, response["body"][:500]
    assert _lambda_bytes(response) < LAMBDA_RESPONSE_LIMIT, _lambda_bytes(response)
    items = mangum.body_of(response)["data"]
    assert [item["status"] for item in items] == [202, 422, 422, 422, 422, 422]
    assert items[0]["event"]["id"] == "inv-1"
    for index, item in enumerate(items[1:], start=1):
        _assert_capped(item["error"], count)
        assert item["error"]["details"][0]["loc"] == ["body", "events", index, "data", "aaa"]
    assert _lambda_bytes(response) < 100_000, _lambda_bytes(response)


def _shipped_in_emoji(tenant_id: str, items: int) -> str:
    """An ``order.shipped`` event whose every string is 100 emoji (4 bytes each; 12 in Lambda's response)."""
    emoji = "\U0001f600" * 100
    shipped = [{"sku": emoji, "quantity": 1}] * items
    data = {"order_id": emoji, "carrier": emoji, "tracking_number": emoji, "items": shipped}
    return json.dumps({"type": "order.shipped", "tenant_id": tenant_id, "data": data}, ensure_ascii=False)


@pytest.mark.parametrize("settings_overrides", [{"max_request_bytes": MAX_REQUEST_BYTES}])
def test_a_batch_publish_as_large_as_a_deployment_may_take_answers_within_a_lambda_response(invoke) -> None:
    # GIVEN the largest request body a deployment may take (1 MiB), and a batch filling it with events whose data are
    # emoji: each is 12 bytes in Lambda's response, three times its size, the most any data grows there
    tenant = mangum.make_tenant(invoke)
    events = [_shipped_in_emoji(tenant["id"], 500)] * 4 + [_shipped_in_emoji(tenant["id"], 400)]
    body = '{"events":[' + ",".join(events) + "]}"
    assert MAX_REQUEST_BYTES * 0.95 < len(body.encode()) <= MAX_REQUEST_BYTES
    # WHEN it is published through Mangum
    response = invoke(mangum.http_event("POST", "/v1/events/batch", key=ADMIN_KEY, body=body, headers=JSON))
    # THEN every event is published, and the answer, which shows their data, reaches the publisher
    assert response["statusCode"] == 200, response["body"][:500]
    assert [item["status"] for item in mangum.body_of(response)["data"]] == [202] * 5
    assert _lambda_bytes(response) < LAMBDA_RESPONSE_LIMIT, _lambda_bytes(response)
    # AND no deployment may take a larger body
    with pytest.raises(ValidationError, match="max_request_bytes"):
        Settings(max_request_bytes=MAX_REQUEST_BYTES + 1)


def test_a_problem_at_a_key_of_any_length_is_shown_bounded(invoke) -> None:
    # GIVEN a publish request with one unknown key of 200,000 quotes (400,000 bytes, each escaped twice in the response)
    key = '"' * 200_000
    body = json.dumps({"type": "invoice.paid", "tenant_id": "tnt_x", "data": INVOICE, key: 0})
    response = _post(invoke, "/v1/events", body)
    # THEN the answer names the key, cut short
    assert response["statusCode"] == 422, response["body"][:500]
    (detail,) = mangum.body_of(response)["error"]["details"]
    assert detail["loc"][1].startswith('"' * 50)
    assert len(detail["loc"][1]) <= 100
    assert _lambda_bytes(response) < 10_000, _lambda_bytes(response)


def test_a_discard_of_1000_large_poison_messages_fits_a_lambda_response(invoke, services, aws, caplog) -> None:
    # GIVEN 1,000 poison messages in the dead-letter queue, each parked with a reason of 1,000 quotes and a body of
    # 1,000 characters, mostly quotes (each escaped twice once shown: 4 bytes)
    sqs = aws.client("sqs")
    url = services.settings.dead_letter_queue_url
    parked = {ERROR_ATTRIBUTE: {"DataType": "String", "StringValue": '"' * 1000}}
    for start in range(0, 1000, 10):
        entries: list[Any] = [
            {"Id": str(n), "MessageBody": f"{start + n:04d}zq7x" + '"' * 992, "MessageAttributes": parked}
            for n in range(10)
        ]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
    # WHEN the operator discards all of them through Mangum
    with caplog.at_level(logging.WARNING, logger="herald.dlq"):
        response = _post(invoke, "/v1/admin/dead-letters/discard", json.dumps({"all_poison": True, "limit": 1000}))
    # THEN the answer reaches the operator, within Lambda's limit
    assert response["statusCode"] == 200, response["body"][:500]
    size = _lambda_bytes(response)
    assert size < LAMBDA_RESPONSE_LIMIT, size
    # AND it lists every message discarded with the start of its reason and of its body, an equal share each
    answer = mangum.body_of(response)
    assert len(answer["discarded"]) == 1000
    assert answer["remaining"] == 0
    share = dlq.DISCARD_ANSWER_CHARS // 1000
    assert {letter["reason"] for letter in answer["discarded"]} == {("poison: " + '"' * 1000)[: share // 2]}
    assert {len(letter["body"]) for letter in answer["discarded"]} == {share - share // 2}
    assert sorted(letter["body"][:4] for letter in answer["discarded"]) == [f"{n:04d}" for n in range(1000)]
    # AND the cut is logged, without any body (which may carry a tenant's data)
    (cut,) = [record for record in caplog.records if record.getMessage().startswith("dead-letter discard answer cut")]
    assert (getattr(cut, "discarded", None), getattr(cut, "share", None)) == (1000, share)
    assert not any("zq7x" in str(record.__dict__) for record in caplog.records)


def _subscribed_to_every_type(invoke: Any) -> tuple[str, str]:
    """A tenant's key and its subscription to ``*``, one result per catalog type in a dry run."""
    key = mangum.make_tenant(invoke)["api_key"]["key"]
    body = json.dumps({"url": "https://example.com/webhooks", "event_types": ["*"]})
    response = invoke(mangum.http_event("POST", "/v1/subscriptions", key=key, body=body, headers=JSON))
    assert response["statusCode"] == 201, response["body"][:500]
    return key, mangum.body_of(response)["id"]


def _accented(copies: int, count: int) -> str:
    """A transform whose result on any example is one string of ``count`` x 923 ``é`` (2 bytes each in the body,
    ``\\u00e9``, 6 bytes, in the Lambda response): 923 doubled ``copies`` times, twice per stage, then cut."""
    return "[join('', (['" + "é" * 923 + "']" + " | [@,@,@,@][]" * copies + f")[:{count}])]"


def _dry_run(invoke: Any, key: str, sub_id: str, transform: str) -> dict[str, Any]:
    path = f"/v1/subscriptions/{sub_id}/transform/dry-run"
    event = mangum.http_event("POST", path, key=key, body=json.dumps({"transform": transform}), headers=JSON)
    response: dict[str, Any] = invoke(event)
    return response


def test_a_dry_run_of_a_large_result_per_catalog_type_fits_a_lambda_response(invoke) -> None:
    # GIVEN a subscription to every type, and a transform making 262,132 é of each type's example (524,268 bytes, just
    # under a body's 512 KiB; 1.57 MB once escaped in the Lambda response: four are over its 6,291,456 bytes)
    key, sub_id = _subscribed_to_every_type(invoke)
    # WHEN it is tried through Mangum
    response = _dry_run(invoke, key, sub_id, _accented(5, 284))
    # THEN the answer reaches the tenant, within Lambda's limit
    assert response["statusCode"] == 200, response["body"][:500]
    size = _lambda_bytes(response)
    assert size < LAMBDA_RESPONSE_LIMIT, size
    # AND it shows three results whole, and names the fourth (last by name, all being as large) with its size
    answer = mangum.body_of(response)
    assert answer["results"] == {name: ["é" * 262_132] for name in ("herald.ping", "invoice.paid", "order.shipped")}
    assert answer["not_shown"] == {"subscription.created": {"body_bytes": 524_268}}


def test_a_dry_run_just_within_its_bound_is_shown_whole_and_one_just_over_names_a_type(invoke) -> None:
    # GIVEN a subscription to every type, and transforms making 249,210 é, then 250,133 é, of each type's example:
    # four results take 5,981,040 bytes of the Lambda response, then 6,003,192, around the answer's 6,000,000
    key, sub_id = _subscribed_to_every_type(invoke)
    # WHEN each is tried through Mangum
    within = _dry_run(invoke, key, sub_id, _accented(5, 270))
    over = _dry_run(invoke, key, sub_id, _accented(5, 271))
    # THEN the first shows every result, in an answer close to Lambda's limit and within it
    assert within["statusCode"] == 200, within["body"][:500]
    assert 5_980_000 < _lambda_bytes(within) < LAMBDA_RESPONSE_LIMIT, _lambda_bytes(within)
    shown = mangum.body_of(within)
    assert "not_shown" not in shown
    assert shown["results"] == {
        name: ["é" * 249_210] for name in ("herald.ping", "invoice.paid", "order.shipped", "subscription.created")
    }
    # AND the second shows three of them and names the fourth, in an answer within the limit
    assert over["statusCode"] == 200, over["body"][:500]
    assert _lambda_bytes(over) < LAMBDA_RESPONSE_LIMIT, _lambda_bytes(over)
    cut = mangum.body_of(over)
    assert sorted(cut["results"]) == ["herald.ping", "invoice.paid", "order.shipped"]
    assert cut["not_shown"] == {"subscription.created": {"body_bytes": 250_133 * 2 + 4}}


def test_a_dry_run_answer_shows_its_smallest_results_first_and_keeps_its_bound_when_built_again() -> None:
    # GIVEN a small result and four of 259,000 to 262,000 é (each about 1.56 MB once escaped: three fit, not four)
    results: dict[str, Any] = {"a.small": {"ok": True}}
    results |= {f"b.large{index}": ["é" * (262_000 - index * 1_000)] for index in range(4)}
    # WHEN the dry run's answer is built from them, then built again from what it answers
    answer = TransformDryRunOut(transform="[data]", results=results)
    again = TransformDryRunOut.model_validate_json(answer.model_dump_json())
    # THEN the small one and the three smallest large ones are shown, in their order, and the largest named with its
    # body's size
    assert list(answer.results) == ["a.small", "b.large1", "b.large2", "b.large3"]
    assert answer.model_dump(mode="json")["not_shown"] == {"b.large0": {"body_bytes": 262_000 * 2 + 4}}
    # AND the answer, as a Lambda response carries it, is within the bound; built again, it is the same answer
    assert len(json.dumps(answer.model_dump_json())) < DRY_RUN_RESULTS_BYTES
    assert again == answer
