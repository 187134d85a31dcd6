"""An API request served by Lambda makes no AWS call that might not end within the time Lambda has left for it:
it answers 503 in Herald's shape, where Lambda's timeout would have cut it off (and API Gateway answered a bare
5xx of its own). Requests go through Mangum with a Lambda context, as in a deployment."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError
from mangum import Mangum

from herald import deadline, faults
from herald.api import create_app, middleware
from herald.dlq import DeadLetterQueue
from herald.errors import ServiceUnavailableError
from herald.local.poller import LambdaContext
from herald.messages import RecoverMessage, dump_message
from herald.queue import REDRIVES_ATTRIBUTE
from tests.support import ADMIN_KEY, INVOICE, TenantInfo
from tests.test_api_mangum import http_event

#: An attempt's worst: 3 s to connect and the tests' read timeout (the setting's default, 10 s).
ATTEMPT_SECONDS = deadline.CONNECT_SECONDS + 10


def _serve(services: Any, event: dict[str, Any], *, seconds_left: float) -> dict[str, Any]:
    """The API's answer to ``event`` through Mangum, in an invocation of the 29 s function with ``seconds_left``."""
    handler: Any = Mangum(create_app(services), lifespan="off")
    context = LambdaContext("ApiFunction", 29, time.time() - (29 - seconds_left))
    return dict(handler(event, context))


def _create_tenant(name: str) -> dict[str, Any]:
    body = json.dumps({"name": name})
    return http_event("POST", "/v1/tenants", key=ADMIN_KEY, body=body, headers={"content-type": "application/json"})


def _tenant_names(services: Any) -> set[str]:
    answer = _serve(services, http_event("GET", "/v1/tenants", query="limit=250", key=ADMIN_KEY), seconds_left=29)
    assert answer["statusCode"] == 200, answer["body"]
    return {tenant["name"] for tenant in json.loads(answer["body"])["data"]}


def test_a_request_with_too_little_time_left_for_an_aws_call_answers_503_and_changes_nothing(
    services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an invocation with less time left than one AWS attempt may take (and a second to answer)
    seconds_left = ATTEMPT_SECONDS  # one short
    # WHEN a tenant is created in it
    answer = _serve(services, _create_tenant("Late"), seconds_left=seconds_left)
    # THEN it is a 503 in Herald's shape, to retry, and no tenant was created
    assert answer["statusCode"] == 503, answer["body"]
    assert json.loads(answer["body"])["error"]["code"] == "service_unavailable"
    assert answer["headers"]["retry-after"] == "1"
    assert "Late" not in _tenant_names(services)
    # AND with the time an attempt needs, the same request is made (on a clock that stands still once the request's
    # deadline is set: a second to spare, on a busy machine, would be the time its AWS calls take to start)
    frozen = SimpleNamespace(monotonic=lambda: 1000.0)
    monkeypatch.setattr(deadline, "time", frozen)
    monkeypatch.setattr(middleware, "time", frozen)
    answer = _serve(services, _create_tenant("In time"), seconds_left=ATTEMPT_SECONDS + 2)
    assert answer["statusCode"] == 201, answer["body"]
    assert "In time" in _tenant_names(services)


def test_a_request_whose_aws_calls_are_slow_stops_calling_before_lambda_would_stop_it(
    services: Any, tenant: TenantInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN AWS answering each attempt in 16 s (a clock of its own that each attempt moves on)
    now = [1000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(deadline, "time", clock)
    monkeypatch.setattr(middleware, "time", clock)
    made: list[str] = []

    def slow(event_name: str, **_: Any) -> None:  # after Herald's own check, which lets the attempt go
        made.append(event_name)
        now[0] += 16

    for client in (services.store.client, services.queue.client):
        client.meta.events.register("before-send", slow)
    # WHEN a subscription is created (two AWS calls: its key's look-up, the write) with all of the 29 s
    body = json.dumps({"url": "https://hooks.example.com/in", "event_types": ["*"]})
    event = http_event(
        "POST", "/v1/subscriptions", key=tenant.key, body=body, headers={"content-type": "application/json"}
    )
    answer = _serve(services, event, seconds_left=29)
    # THEN the first call was made (13 s at worst, 28 s to use), and the request answered 503 instead of the
    # second, which could have run past Lambda's timeout (16 + 13 s)
    assert len(made) == 1, made
    assert answer["statusCode"] == 503, answer["body"]
    assert json.loads(answer["body"])["error"]["code"] == "service_unavailable"


def _time_runs_out_after(services: Any, monkeypatch: pytest.MonkeyPatch, operation: str) -> list[str]:
    """AWS answering at once until ``operation``'s first attempt, which takes a minute (on a clock of its own, that
    the request's deadline is on too): the operations attempted, each named once per attempt."""
    now = [1000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(deadline, "time", clock)
    monkeypatch.setattr(middleware, "time", clock)
    made: list[str] = []

    def slow(event_name: str, **_: Any) -> None:
        made.append(event_name.rsplit(".", 1)[-1])
        if made[-1] == operation:
            now[0] += 60

    for client in (services.store.client, services.queue.client):
        client.meta.events.register_first("before-send", slow)  # Herald's check, registered first after it, runs first
    return made


def test_a_batch_publish_out_of_time_after_storing_its_events_answers_each_on_its_own(
    client: Any, services: Any, tenant: TenantInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription to the events, and AWS slow from the moment a batch's events are stored: the calls that
    # would queue their deliveries come too late
    sub = {"url": "https://hooks.example.com/in", "event_types": ["*"]}
    assert client.post("/v1/subscriptions", json=sub, headers=tenant.headers).status_code == 201
    made = _time_runs_out_after(services, monkeypatch, "BatchExecuteStatement")
    events = [
        {"type": "invoice.paid", "tenant_id": tenant.id, "id": f"late-{number}", "data": INVOICE} for number in range(3)
    ]
    body = json.dumps({"events": events})
    event = http_event(
        "POST", "/v1/events/batch", key=ADMIN_KEY, body=body, headers={"content-type": "application/json"}
    )
    # WHEN the batch is published in an invocation with all of its 29 s
    answer = _serve(services, event, seconds_left=29)
    # THEN the call answers for each event: stored, not queued, a 503 with its id to publish again (not one 503 for
    # the whole call, which a publisher of events without ids would publish again, twice over)
    assert "BatchExecuteStatement" in made
    assert "SendMessageBatch" not in made
    assert answer["statusCode"] == 200, answer["body"]
    items = json.loads(answer["body"])["data"]
    assert [(item["status"], item["error"]["code"]) for item in items] == [(503, "service_unavailable")] * 3
    assert [item["event"]["id"] for item in items] == [f"late-{number}" for number in range(3)]


def test_a_write_refused_for_lack_of_time_is_not_made(services: Any, aws: Any) -> None:
    # GIVEN a request's deadline already past
    token = deadline.REQUEST_DEADLINE.set(time.monotonic() - 1)
    try:
        # WHEN a message is sent to the work queue, THEN it is refused as an outage is (a BotoCoreError)
        with pytest.raises(BotoCoreError):
            services.queue.client.send_message(QueueUrl=services.settings.queue_url, MessageBody="{}")
    finally:
        deadline.REQUEST_DEADLINE.reset(token)
    # AND nothing was sent (no handler of the attempt, moto's included, made it before the check)
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=services.settings.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_the_deadline_refuses_an_attempt_before_an_injected_fault_answers_it(services: Any) -> None:
    # GIVEN every SendMessage attempt answered by a timeout of the fault injector (HERALD_FAULTS), and a request's
    # deadline already past
    injector = faults.install(services.queue.client, "sqs.SendMessage:timeout@send=1.0")
    assert injector is not None
    token = deadline.REQUEST_DEADLINE.set(time.monotonic() - 1)
    try:
        # WHEN a message is sent, THEN the deadline refuses the attempt, as it would with no fault on
        with pytest.raises(deadline.OutOfTime):
            services.queue.client.send_message(QueueUrl=services.settings.queue_url, MessageBody="{}")
    finally:
        deadline.REQUEST_DEADLINE.reset(token)
    # AND no attempt reached the injector: a send-level fault never stands in for the deadline's refusal (a call-level
    # one, `@call`, answers before any attempt, as botocore's retries giving up would)
    assert injector.count("timeout") == 0


def test_a_batch_read_in_threads_keeps_the_requests_deadline(services: Any) -> None:
    # GIVEN a request's deadline already past
    token = deadline.REQUEST_DEADLINE.set(time.monotonic() - 1)
    try:
        # WHEN a read of 250 keys is made (three BatchGetItem calls side by side, in threads), THEN it is refused
        keys = [{"pk": f"NONE#{number}", "sk": "#NONE"} for number in range(250)]
        with pytest.raises(ServiceUnavailableError):
            services.store.table.batch_get(keys)
    finally:
        deadline.REQUEST_DEADLINE.reset(token)


def test_a_redrive_in_a_request_stops_receiving_while_its_closing_calls_can_still_be_made(
    services: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a dead-letter queue of 60 healthy messages and one poison, and SQS taking 2 s a receive (on a clock of its
    # own, that of the request's deadline and the redrive's budget both)
    sqs = aws.client("sqs")
    url = services.settings.dead_letter_queue_url
    used_up = {"DataType": "Number", "StringValue": str(services.settings.dead_letter_max_redrives)}
    sqs.send_message(QueueUrl=url, MessageBody="{}", MessageAttributes={REDRIVES_ATTRIBUTE: used_up})
    for start in range(0, 60, 10):
        bodies = [dump_message(RecoverMessage(job_id=f"rcv_{start + n}")) for n in range(10)]
        entries: list[Any] = [{"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies)]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
    now = [1000.0]
    monkeypatch.setattr(deadline, "time", SimpleNamespace(monotonic=lambda: now[0]))

    def receiving(event_name: str, **_: Any) -> None:
        if event_name.endswith("ReceiveMessage"):
            now[0] += 2

    client = services.queue.client
    client.meta.events.register_first("before-send", receiving)  # after Herald's check, registered first after it
    queue = DeadLetterQueue(client, url, services.settings.queue_url, clock=lambda: now[0], max_redrives=3)
    # WHEN the operator redrives them all in an API request of 28 s (13 s an attempt at worst: calls may start in
    # the first 15)
    token = deadline.REQUEST_DEADLINE.set(now[0] + 28)
    try:
        answer = queue.redrive(1000)
    finally:
        deadline.REQUEST_DEADLINE.reset(token)
    # THEN it stopped receiving with time left to close (the poison made visible again, the queue counted) and
    # answered what it moved, instead of a 503 for a redrive half made
    assert 0 < answer.moved < 60
    assert answer.kept == 1
    assert answer.remaining == 61 - answer.moved


def test_outside_lambda_no_deadline_is_set(client, services: Any) -> None:
    # GIVEN a request served without a Lambda context (the local stack, uvicorn)
    seen: list[float | None] = []

    def look(**_: Any) -> None:
        seen.append(deadline.REQUEST_DEADLINE.get())

    services.store.client.meta.events.register("before-send", look)
    # WHEN it makes its AWS calls, THEN none has a deadline, and none is left set after a Lambda request either
    assert client.get("/v1/tenants", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    assert seen
    assert set(seen) == {None}
    _tenant_names(services)
    assert deadline.REQUEST_DEADLINE.get() is None
