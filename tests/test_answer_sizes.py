"""Answers built from oversized input stay within what Lambda can return (6,291,456 bytes of response, the JSON the
function returns, in which Mangum puts the HTTP body as a string), measured through Mangum as the deployed handler
runs: over it, API Gateway answers a bare 500 in place of Herald's answer."""

from __future__ import annotations

import itertools
import json
import logging
import string
from typing import Any

from herald import dlq
from herald.queue import ERROR_ATTRIBUTE
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
