"""The ``herald`` command when things go wrong: keys and URLs that cannot be used, answers to wait for, input
that is not what it seems, and the terminal, the pipe and Ctrl-C. Real HTTP on 127.0.0.1: the real app served
by uvicorn (``tests.test_cli``'s fixtures), or a stub server whose answers a test scripts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from herald.cli import main
from herald.cli.client import MAX_RETRY_AFTER_SECONDS, ApiClient, retry_delay
from herald.cli.commands import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, json_object
from herald.cli.config import checked_url
from herald.cli.errors import CliConnectionError, CliError
from herald.local.loopback import LoopbackServer, QuietHandler
from herald.local.resources import LocalResources
from herald.messages import DeliveryMessage
from tests.process_guard import Processes
from tests.support import ADMIN_KEY, INVOICE, Receiver
from tests.test_admin_key_rotation import rotation_stack_template
from tests.test_cli import (
    CONSOLE_SCRIPT,
    Run,
    api,
    api_url,
    cli_env,
    deployed_stack,
    herald,
    make_tenant_via_cli,
    table_rows,
)

pytestmark = pytest.mark.e2e

__all__ = ["api_url", "cli_env", "herald"]  # the fixtures this module shares with tests.test_cli


# ---------------------------------------------------------------------------------------------- a scripted API


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class StubApi:
    """A real HTTP server on 127.0.0.1 answering as a test scripts: ``answers[(METHOD, path)]`` is consumed in
    order, each (status, headers, JSON body, or raw bytes); once a list is empty its last answer repeats. Every
    request is recorded with its arrival time."""

    answers: dict[tuple[str, str], list[tuple[int, dict[str, str], Any]]] = field(default_factory=dict)
    #: How long the answers to (METHOD, path) take, in seconds (none: at once).
    delays: dict[tuple[str, str], float] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url("")

    @property
    def flags(self) -> tuple[str, ...]:
        """The CLI's flags that point it at this server, with a key it takes as any other."""
        return ("--api-url", self.url, "--key", "k")

    def script(self, method: str, path: str, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.answers[(method, path)] = list(answers)

    def handle(self, handler: QuietHandler) -> None:
        body = handler.read_body()
        with self.lock:
            self.requests.append(
                Request(
                    handler.command,
                    handler.path,
                    {k.lower(): v for k, v in handler.headers.items()},
                    body,
                    time.monotonic(),
                )
            )
            path = handler.path.split("?", 1)[0]
            queue = self.answers.get((handler.command, path), [(404, {}, {"message": "Not Found"})])
            status, headers, payload = queue.pop(0) if len(queue) > 1 else queue[0]
            delay = self.delays.get((handler.command, path), 0.0)
        if delay:
            time.sleep(delay)  # a slow API: the client's timeout is what the test is about
        # Bytes go as they are (an answer that is not JSON, or not UTF-8); anything else as JSON.
        content = (
            payload if isinstance(payload, bytes) else json.dumps(payload).encode() if payload is not None else b""
        )
        # The client may have stopped waiting for a delayed answer (its timeout, what such a test is about) and
        # closed the connection. Raised, the server thread's traceback would reach stderr while a later test's output
        # is being captured.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            handler.answer(status, content, {"content-type": "application/json", **headers})

    def sent(self, method: str, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.split("?", 1)[0] == path]


@pytest.fixture
def stub() -> Iterator[StubApi]:
    api = StubApi()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            api.handle(self)

        def do_POST(self) -> None:
            api.handle(self)

        def do_PATCH(self) -> None:
            api.handle(self)

    api.server = LoopbackServer(Handler)
    try:
        yield api
    finally:
        api.server.close()


# ---------------------------------------------------------------------------------------------- keys


def test_a_key_with_surrounding_whitespace_is_used_stripped(
    cli_env: str, herald: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    # WHEN the key, given by flag or by environment, ends with what a paste or a file leaves behind
    by_flag = herald("--key", f"{ADMIN_KEY}\r\n", "tenants", "list")
    monkeypatch.setenv("HERALD_ADMIN_KEY", f" {ADMIN_KEY} ")
    by_env = herald("tenants", "list")
    # THEN the API takes it
    assert by_flag.code == 0, by_flag.err
    assert by_env.code == 0, by_env.err


@pytest.mark.parametrize(("key", "kind"), [("hra_in\x1bside", "a control character"), ("hra_cl\u00e9", "a non-ASCII")])
def test_a_key_that_cannot_be_sent_is_a_configuration_error_that_never_shows_it(
    cli_env: str, herald: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, key: str, kind: str
) -> None:
    # WHEN the key holds a character no header may carry, by flag or by environment
    by_flag = herald("--key", key, "tenants", "list")
    monkeypatch.setenv("HERALD_ADMIN_KEY", key)
    by_env = herald("tenants", "list")
    # THEN the error says what is wrong with it and where it came from, and not the key
    assert by_flag.code == 1
    assert by_flag.err.startswith(f"error: not_configured: the key from --key holds {kind}")
    assert by_env.code == 1
    assert by_env.err.startswith(f"error: not_configured: the key from HERALD_ADMIN_KEY holds {kind}")
    for run in (by_flag, by_env):
        assert key[:6] not in run.err


def test_text_the_client_cannot_send_is_told_apart_from_a_header(stub: StubApi) -> None:
    # GIVEN a client, and a body (or a query) holding a lone surrogate: no UTF-8, not a header's fault
    with ApiClient(stub.url + "/", "k") as client:
        for call in (
            lambda: client.post("/v1/tenants", body={"name": "a\udcff"}),
            lambda: client.get("/v1/subscriptions", params={"tenant_id": "t\udcff"}),
        ):
            with pytest.raises(CliError) as raised:
                call()
            # THEN the error says the text is not Unicode, and names no header
            assert raised.value.message == "the request holds text that is not valid Unicode ('\\udcff')"
            assert "header" not in raised.value.message
        # AND a header that is not ASCII is still said to be one
        with pytest.raises(CliError) as raised:
            client.post("/v1/events", body={}, headers={"Idempotency-Key": "cl\u00e9"})
        assert raised.value.message == "a header holds a non-ASCII character (headers are ASCII)"
    assert stub.requests == []


def test_a_header_the_client_cannot_send_is_reported_without_the_key(stub: StubApi) -> None:
    # GIVEN a client handed a key no header may carry
    with ApiClient(stub.url + "/", "hra_secret\nvalue") as client, pytest.raises(CliConnectionError) as raised:
        # WHEN it calls the API
        client.get("/v1/tenants")
    # THEN the error says the header could not be sent, and shows no part of the key
    assert "Authorization header could not be sent" in raised.value.message
    assert "secret" not in raised.value.message
    assert stub.requests == []


# ---------------------------------------------------------------------------------------------- the stack's key


def test_the_stacks_admin_key_goes_only_to_the_stacks_own_url(
    api_url: str,
    stub: StubApi,
    herald: Callable[..., Run],
    resources: LocalResources,
    aws: boto3.session.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a deployed stack whose outputs name its API and its admin key's secret, and no key in the environment
    deployed_stack(aws, monkeypatch, "herald", api_url=api_url, secret_arn=resources.admin_key_secret_arn)
    stub.script("GET", "/v1/tenants", (200, {}, {"data": [], "iterator": None, "done": True}))

    # WHEN another API's URL is given without a key
    elsewhere = herald("--api-url", stub.url, "tenants", "list")
    # THEN nothing is sent there: the error says to give a key
    assert elsewhere.code == 1
    assert elsewhere.err.startswith(f"error: not_configured: no key for {stub.url}: set --key or HERALD_ADMIN_KEY")
    assert stub.requests == []

    # WHEN the stack's own URL is given without a key
    monkeypatch.setenv("HERALD_API_URL", api_url + "/")
    own = herald("tenants", "list")
    # THEN the stack's key is used there
    assert own.code == 0, own.err


# ---------------------------------------------------------------------------------------------- no tracebacks


PUBLISH = ("events", "publish", "invoice.paid", "--tenant", "ten_x", "--data")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ((*PUBLISH, '{"a": NaN}'), "NaN is not a JSON number"),
        ((*PUBLISH, '{"a": 1e999}'), "1e999 is too large"),
        (("events", "publish-batch", '{"events": [{"data": {"a": -Infinity}}]}'), "-Infinity is not a JSON number"),
        ((*PUBLISH, "{}", "--idempotency-key", "cl\u00e9"), "printable ASCII"),
        # A lone surrogate has no UTF-8, which the body is sent as: as a JSON escape, or as bytes of the command
        # line that are not UTF-8 (Python reads them as lone surrogates)
        ((*PUBLISH, '{"a": "\\ud800"}'), "argument --data: not valid Unicode text: the text at a holds \\ud800"),
        ((*PUBLISH, '{"a": {"b": ["ok", "x\udcff"]}}'), "the text at a.b.1 holds \\udcff"),
        ((*PUBLISH, '{"k\\udc00": 1}'), "a key at the top level holds \\udc00"),
        (
            ("events", "publish-batch", '{"events": [{"a": "\\udc00"}]}'),
            "argument JSON|@FILE: not valid Unicode text: the text at events.0.a holds \\udc00",
        ),
        # An event id the API would refuse, or an empty one (which would be dropped, publishing without an id)
        ((*PUBLISH, "{}", "--id", ""), "argument --id: event ids are 1-128 characters"),
        ((*PUBLISH, "{}", "--id", "an id"), "event ids are 1-128 characters"),
        ((*PUBLISH, "{}", "--id", "e" * 129), "event ids are 1-128 characters"),
        ((*PUBLISH, "{}", "--id", "evt_op_1"), "event ids starting with evt_op_ are Herald's own"),
    ],
)
def test_input_the_api_could_never_take_is_a_usage_error(
    cli_env: str, herald: Callable[..., Run], argv: tuple[str, ...], says: str
) -> None:
    # WHEN a value cannot be sent as JSON or as a header
    run = herald(*argv)
    # THEN argparse says why, the exit code is 2, and nothing reached the API
    assert run.code == 2
    assert says in run.err
    with api(cli_env, ADMIN_KEY) as http:
        assert http.get("/v1/tenants").json()["data"] == []


@pytest.mark.parametrize("url", ["http://[::1", "127.0.0.1:8000", "ftp://127.0.0.1/"])
def test_an_api_url_that_is_not_one_is_a_configuration_error(herald: Callable[..., Run], url: str) -> None:
    run = herald("--api-url", url, "--key", "k", "tenants", "list")
    assert run.code == 1
    assert run.err.startswith(f"error: not_configured: the API URL {url!r} is not ")


def test_a_closed_output_pipe_ends_the_command_quietly(cli_env: str, processes: Processes) -> None:
    # GIVEN the installed command writing to a pipe whose reader has gone (`herald tenants list | true`)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        process = processes.start([str(CONSOLE_SCRIPT), "tenants", "list"], stdout=writer, stderr=subprocess.PIPE)
    finally:
        os.close(writer)
    # WHEN it has its answer to print
    _, err = process.communicate(timeout=60)
    # THEN it stops with 141 (as a command that died of SIGPIPE), and says nothing more
    assert process.returncode == EXIT_BROKEN_PIPE, err
    assert err == b""


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "PYTHONUNBUFFERED"])
def test_an_output_pipe_closed_in_the_middle_of_a_long_listing_ends_the_command_with_141(
    stub: StubApi, processes: Processes, unbuffered: str
) -> None:
    # GIVEN a listing of 2,000 tenants, some 200 KB of table: more than the pipe holds (`herald tenants list --all`),
    # written through Python's buffer or, unbuffered (`PYTHONUNBUFFERED`, common in containers), straight to the pipe
    ids = [f"ten_{number:04d}_{'x' * 40}" for number in range(2000)]
    pages = [ids[start : start + 50] for start in range(0, len(ids), 50)]
    stub.script(
        "GET",
        "/v1/tenants",
        *(page(chunk, f"page-{number + 2}" if number + 1 < len(pages) else None) for number, chunk in enumerate(pages)),
    )
    process = processes.start(
        [str(CONSOLE_SCRIPT), *stub.flags, "tenants", "list", "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
    )
    assert process.stdout is not None
    # WHEN its reader takes the first line, then goes (`| head -1`) while the command is still writing the table
    assert process.stdout.readline().startswith(b"ID")
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    # THEN the command stops with 141, as one that died of SIGPIPE, not 0 as if the whole table had gone out
    assert process.returncode == EXIT_BROKEN_PIPE, err
    assert err == b""
    assert len(stub.sent("GET", "/v1/tenants")) == len(pages)


def test_ctrl_c_while_reading_the_data_from_stdin_exits_130(processes: Processes) -> None:
    # GIVEN the installed command reading the event's data from stdin (`--data @-`), which never ends
    args = [str(CONSOLE_SCRIPT), "--api-url", "http://127.0.0.1:9", "--key", "k"]
    args += ["events", "publish", "invoice.paid", "--tenant", "ten_x", "--data", "@-"]
    process = processes.start(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None
    # ... and has read from it: this write returns once the command took all but a pipe's buffer of it
    process.stdin.write(b'{"note": "' + b"x" * (1 << 20))
    process.stdin.flush()
    # WHEN the operator presses Ctrl-C
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    # THEN it stops with 130 and no traceback
    assert process.returncode == EXIT_INTERRUPTED, err
    assert b"Traceback" not in err
    assert err.strip() == b"interrupted"
    assert out == b""


# ---------------------------------------------------------------------------------------------- a batch partly refused


def test_publish_batch_with_a_refused_event_fails_in_json_too(cli_env: str, herald: Callable[..., Run]) -> None:
    # GIVEN a tenant, and a batch of a good event and one of an unknown type
    tenant = make_tenant_via_cli(herald)
    events = [
        {"type": "invoice.paid", "tenant_id": tenant.id, "id": "batch-ok", "data": INVOICE},
        {"type": "invoice.unheard_of", "tenant_id": tenant.id, "data": {}},
    ]
    # WHEN a script publishes it with --json
    run = herald("--json", "events", "publish-batch", json.dumps({"events": events}))
    # THEN the API's answer is on stdout, the refusal on stderr, and the command fails
    assert run.code == 1
    assert [item["status"] for item in run.json()["data"]] == [202, 422]
    assert "1 of 2 refused" in run.err

    # WHEN every event is published (the good one again: it has an id, so it is the same event)
    again = herald("--json", "events", "publish-batch", json.dumps({"events": events[:1]}))
    # THEN the command succeeds, with nothing on stderr
    assert again.code == 0, again.err
    assert again.err == ""
    assert again.json()["data"][0]["replayed"] is True


# ---------------------------------------------------------------------------------------------- 429 and 503

THROTTLED = (429, {"Retry-After": "0"}, {"message": "Too Many Requests"})
UNAVAILABLE = (503, {"Retry-After": "0"}, {"error": {"code": "service_unavailable", "message": "try again"}})


def page(ids: list[str], iterator: str | None) -> tuple[int, dict[str, str], Any]:
    data = [{"id": id_, "name": id_, "created_at": "2026-01-31T12:00:00Z"} for id_ in ids]
    return (200, {}, {"data": data, "iterator": iterator, "done": iterator is None})


def test_all_pages_survive_a_throttled_page_and_wait_its_retry_after(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN an API with two pages of tenants, which throttles the request for the second page once
    stub.script(
        "GET",
        "/v1/tenants",
        page(["ten_1"], "page-2"),
        (429, {"Retry-After": "1"}, {"message": "Too Many Requests"}),
        page(["ten_2"], None),
    )
    # WHEN the operator lists every page
    run = herald(*stub.flags, "--json", "tenants", "list", "--all")
    # THEN the page was asked again, once Retry-After had passed, and every tenant is there
    assert run.code == 0, run.err
    assert [tenant["id"] for tenant in run.json()["data"]] == ["ten_1", "ten_2"]
    first, throttled, again = stub.sent("GET", "/v1/tenants")
    assert "iterator" not in first.path
    assert "iterator=page-2" in throttled.path
    assert again.path == throttled.path
    assert again.at - throttled.at >= 1.0


def test_all_pages_stop_at_an_iterator_the_api_hands_back_again(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN an API whose second page hands the first page's iterator back (it would be followed for ever)
    stub.script("GET", "/v1/tenants", page(["ten_1"], "page-2"), page(["ten_2"], "page-2"), page(["ten_3"], None))
    # WHEN the operator lists every page
    run = herald(*stub.flags, "--json", "tenants", "list", "--all")
    # THEN it stops with a machine-readable error after asking for that page once, and prints no partial list
    assert run.code != 0
    assert run.out == ""
    assert "invalid_response" in run.err
    assert "page-2" in run.err
    assert len(stub.sent("GET", "/v1/tenants")) == 2


def test_waiting_for_a_recovery_outlasts_a_503(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN a recovery job whose progress the API cannot read for a moment
    stub.script("POST", "/v1/subscriptions/sub_1/recover", UNAVAILABLE, (202, {}, {"id": "rcv_1", "status": "queued"}))
    done = {"id": "rcv_1", "status": "done", "sent": 1}
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", UNAVAILABLE, (200, {}, done))
    # WHEN the operator starts it and waits
    run = herald(
        *("--api-url", stub.url, "--key", "k", "--json", "deliveries", "recover", "--subscription", "sub_1"),
        *("--since", "2026-01-31T12:00:00Z", "--wait", "--poll-interval", "0.1"),
    )
    # THEN both the start (the same window's repeat is the same job) and the poll were asked again
    assert run.code == 0, run.err
    assert run.json() == done
    assert len(stub.sent("POST", "/v1/subscriptions/sub_1/recover")) == 2
    assert len(stub.sent("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1")) == 2


def test_throttled_to_the_end_says_so_and_when_to_come_back(stub: StubApi, herald: Callable[..., Run]) -> None:
    stub.script("GET", "/v1/tenants", THROTTLED)
    run = herald(*stub.flags, "tenants", "list")
    assert run.code == 1
    assert run.err == "error: http_429: Too Many Requests (still 429 after 3 retries; Retry-After: 0 s)\n"
    assert len(stub.sent("GET", "/v1/tenants")) == 4


def test_a_request_not_safe_to_repeat_is_sent_once(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN an API that answers 503 to everything (a 429, API Gateway's throttling before the app, is asked again
    # whatever the request: test_cli_retries_and_output)
    for path in ("/v1/tenants", "/v1/events", "/v1/events/batch", "/v1/events/evt_1/redeliver"):
        stub.script("POST", path, UNAVAILABLE)
    # WHEN the operator creates a tenant, publishes without an idempotency key, publishes a batch whose events
    # have no id, and redelivers an event
    runs = [
        herald(*stub.flags, *argv)
        for argv in (
            ("tenants", "create", "Acme"),
            ("events", "publish", "invoice.paid", "--tenant", "ten_1", "--data", "{}"),
            ("events", "publish-batch", '{"events": [{"type": "invoice.paid", "tenant_id": "ten_1", "data": {}}]}'),
            ("events", "redeliver", "evt_1"),
        )
    ]
    # THEN each was sent once, and the error says why it was not sent again
    for run in runs:
        assert run.code == 1
        assert run.err.endswith("(Retry-After: 0 s; not sent again: this request is not safe to send twice)\n")
    assert [len(stub.sent("POST", path)) for path in ("/v1/tenants", "/v1/events", "/v1/events/batch")] == [1, 1, 1]
    assert len(stub.sent("POST", "/v1/events/evt_1/redeliver")) == 1


def test_a_publish_the_api_can_tell_again_is_sent_again(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN an API unavailable for a moment
    event = {"id": "evt_1", "type": "invoice.paid"}
    stub.script("POST", "/v1/events", UNAVAILABLE, (202, {}, event), UNAVAILABLE, (202, {}, event))
    batch = {"data": [{"status": 202, "event": event, "replayed": False}]}
    stub.script("POST", "/v1/events/batch", UNAVAILABLE, (200, {}, batch))
    # WHEN the operator publishes with an idempotency key, with an id, and a batch whose events all have an id
    one = herald(
        *("--api-url", stub.url, "--key", "k", "events", "publish", "invoice.paid", "--tenant", "ten_1"),
        *("--data", "{}", "--idempotency-key", "order-1"),
    )
    with_id = herald(
        *("--api-url", stub.url, "--key", "k", "events", "publish", "invoice.paid", "--tenant", "ten_1"),
        *("--data", "{}", "--id", "evt_1"),
    )
    many = herald(
        *("--api-url", stub.url, "--key", "k", "events", "publish-batch"),
        json.dumps({"events": [{"id": "evt_1", "type": "invoice.paid", "tenant_id": "ten_1", "data": {}}]}),
    )
    # THEN each was sent again, the same
    assert one.code == 0, one.err
    assert with_id.code == 0, with_id.err
    assert many.code == 0, many.err
    first, second, third, fourth = stub.sent("POST", "/v1/events")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "order-1"
    assert first.body == second.body
    assert third.body == fourth.body
    assert "idempotency-key" not in third.headers
    assert len(stub.sent("POST", "/v1/events/batch")) == 2


@pytest.mark.parametrize(
    ("retry_after", "retries", "seconds"),
    [
        ("2", 0, 2.0),
        ("3600", 0, MAX_RETRY_AFTER_SECONDS),
        ("Sat, 31 Jan 2026 12:00:05 GMT", 0, 5.0),
        ("Sat, 31 Jan 2026 11:00:00 GMT", 0, 0.0),
        (None, 0, 1.0),
        (None, 2, 4.0),
        ("soon", 1, 2.0),
        ("²", 1, 2.0),  # a digit to str.isdigit, and no number: the default wait
    ],
)
def test_retry_after_in_seconds_or_as_a_date_is_honoured_up_to_a_cap(
    retry_after: str | None, retries: int, seconds: float
) -> None:
    assert retry_delay(retry_after, retries, now=datetime(2026, 1, 31, 12, 0, tzinfo=UTC)) == seconds


# ---------------------------------------------------------------------------------------------- dead letters left


def test_dlq_redrive_says_how_many_remain_and_how_to_move_them(
    cli_env: str, herald: Callable[..., Run], resources: LocalResources, aws: boto3.session.Session
) -> None:
    # GIVEN three retired work messages in the dead-letter queue
    sqs = aws.client("sqs")
    for n in range(3):
        message = DeliveryMessage(event_id=f"evt_{n}", tenant_id="ten_1", subscription_id="sub_1", delivery_id=f"d{n}")
        sqs.send_message(QueueUrl=resources.dead_letter_queue_url, MessageBody=message.model_dump_json())
    # WHEN one call moves one of them, as a table and as JSON
    table_run = herald("dlq", "redrive", "--limit", "1")
    json_run = herald("--json", "dlq", "redrive", "--limit", "1")
    # THEN each says on stderr what is left and how to carry on
    assert table_run.code == 0, table_run.err
    assert "2 messages still in the dead-letter queue" in table_run.err
    assert "run `herald dlq redrive` again" in table_run.err
    assert json_run.code == 0, json_run.err
    assert json_run.json()["remaining"] == 1
    assert "1 message still in the dead-letter queue" in json_run.err
    # WHEN the last one is moved
    last = herald("dlq", "redrive")
    # THEN nothing more is said
    assert last.code == 0, last.err
    assert last.err == ""
    # WHEN only poison is left
    sqs.send_message(QueueUrl=resources.dead_letter_queue_url, MessageBody="not json")
    stuck = herald("dlq", "redrive")
    # THEN it says none moved, and how poison goes
    assert stuck.code == 0, stuck.err
    assert "1 message still in the dead-letter queue, none moved (poison ones stay)" in stuck.err
    assert "`herald dlq discard` for poison" in stuck.err
    # WHEN a call moves a retired message and keeps the poison, which is then all that is left
    sqs.send_message(QueueUrl=resources.dead_letter_queue_url, MessageBody=message.model_dump_json())
    mixed = herald("dlq", "redrive")
    # THEN it says that poison is part of what is left, which no redrive moves, and the way out of each kind
    assert mixed.code == 0, mixed.err
    assert "1 message still in the dead-letter queue (approximate); this call kept 1 message of poison" in mixed.err
    assert "`herald dlq show` tells what is left" in mixed.err
    assert "`herald dlq discard` for poison" in mixed.err


def test_dlq_redrive_help_states_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    # WHEN the operator asks how redrive works, or for more than the API moves in a call
    shown = main(["dlq", "redrive", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    too_many = main(["dlq", "redrive", "--limit", "10001"])
    # THEN the help gives the default, and too many is a usage error
    assert shown == 0
    assert "(default 100)" in help_text
    assert too_many == 2


# ---------------------------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    "argv",
    [
        ("deliveries", "recovery", "..", "--subscription", "sub_1"),
        ("deliveries", "list", "--subscription", ".."),
        ("deliveries", "resend", ".", "--subscription", "sub_1"),
        ("events", "show", "."),
        ("events", "redeliver", ".."),
        ("subscriptions", "disable", ".."),
        ("subscriptions", "show", ""),
        ("tenants", "issue-key", ".."),
    ],
)
def test_an_id_that_would_change_the_path_is_a_usage_error(
    stub: StubApi, herald: Callable[..., Run], argv: tuple[str, ...]
) -> None:
    # GIVEN an API that answers anything
    for method in ("GET", "POST", "PATCH"):
        for path in ("/v1/subscriptions/sub_1", "/v1/subscriptions", "/v1/events", "/v1/tenants"):
            stub.script(method, path, (200, {}, {"id": "sub_1", "data": [], "done": True}))
    # WHEN an id is empty, "." or ".." (which a URL resolves: `recovery ..` would GET /v1/subscriptions/sub_1)
    run = herald(*stub.flags, *argv)
    # THEN argparse refuses it, and nothing was sent
    assert run.code == 2
    assert "not an id" in run.err
    assert stub.requests == []


# ---------------------------------------------------------------------------------------------- the terminal


def test_control_characters_from_the_api_reach_the_terminal_as_escapes(
    cli_env: str, herald: Callable[..., Run], receiver: Receiver
) -> None:
    # GIVEN a subscription whose description holds a terminal's escape sequences (a window title set by OSC, a
    # colour, a bell): the API takes them there (a tenant's name is refused with them)
    text = "Evil\x1b]0;owned\x07Corp\x1b[31m\x9b2J"
    tenant = make_tenant_via_cli(herald)
    with api(cli_env, ADMIN_KEY) as http:
        assert http.post("/v1/tenants", json={"name": text}).status_code == 422
    with api(cli_env, tenant.key) as http:
        created = http.post(
            "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"], "description": text}
        )
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    # WHEN the operator shows it as a table, and as JSON
    shown = herald("subscriptions", "show", sub_id, "--tenant", tenant.id)
    as_json = herald("--json", "subscriptions", "show", sub_id, "--tenant", tenant.id)
    # ... and an error message echoes such characters
    missing = herald("events", "show", "evt_\x1b[2J")
    # THEN the table shows each control character as an escape, and the terminal gets none of them
    assert shown.code == 0, shown.err
    rows = dict((row[0], row[-1]) for row in table_rows(shown.out)[1:])
    assert rows["description"] == "Evil\\x1b]0;owned\\x07Corp\\x1b[31m\\x9b2J"
    assert missing.code == 1
    assert "evt_\\x1b[2J" in missing.err
    for output in (shown.out, missing.err):
        assert not any(char in output for char in "\x1b\x07\x9b")
    # ... while --json has the description as it is
    assert as_json.json()["description"] == text


#: What an API (a broken one, or another service at its URL) could put in the values the CLI's notes and warnings
#: on stderr quote: a window title by OSC, a bell, a colour, a C1 control sequence introducer.
HOSTILE = "x\x1b]0;owned\x07y\x1b[31m\x9b2J"


@pytest.mark.parametrize(
    ("argv", "method", "path", "answer"),
    [
        pytest.param(
            ("tenants", "list"), "GET", "/v1/tenants", {"data": [], "iterator": HOSTILE, "done": False}, id="iterator"
        ),
        pytest.param(
            ("dlq", "redrive"),
            "POST",
            "/v1/admin/dead-letters/redrive",
            {"moved": 0, "remaining": 0, "interrupted": HOSTILE},
            id="redrive-interrupted",
        ),
        pytest.param(
            ("dlq", "discard", "--id", "m"),
            "POST",
            "/v1/admin/dead-letters/discard",
            {"not_discarded": [{"message_id": HOSTILE, "reason": HOSTILE}], "not_found": [HOSTILE]},
            id="discard-left",
        ),
        pytest.param(
            ("dlq", "discard", "--id", "m"),
            "POST",
            "/v1/admin/dead-letters/discard",
            {"discarded": [], "interrupted": HOSTILE},
            id="discard-interrupted",
        ),
    ],
)
def test_api_values_in_notes_and_warnings_reach_the_terminal_as_escapes(
    stub: StubApi, herald: Callable[..., Run], argv: tuple[str, ...], method: str, path: str, answer: Any
) -> None:
    # GIVEN an API answering a value with a terminal's escape sequences where a note or a warning quotes it
    stub.script(method, path, (200, {}, answer))
    # WHEN the operator runs the command
    run = herald(*stub.flags, *argv)
    # THEN stderr quotes the value with each control character as an escape, and the terminal gets none of them
    assert stub.sent(method, path)
    assert "x\\x1b]0;owned\\x07y\\x1b[31m\\x9b2J" in run.err, run.err
    assert not any(char in run.err + run.out for char in "\x1b\x07\x9b"), run.err


# ---------------------------------------------------------------------------------------------- admin key rotation


def test_a_rotation_that_wrote_only_the_material_says_so_and_to_run_it_again(
    aws: boto3.session.Session, herald: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HERALD_API_URL", "HERALD_ADMIN_KEY", "HERALD_STACK_NAME"):
        monkeypatch.delenv(name, raising=False)
    # GIVEN a stack in eu-west-1 whose admin key secret is a replica there (its value can only be written in the
    # primary's region), beside a material secret of its own
    primary = aws.client("secretsmanager").create_secret(
        Name="herald-admin-key", SecretString="hra_" + "a" * 48, AddReplicaRegions=[{"Region": "eu-west-1"}]
    )
    here = boto3.session.Session(region_name="eu-west-1")
    secrets = here.client("secretsmanager")
    replica_arn = primary["ARN"].replace(":us-east-1:", ":eu-west-1:")
    material_arn = secrets.create_secret(Name="herald-admin-key-material", SecretString="a" * 48)["ARN"]
    template = rotation_stack_template(replica_arn, material_arn)
    here.client("cloudformation").create_stack(StackName="herald-eu", TemplateBody=template)

    # WHEN the operator rotates its key
    run = herald("admin-key", "rotate", "--stack-name", "herald-eu", "--region", "eu-west-1")

    # THEN the material was written, the key was not, and the error says both and what to do
    assert secrets.get_secret_value(SecretId=material_arn)["SecretString"] != "a" * 48
    assert secrets.get_secret_value(SecretId=replica_arn)["SecretString"] == "hra_" + "a" * 48
    assert run.code == 1
    assert run.err.startswith(f"error: rotation_failed: the new key material was written to {material_arn}, but ")
    assert "run `herald admin-key rotate` again" in run.err


# ---------------------------------------------------------------------------------------------- what is not the API


def test_a_2xx_body_that_is_not_utf8_is_an_error_not_a_traceback(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN something answering 200 with a Latin-1 page (a captive portal, a proxy, the wrong URL)
    page = b"<html>caf\xe9</html>"
    stub.script("GET", "/v1/tenants", (200, {"content-type": "text/html; charset=iso-8859-1"}, page))
    # WHEN the operator lists tenants
    run = herald(*stub.flags, "tenants", "list")
    # THEN it is reported as any other answer that is not JSON: exit 1, no traceback
    assert (run.code, run.err) == (1, "error: invalid_response: the API answered with non-JSON\n")


@pytest.mark.parametrize(
    ("argv", "answer"),
    [
        (("tenants", "list"), []),
        (("tenants", "list", "--all"), {"data": 5, "done": True}),
        (("tenants", "list", "--all"), {"data": [None], "done": True}),
        (("events", "publish-batch", '{"events": [{"type": "invoice.paid", "tenant_id": "t", "data": {}}]}'), []),
        (("events", "publish-batch", '{"events": [{"type": "invoice.paid", "tenant_id": "t", "data": {}}]}'), None),
        (("tenants", "list", "--all"), None),
        (
            ("events", "publish-batch", '{"events": [{"type": "invoice.paid", "tenant_id": "t", "data": {}}]}'),
            {"data": ["x"]},
        ),
    ],
)
def test_a_2xx_json_answer_of_another_shape_is_an_error_not_a_traceback(
    stub: StubApi, herald: Callable[..., Run], argv: tuple[str, ...], answer: Any
) -> None:
    # GIVEN another service at the URL, answering 200 with JSON that is not the API's object, or whose `data` is not
    # a list of objects, or with nothing (None: an empty body)
    stub.script("GET", "/v1/tenants", (200, {}, answer))
    stub.script("POST", "/v1/events/batch", (200, {}, answer))
    # WHEN the operator runs a command that reads the answer
    run = herald(*stub.flags, *argv)
    # THEN an error line and exit 1, not a traceback
    assert run.code == 1
    assert run.err.startswith("error: invalid_response: "), run.err


@pytest.mark.parametrize("flags", [("--api-url", ""), ("--key", ""), ("--key", "  "), ("--stack-name", "")])
def test_an_empty_connection_flag_is_refused_not_replaced_by_the_environment(
    cli_env: str, herald: Callable[..., Run], flags: tuple[str, str]
) -> None:
    # GIVEN the environment pointing at one deployment, with its admin key
    # WHEN a script passes a flag whose variable is unset (`--api-url "$STAGING_URL"`, `--key "$TENANT_KEY"`)
    run = herald(*flags, "tenants", "create", "Created-by-mistake")
    # THEN the command refuses the empty value, instead of using the environment's URL or admin key
    assert (run.code, run.err) == (
        1,
        f"error: not_configured: {flags[0]} is empty: give a value, or leave the flag out to use the default\n",
    )
    with api(cli_env, ADMIN_KEY) as http:
        assert http.get("/v1/tenants").json()["data"] == []


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
@pytest.mark.parametrize("flag", ["--wait-timeout", "--poll-interval"])
def test_a_wait_that_is_not_a_finite_positive_number_is_a_usage_error(
    stub: StubApi, herald: Callable[..., Run], flag: str, value: str
) -> None:
    # GIVEN a recovery job that stays running
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", (200, {}, {"id": "rcv_1", "status": "running"}))
    argv = [*stub.flags, "deliveries", "recovery", "rcv_1", "--subscription", "sub_1"]
    # WHEN the wait is given as no finite positive number (nan never passes a deadline; inf never ends a sleep)
    run = herald(*argv, "--wait", flag, value)
    # THEN argparse refuses it at once (exit 2), before any request
    assert run.code == 2
    assert "must be a finite number more than 0" in run.err
    assert stub.requests == []


def _publish_file(stub: StubApi, herald: Callable[..., Run], payload: Path) -> Run:
    """`events publish` of the data in ``payload`` (``--data @FILE``), to the stub."""
    return herald(*stub.flags, "events", "publish", "invoice.paid", "--tenant", "ten_1", "--data", f"@{payload}")


def test_a_data_file_with_a_utf8_byte_order_mark_is_read(
    stub: StubApi, herald: Callable[..., Run], tmp_path: Path
) -> None:
    # GIVEN a payload file saved by an editor that writes a UTF-8 byte order mark (Notepad, PowerShell 5)
    stub.script("POST", "/v1/events", (202, {}, {"id": "evt_1", "type": "invoice.paid"}))
    payload = tmp_path / "invoice.json"
    payload.write_bytes("\ufeff".encode() + json.dumps(INVOICE).encode())
    # WHEN it is published
    run = _publish_file(stub, herald, payload)
    # THEN the JSON it holds is sent
    assert run.code == 0, run.err
    assert json.loads(stub.sent("POST", "/v1/events")[0].body)["data"] == INVOICE


def test_a_data_file_that_is_not_utf8_is_a_usage_error(
    stub: StubApi, herald: Callable[..., Run], tmp_path: Path
) -> None:
    payload = tmp_path / "invoice.json"
    payload.write_bytes(b'{"note": "caf\xe9"}')
    run = _publish_file(stub, herald, payload)
    assert run.code == 2
    assert "is not UTF-8 text (byte 14)" in run.err
    assert stub.requests == []


def test_the_publish_batch_table_says_which_field_of_a_refused_event_is_wrong(
    cli_env: str, herald: Callable[..., Run]
) -> None:
    # GIVEN a batch of two events, the second's data not matching its type's schema
    tenant = make_tenant_via_cli(herald)
    events = [
        {"type": "invoice.paid", "tenant_id": tenant.id, "data": INVOICE},
        {"type": "invoice.paid", "tenant_id": tenant.id, "data": {**INVOICE, "amount_cents": "lots"}},
    ]
    # WHEN it is published, as a table
    run = herald("events", "publish-batch", json.dumps({"events": events}))
    # THEN the refused event is named on stderr with its error's code and the field at fault, as `events publish`
    # names them for its one event
    assert run.code == 1
    lines = run.err.splitlines()
    assert lines[0] == "1 of 2 refused:"
    assert lines[1] == "  event 1: invalid_input: data does not match the schema of invoice.paid"
    assert lines[2:] == ["    body.events.1.data.amount_cents: Input should be a valid integer"]


def test_the_publish_batch_table_shows_each_event_id_whole(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN events published with the longest ids the API takes (128 characters, more than a listing's cell)
    ids = ["a" * 128, "b" * 100]
    answer = {"data": [{"status": 202, "event": {"id": event_id}} for event_id in ids]}
    stub.script("POST", "/v1/events/batch", (200, {}, answer))
    events = [{"type": "invoice.paid", "tenant_id": "tnt_1", "id": event_id, "data": {}} for event_id in ids]
    # WHEN the batch is published, as a table
    run = herald(*stub.flags, "events", "publish-batch", json.dumps({"events": events}))
    # THEN each row has its event's id whole, to copy into `herald events show`
    assert run.code == 0, run.err
    assert [row[2] for row in table_rows(run.out)[1:]] == ids


def test_json_output_sends_no_c1_control_character_to_the_terminal(cli_env: str, herald: Callable[..., Run]) -> None:
    # GIVEN a tenant whose metadata holds an 8-bit CSI (U+009B, an escape sequence's start on some terminals) and DEL
    note = "Evil\x9b2J\x7fCorp caf\u00e9"
    with api(cli_env, ADMIN_KEY) as http:
        assert http.post("/v1/tenants", json={"name": "Evil Corp", "metadata": {"note": note}}).status_code == 201
    # WHEN the operator lists tenants with --json
    run = herald("--json", "tenants", "list")
    # THEN the JSON holds the value, those two as \\u escapes, other text as it is
    assert run.code == 0, run.err
    assert run.json()["data"][0]["metadata"]["note"] == note
    assert "\x9b" not in run.out
    assert "\x7f" not in run.out
    assert "Evil\\u009b2J\\u007fCorp café" in run.out


def test_a_dead_letter_sample_of_0_shows_the_counts_alone(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN a dead-letter queue of three messages (the API takes a sample of 0: the counts, no message read)
    stub.script("GET", "/v1/admin/dead-letters", (200, {}, {"count": 3, "in_flight": 0, "sample": []}))
    # WHEN the operator asks for the counts alone
    run = herald(*stub.flags, "dlq", "show", "--sample", "0")
    # THEN the API is asked for a sample of 0, and the counts are shown
    assert run.code == 0, run.err
    (request,) = stub.sent("GET", "/v1/admin/dead-letters")
    assert request.path == "/v1/admin/dead-letters?sample=0"
    assert table_rows(run.out.split("\n\n")[0])[1] == ["count", "3"]
    assert run.out.endswith("no messages to show\n")
    # AND a negative sample is still a usage error
    assert herald(*stub.flags, "dlq", "show", "--sample", "-1").code == 2


def test_a_stack_named_by_flag_wins_over_the_environments_url_and_key(
    api_url: str,
    stub: StubApi,
    herald: Callable[..., Run],
    resources: LocalResources,
    aws: boto3.session.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a deployed stack, and the environment set for another deployment (its URL and its key)
    deployed_stack(aws, monkeypatch, "herald-prod", api_url=api_url, secret_arn=resources.admin_key_secret_arn)
    monkeypatch.setenv("HERALD_API_URL", stub.url)
    monkeypatch.setenv("HERALD_ADMIN_KEY", "the-other-deployments-key")
    # WHEN the operator names the stack by flag
    run = herald("--json", "--stack-name", "herald-prod", "tenants", "create", "Acme")
    # THEN the command went to the stack's API with the stack's admin key, and nothing to the other deployment
    assert run.code == 0, run.err
    assert run.json()["name"] == "Acme"
    assert stub.requests == []


def test_an_empty_stack_region_or_profile_flag_is_refused_before_any_stack_is_read(
    aws: boto3.session.Session, resources: LocalResources, herald: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deployed stack named by the environment (HERALD_STACK_NAME), with its admin key's material
    secrets = aws.client("secretsmanager")
    material_arn = secrets.create_secret(Name="herald-admin-key-material", SecretString="m" * 48)["ARN"]
    template = rotation_stack_template(resources.admin_key_secret_arn, material_arn)
    aws.client("cloudformation").create_stack(StackName="herald-prod", TemplateBody=template)
    for name in ("HERALD_API_URL", "HERALD_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HERALD_STACK_NAME", "herald-prod")
    # WHEN a script rotates the admin key, or lists tenants, with a flag whose variable is unset
    runs = {
        "--stack-name": herald("admin-key", "rotate", "--stack-name", ""),
        "--region": herald("--region", "", "tenants", "list"),
        "--profile": herald("admin-key", "rotate", "--profile", ""),
    }
    # THEN each is refused, and the environment's stack was neither rotated nor read for a key
    for flag, run in runs.items():
        assert (run.code, run.err) == (
            1,
            f"error: not_configured: {flag} is empty: give a value, or leave the flag out to use the default\n",
        )
    assert secrets.get_secret_value(SecretId=material_arn)["SecretString"] == "m" * 48


def test_data_from_stdin_replaced_by_a_text_stream_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN standard input replaced by a text stream (no bytes beneath it), starting with a byte order mark
    monkeypatch.setattr(sys, "stdin", io.StringIO('\ufeff{"note": "café"}'))
    # WHEN `--data @-` is read THEN its JSON is the value
    assert json_object("@-") == {"note": "café"}


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8000",
        "http://herald.example.com",
        "http://[2001:db8::1]/",
        # Names under localhost: a resolver without RFC 6761's rule for them (glibc's) asks DNS, which may answer
        # another machine's address
        "http://localhost.:8000",
        "http://api.localhost:8000",
    ],
)
def test_plain_http_to_another_machine_is_refused_before_the_key_is_sent(
    stub: StubApi, herald: Callable[..., Run], url: str
) -> None:
    # WHEN the API's URL is plain http:// to another machine (a typo, a copied link)
    run = herald("--api-url", url, "--key", "k", "tenants", "list")
    # THEN nothing is sent (every request carries a key, the admin key most often), and the error says why
    assert run.code == 1
    assert run.err.startswith(f"error: not_configured: the API URL {url!r} is plain http:// to another machine")


def test_plain_http_to_this_machine_never_goes_through_a_proxy(
    stub: StubApi, herald: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an environment that names a proxy for every URL (a proxy elsewhere on the network)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    stub.script("GET", "/v1/tenants", (200, {}, {"data": [], "next_cursor": None}))
    # WHEN the CLI calls the API on this machine over plain http
    run = herald("--api-url", stub.url, "--key", "k", "tenants", "list")
    # THEN it goes straight there, the key with it, not through the proxy (which would carry it in the clear)
    assert run.code == 0, run.err
    assert [request.headers["authorization"] for request in stub.sent("GET", "/v1/tenants")] == ["Bearer k"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/",
        "http://127.0.0.2:1",
        "http://localhost:8000",
        "http://LocalHost:8000",
        "http://[::1]:8000",
        "http://0.0.0.0:8000",  # what `make run` prints when HERALD_LOCAL_HOST=0.0.0.0
        "http://[::]:8000",
    ],
)
def test_plain_http_to_this_machine_is_taken(url: str) -> None:
    # `make run` serves the API on http://127.0.0.1:8000
    assert checked_url(url) == url


DEEP = "[" * 200_000 + "]" * 200_000


def test_data_nested_deeper_than_any_parser_goes_is_a_usage_error(stub: StubApi, herald: Callable[..., Run]) -> None:
    # WHEN the operator publishes data nested 200,000 deep (Python's parser gives up with a RecursionError)
    run = herald(*stub.flags, "events", "publish", "invoice.paid", "--tenant", "tnt_1", "--data", f'{{"a": {DEEP}}}')
    # THEN a usage error names the problem, and nothing is sent
    assert run.code == 2, run.err
    assert "nested too deeply to be read" in run.err
    assert stub.sent("POST", "/v1/events") == []


@pytest.mark.parametrize("status", [200, 503])
def test_an_answer_nested_deeper_than_any_parser_goes_is_an_error_not_a_traceback(
    stub: StubApi, herald: Callable[..., Run], status: int
) -> None:
    # GIVEN something answering the API's URL with JSON nested 200,000 deep
    stub.script("GET", "/v1/tenants", (status, {"retry-after": "0"}, f'{{"a": {DEEP}}}'.encode()))
    # WHEN the operator lists tenants THEN an error line and exit 1, not a traceback
    run = herald(*stub.flags, "tenants", "list")
    assert run.code == 1
    assert run.err.startswith("error: "), run.err


def test_a_discard_of_all_poison_that_stopped_before_looking_at_everything_says_so(
    stub: StubApi, herald: Callable[..., Run]
) -> None:
    # GIVEN a discard that stopped with readable messages set aside and others not looked at (its time, or the most
    # readable messages it sets aside), one poison message discarded
    letter = {"message_id": "m1", "kind": None, "reason": "unreadable", "poison": True, "body": "x"}
    answer = {
        "discarded": [letter],
        "not_discarded": [],
        "not_found": [],
        "kept": 10,
        "remaining": 14,
        "interrupted": None,
    }
    stub.script("POST", "/v1/admin/dead-letters/discard", (200, {}, answer))
    # WHEN the operator discards all poison
    run = herald(*stub.flags, "dlq", "discard", "--all-poison")
    # THEN it exits 1, saying poison may remain and what to do
    assert run.code == 1, run.err
    assert "14 messages still in the dead-letter queue, 10 of them set aside as readable" in run.err
    assert "(`herald dlq redrive`), then discard again" in run.err
    # ... while a discard that looked at every message (only readable ones left) says nothing more
    stub.script("POST", "/v1/admin/dead-letters/discard", (200, {}, {**answer, "kept": 14}))
    done = herald(*stub.flags, "dlq", "discard", "--all-poison")
    assert (done.code, done.err) == (0, "")
