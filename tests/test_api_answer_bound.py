"""The last check on every answer (herald.api.middleware.AnswerBound): an answer past Lambda's response limit is a 500
of Herald's shape, logged, instead of API Gateway's bare 500; an answer within it goes out as it was. Measured through
Mangum as the deployed handler runs, and counted as the template's runtime writes Lambda's response. No route is known
to build such an answer (each bounds its own), so the app here gets routes that answer whatever size a test asks
for."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from mangum import Mangum

from herald.api import create_app
from herald.lambda_response import ANSWER_MAX_BYTES, LAMBDA_RESPONSE_BYTES
from herald.local.poller import LambdaContext
from herald.local.resources import load_template
from tests import test_api_mangum as mangum

#: Bytes a control character of a JSON answer takes in Lambda's response: ``\\u0001`` in the body, its backslash
#: escaped again there.
CONTROL_IN_JSON = 7
#: What ``{"text":"..."}`` takes around its text there: the body as a string, its four quotes escaped.
AROUND = 17
#: The characters each test answer repeats.
CONTROL = "\x01"
ACCENTED = "é"


@pytest.fixture
def app(services) -> FastAPI:
    app = create_app(services)

    def sized(characters: int, accented: bool = False) -> JSONResponse:
        return JSONResponse({"text": (ACCENTED if accented else CONTROL) * characters})

    async def in_parts(characters: int) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield (CONTROL * (characters // 4)).encode()

        return StreamingResponse(parts(), media_type="text/plain; charset=utf-8")

    def raw(size: int, media_type: str = "") -> Response:
        return Response((CONTROL * size).encode(), media_type=media_type or None)

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
    """What the template's runtime returns to Lambda for ``response``: its JSON, non-ASCII as UTF-8."""
    return len(json.dumps(response, ensure_ascii=False).encode())


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


def test_the_template_runs_the_runtime_the_measure_is_made_for() -> None:
    # The last check counts non-ASCII as UTF-8, as Lambda's Python runtimes write a response since python3.12
    # (awslambdaric: ensure_ascii=False); an older runtime escapes it, up to three times larger.
    template = load_template(Path(__file__).resolve().parents[1] / "template.yaml")
    assert template["Globals"]["Function"]["Runtime"] in ("python3.12", "python3.13")
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert functions
    assert all(function["Properties"].get("Runtime") is None for function in functions)


def test_an_answer_past_lambdas_limit_is_a_logged_500_of_heralds_shape(invoke, caplog) -> None:
    # GIVEN an answer of 900,000 control characters: 5.4 MB of JSON (\u0001 each), 6.3 MB in Lambda's response
    characters = 900_000
    assert characters * CONTROL_IN_JSON > LAMBDA_RESPONSE_BYTES
    # WHEN it is asked for through Mangum
    with caplog.at_level(logging.ERROR, logger="herald.api.middleware"):
        response = invoke("GET", "/v1/sized", f"characters={characters}")
    # THEN the answer is a small 500 of Herald's error shape saying why
    message = _assert_refused(response)
    assert "may have been done" not in message  # a read: nothing was done
    # AND the log says which request, its status and the answer's size in the response
    (record,) = [record for record in caplog.records if "over its limit" in record.getMessage()]
    assert "GET /v1/sized (200)" in record.getMessage()
    assert f"{characters * CONTROL_IN_JSON + AROUND} bytes" in record.getMessage()


def test_an_answer_just_within_the_limit_goes_out_whole(invoke) -> None:
    # GIVEN an answer of 880,000 control characters: 6.16 MB in Lambda's response, within the answer's 6,200,000 bytes
    characters = 880_000
    assert characters * CONTROL_IN_JSON + AROUND <= ANSWER_MAX_BYTES
    # WHEN it is asked for through Mangum
    response = invoke("GET", "/v1/sized", f"characters={characters}")
    # THEN it is answered as it was, and Lambda's response holds it
    assert response["statusCode"] == 200, response["body"][:300]
    assert json.loads(response["body"]) == {"text": CONTROL * characters}
    assert ANSWER_MAX_BYTES - 50_000 < _lambda_bytes(response) < LAMBDA_RESPONSE_BYTES, _lambda_bytes(response)


def test_non_ascii_counts_as_the_runtime_writes_it(invoke) -> None:
    # GIVEN an answer of 1,040,000 é: 2.08 MB as UTF-8, which the runtime writes as it is (6.24 MB were each é
    # escaped, \u00e9, as older runtimes write it)
    characters = 1_040_000
    # WHEN it is asked for
    response = invoke("GET", "/v1/sized", f"characters={characters}&accented=true")
    # THEN it goes out whole: Lambda's response holds it
    assert response["statusCode"] == 200, response["body"][:300]
    assert json.loads(response["body"]) == {"text": ACCENTED * characters}
    assert _lambda_bytes(response) < LAMBDA_RESPONSE_BYTES / 2


def test_a_write_answered_too_large_says_it_may_have_been_done(invoke) -> None:
    # WHEN a POST's answer is past the limit
    response = invoke("POST", "/v1/sized", "characters=900000")
    # THEN the 500 says what it asked may have been done
    assert "may have been done: read it back" in _assert_refused(response)


def test_an_answer_sent_in_parts_is_measured_whole(invoke) -> None:
    # GIVEN a text answer streamed in four parts of control characters (six bytes each in Lambda's response), each
    # part under the limit, together past it
    # WHEN it is asked for
    response = invoke("GET", "/v1/in-parts", "characters=1040000")
    # THEN it is the 500; and the same answer within the limit goes out whole
    _assert_refused(response)
    within = invoke("GET", "/v1/in-parts", "characters=1000000")
    assert within["statusCode"] == 200
    assert within["body"] == CONTROL * 1_000_000
    assert _lambda_bytes(within) < LAMBDA_RESPONSE_BYTES


def test_an_answer_is_measured_as_mangum_sends_it(invoke) -> None:
    # GIVEN control characters (0x01, a byte each)
    # WHEN 4,700,000 are answered as bytes of no text type, which Mangum sends in base64 (6.27 MB), and 1,100,000
    # with no content type at all, which Mangum labels JSON and sends as text (6.6 MB once escaped; 1.47 MB in base64)
    as_bytes = invoke("GET", "/v1/raw", "size=4700000&media_type=application/octet-stream")
    unlabelled = invoke("GET", "/v1/raw", "size=1100000")
    # THEN both are the 500
    _assert_refused(as_bytes)
    _assert_refused(unlabelled)
    # AND 4,600,000 bytes in base64 (6.13 MB) go out whole, as does a megabyte unlabelled (6 MB)
    within = invoke("GET", "/v1/raw", "size=4600000&media_type=application/octet-stream")
    assert within["statusCode"] == 200
    assert within["isBase64Encoded"] is True
    assert _lambda_bytes(within) < LAMBDA_RESPONSE_BYTES
    small = invoke("GET", "/v1/raw", "size=1000000")
    assert small["statusCode"] == 200
    assert small["isBase64Encoded"] is False
    assert _lambda_bytes(small) < LAMBDA_RESPONSE_BYTES


def test_a_head_past_the_limit_is_the_500_without_a_body(invoke) -> None:
    # WHEN a HEAD asks for an answer past the limit
    response = invoke("HEAD", "/v1/sized", "characters=900000")
    # THEN it is the GET's status, with no body
    assert response["statusCode"] == 500
    assert response["body"] == ""


def test_a_file_sent_by_its_path_goes_out_with_its_start(app: FastAPI) -> None:
    # GIVEN a server that sends files by their path (ASGI's pathsend extension): the portal's style sheet
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/portal/static/portal.css",
        "raw_path": b"/portal/static/portal.css",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {"http.response.pathsend": {}},
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    # WHEN it is asked for
    asyncio.run(app(scope, receive, send))
    # THEN the answer's start goes out, then the file's path
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.pathsend"]
    assert sent[0]["status"] == 200
    assert sent[1]["path"].endswith("portal.css")


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
