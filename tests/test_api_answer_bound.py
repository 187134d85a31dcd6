"""The last check on every answer (herald.api.middleware.AnswerBound): an answer past Lambda's response limit is a 500
of Herald's shape, logged, instead of API Gateway's bare 500; an answer within it goes out as it was. Measured through
Mangum as the deployed handler runs. No route is known to build such an answer (each bounds its own), so the app
here gets routes that answer whatever size a test asks for."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from mangum import Mangum

from herald.api import create_app
from herald.lambda_response import ANSWER_MAX_BYTES, LAMBDA_RESPONSE_BYTES
from herald.local.poller import LambdaContext
from tests import test_api_mangum as mangum

#: Characters each ``é`` of an answer takes in Lambda's response at worst (``\\u00e9``).
ESCAPED_E_ACUTE = 6
#: What ``{"text":"..."}`` takes around its text there: the body as a string, its four quotes escaped.
AROUND = 17


@pytest.fixture
def app(services) -> FastAPI:
    app = create_app(services)

    def sized(characters: int) -> JSONResponse:
        return JSONResponse({"text": "é" * characters})

    async def in_parts(characters: int) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield ("é" * (characters // 4)).encode()

        return StreamingResponse(parts(), media_type="text/plain; charset=utf-8")

    def raw(size: int, media_type: str) -> Response:
        return Response(b"a" * size, media_type=media_type)

    app.add_api_route("/v1/sized", sized, methods=["GET", "POST"])
    app.add_api_route("/v1/in-parts", in_parts)
    app.add_api_route("/v1/raw", raw)
    return app


@pytest.fixture
def invoke(app: FastAPI):
    handler: Any = Mangum(app, lifespan="off")  # called with the local stack's Lambda context, as the deployed one is

    def call(method: str, path: str, query: str = "") -> dict[str, Any]:
        context = LambdaContext("ApiFunction", 29, time.time())
        response: dict[str, Any] = dict(handler(mangum.http_event(method, path, query=query), context))
        return response

    return call


def _lambda_bytes(response: dict[str, Any]) -> int:
    """What the Lambda runtime returns for ``response``, at its worst (non-ASCII escaped)."""
    return len(json.dumps(response).encode())


def _assert_refused(response: dict[str, Any]) -> str:
    """``response`` is Herald's 500 for an answer too large to send, small; its message."""
    assert response["statusCode"] == 500, response["body"][:300]
    assert response["headers"]["content-type"] == "application/json"
    assert _lambda_bytes(response) < 2_000
    error = json.loads(response["body"])["error"]
    assert error["code"] == "internal_error"
    assert "too large to send" in error["message"]
    assert f"{LAMBDA_RESPONSE_BYTES:,}-byte response limit" in error["message"]
    return str(error["message"])


def test_an_answer_past_lambdas_limit_is_a_logged_500_of_heralds_shape(invoke, caplog) -> None:
    # GIVEN an answer of 1,040,000 é: 2 MB as UTF-8, 6.24 MB in Lambda's response once escaped
    characters = 1_040_000
    assert characters * ESCAPED_E_ACUTE > ANSWER_MAX_BYTES
    # WHEN it is asked for through Mangum
    with caplog.at_level(logging.ERROR, logger="herald.api.middleware"):
        response = invoke("GET", "/v1/sized", f"characters={characters}")
    # THEN the answer is a small 500 of Herald's error shape saying why
    message = _assert_refused(response)
    assert "may have been done" not in message  # a read: nothing was done
    # AND the log says which request, its status and the answer's size
    (record,) = [record for record in caplog.records if "over its limit" in record.getMessage()]
    assert "GET /v1/sized (200)" in record.getMessage()
    assert f"{characters * ESCAPED_E_ACUTE + AROUND} bytes" in record.getMessage()


def test_an_answer_just_within_the_limit_goes_out_whole(invoke) -> None:
    # GIVEN an answer of 1,030,000 é: 6.18 MB once escaped, within the answer's 6,200,000 bytes
    characters = 1_030_000
    assert characters * ESCAPED_E_ACUTE + AROUND <= ANSWER_MAX_BYTES
    # WHEN it is asked for through Mangum
    response = invoke("GET", "/v1/sized", f"characters={characters}")
    # THEN it is answered as it was, and Lambda's response holds it
    assert response["statusCode"] == 200, response["body"][:300]
    assert json.loads(response["body"]) == {"text": "é" * characters}
    assert _lambda_bytes(response) < LAMBDA_RESPONSE_BYTES, _lambda_bytes(response)


def test_a_write_answered_too_large_says_it_may_have_been_done(invoke) -> None:
    # WHEN a POST's answer is past the limit
    response = invoke("POST", "/v1/sized", "characters=1040000")
    # THEN the 500 says what it asked may have been done
    assert "may have been done: read it back" in _assert_refused(response)


def test_an_answer_sent_in_parts_is_measured_whole(invoke) -> None:
    # GIVEN an answer streamed in four parts, each under the limit, together past it
    characters = 1_040_000
    # WHEN it is asked for
    response = invoke("GET", "/v1/in-parts", f"characters={characters}")
    # THEN it is the 500; and the same answer within the limit goes out whole
    _assert_refused(response)
    within = invoke("GET", "/v1/in-parts", "characters=1000000")
    assert within["statusCode"] == 200
    assert within["body"] == "é" * 1_000_000


def test_a_binary_answer_is_measured_in_base64_as_mangum_sends_it(invoke) -> None:
    # GIVEN 4,700,000 bytes: 4.7 MB as text, 6.27 MB in base64
    size = 4_700_000
    # WHEN they are answered as text, then as bytes of no text type
    as_text = invoke("GET", "/v1/raw", f"size={size}&media_type=text/plain")
    as_bytes = invoke("GET", "/v1/raw", f"size={size}&media_type=application/octet-stream")
    # THEN the text goes out as it is, within Lambda's limit, and the bytes, which Mangum sends in base64, are the 500
    assert as_text["statusCode"] == 200
    assert as_text["isBase64Encoded"] is False
    assert _lambda_bytes(as_text) < LAMBDA_RESPONSE_BYTES
    _assert_refused(as_bytes)


def test_a_head_past_the_limit_is_the_500_without_a_body(invoke) -> None:
    # WHEN a HEAD asks for an answer past the limit
    response = invoke("HEAD", "/v1/sized", "characters=1040000")
    # THEN it is the GET's status, with no body
    assert response["statusCode"] == 500
    assert response["body"] == ""


def test_the_api_document_names_the_500_of_every_operation(services) -> None:
    # GIVEN the API's document
    document = create_app(services).openapi()
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    assert len(operations) >= 30
    # THEN every operation documents its 500: Herald's error shape, `internal_error`, and what a write should do
    for operation in operations:
        answer = operation["responses"]["500"]
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
        assert answer["description"].startswith("`internal_error`")
        assert "read it back" in answer["description"]
