"""The ``herald`` command where it used to let its operator down: a terminal that cannot show a name, a follow-up
command that leaves out the tenant, a replayed publish a script never heard of, a throttled request given up on,
and a ``Retry-After`` date past what a datetime holds. Real HTTP on 127.0.0.1, to a stub server whose answers a
test scripts (``tests.test_cli_errors``'s)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from herald.cli import client as cli_client
from herald.cli import commands
from herald.cli.client import MAX_RETRIES, ApiClient, retry_delay
from herald.cli.errors import CliApiError
from tests.process_guard import Processes
from tests.test_cli import CONSOLE_SCRIPT, Run, herald
from tests.test_cli_errors import THROTTLED, UNAVAILABLE, StubApi, stub

pytestmark = pytest.mark.e2e

__all__ = ["herald", "stub"]  # the fixtures this module shares with tests.test_cli and tests.test_cli_errors


# ---------------------------------------------------------------------------------------------- the terminal

#: A tenant's name a cp1252 console has no characters for, one past U+FFFF among them.
FAR_NAME = "東京 Ltd \U0001f600"


def _run_console(processes: Processes, stub: StubApi, encoding: str, *argv: str) -> tuple[int, str, str]:
    """The installed command, in its own process, writing in ``encoding`` (as a console set to it would)."""
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    process = processes.start(
        [str(CONSOLE_SCRIPT), *stub.flags, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    out, err = process.communicate(timeout=60)
    return process.returncode, out.decode(encoding), err.decode(encoding)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_name_the_terminal_cannot_encode_is_escaped_not_a_traceback(
    stub: StubApi, processes: Processes, encoding: str
) -> None:
    # GIVEN a tenant whose name the console's encoding has no characters for
    tenant = {"id": "ten_1", "name": FAR_NAME, "created_at": "2026-01-31T12:00:00Z"}
    stub.script("GET", "/v1/tenants", (200, {}, {"data": [tenant], "iterator": None, "done": True}))
    # WHEN the operator lists the tenants, as a table and as JSON
    table_code, table_out, table_err = _run_console(processes, stub, encoding, "tenants", "list")
    json_code, json_out, json_err = _run_console(processes, stub, encoding, "--json", "tenants", "list")
    # THEN the table shows the name with escapes, and no traceback
    assert table_code == 0, table_err
    assert "Traceback" not in table_err
    assert "\\u6771\\u4eac Ltd \\U0001f600" in table_out
    # AND the JSON is valid JSON holding the name itself (JSON escapes, a surrogate pair past U+FFFF)
    assert json_code == 0, json_err
    assert "Traceback" not in json_err
    assert json.loads(json_out)["data"][0]["name"] == FAR_NAME
    assert "\\ud83d\\ude00" in json_out


# ---------------------------------------------------------------------------------------------- following a recovery


def test_the_recovery_follow_up_commands_name_the_tenant(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN a recovery job the API starts, and which never finishes
    queued = {"id": "rcv_1", "subscription_id": "sub_1", "status": "queued"}
    stub.script("POST", "/v1/subscriptions/sub_1/recover", (202, {}, queued))
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", (200, {}, {**queued, "status": "running"}))
    recover = ("deliveries", "recover", "--subscription", "sub_1", "--tenant", "ten_1")
    # WHEN the operator, acting for a tenant, starts it, and starts it again waiting a moment for it
    started = herald(*stub.flags, *recover, "--since", "2026-01-31T12:00:00Z")
    waited = herald(
        *(*stub.flags, *recover, "--since", "2026-01-31T12:00:00Z"),
        *("--wait", "--poll-interval", "0.05", "--wait-timeout", "0.2"),
    )
    # THEN the command each says to run next is one the API takes from the admin key: it names the tenant
    follow = "`herald deliveries recovery rcv_1 --subscription sub_1 --tenant ten_1`"
    assert started.code == 0, started.err
    assert started.err == f"started: follow it with {follow}\n"
    assert waited.code == 1
    assert waited.err.startswith("error: wait_timeout: recovery rcv_1 still running after 0 s")
    assert waited.err.endswith(f"(it carries on: see {follow})\n")
    # ... and it asked for the job with the tenant, as the command says
    assert all("tenant_id=ten_1" in sent.path for sent in stub.sent("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1"))


def test_a_wait_never_pauses_past_its_timeout(
    stub: StubApi, herald: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recovery job that never finishes, and a poll interval far longer than the wait's timeout
    queued = {"id": "rcv_1", "subscription_id": "sub_1", "status": "queued"}
    stub.script("POST", "/v1/subscriptions/sub_1/recover", (202, {}, queued))
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", (200, {}, {**queued, "status": "running"}))
    paused: list[float] = []

    def pause(seconds: float) -> None:
        paused.append(seconds)
        time.sleep(min(seconds, 1.0))

    monkeypatch.setattr(commands, "time", SimpleNamespace(monotonic=time.monotonic, sleep=pause))
    # WHEN the operator starts it and waits for it
    waited = herald(
        *(*stub.flags, "deliveries", "recover", "--subscription", "sub_1", "--since", "2026-01-31T12:00:00Z"),
        *("--wait", "--poll-interval", "3600", "--wait-timeout", "0.3"),
    )
    # THEN it gives up once the timeout is over, having paused no longer than the time it had left
    assert waited.code == 1
    assert waited.err.startswith("error: wait_timeout: recovery rcv_1 still running after 0 s")
    assert paused
    assert max(paused) <= 0.3


def test_a_waits_poll_answered_503_is_not_asked_again_past_the_timeout(
    stub: StubApi, herald: Callable[..., Run]
) -> None:
    # GIVEN a recovery job whose progress is answered 503, asking to be asked again in 20 s
    queued = {"id": "rcv_1", "subscription_id": "sub_1", "status": "queued"}
    unavailable = (503, {"Retry-After": "20"}, {"error": {"code": "service_unavailable", "message": "try again"}})
    stub.script("POST", "/v1/subscriptions/sub_1/recover", (202, {}, queued))
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", unavailable)
    # WHEN the operator waits for it at most 2 s
    waited = herald(
        *(*stub.flags, "deliveries", "recover", "--subscription", "sub_1", "--since", "2026-01-31T12:00:00Z"),
        *("--wait", "--poll-interval", "0.05", "--wait-timeout", "2"),
    )
    # THEN the poll is not asked again after the timeout (it would have been three times, 20 s apart): the wait is
    # over, its error says why and how to follow the job
    assert waited.code == 1
    assert waited.err.startswith("error: wait_timeout: recovery rcv_1 still queued after 2 s; its last poll: ")
    assert "not asked again: the time given to wait is up before then" in waited.err
    assert "(it carries on: see `herald deliveries recovery rcv_1 --subscription sub_1`)" in waited.err
    assert len(stub.sent("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1")) == 1


def test_a_last_poll_made_at_the_end_of_the_wait_is_given_time_to_answer(
    stub: StubApi, herald: Callable[..., Run]
) -> None:
    # GIVEN a recovery job that has finished, whose progress the API answers in 1.5 s (a cold start)
    queued = {"id": "rcv_1", "subscription_id": "sub_1", "status": "queued"}
    stub.script("POST", "/v1/subscriptions/sub_1/recover", (202, {}, queued))
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", (200, {}, {**queued, "status": "done"}))
    stub.delays[("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1")] = 1.5
    # WHEN the operator waits at most 3 s, polling every 5 s: its one poll is made at the end of the wait
    waited = herald(
        *(*stub.flags, "deliveries", "recover", "--subscription", "sub_1", "--since", "2026-01-31T12:00:00Z"),
        *("--json", "--wait", "--poll-interval", "5", "--wait-timeout", "3"),
    )
    # THEN that poll is answered, and the job shown done
    assert waited.code == 0, waited.err
    assert waited.json()["status"] == "done"


def test_a_last_poll_unanswered_is_the_waits_timeout(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN a recovery job whose progress the API takes longer to answer than the least a poll is given
    queued = {"id": "rcv_1", "subscription_id": "sub_1", "status": "queued"}
    stub.script("POST", "/v1/subscriptions/sub_1/recover", (202, {}, queued))
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", (200, {}, {**queued, "status": "running"}))
    stub.delays[("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1")] = cli_client.MIN_REQUEST_SECONDS + 3
    # WHEN the operator waits at most 1 s for it
    waited = herald(
        *(*stub.flags, "deliveries", "recover", "--subscription", "sub_1", "--since", "2026-01-31T12:00:00Z"),
        *("--wait", "--poll-interval", "0.5", "--wait-timeout", "1"),
    )
    # THEN the wait is over, its error naming the poll that went unanswered and how to follow the job
    assert waited.code == 1
    assert waited.err.startswith("error: wait_timeout: recovery rcv_1 still queued after 1 s; its last poll: ")
    assert "timed out" in waited.err
    assert "(it carries on: see `herald deliveries recovery rcv_1 --subscription sub_1`)" in waited.err


class _TimeoutsSeen(httpx.BaseTransport):
    """Answers every request 200 with an empty object, noting the read timeout each was sent with."""

    def __init__(self) -> None:
        self.read_timeouts: list[float | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.read_timeouts.append(request.extensions["timeout"]["read"])
        return httpx.Response(200, json={})


def test_a_request_with_a_deadline_waits_for_its_answer_no_later_than_it() -> None:
    # GIVEN a client whose requests wait 35 s for an answer
    seen = _TimeoutsSeen()
    with ApiClient("https://herald.example", "k", timeout=35.0, transport=seen) as client:
        # WHEN it makes one request bounded by a deadline 5 s away, one by a deadline past, and one with none
        client.request("GET", "/v1/tenants", deadline=time.monotonic() + 5)
        client.request("GET", "/v1/tenants", deadline=time.monotonic() - 1)
        client.request("GET", "/v1/tenants")
    # THEN the first waits at most the 5 s left, the second the least a request is given, the third its 35 s
    first, past, unbounded = seen.read_timeouts
    assert first is not None
    assert 4 < first <= 5
    assert past == cli_client.MIN_REQUEST_SECONDS
    assert unbounded == 35.0


def test_a_wait_answered_no_job_says_so(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN a recovery job started, whose progress is answered with an empty body
    queued = {"id": "rcv_1", "subscription_id": "sub_1", "status": "queued"}
    stub.script("POST", "/v1/subscriptions/sub_1/recover", (202, {}, queued))
    stub.script("GET", "/v1/subscriptions/sub_1/recoveries/rcv_1", (200, {}, b""))
    # WHEN the operator waits for it
    waited = herald(
        *(*stub.flags, "deliveries", "recover", "--subscription", "sub_1"),
        *("--since", "2026-01-31T12:00:00Z", "--wait", "--poll-interval", "0.05", "--wait-timeout", "5"),
    )
    # THEN it is an error saying the API answered no progress, not a traceback
    assert waited.code == 1
    assert waited.err == "error: invalid_response: the API answered no progress of recovery rcv_1\n"


def test_the_recovery_follow_up_command_without_a_tenant_has_none(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN a recovery job started with a tenant's own key (no --tenant)
    stub.script("POST", "/v1/subscriptions/sub_1/recover", (202, {}, {"id": "rcv_1", "status": "queued"}))
    # WHEN it is started
    run = herald(*stub.flags, "deliveries", "recover", "--subscription", "sub_1", "--since", "2026-01-31T12:00:00Z")
    # THEN the follow-up command has no --tenant
    assert run.code == 0, run.err
    assert run.err == "started: follow it with `herald deliveries recovery rcv_1 --subscription sub_1`\n"


# ---------------------------------------------------------------------------------------------- a replayed publish

EVENT = {"id": "evt_1", "type": "invoice.paid", "tenant_id": "ten_1", "data": {}}


@pytest.mark.parametrize("output", [(), ("--json",)])
def test_a_replayed_publish_says_so_on_stderr_as_a_table_and_as_json(
    stub: StubApi, herald: Callable[..., Run], output: tuple[str, ...]
) -> None:
    # GIVEN an API that answers a publish with the event published before with this key
    stub.script("POST", "/v1/events", (202, {"Idempotent-Replayed": "true"}, EVENT))
    # WHEN the operator (or a script, with --json) publishes with that key
    run = herald(
        *(*stub.flags, *output, "events", "publish", "invoice.paid", "--tenant", "ten_1", "--data", "{}"),
        *("--idempotency-key", "order-1"),
    )
    # THEN stderr says it is the event published before, whatever the output
    assert run.code == 0, run.err
    assert run.err == "published before with this id or key: this is that event, not a new one\n"
    # ... and the JSON is the API's answer as it is
    if output:
        assert run.json() == EVENT


def test_a_publish_not_replayed_says_nothing_on_stderr(stub: StubApi, herald: Callable[..., Run]) -> None:
    stub.script("POST", "/v1/events", (202, {}, EVENT))
    run = herald(*stub.flags, "--json", "events", "publish", "invoice.paid", "--tenant", "ten_1", "--data", "{}")
    assert run.code == 0, run.err
    assert run.err == ""
    assert run.json() == EVENT


# ---------------------------------------------------------------------------------------------- 429 and 503


def test_a_throttled_request_is_sent_again_whatever_it_is(stub: StubApi, herald: Callable[..., Run]) -> None:
    # GIVEN an API Gateway that throttles each request once (the request never reached Herald)
    created = {"id": "ten_1", "name": "Acme", "api_key": {"id": "key_1", "key": "hrk_x"}}
    stub.script("POST", "/v1/tenants", THROTTLED, (201, {}, created))
    stub.script("POST", "/v1/events", THROTTLED, (202, {}, EVENT))
    stub.script("POST", "/v1/events/evt_1/redeliver", THROTTLED, (202, {}, {"id": "rdl_1", "event_id": "evt_1"}))
    # WHEN the operator creates a tenant, publishes without an id or key, and redelivers an event
    runs = [
        herald(*stub.flags, "--json", *argv)
        for argv in (
            ("tenants", "create", "Acme"),
            ("events", "publish", "invoice.paid", "--tenant", "ten_1", "--data", "{}"),
            ("events", "redeliver", "evt_1"),
        )
    ]
    # THEN each was sent again, and done
    for run in runs:
        assert run.code == 0, run.err
    assert [run.json()["id"] for run in runs] == ["ten_1", "evt_1", "rdl_1"]
    assert len(stub.sent("POST", "/v1/tenants")) == 2
    assert len(stub.sent("POST", "/v1/events")) == 2
    assert len(stub.sent("POST", "/v1/events/evt_1/redeliver")) == 2


def test_a_request_throttled_to_the_end_says_how_often_it_was_asked(stub: StubApi, herald: Callable[..., Run]) -> None:
    stub.script("POST", "/v1/tenants", THROTTLED)
    run = herald(*stub.flags, "tenants", "create", "Acme")
    assert run.code == 1
    assert run.err == f"error: http_429: Too Many Requests (still 429 after {MAX_RETRIES} retries; Retry-After: 0 s)\n"
    assert len(stub.sent("POST", "/v1/tenants")) == MAX_RETRIES + 1


def test_a_503_to_a_request_not_safe_to_repeat_is_still_sent_once(stub: StubApi) -> None:
    # GIVEN an API that cannot answer for a moment: the request may have been done
    stub.script("POST", "/v1/tenants", UNAVAILABLE)
    sleeps: list[float] = []
    with ApiClient(stub.url + "/", "k", sleep=sleeps.append) as client, pytest.raises(CliApiError) as raised:
        client.post("/v1/tenants", body={"name": "Acme"})
    # THEN it was sent once, and the error says why
    assert raised.value.message.endswith("(Retry-After: 0 s; not sent again: this request is not safe to send twice)")
    assert len(stub.sent("POST", "/v1/tenants")) == 1
    assert sleeps == []


# ---------------------------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    "retry_after",
    [
        "Mon, 1 Jan 99999999999999999999 00:00:00 GMT",  # a year past what a C long holds: OverflowError
        "Mon, 1 Jan 10000 00:00:00 GMT",  # past datetime's year 9999: ValueError
    ],
)
@pytest.mark.parametrize(("retries", "seconds"), [(0, 1.0), (1, 2.0)])
def test_a_retry_after_date_past_any_datetime_is_the_default_wait(
    retry_after: str, retries: int, seconds: float
) -> None:
    assert retry_delay(retry_after, retries) == seconds


def test_a_retry_after_date_the_parser_fails_on_is_the_default_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a date parser that fails as email.utils' has for some malformed dates
    def fails(text: str) -> Any:
        raise IndexError("list index out of range")

    monkeypatch.setattr(cli_client, "parsedate_to_datetime", fails)
    # THEN the wait is the default one
    assert retry_delay("Mon, 1 Jan", 0) == 1.0


def test_a_throttled_answer_with_a_retry_after_past_any_datetime_is_asked_again(stub: StubApi) -> None:
    # GIVEN an API Gateway that throttles once with a Retry-After date no datetime holds
    huge = {"Retry-After": "Mon, 1 Jan 99999999999999999999 00:00:00 GMT"}
    stub.script("GET", "/v1/tenants", (429, huge, {"message": "Too Many Requests"}), (200, {}, {"data": []}))
    sleeps: list[float] = []
    # WHEN the client lists tenants
    with ApiClient(stub.url + "/", "k", sleep=sleeps.append) as client:
        answer = client.get("/v1/tenants")
    # THEN it waited the default wait and asked again
    assert answer == {"data": []}
    assert sleeps == [1.0]
