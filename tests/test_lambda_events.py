"""`sam local invoke` without Docker: every function of template.yaml, invoked with its sample events.

For each ``AWS::Serverless::Function`` the test does what SAM's local runtime does: take ``CodeUri`` and
``Handler`` from the template, load ``<CodeUri>/<module>.py`` as Lambda does (by file, under a module
name of its own, no ``sys.path`` edits; the layer's ``herald`` package is installed), give it the
function's environment from the template (its ``!Ref``s resolved to the moto resources) and call the
handler with every file of ``events/`` named with the function's prefix (``api_`` -> ApiFunction,
``delivery_`` -> DeliveryFunction). The placeholders of those files are described in events/README.md.
"""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.events.models import EventPattern
from standardwebhooks import Webhook

import herald.worker.runtime
from herald import ids
from herald.catalog import catalog, operational_catalog
from herald.local.event_sources import delivery_stream_source
from herald.local.poller import LambdaContext, SqsPoller
from herald.local.resources import LocalResources, function_properties, load_template
from herald.messages import NoticeMessage, dump_message
from herald.settings import get_settings
from herald.storage import keys
from herald.storage.subscriptions import DISABLED_NOTICE, subscription_of
from herald.storage.table import from_item, to_item
from herald.worker.bookkeeping import disabled_notice
from tests.api_support import queue_messages
from tests.support import ADMIN, ADMIN_KEY, EVENTS_DIR, INVOICE, Receiver
from tests.test_operational_webhooks import register

REPO = Path(__file__).resolve().parents[1]
EVENT_ID = "local-example-invoice-1001"
#: A stream record of a subscription Herald disabled, the operator's notice on it (the `Stats` event's second pattern).
NOTICE_SAMPLE = "delivery_stream_disabled_notice.json"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


# --- what `sam local invoke` does ----------------------------------------------------------------------


def functions(template: dict[str, Any]) -> list[str]:
    return sorted(
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    )


def prefix_of(logical_id: str) -> str:
    """ApiFunction -> ``api_``, DeliveryFunction -> ``delivery_``."""
    return logical_id.removesuffix("Function").lower() + "_"


def event_files(logical_id: str) -> list[str]:
    return sorted(path.name for path in EVENTS_DIR.glob(f"{prefix_of(logical_id)}*.json"))


def load_handler(template: dict[str, Any], logical_id: str) -> Handler:
    """Import the function's handler module from its file, as the Lambda runtime does."""
    properties = function_properties(template, logical_id)
    module_name, _, attribute = str(properties["Handler"]).rpartition(".")
    source = REPO / str(properties["CodeUri"]) / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(f"lambda_{logical_id}_{uuid.uuid4().hex}", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: Handler = getattr(module, attribute)
    assert callable(handler)
    return handler


def function_environment(template: dict[str, Any], logical_id: str, resources: LocalResources) -> dict[str, str]:
    """The function's environment variables (Globals merged), resolved as `sam local invoke` does for a stack
    deployed with default parameters: ``!Ref`` of a parameter is its Default, ``!Ref`` of a resource is the
    local resource (``LocalResources.environment()`` knows where each variable points), and a pseudo parameter
    (``AWS::StackName``) is the local stack's (``LocalResources.function_environment``, the template resolved)."""
    variables = function_properties(template, logical_id).get("Environment", {}).get("Variables", {})
    parameters = template.get("Parameters", {})
    local = {**resources.function_environment, **resources.environment()}
    environment: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, bool):
            environment[name] = str(value).lower()
        elif isinstance(value, str | int | float):
            environment[name] = str(value)
        elif isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
            environment[name] = str(parameters[value["Ref"]]["Default"])
        else:  # a resource (!Ref Table, ...) or a pseudo parameter: the local stack knows where it is, or its name
            assert name in local, f"{logical_id}: {name} = {value} has no local value"
            environment[name] = local[name]
    return environment


@pytest.fixture
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture
def use_environment(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Replace every HERALD_* variable with the function's, as a fresh Lambda container would see them."""

    def use(environment: dict[str, str]) -> None:
        for name in list(__import__("os").environ):
            if name.startswith("HERALD_"):
                monkeypatch.delenv(name)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    return use


def context(function_name: str, timeout: float) -> LambdaContext:
    return LambdaContext(function_name, timeout, time.time(), aws_request_id=str(uuid.uuid4()))


@contextlib.contextmanager
def logged_lines() -> Iterator[list[dict[str, Any]]]:
    """The JSON lines Herald's loggers print meanwhile (Powertools' handlers, pointed at a buffer), parsed."""
    handlers = [
        handler for handler in logging.getLogger("herald").handlers if isinstance(handler, logging.StreamHandler)
    ]
    assert handlers, "a handler module sets up the herald logger"
    buffer = io.StringIO()
    previous = [handler.setStream(buffer) for handler in handlers]
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)
        lines += [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def fill(name: str, values: dict[str, str]) -> dict[str, Any]:
    """Read an event file and replace its placeholders; keep content-length / md5OfBody true to the new bodies."""
    text = (EVENTS_DIR / name).read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    event: dict[str, Any] = json.loads(text)
    if isinstance(event.get("body"), str) and "content-length" in event.get("headers", {}):
        event["headers"]["content-length"] = str(len(event["body"].encode()))
    for record in event.get("Records", []):
        if "body" in record:  # an SQS record (a stream record has none)
            record["md5OfBody"] = hashlib.md5(record["body"].encode()).hexdigest()
    return event


def assert_v2_response(response: dict[str, Any]) -> None:
    """What Mangum answers for a payload 2.0 event, as API Gateway expects it."""
    assert set(response) <= {"statusCode", "headers", "body", "isBase64Encoded", "cookies"}, response
    assert isinstance(response["statusCode"], int)
    assert isinstance(response["headers"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in response["headers"].items())
    assert isinstance(response["body"], str)
    assert response["isBase64Encoded"] is False


def json_body(response: dict[str, Any]) -> Any:
    assert response["headers"]["content-type"] == "application/json"
    return json.loads(response["body"])


# --- the event files belong to functions ------------------------------------------------------------------


def test_every_event_file_belongs_to_a_function(template) -> None:
    # GIVEN the template's functions and the event files
    names = functions(template)
    assert names == ["ApiFunction", "DeliveryFunction"]
    files = sorted(path.name for path in EVENTS_DIR.glob("*.json"))
    # THEN each file is named for one function, and each function has sample events
    assert files
    for name in files:
        assert [f for f in names if name.startswith(prefix_of(f))], f"{name} is for no function"
    for function in names:
        assert event_files(function), f"{function} has no sample event"


def test_http_events_are_payload_2_on_the_default_route(template) -> None:
    for name in event_files("ApiFunction"):
        event = json.loads((EVENTS_DIR / name).read_text())
        assert event["version"] == "2.0", name
        assert event["routeKey"] == "$default", name
        assert event["requestContext"]["stage"] == "$default", name
        assert event["requestContext"]["routeKey"] == "$default", name
        http = event["requestContext"]["http"]
        assert http["path"] == event["rawPath"], name
        assert http["method"] in ("GET", "POST", "PATCH", "DELETE"), name
        assert isinstance(event["isBase64Encoded"], bool), name
        assert all(key == key.lower() for key in event["headers"]), f"{name}: HTTP API lower-cases header names"
        if "body" in event:
            json.loads(event["body"])
            assert event["headers"]["content-length"] == str(len(event["body"].encode())), name


def test_sqs_event_bodies_are_work_messages(template) -> None:
    from herald.messages import DeliveryMessage, parse_message

    for name in [name for name in event_files("DeliveryFunction") if name.startswith("delivery_sqs_")]:
        records = json.loads((EVENTS_DIR / name).read_text())["Records"]
        messages = [parse_message(record["body"]) for record in records]
        assert [type(message) for message in messages] == [DeliveryMessage], name
        for record in records:
            assert record["eventSource"] == "aws:sqs"
            assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()


def test_stream_samples_pass_the_filter_pattern_of_their_kind(template) -> None:
    # GIVEN the template's two filter patterns on the stream, in order: first successes (stats), and notices
    stats, notices = [EventPattern.load(pattern) for pattern in delivery_stream_source(template).patterns]
    # ... and the record of each stream sample
    (delivery,) = json.loads((EVENTS_DIR / "delivery_stream_stats.json").read_text())["Records"]
    (disabled,) = json.loads((EVENTS_DIR / NOTICE_SAMPLE).read_text())["Records"]
    # THEN the new delivery passes the first pattern only, and the disabled subscription the second only
    assert stats.matches_event(delivery)
    assert not notices.matches_event(delivery)
    assert notices.matches_event(disabled)
    assert not stats.matches_event(disabled)


def test_the_notice_sample_is_a_subscription_item_as_herald_writes_it() -> None:
    # GIVEN the notice sample's record
    (record,) = json.loads((EVENTS_DIR / NOTICE_SAMPLE).read_text())["Records"]
    stream = record["dynamodb"]
    item = from_item(stream["NewImage"])
    # THEN it is a change of a subscription's item, as a NEW_IMAGE stream carries it (template.yaml): keys and new image
    assert (record["eventSource"], record["eventName"], stream["StreamViewType"]) == (
        "aws:dynamodb",
        "MODIFY",
        "NEW_IMAGE",
    )
    assert "OldImage" not in stream
    assert stream["Keys"] == to_item(keys.subscription("local-tenant-id", "local-subscription-id"))
    assert {name: item[name] for name in ("pk", "sk")} == keys.subscription("local-tenant-id", "local-subscription-id")
    # ... of a subscription Herald disabled (it reads back as one)
    sub = subscription_of(item)
    assert (sub.id, sub.tenant_id, sub.enabled) == ("local-subscription-id", "local-tenant-id", False)
    assert sub.disabled_reason is not None
    assert sub.disabled_at is not None
    # ... holding the notice the worker writes on it when disabling it for a 410 Gone, as it serialises it
    event_type, data, key = disabled_notice(
        {"tenant_id": sub.tenant_id, "subscription_id": sub.id, "url": sub.url},
        sub.disabled_reason,
        sub.disabled_at,
        None,
        410,
    )
    assert item[DISABLED_NOTICE] == dump_message(NoticeMessage(event_type=event_type, data=data, key=list(key)))


# --- ApiFunction ------------------------------------------------------------------------------------------


def test_environment_resolves_every_variable(template, resources) -> None:
    environment = function_environment(template, "ApiFunction", resources)
    assert environment["HERALD_TABLE_NAME"] == resources.table_name
    assert environment["HERALD_QUEUE_URL"] == resources.queue_url
    assert environment["HERALD_ADMIN_KEY_SECRET_ARN"] == resources.admin_key_secret_arn
    assert environment["HERALD_ALLOWED_TARGET_NETWORKS"] == ""
    assert environment["HERALD_ALLOW_HTTP_URLS"] == "false"
    assert "HERALD_ADMIN_KEY" not in environment  # the deployed key comes from Secrets Manager


def test_api_function_answers_its_sample_events(template, resources, aws, use_environment) -> None:
    # GIVEN the ApiFunction loaded from template.yaml with its environment (admin key from the moto secret)
    # Long on purpose: one GIVEN / WHEN / THEN story, read from start to end.
    use_environment(function_environment(template, "ApiFunction", resources))
    handler = load_handler(template, "ApiFunction")
    timeout = float(function_properties(template, "ApiFunction")["Timeout"])
    values = {"local-admin-key": ADMIN_KEY}
    sqs = aws.client("sqs")

    def invoke(name: str) -> dict[str, Any]:
        response = handler(fill(name, values), context("ApiFunction", timeout))
        assert_v2_response(response)
        return response

    checks: dict[str, Callable[[dict[str, Any]], None]] = {}

    def check(name: str) -> Callable[[Callable[[dict[str, Any]], None]], Callable[[dict[str, Any]], None]]:
        def register(function: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
            checks[name] = function
            return function

        return register

    @check("api_create_tenant.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 201, response["body"]
        tenant = json_body(response)
        assert tenant["name"] == "Acme Corp"
        values["local-tenant-key"] = tenant["api_key"]["key"]
        values["local-tenant-id"] = tenant["id"]

    @check("api_list_event_types.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 200, response["body"]
        assert [item["name"] for item in json_body(response)["data"]] == catalog.names()

    @check("api_create_subscription.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 201, response["body"]
        sub = json_body(response)
        assert sub["url"] == "https://example.com/webhooks/herald"
        assert sub["event_types"] == ["invoice.paid", "order.shipped"]
        assert sub["secret"].startswith("whsec_")
        values["local-subscription-id"] = sub["id"]

    @check("api_list_subscriptions.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 200, response["body"]
        assert [item["id"] for item in json_body(response)["data"]] == [values["local-subscription-id"]]

    @check("api_publish_event.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 202, response["body"]
        event = json_body(response)
        assert event["id"] == EVENT_ID
        assert event["tenant_id"] == values["local-tenant-id"]
        assert event["data"] == INVOICE
        assert "idempotent-replayed" not in response["headers"]
        # ... a retry of the same file (same Idempotency-Key) answers the same event and publishes nothing more
        again = invoke("api_publish_event.json")
        assert again["statusCode"] == 202
        assert again["headers"]["idempotent-replayed"] == "true"
        assert json_body(again)["id"] == EVENT_ID
        # (the event's one route: publishing queued its delivery itself, once, naming it)
        (queued,) = queue_messages(sqs, resources.queue_url)
        assert ids.is_id(queued.pop("delivery_id"), ids.DELIVERY)
        assert queued == {
            "v": 1,
            "kind": "delivery",
            "event_id": EVENT_ID,
            "tenant_id": values["local-tenant-id"],
            "subscription_id": values["local-subscription-id"],
            "trigger": "scheduled",
        }

    @check("api_get_event.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 200, response["body"]
        event = json_body(response)
        assert event["id"] == EVENT_ID
        # publishing queued and counted its one delivery: fanned out already, not yet delivered
        assert event["deliveries"]["fanout_complete"] is True
        assert (event["deliveries"]["matched"], event["deliveries"]["pending"]) == (1, 1)

    @check("api_openapi.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 200
        spec = json_body(response)
        assert spec["openapi"].startswith("3.1.")
        assert sorted(spec["webhooks"]) == sorted([*catalog.names(), *operational_catalog.names()])

    @check("api_docs.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 200
        assert response["headers"]["content-type"].startswith("text/html")
        assert "/openapi.json" in response["body"]

    @check("api_unauthorized.json")
    def _(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 401
        assert response["headers"]["www-authenticate"] == "Bearer"
        assert json_body(response)["error"]["code"] == "unauthorized"

    # THEN the test knows every api_ file (a new file needs its expected outcome here)
    assert sorted(checks) == event_files("ApiFunction")
    # WHEN each file is invoked in order, THEN each answer is the expected one
    for name, verify in checks.items():
        verify(invoke(name))


# --- DeliveryFunction -------------------------------------------------------------------------------------


@pytest.fixture
def fresh_delivery_container() -> Iterator[None]:
    """The delivery handler keeps one worker per container: start with none, close the one made here."""
    previous = herald.worker.runtime._WORKER
    herald.worker.runtime._WORKER = None
    yield
    made = herald.worker.runtime._WORKER
    herald.worker.runtime._WORKER = previous
    if made is not None:
        herald.worker.runtime.settle_all([made])


def test_delivery_function_processes_its_sample_batch(
    template, resources, aws, client, make_tenant, receiver: Receiver, use_environment, fresh_delivery_container
) -> None:
    # GIVEN a tenant whose subscription points at a receiver on 127.0.0.1, and the event of the sample batch
    tenant = make_tenant("Acme")
    sub = client.post(
        "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"]}, headers=tenant.headers
    ).json()
    published = client.post(
        "/v1/events",
        json={"id": EVENT_ID, "type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id},
        headers=ADMIN,
    )
    assert published.status_code == 202, published.text
    queue_url = resources.queue_url
    sqs = aws.client("sqs")
    queued_by_publish = queue_messages(sqs, queue_url)
    assert [m["kind"] for m in queued_by_publish] == ["delivery"]  # one route: publishing queued it itself
    # ... and the DeliveryFunction loaded from template.yaml, loopback over http allowed as `--env-vars` would
    environment = function_environment(template, "DeliveryFunction", resources)
    use_environment({**environment, "HERALD_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8", "HERALD_ALLOW_HTTP_URLS": "true"})
    handler = load_handler(template, "DeliveryFunction")
    timeout = float(function_properties(template, "DeliveryFunction")["Timeout"])
    values = {
        "local-tenant-id": tenant.id,
        "local-subscription-id": sub["id"],
        "local-delivery-id": queued_by_publish[0]["delivery_id"],
    }
    assert event_files("DeliveryFunction") == [
        "delivery_schedule_sweep.json",
        "delivery_sqs_batch.json",
        NOTICE_SAMPLE,
        "delivery_stream_stats.json",
    ]

    # WHEN it is invoked with the sample batch (the delivery message publishing queued)
    invocation = context("DeliveryFunction", timeout)
    with logged_lines() as lines:
        response = handler(fill("delivery_sqs_batch.json", values), invocation)

    # THEN no record failed
    assert response == {"batchItemFailures": []}
    # ... the delivery message reached the receiver once, signed for the subscription's secret
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.headers["webhook-id"] == EVENT_ID
    payload = Webhook(sub["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "invoice.paid"
    assert payload["data"] == INVOICE
    # ... and the delivery is recorded as succeeded, with one attempt
    deliveries = client.get(f"/v1/subscriptions/{sub['id']}/deliveries", headers=tenant.headers).json()["data"]
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in deliveries] == [("succeeded", 1, 200)]
    event = client.get(f"/v1/events/{EVENT_ID}", headers=ADMIN).json()
    assert event["deliveries"]["succeeded"] == 1
    assert event["deliveries"]["failed"] == 0
    # ... and its attempt was logged in one JSON line with the invocation's request id and the delivery's ids, and
    # none of the keys every line of the function's log group would repeat (its name, memory, ARN; the asyncio task)
    (attempt,) = [line for line in lines if line.get("message") == "attempt made"]
    assert attempt["function_request_id"] == invocation.aws_request_id
    assert "cold_start" in attempt
    assert (attempt["delivery_id"], attempt["status_code"]) == (values["local-delivery-id"], 200)
    assert not {"function_name", "function_memory_size", "function_arn", "taskName"} & attempt.keys(), attempt

    # WHEN the real queue is drained through the same handler (the publish's delivery message, of which the sample's
    # record is a copy)
    poller = SqsPoller(sqs, queue_url, handler, batch_size=10, function_timeout_seconds=timeout)
    for _ in range(20):
        if poller.poll_once().received == 0:
            break
    # THEN the subscriber still got the event once: the duplicate delivery is recognised
    assert len(receiver.received) == 1
    assert re.fullmatch(r"\d+", got.headers["webhook-timestamp"])
    # ... and the event's counts are exact: one delivery, settled
    counts = client.get(f"/v1/events/{EVENT_ID}", headers=ADMIN).json()["deliveries"]
    assert (counts["matched"], counts["pending"], counts["succeeded"], counts["failed"]) == (1, 0, 1, 0)


def _example_subscription(client: Any, tenant: Any) -> dict[str, Any]:
    """A subscription of ``tenant``'s to invoice.paid at the samples' example URL (never called), as the API answers
    its creation."""
    created = client.post(
        "/v1/subscriptions",
        json={"url": "https://example.com/webhooks/herald", "event_types": ["invoice.paid"]},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    sub: dict[str, Any] = created.json()
    return sub


def test_delivery_function_counts_its_sample_stream_batch(
    template, resources, client, make_tenant, use_environment, fresh_delivery_container
) -> None:
    # GIVEN a tenant's subscription with no attempt counted yet
    tenant = make_tenant("Acme")
    sub = _example_subscription(client, tenant)
    stats_path = f"/v1/subscriptions/{sub['id']}/stats"
    assert client.get(stats_path, headers=tenant.headers).json()["attempts"] == 0
    # ... and the DeliveryFunction loaded from template.yaml, with its environment
    use_environment(function_environment(template, "DeliveryFunction", resources))
    handler = load_handler(template, "DeliveryFunction")
    timeout = float(function_properties(template, "DeliveryFunction")["Timeout"])
    values = {"local-tenant-id": tenant.id, "local-subscription-id": sub["id"]}
    event = fill("delivery_stream_stats.json", values)
    # ... the sample record passes the template's filter on the stream (as Lambda matches it: any of its patterns)
    patterns = [EventPattern.load(p) for p in delivery_stream_source(template).patterns]
    assert all(any(pattern.matches_event(record) for pattern in patterns) for record in event["Records"])

    # WHEN it is invoked with the sample stream batch (a new delivery whose first attempt succeeded)
    response = handler(event, context("DeliveryFunction", timeout))

    # THEN the success is counted in the subscription's stats, with its status and latency
    assert response == {"counted": 1, "subscriptions": 1, "notices": 0}
    stats = client.get(stats_path, headers=tenant.headers).json()
    assert (stats["attempts"], stats["succeeded"], stats["failed"], stats["last_status_code"]) == (1, 1, 0, 200)
    assert (stats["latency_p50_ms"], stats["latency_samples"]) == (170, 1)
    assert stats["last_success_at"].startswith("2026-11-30T10:00:00.182")


def test_delivery_function_sweeps_with_its_sample_schedule_input(
    template, resources, use_environment, fresh_delivery_container
) -> None:
    # GIVEN the DeliveryFunction loaded from template.yaml, with its environment, and the sample: the schedule's input
    use_environment(function_environment(template, "DeliveryFunction", resources))
    handler = load_handler(template, "DeliveryFunction")
    timeout = float(function_properties(template, "DeliveryFunction")["Timeout"])
    event = fill("delivery_schedule_sweep.json", {})
    (schedule,) = [
        e for e in function_properties(template, "DeliveryFunction")["Events"].values() if e["Type"] == "ScheduleV2"
    ]
    assert event == json.loads(schedule["Properties"]["Input"])
    # WHEN it is invoked with it
    response = handler(event, context("DeliveryFunction", timeout))
    # THEN it swept the schedule to now, with nothing due
    assert response == {"queued": 0, "complete": True}


def test_delivery_function_publishes_the_notice_of_its_sample_stream_batch(
    template, resources, aws, client, make_tenant, receiver: Receiver, use_environment, fresh_delivery_container
) -> None:
    # GIVEN an operator endpoint for subscription.disabled, on a receiver on 127.0.0.1
    endpoint = register(client, receiver.url, ["subscription.disabled"])
    # ... and a tenant's subscription, disabled (its routes gone), whose item is then the one the sample's record shows:
    # Herald's disabling write, with the operator's notice on it
    tenant = make_tenant("Acme")
    sub = _example_subscription(client, tenant)
    switched = client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False}, headers=tenant.headers)
    assert switched.status_code == 200, switched.text
    event = fill(NOTICE_SAMPLE, {"local-tenant-id": tenant.id, "local-subscription-id": sub["id"]})
    (record,) = event["Records"]
    dynamodb = aws.client("dynamodb")
    dynamodb.put_item(TableName=resources.table_name, Item=record["dynamodb"]["NewImage"])
    notice = NoticeMessage.model_validate_json(from_item(record["dynamodb"]["NewImage"])[DISABLED_NOTICE])
    # ... and the DeliveryFunction loaded from template.yaml, loopback over http allowed as `--env-vars` would
    environment = function_environment(template, "DeliveryFunction", resources)
    use_environment({**environment, "HERALD_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8", "HERALD_ALLOW_HTTP_URLS": "true"})
    handler = load_handler(template, "DeliveryFunction")
    timeout = float(function_properties(template, "DeliveryFunction")["Timeout"])

    # WHEN it is invoked with the sample stream batch (the subscription's item, changed by the disabling write)
    response = handler(event, context("DeliveryFunction", timeout))

    # THEN it published the notice, and counted nothing
    assert response == {"counted": 0, "subscriptions": 0, "notices": 1}
    # ... and took the notice off the subscription's item, leaving the rest as it was
    item = dynamodb.get_item(TableName=resources.table_name, Key=record["dynamodb"]["Keys"], ConsistentRead=True)[
        "Item"
    ]
    assert item == {name: value for name, value in record["dynamodb"]["NewImage"].items() if name != DISABLED_NOTICE}
    # WHEN the work queue is drained through the same handler (the published notice's delivery)
    poller = SqsPoller(aws.client("sqs"), resources.queue_url, handler, batch_size=10, function_timeout_seconds=timeout)
    for _ in range(20):
        if poller.poll_once().received == 0 and receiver.received:
            break
    # THEN the operator's endpoint got subscription.disabled once, signed, with the notice's data
    (got,) = receiver.received
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "subscription.disabled"
    assert payload["data"] == notice.data
    assert (payload["data"]["tenant_id"], payload["data"]["subscription_id"]) == (tenant.id, sub["id"])


@pytest.mark.parametrize(
    ("function", "absent"),
    [
        # The delivery function never serves HTTP: no web framework, no ASGI adapter at init.
        ("DeliveryFunction", ("fastapi", "starlette", "mangum", "fastapi_offline")),
        # The API function's init stays free of what only deliveries need.
        ("ApiFunction", ("aws_lambda_powertools.utilities.batch",)),
    ],
)
def test_each_handler_imports_only_what_its_function_needs(template, function: str, absent: tuple[str, ...]) -> None:
    # GIVEN a fresh interpreter, with the function's code directory and the package on the path like Lambda
    properties = function_properties(template, function)
    code_dir = REPO / str(properties["CodeUri"])
    module = str(properties["Handler"]).rsplit(".", 1)[0]
    script = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    # WHEN it imports the handler module (Lambda's init phase)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=code_dir,
        env={**os.environ, "PYTHONPATH": str(code_dir)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = set(json.loads(result.stdout))
    # THEN none of the modules it does not need were loaded
    assert {name for name in loaded if name.split(".")[0] in absent or name in absent} == set()
