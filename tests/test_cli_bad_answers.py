"""The ``herald`` command told something it cannot use: a 2xx answer of another shape than the API's (a broken
deployment, another service at the URL), or an AWS configuration botocore cannot read. Each is one line
``error: <code>: <message>`` and exit 1, never a traceback. Real HTTP on 127.0.0.1, to a stub server whose answers
a test scripts (``tests.test_cli_errors``'s), and moto for the stack."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from herald.cli.config import read_secret, stack_outputs
from herald.cli.errors import CliConfigError
from tests.test_cli import Run, herald
from tests.test_cli_errors import StubApi, stub

pytestmark = pytest.mark.e2e

__all__ = ["herald", "stub"]  # the fixtures this module shares with tests.test_cli and tests.test_cli_errors

#: An empty body (the stub sends nothing for ``None``).
EMPTY = None
SINCE = ("--since", "2026-01-31T12:00:00Z")


# ---------------------------------------------------------------------------------------------- answers


#: (command, method, path, answer): what each command is answered instead of the API's object.
BAD_ANSWERS: list[tuple[tuple[str, ...], str, str, Any]] = [
    # What the review found
    (("events", "show", "evt_1"), "GET", "/v1/events/evt_1", EMPTY),
    (("events", "show", "evt_1"), "GET", "/v1/events/evt_1", {"id": "evt_1", "data": 5}),
    (
        ("events", "publish-batch", '{"events": []}'),
        "POST",
        "/v1/events/batch",
        {"data": [{"status": 202, "event": "x"}]},
    ),
    (("dlq", "show"), "GET", "/v1/admin/dead-letters", {"count": 1, "sample": [1]}),
    (("dlq", "discard", "--id", "m"), "POST", "/v1/admin/dead-letters/discard", {"not_found": 5}),
    # A listing with no body, one page or all of them
    (("tenants", "list"), "GET", "/v1/tenants", EMPTY),
    (("tenants", "list", "--all"), "GET", "/v1/tenants", EMPTY),
    (("tenants", "list"), "GET", "/v1/tenants", {"done": True}),
    (("tenants", "list"), "GET", "/v1/tenants", {"data": [], "done": "no"}),
    # The other commands, with no body or a field they read of another type
    (("tenants", "create", "Acme"), "POST", "/v1/tenants", EMPTY),
    (("tenants", "create", "Acme"), "POST", "/v1/tenants", {"id": "ten_1", "metadata": ["a"]}),
    (("tenants", "issue-key", "ten_1"), "POST", "/v1/tenants/ten_1/api-keys", EMPTY),
    (("tenants", "portal-link", "ten_1"), "POST", "/v1/tenants/ten_1/portal-sessions", EMPTY),
    (("subscriptions", "show", "sub_1"), "GET", "/v1/subscriptions/sub_1", EMPTY),
    (("subscriptions", "disable", "sub_1"), "PATCH", "/v1/subscriptions/sub_1", EMPTY),
    (
        ("events", "publish", "invoice.paid", "--tenant", "ten_1", "--data", "{}"),
        "POST",
        "/v1/events",
        EMPTY,
    ),
    (
        ("events", "publish-batch", '{"events": []}'),
        "POST",
        "/v1/events/batch",
        {"data": [{"status": 422, "error": "refused"}]},
    ),
    (
        ("events", "publish-batch", '{"events": []}'),
        "POST",
        "/v1/events/batch",
        {"data": [{"status": "202", "event": {"id": "evt_1"}}]},
    ),
    (("events", "redeliver", "evt_1"), "POST", "/v1/events/evt_1/redeliver", EMPTY),
    (
        ("deliveries", "resend", "dlv_1", "--subscription", "sub_1"),
        "POST",
        "/v1/subscriptions/sub_1/deliveries/dlv_1/retry",
        EMPTY,
    ),
    (
        ("deliveries", "recover", "--subscription", "sub_1", *SINCE),
        "POST",
        "/v1/subscriptions/sub_1/recover",
        EMPTY,
    ),
    (
        ("deliveries", "recover", "--subscription", "sub_1", *SINCE),
        "POST",
        "/v1/subscriptions/sub_1/recover",
        {"id": 5, "status": "queued"},
    ),
    (
        ("deliveries", "recovery", "rcv_1", "--subscription", "sub_1"),
        "GET",
        "/v1/subscriptions/sub_1/recoveries/rcv_1",
        EMPTY,
    ),
    (("dlq", "show"), "GET", "/v1/admin/dead-letters", EMPTY),
    (("dlq", "redrive"), "POST", "/v1/admin/dead-letters/redrive", EMPTY),
    (("dlq", "redrive"), "POST", "/v1/admin/dead-letters/redrive", {"moved": 0, "remaining": "many"}),
    (("dlq", "discard", "--all-poison"), "POST", "/v1/admin/dead-letters/discard", {"discarded": [1]}),
    (("dlq", "discard", "--id", "m"), "POST", "/v1/admin/dead-letters/discard", {"not_discarded": ["m"]}),
]


@pytest.mark.parametrize(
    ("argv", "method", "path", "answer"),
    [
        pytest.param(*case, id=f"{' '.join(case[0])}: {json.dumps(case[3]) if case[3] else 'empty'}")
        for case in BAD_ANSWERS
    ],
)
def test_a_2xx_answer_of_another_shape_is_invalid_response(
    stub: StubApi, herald: Callable[..., Run], argv: tuple[str, ...], method: str, path: str, answer: Any
) -> None:
    # GIVEN something at the API's URL answering 2xx with no body, or with a field the command reads of another type
    stub.script(method, path, (200, {}, answer))
    # WHEN the operator runs the command
    run = herald(*stub.flags, *argv)
    # THEN it was asked, and its answer is one error line and exit 1 (the fixture checks for a traceback)
    assert stub.sent(method, path)
    assert run.code == 1, run.out
    assert run.err.startswith("error: invalid_response: "), run.err
    assert run.err.count("\n") == 1, run.err


# ---------------------------------------------------------------------------------------------- AWS configuration


@pytest.fixture
def bad_aws_config(aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch) -> boto3.session.Session:
    """No URL, key or stack in the environment (the CLI reads the stack), and an AWS setting botocore reads as a
    number holding none (it raises a plain ``ValueError`` making a client)."""
    for name in ("HERALD_API_URL", "HERALD_ADMIN_KEY", "HERALD_STACK_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "abc")
    return aws


@pytest.mark.parametrize(
    "argv",
    [
        ("tenants", "list"),
        ("--stack-name", "herald-prod", "events", "show", "evt_1"),
        ("admin-key", "rotate"),
        ("admin-key", "rotate", "--stack-name", "herald-prod"),
    ],
)
def test_an_aws_configuration_botocore_cannot_read_is_not_configured(
    bad_aws_config: boto3.session.Session, herald: Callable[..., Run], argv: tuple[str, ...]
) -> None:
    # WHEN the operator runs a command that reads the stack
    run = herald(*argv)
    # THEN the error says the AWS configuration is not usable, in one line, exit 1
    assert run.code == 1
    assert run.err.startswith("error: not_configured: no AWS cloudformation client "), run.err
    assert "'abc'" in run.err
    assert run.err.count("\n") == 1, run.err


def test_a_url_without_a_key_and_an_unreadable_aws_configuration_is_not_configured(
    bad_aws_config: boto3.session.Session, stub: StubApi, herald: Callable[..., Run]
) -> None:
    # WHEN the operator gives a URL but no key, so the stack is asked for it
    run = herald("--api-url", stub.url, "tenants", "list")
    # THEN the error says to give a key, and why the stack could not be read; nothing was sent
    assert run.code == 1
    assert run.err.startswith(f"error: not_configured: no key for {stub.url}: set --key or HERALD_ADMIN_KEY"), run.err
    assert "no AWS cloudformation client" in run.err
    assert stub.requests == []


@pytest.mark.parametrize(
    "read", [lambda session: stack_outputs(session, "herald"), lambda session: read_secret(session, "arn")]
)
def test_the_stack_readers_turn_an_unreadable_aws_configuration_into_not_configured(
    bad_aws_config: boto3.session.Session, read: Callable[[boto3.session.Session], Any]
) -> None:
    # WHEN the stack's outputs or its admin key's secret are read with a session of that configuration
    with pytest.raises(CliConfigError) as raised:
        read(bad_aws_config)
    # THEN it is a configuration error naming the client it could not make
    assert raised.value.code == "not_configured"
    assert raised.value.message.startswith("no AWS ")
