"""Cost per million delivered webhooks on the happy path, from what the real code path does.

Events are published through the ApiFunction's Mangum handler with the operator's key; the work queue
is then worked as Lambda's SQS event source would (batches of up to the template's BatchSize, settled
with DeleteMessageBatch) by ``Worker.handle``; every delivery goes over HTTP to a receiver that
answers 200 after 100 ms. AWS is a moto server in its own process.

Botocore hooks on every client (the API's and the worker's DynamoDB, SQS and Secrets Manager clients,
and the event source's SQS client) count each request. DynamoDB capacity is computed from item sizes
as DynamoDB bills it: a write is 1 WRU per started KB of the larger of the item's old and new images
(x2 inside a transaction), plus one write per global secondary index whose entry is written (2 when
its key changes); a read is 1 RRU per started 4 KB (half when eventually consistent), a Query per 4 KB
of the items it returned. The before/after images are read with a separate, uncounted client.
Lambda GB-seconds are the measured handler durations (rounded up to the ms) times the template's
MemorySize; CloudWatch Logs bytes are what the functions' loggers wrote, plus Lambda's START/END/REPORT
lines per invocation and the API's access log line per request.

Two cases: one event to 10 subscriptions (typical: the target holds for it) and one event to one
subscription (pessimistic: every webhook pays a whole API request).
"""

# Over 400 lines on purpose: one cost model, every price, count and assumption in one place, so that each dollar of a
# figure can be traced to what was counted and at what price.

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks.core import (
    ADMIN_HEADERS,
    BenchmarkError,
    Stack,
    api_gateway_event,
    event_in,
    local_stack,
    make_subscriptions,
    make_tenant,
    with_delivery_batching,
)
from benchmarks.results import Figure
from herald.messages import MAX_DELIVERIES_PER_MESSAGE
from herald.schemas.events import MAX_BATCH_EVENTS
from herald.storage.keys import is_delivery
from herald.storage.table import inserted_item

#: A ``#name`` or ``:value`` placeholder in an expression.
_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")

# --------------------------------------------------------------------------------------------- prices
#: Public on-demand prices, us-east-1, as published on aws.amazon.com/<service>/pricing (read 2025-11;
#: DynamoDB's on-demand throughput prices are those after the 50 % cut of 2024-11-01). Free tiers ignored.
PRICES_DATE = "2025-11 (us-east-1, public pricing pages; free tiers ignored)"
#: The figure name's suffix for the same fan-out under ``DeliveryBatching: throughput``.
THROUGHPUT_SUFFIX = "_throughput"
#: The figure name's suffix for 1 event -> 1 published one event a request (the figure without it publishes in
#: batches: ``POST /v1/events/batch``, as the issue prices it).
SINGLE_PUBLISH_SUFFIX = "_single_publish"
#: The figure name's suffix for the default fan-out with its events published one at a time, each worked (delivered,
#: its successes read from the table's stream) before the next is published: a trickle of events, where the figures
#: without it measure a burst (all of a case's events published, then the queue worked).
ONE_AT_A_TIME_SUFFIX = "_one_at_a_time"
#: Events of the one-at-a-time case: each is worked alone, so every event costs the same and a few suffice.
ONE_AT_A_TIME_EVENTS = 8
#: The figure name's suffix for the default fan-out published in batches (the figure without it publishes one event
#: a request, as the issue prices it): what a publisher that batches pays, and the AWS requests it makes.
BATCH_PUBLISH_SUFFIX = "_batch_publish"
LAMBDA_ARM_GB_SECOND = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1e6
#: EventBridge Scheduler, which invokes the schedule's sweep (the template's ScheduleV2): $1.00 per million
#: invocations (free tiers ignored) -- https://aws.amazon.com/eventbridge/pricing/.
SCHEDULER_INVOCATION = 1.00 / 1e6
SQS_REQUEST = 0.40 / 1e6  # standard queue, per 64 KB chunk
DYNAMODB_WRU = 0.625 / 1e6
DYNAMODB_RRU = 0.125 / 1e6
API_GATEWAY_HTTP_REQUEST = 1.00 / 1e6  # HTTP API, first 300 M a month, per 512 KB
CLOUDWATCH_LOGS_GB = 0.50  # standard ingestion
SECRETS_MANAGER_CALL = 0.05 / 10_000
DYNAMODB_STORAGE_GB_MONTH = 0.25
#: Point-in-time recovery, which the template turns on for the table: billed on the table's size (its items, not its
#: indexes' entries), per GB-month.
DYNAMODB_PITR_GB_MONTH = 0.20
#: Data transfer out to the internet: the webhooks Lambda sends, $0.09 per GB (the first 10 TB a month, after 100 GB
#: free, shared by the account's services; free tiers ignored) -- AWS's internet egress rate as wring.co's and
#: egresscost.com's data transfer pricing guides give it (read 2026-12-02); Lambda's own pricing says a function
#: that transfers data is billed for it (docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html).
#: The peer's published price has no such line: the stored text of https://aws.amazon.com/eventbridge/pricing/
#: (read 2026-12-02) names data transfer charges only between regions, so its API destinations' requests are priced
#: at $0.20 per million invocations with nothing per byte, and the comparison keeps that price: each side pays the
#: data transfer its pricing charges.
DATA_TRANSFER_OUT_GB = 0.09
#: EventBridge API destinations, the comparison: $1.00 per million events + $0.20 per million invocations.
EVENTBRIDGE_PER_EVENT = 1.00 / 1e6
EVENTBRIDGE_PER_INVOCATION = 0.20 / 1e6
#: What Lambda itself writes to the function's log group per invocation (START, END, REPORT lines).
LAMBDA_PLATFORM_LOG_BYTES = 330
SUBSCRIBER_LATENCY = 0.1
#: A hosted sender's list price: Svix, $0.0001 per message beyond the plan's included messages, on plans
#: from $490 a month (Professional) -- https://www.svix.com/pricing/ (as transcribed 2026-09-20). A message
#: goes to one consumer application and all of its endpoints, so 1 -> N webhooks of one tenant are one message.
SVIX_PER_MESSAGE = 0.0001
SVIX_PLAN_PER_MONTH = 490.0
SVIX_PRICE_SOURCE = "https://www.svix.com/pricing/ (Professional: from $490/month, $0.0001 per message; 2026-09-20)"
#: What the per-use prices leave out, priced at a stated monthly volume (they do not grow with it):
#: each SQS event source's empty receives (Lambda keeps 5 long-polling receivers per queue; 20 s waits,
#: so 5 x 3 a minute whether or not messages come; the DeliveryFunction reads two queues, the work queue
#: and the slow lane), cold starts (the INIT phase is billed since 2025-08-01; one fresh container per
#: function per hour assumed), the schedule's sweeps (an invocation every minute, its duration and AWS
#: requests measured in the run), Herald's custom metrics, its alarms and its secrets.
MONTHLY_WEBHOOKS = 10_000_000
EMPTY_RECEIVES_PER_MONTH = 5 * 3 * 60 * 24 * 30
COLD_STARTS_PER_FUNCTION_MONTH = 24 * 30
#: Each function's INIT time when the coldstart figures did not run beside the costs (``python -m benchmarks`` passes
#: theirs when they did): api_cold_start and delivery_cold_start of the run of 2026-12-02 (medians of 5 fresh
#: processes on a shared 2-CPU host, moto included: more than Lambda's INIT on an idle host, so not an understatement).
COLD_START_SECONDS = {"ApiFunction": 1.42, "DeliveryFunction": 0.99}
#: The coldstart figure that measures each function's cold start.
COLD_START_FIGURES = {"api_cold_start": "ApiFunction", "delivery_cold_start": "DeliveryFunction"}
#: DynamoDB charges 100 bytes of overhead per item and per index entry; items live until their TTL
#: (HERALD_ATTEMPT_TTL_DAYS, 30) plus TTL's lazy deletion (up to ~2 days).
ITEM_OVERHEAD_BYTES = 100
#: CloudWatch: $0.30 per custom metric-month (the first 10,000; EMF metrics are custom metrics, and a metric is a
#: name with one set of dimensions: Herald's have the service only, herald/metrics.py, so one per metric written:
#: ``CORE``, or every ``Metric`` with DetailedMetrics), and
#: $0.10 per standard-resolution alarm metric-month (an alarm on metric math is billed for each metric it reads;
#: the free tier's unit is the "alarm metric") -- https://aws.amazon.com/cloudwatch/pricing/ (read 2026-12-02: its
#: stored text gives the free tier's units; the paid tier's two prices as vantage.sh's "CloudWatch Metrics Pricing
#: Explained" and c3x.dev's aws_cloudwatch_metric_alarm page transcribe them, read 2026-12-02).
CLOUDWATCH_METRIC_MONTH = 0.30
CLOUDWATCH_ALARM_METRIC_MONTH = 0.10
#: Secrets Manager: $0.40 per secret-month -- https://aws.amazon.com/secrets-manager/pricing/ (as hivebook.wiki's
#: AWS Secrets Manager page transcribes it with the $0.05 per 10,000 calls above, read 2026-12-02).
SECRETS_MANAGER_SECRET_MONTH = 0.40
#: The sweep's invocations timed and metered in each pass (an idle sweep: nothing scheduled is due).
SWEEP_SAMPLES = 3
SECONDS_PER_MONTH = 30 * 24 * 3600
RETENTION_MONTHS = 32 / 30


# --------------------------------------------------------------------------------------------- item sizes


def _number_size(text: str) -> int:
    digits = len(text.lstrip("-").replace(".", "").strip("0")) or 1
    return (digits + 1) // 2 + 1


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes of one DynamoDB attribute value (the rules of the DynamoDB developer guide, "Item sizes")."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return _number_size(inner)
    if kind == "B":
        return len(inner) if isinstance(inner, bytes) else len(str(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(item.encode()) for item in inner)
    if kind == "NS":
        return sum(_number_size(item) for item in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_size(item) for item in inner)
    if kind == "M":
        return 3 + sum(1 + len(key.encode()) + attribute_size(item) for key, item in inner.items())
    return len(json.dumps(inner))


def item_size(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def _kb(size: int, unit: int = 1024) -> int:
    return max(1, math.ceil(size / unit))


# --------------------------------------------------------------------------------------------- metering


@dataclass
class Meter:
    """AWS requests and DynamoDB capacity, counted from botocore events on the instrumented clients."""

    raw: Any  # an uncounted DynamoDB client, for before/after images
    indexes: dict[str, tuple[str, str]]  # GSI name -> (hash attribute, range attribute)
    requests: Counter[str] = field(default_factory=Counter)
    wru: float = 0.0
    rru: float = 0.0
    written: dict[str, float] = field(default_factory=dict)  # WRU by operation
    received_messages: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _clients: list[Any] = field(default_factory=list)

    def instrument(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        self._clients.append(client)
        client.meta.events.register(f"before-parameter-build.{service}", self._parameters)
        client.meta.events.register(f"before-call.{service}", self._before)
        client.meta.events.register(f"after-call.{service}", self._after)

    def detach(self) -> None:
        for client in self._clients:
            service = client.meta.service_model.service_name
            client.meta.events.unregister(f"before-parameter-build.{service}", self._parameters)
            client.meta.events.unregister(f"before-call.{service}", self._before)
            client.meta.events.unregister(f"after-call.{service}", self._after)
        self._clients.clear()

    def snapshot(self) -> tuple[Counter[str], float, float, int]:
        with self.lock:
            return Counter(self.requests), self.wru, self.rru, self.received_messages

    def written_since(self, before: dict[str, float]) -> dict[str, float]:
        """WRU by operation since ``before`` (an earlier copy of ``written``)."""
        with self.lock:
            return {name: units - before.get(name, 0.0) for name, units in self.written.items()}

    # images ------------------------------------------------------------------------------------------

    def _image(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.raw.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return item

    def _key(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"pk": item["pk"], "sk": item["sk"]}

    def _writes(
        self, params: dict[str, Any], operation: str
    ) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
        """(table, key, new item if known) for each item the request writes."""
        if operation == "PutItem":
            return [(params["TableName"], self._key(params["Item"]), params["Item"])]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], params["Key"], None)]
        if operation == "TransactWriteItems":
            writes = []
            for action in params["TransactItems"]:
                (kind, body), *_ = action.items()
                if kind == "Put":
                    writes.append((body["TableName"], self._key(body["Item"]), body["Item"]))
                elif kind in ("Update", "Delete"):
                    writes.append((body["TableName"], body["Key"], None))
            return writes
        if operation == "BatchExecuteStatement":  # Herald's are INSERTs (``Table.insert_all``)
            inserts = [inserted_item(statement) for statement in params["Statements"]]
            return [(table, self._key(item), item) for table, item in (found for found in inserts if found)]
        if operation == "BatchWriteItem":
            writes = []
            for table, entries in params["RequestItems"].items():
                for entry in entries:
                    if "PutRequest" in entry:
                        item = entry["PutRequest"]["Item"]
                        writes.append((table, self._key(item), item))
                    else:
                        writes.append((table, entry["DeleteRequest"]["Key"], None))
            return writes
        return []

    def _index_writes(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> float:
        units = 0.0
        for hash_key, range_key in self.indexes.values():
            old = (before or {}).get(hash_key), (before or {}).get(range_key)
            new = (after or {}).get(hash_key), (after or {}).get(range_key)
            old_in, new_in = old[0] is not None and old[1] is not None, new[0] is not None and new[1] is not None
            if old_in and new_in and old != new:
                units += _kb(item_size(before)) + _kb(item_size(after))  # the entry moves: delete + put
            elif new_in and before != after:
                units += _kb(item_size(after))
            elif old_in and not new_in:
                units += _kb(item_size(before))
        return units

    # hooks -------------------------------------------------------------------------------------------

    def _before(self, model: Any, **_: Any) -> None:
        with self.lock:
            self.requests[f"{model.service_model.service_name}.{model.name}"] += 1

    def _parameters(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        operation = model.name
        if model.service_model.service_name == "dynamodb":
            requested = params.get("RequestItems", {}).values() if operation == "BatchGetItem" else [params]
            context["meter_consistent"] = any(bool(request.get("ConsistentRead")) for request in requested)
            if operation == "BatchGetItem":
                context["meter_keys"] = {
                    table: len(request.get("Keys", [])) for table, request in params.get("RequestItems", {}).items()
                }
            if operation == "Query":
                context["meter_read"] = self._read_by_query(params)
            writes = self._writes(params, operation)
            context["meter_writes"] = [(table, key, new, self._image(table, key)) for table, key, new in writes]

    def _read_by_query(self, params: dict[str, Any]) -> int | None:
        """The bytes a Query reads, as DynamoDB bills them: every item its key condition reaches (up to its ``Limit``
        and the 1 MB a page reads), whole, before a ``FilterExpression`` drops any or a projection or ``Select``
        narrows what is returned. None when the query has none of these: its answer's items are what it read."""
        narrowing = ("FilterExpression", "ProjectionExpression", "Select", "AttributesToGet")
        if not any(name in params for name in narrowing):
            return None
        shadow = {name: value for name, value in params.items() if name not in narrowing}
        # The key condition's placeholders only: DynamoDB refuses a name or value the request does not use.
        used = set(_PLACEHOLDER.findall(shadow.get("KeyConditionExpression", "")))
        for name in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
            if name in shadow:
                kept = {key: value for key, value in shadow[name].items() if key in used}
                if kept:
                    shadow[name] = kept
                else:
                    del shadow[name]
        items = self.raw.query(**shadow).get("Items", [])
        return sum(item_size(item) for item in items)

    def _after(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        service, operation = model.service_model.service_name, model.name
        if service == "sqs" and operation == "ReceiveMessage":
            with self.lock:
                self.received_messages += len(parsed.get("Messages", []))
                if not parsed.get("Messages"):
                    # Lambda's pollers long-poll all the time, whatever the traffic: an empty receive is a
                    # fixed cost of the queue, not of a delivery.
                    self.requests["sqs.ReceiveMessage"] -= 1
                    self.requests["(not priced) sqs.ReceiveMessage, empty"] += 1
            return
        if service != "dynamodb":
            return
        failed = "Error" in parsed
        # A statement of a PartiQL batch fails on its own (its key taken: billed as a failed conditional write).
        statements = [("Error" in answer) for answer in parsed.get("Responses", [])] if not failed else []
        writes = context.pop("meter_writes", [])
        if operation == "BatchExecuteStatement" and not failed and len(statements) != len(writes):
            # Statements dropped before the call (a partial fault) or not INSERTs: no write lines up with its answer.
            raise ValueError("the cost meter prices a batch of statements only when each is an INSERT it saw sent")
        wru = rru = 0.0
        transactional = operation == "TransactWriteItems"
        for number, (table, key, new, before) in enumerate(writes):
            refused = failed or (operation == "BatchExecuteStatement" and statements[number])
            after = before if refused else (new if new is not None else self._image(table, key))
            if operation == "DeleteItem" or (new is None and after is None):
                after = None
            units = _kb(max(item_size(before), item_size(after), 1))
            wru += units * (2 if transactional else 1)
            if not refused:
                wru += self._index_writes(before, after)
        if operation == "GetItem":
            units = _kb(item_size(parsed.get("Item")), 4096)
            rru += units if context.get("meter_consistent") else units / 2
        elif operation == "Query":
            read = context.pop("meter_read", None)
            size = read if read is not None else sum(item_size(item) for item in parsed.get("Items", []))
            units = _kb(size, 4096)
            rru += units if context.get("meter_consistent") else units / 2
        elif operation == "BatchGetItem":
            # Each key is read as a GetItem of its own, half when eventually consistent; a key with no item is read
            # too: "If you perform a read operation on an item that doesn't exist, DynamoDB will still consume read
            # throughput" (DynamoDB developer guide, "DynamoDB read and write operations", read 2026-12-02), so each
            # key asked for and processed costs at least one 4 KB unit. The worker asks for the state of every new
            # delivery, which does not exist yet.
            unprocessed = parsed.get("UnprocessedKeys", {})
            for table, asked in context.pop("meter_keys", {}).items():
                items = parsed.get("Responses", {}).get(table, [])
                missing = asked - len(unprocessed.get(table, {}).get("Keys", [])) - len(items)
                units = sum(_kb(item_size(item), 4096) for item in items) + max(0, missing)
                rru += units if context.get("meter_consistent") else units / 2
        with self.lock:
            self.wru += wru
            self.rru += rru
            self.written[operation] = self.written.get(operation, 0.0) + wru


class _CountingStream(io.TextIOBase):
    """The functions' log output, counted: all of it, and the lines of attempts that succeeded (those a deployment
    with ``LogSuccessfulAttempts: false`` does not write)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0
        self.success_bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        self.lines += text.count("\n")
        for line in text.splitlines(keepends=True):
            if '"attempt made"' in line and _successful_attempt(line):
                self.success_bytes += len(line.encode())
        return len(text)


def _successful_attempt(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("message") == "attempt made" and record.get("status") == "succeeded"


def access_log_bytes(template: dict[str, Any]) -> int:
    """One API Gateway access log line, as the template's format renders it with typical values."""
    fmt = template["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]["Format"]
    typical = {
        "requestId": "AbCdEfGhIjKlMnO=",
        "identity.sourceIp": "203.0.113.10",
        "requestTime": "12/Nov/2025:10:15:30 +0000",
        "httpMethod": "POST",
        "routeKey": "$default",
        "path": "/v1/events",
        "status": "202",
        "protocol": "HTTP/1.1",
        "responseLength": "420",
        "responseLatency": "35",
        "integrationLatency": "31",
        "integrationErrorMessage": "-",
    }
    line = re.sub(r"\$context\.([A-Za-z.]+)", lambda match: typical.get(match.group(1), "-"), fmt)
    return len(line.replace("\n", "").encode()) + 1


# --------------------------------------------------------------------------------------------- one case


@dataclass
class CaseResult:
    fanout: int
    deliveries: int
    breakdown: dict[str, float]  # $ per million delivered webhooks, by item
    usage: dict[str, float]  # per delivery
    invocations: dict[str, int]
    notes: list[str]
    #: How the events were published and worked (a burst, or one at a time), and what that shares.
    workload: str = ""

    @property
    def total(self) -> float:
        return sum(self.breakdown.values())


def _run_case(
    stack: Stack,
    *,
    fanout: int,
    events: int,
    receiver_url: str,
    template: dict[str, Any],
    per_request: int,
    one_at_a_time: bool = False,
) -> CaseResult:
    """Publish ``events`` events to ``fanout`` subscriptions each, ``per_request`` events an API request (one:
    ``POST /v1/events``; more: ``POST /v1/events/batch``), and work the queue dry, twice: once metered (requests
    and capacity; the meter's own image reads slow the calls down), once plain (the durations and the log bytes)."""
    passes = [
        _pass(
            stack,
            fanout=fanout,
            events=events,
            receiver_url=receiver_url,
            template=template,
            per_request=per_request,
            meter=meter,
            one_at_a_time=one_at_a_time,
        )
        for meter in (True, False)
    ]
    metered, plain = passes
    return _price(metered, plain, fanout=fanout, events=events, template=template, one_at_a_time=one_at_a_time)


@dataclass
class _Pass:
    counts: Counter[str]
    api_counts: Counter[str]
    wru: float
    rru: float
    written: dict[str, float]
    api_seconds: list[float]  # one per API request
    durations: list[float]
    log_bytes: int
    batch_size: int
    #: Of ``log_bytes``, the lines of attempts that succeeded.
    success_log_bytes: int
    #: Invocations of the delivery function by the table's stream (among ``durations``).
    stream_invocations: int = 0
    #: The schedule's sweeps run after the work: their durations, AWS requests, read and write units and log bytes.
    sweep_seconds: list[float] = field(default_factory=list)
    sweep_counts: Counter[str] = field(default_factory=Counter)
    sweep_rru: float = 0.0
    sweep_wru: float = 0.0
    sweep_log_bytes: int = 0


def _pass(
    stack: Stack,
    *,
    fanout: int,
    events: int,
    receiver_url: str,
    template: dict[str, Any],
    per_request: int,
    meter: bool,
    one_at_a_time: bool = False,
) -> _Pass:
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    import boto3

    from benchmarks.core import ApiGateway
    from herald.local.event_sources import delivery_event_source, delivery_schedule
    from herald.local.poller import SqsPoller
    from herald.local.stream_poller import table_stream_poller
    from herald.worker import Worker, settle_all

    services = stack.services
    table = template["Resources"]["Table"]["Properties"]
    indexes = {
        index["IndexName"]: (index["KeySchema"][0]["AttributeName"], index["KeySchema"][1]["AttributeName"])
        for index in table.get("GlobalSecondaryIndexes", [])
    }
    raw = boto3.session.Session(region_name="us-east-1").client("dynamodb", endpoint_url=stack.endpoint_url)
    tenant = make_tenant(services, f"Cost{fanout}")
    make_subscriptions(services, tenant.id, fanout, receiver_url)

    metering = Meter(raw, indexes)
    sqs = stack.sqs()
    api = ApiGateway(services)
    if meter:
        for client in (services.store.client, services.queue.client, sqs, services.admin_keys._client):
            if client is not None:
                metering.instrument(client)
    herald_logger = logging.getLogger("herald")
    handlers = [handler for handler in herald_logger.handlers if isinstance(handler, logging.StreamHandler)]
    if not handlers:
        raise BenchmarkError("the API handler module did not set up the herald logger")
    stream = _CountingStream()
    saved = [handler.setStream(stream) for handler in handlers]
    redirect = contextlib.redirect_stdout(stream)  # EMF metrics are printed
    redirect.__enter__()

    source = delivery_event_source(template)
    worker = Worker(services)
    durations: list[float] = []

    def timed(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return worker.invoke(event, context)
        finally:
            durations.append(time.perf_counter() - started)

    poller = SqsPoller(
        sqs,
        services.settings.queue_url,
        timed,
        batch_size=source.batch_size,
        function_timeout_seconds=source.function_timeout_seconds,
        batching_window_seconds=source.maximum_batching_window_seconds,
    )
    # The table's stream (the stats of first attempts that succeeded), read as its event source does: its
    # invocations are the delivery function's too. Reading a stream is free to Lambda (its client is not metered).
    table_stream = table_stream_poller(
        services.store.client,
        stack.session.client("dynamodbstreams", endpoint_url=stack.endpoint_url),
        services.store.table_name,
        timed,
    )
    headers = ADMIN_HEADERS  # publishing is the operator's (the producing application's) call
    body = event_in(tenant.id).model_dump(mode="json", exclude_none=True)
    try:
        # Warm both functions first: cold starts are rare on a busy queue and are not counted.
        status, payload = api.request("POST", "/v1/events", body=body, headers=headers)
        if status != 202:
            raise BenchmarkError(f"publishing answered {status}: {payload}")
        while poller.poll_once().received:
            pass
        table_stream.drain()  # what earlier cases and the warm-up left on the stream
        durations.clear()
        stream_invocations0 = table_stream.invocations
        requests0, wru0, rru0, _ = metering.snapshot()
        written0 = metering.written_since({})  # the warm-up's and earlier cases' writes, left out of the split
        logs0, success0 = stream.bytes, stream.success_bytes
        api_seconds: list[float] = []
        api_requests: Counter[str] = Counter()
        api_logs = received = streamed = 0
        requests_chunks = [(first, min(per_request, events - first)) for first in range(0, events, per_request)]
        # A burst publishes every request, then works the queue; one at a time works each request's events (their
        # deliveries sent, their successes read from the stream) before the next request is made.
        rounds = [[chunk] for chunk in requests_chunks] if one_at_a_time else [requests_chunks]
        for chunks in rounds:
            before, logs_before = metering.snapshot()[0], stream.bytes
            for _, count in chunks:
                if per_request == 1:
                    event, expected = api_gateway_event("POST", "/v1/events", body=body, headers=headers), 202
                else:
                    batch = {"events": [body] * count}
                    event, expected = api_gateway_event("POST", "/v1/events/batch", body=batch, headers=headers), 200
                started = time.perf_counter()
                response = api.handler(event, api.context)
                api_seconds.append(time.perf_counter() - started)
                if response["statusCode"] != expected:
                    raise BenchmarkError(f"publishing answered {response['statusCode']}: {response.get('body')}")
                if per_request > 1:
                    statuses = [item["status"] for item in json.loads(response["body"])["data"]]
                    if statuses != [202] * count:
                        raise BenchmarkError(f"a batch publish answered {statuses}")
            api_requests += metering.snapshot()[0] - before
            api_logs += stream.bytes - logs_before
            while True:
                result = poller.poll_once()
                if not result.received:
                    break
                received += result.received
                if result.failed:
                    raise BenchmarkError(f"a batch reported {result.failed} failures on the happy path")
            # A burst's successes fall in one of the stream's windows; one at a time, each event's in its own.
            streamed += table_stream.drain()
        requests1, wru1, rru1, _ = metering.snapshot()
        written = metering.written_since(written0)
        worker_logs = stream.bytes - logs0 - api_logs
        # The schedule's sweep (every minute, whatever the traffic), with nothing due: a fixed cost, not a delivery's.
        schedule = delivery_schedule(template)
        sweep_logs0 = stream.bytes
        sweep_seconds: list[float] = []
        for _ in range(SWEEP_SAMPLES):
            started = time.perf_counter()
            worker.invoke(schedule.input, None)
            sweep_seconds.append(time.perf_counter() - started)
        requests2, wru2, rru2, _ = metering.snapshot()
        sweep_log_bytes = stream.bytes - sweep_logs0
    finally:
        redirect.__exit__(None, None, None)
        for handler, previous in zip(handlers, saved, strict=True):
            handler.setStream(previous)
        settle_all([worker])
        if meter:
            metering.detach()

    deliveries = events * fanout
    if streamed != deliveries:
        raise BenchmarkError(f"expected {deliveries} successes on the table's stream, it handed over {streamed}")
    # Publishing queues the deliveries of an event with few routes itself, a request's deliveries packed up to ten to
    # a message; larger fan-outs take a fan-out message, whose page packs the event's deliveries the same way.
    if fanout > services.settings.direct_fanout_max:
        fanouts, messages = events, events * math.ceil(fanout / MAX_DELIVERIES_PER_MESSAGE)
    else:
        requests = [min(per_request, events - first) for first in range(0, events, per_request)]
        fanouts, messages = 0, sum(math.ceil(count * fanout / MAX_DELIVERIES_PER_MESSAGE) for count in requests)
    if received != fanouts + messages:
        raise BenchmarkError(
            f"expected {fanouts} fan-out messages and {messages} messages of {deliveries} deliveries, the queue gave "
            f"{received}"
        )
    return _Pass(
        counts=requests1 - requests0,
        api_counts=api_requests,
        wru=wru1 - wru0,
        rru=rru1 - rru0,
        written=written,
        api_seconds=api_seconds,
        durations=list(durations),
        log_bytes=api_logs + worker_logs,
        success_log_bytes=stream.success_bytes - success0,
        batch_size=source.batch_size,
        stream_invocations=table_stream.invocations - stream_invocations0,
        sweep_seconds=sweep_seconds,
        sweep_counts=requests2 - requests1,
        sweep_rru=rru2 - rru1,
        sweep_wru=wru2 - wru1,
        sweep_log_bytes=sweep_log_bytes,
    )


def _price(
    metered: _Pass, plain: _Pass, *, fanout: int, events: int, template: dict[str, Any], one_at_a_time: bool = False
) -> CaseResult:
    from herald.local.resources import DELIVERY_FUNCTION_ID, function_properties

    api_memory = int(function_properties(template, "ApiFunction").get("MemorySize", 128))
    delivery_memory = int(function_properties(template, DELIVERY_FUNCTION_ID).get("MemorySize", 128))
    deliveries = events * fanout
    # Entries in parentheses are not billed (the poller's empty receives): left out of every count.
    all_counts = Counter({name: count for name, count in metered.counts.items() if not name.startswith("(")})
    worker_counts = all_counts - metered.api_counts
    sqs_requests = sum(count for name, count in all_counts.items() if name.startswith("sqs."))
    ddb_requests = sum(count for name, count in all_counts.items() if name.startswith("dynamodb."))
    secrets = sum(count for name, count in all_counts.items() if name.startswith("secretsmanager."))
    wru, rru = metered.wru, metered.rru
    api_seconds, durations = plain.api_seconds, plain.durations
    api_gb_s = sum(math.ceil(seconds * 1000) / 1000 * api_memory / 1024 for seconds in api_seconds)
    worker_gb_s = sum(math.ceil(seconds * 1000) / 1000 * delivery_memory / 1024 for seconds in durations)
    api_requests = len(api_seconds)
    log_bytes = (
        plain.log_bytes
        + LAMBDA_PLATFORM_LOG_BYTES * (api_requests + len(durations))
        + access_log_bytes(template) * api_requests
    )
    per = 1e6 / deliveries
    breakdown = {
        "API Gateway HTTP API requests": api_requests * API_GATEWAY_HTTP_REQUEST * per,
        "Lambda requests": (api_requests + len(durations)) * LAMBDA_REQUEST * per,
        "Lambda GB-s (API)": api_gb_s * LAMBDA_ARM_GB_SECOND * per,
        "Lambda GB-s (delivery)": worker_gb_s * LAMBDA_ARM_GB_SECOND * per,
        "SQS requests": sqs_requests * SQS_REQUEST * per,
        "DynamoDB writes": wru * DYNAMODB_WRU * per,
        "DynamoDB reads": rru * DYNAMODB_RRU * per,
        "CloudWatch Logs ingestion": log_bytes / 1e9 * CLOUDWATCH_LOGS_GB * per,
        "Secrets Manager": secrets * SECRETS_MANAGER_CALL * per,
    }
    # One sweep of the schedule (a fixed cost, priced per month in fixed_costs_per_million): its request, duration,
    # AWS requests, capacity and log lines.
    sweep_counts = Counter({name: n for name, n in metered.sweep_counts.items() if not name.startswith("(")})
    sweep_seconds = sorted(plain.sweep_seconds)[len(plain.sweep_seconds) // 2] if plain.sweep_seconds else 0.0
    sweep_dollars = (
        SCHEDULER_INVOCATION
        + LAMBDA_REQUEST
        + math.ceil(sweep_seconds * 1000) / 1000 * delivery_memory / 1024 * LAMBDA_ARM_GB_SECOND
        + sum(n for name, n in sweep_counts.items() if name.startswith("sqs.")) * SQS_REQUEST
        + sum(n for name, n in sweep_counts.items() if name.startswith("secretsmanager.")) * SECRETS_MANAGER_CALL
        + metered.sweep_rru / max(1, len(metered.sweep_seconds)) * DYNAMODB_RRU
        + metered.sweep_wru / max(1, len(metered.sweep_seconds)) * DYNAMODB_WRU
        + (plain.sweep_log_bytes / max(1, len(plain.sweep_seconds)) + LAMBDA_PLATFORM_LOG_BYTES)
        / 1e9
        * CLOUDWATCH_LOGS_GB
    )
    usage = {
        # Each operation's write units per delivery (the split of "wru"), as "wru_<operation>".
        **{f"wru_{name}": units / deliveries for name, units in sorted(metered.written.items()) if units},
        "sweep_ms": sweep_seconds * 1000,
        "sweep_aws_requests": sum(sweep_counts.values()) / max(1, len(metered.sweep_seconds)),
        "sweep_dollars": sweep_dollars,
        "sqs_requests": sqs_requests / deliveries,
        "dynamodb_requests": ddb_requests / deliveries,
        "wru": wru / deliveries,
        "rru": rru / deliveries,
        "log_bytes": log_bytes / deliveries,
        "success_log_bytes": plain.success_log_bytes / deliveries,
        # CloudWatch Logs ingestion with LogSuccessfulAttempts: false: the same bytes but the successes' lines.
        "logs_failures_only_per_million": (log_bytes - plain.success_log_bytes) / 1e9 * CLOUDWATCH_LOGS_GB * per,
        "api_gb_s": api_gb_s / deliveries,
        "delivery_gb_s": worker_gb_s / deliveries,
        "api_request_ms": sorted(api_seconds)[len(api_seconds) // 2] * 1000,
        "delivery_invocation_ms": sorted(durations)[len(durations) // 2] * 1000,
        "api_aws_calls_per_event": sum(metered.api_counts.values()) / events,
        "worker_aws_calls_per_delivery": sum(worker_counts.values()) / deliveries,
    }
    published = (
        "one a request (POST /v1/events)"
        if api_requests == events
        else (
            f"in {api_requests} request(s) of POST /v1/events/batch (one tenant and event type: the batch reads their "
            "routes once; a batch spread over many tenants reads them once per tenant and type, two small queries each)"
        )
    )
    workload = (
        "one at a time, each worked (delivered, its successes read from the table's stream) before the next is "
        "published: each invocation and stream window carries one event's deliveries"
        if one_at_a_time
        else "in a burst, then the queue worked: an invocation carries up to a batch of messages' deliveries and all "
        "the successes fall in one stream window, whose fixed costs they share"
    )
    notes = [
        f"1 event -> {fanout} subscriptions: {events} events published {published}, {workload}; {deliveries} "
        "deliveries, "
        f"{len(durations)} delivery-function invocations (batch size {plain.batch_size}, the template's batching "
        f"window; {plain.stream_invocations} of them by the table's stream, counting the successes in the stats), "
        f"API {api_memory} MB, delivery {delivery_memory} MB",
        "AWS requests per delivery: "
        + ", ".join(f"{name} {count / deliveries:.2f}" for name, count in sorted(all_counts.items())),
        "DynamoDB WRU per delivery by operation: "
        + ", ".join(f"{name} {units / deliveries:.2f}" for name, units in sorted(metered.written.items()) if units),
    ]
    return CaseResult(
        fanout, deliveries, breakdown, usage, {"api": api_requests, "delivery": len(durations)}, notes, workload
    )


def _cost_note(case: CaseResult) -> str:
    """What the figure is made of and, if it misses $1.00, where the money goes."""
    top = sorted(case.breakdown.items(), key=lambda entry: -entry[1])[:3]
    usage = case.usage
    text = (
        f"events published {case.workload}; largest items: "
        f"{', '.join(f'{name} ${value:.2f}' for name, value in top)}; per delivery "
        f"{usage['wru']:.1f} WRU, {usage['rru']:.1f} RRU, {usage['sqs_requests']:.2f} SQS requests, "
        f"{usage['log_bytes']:.0f} log bytes, {usage['delivery_gb_s'] * 1000:.1f} mGB-s of delivery function; "
        f"EventBridge at the same fan-out would be ${eventbridge_per_million(case.fanout):.2f}, Svix's list price "
        f"${hosted_sender_per_million(case.fanout):.2f} (plan spread over {MONTHLY_WEBHOOKS:,} webhooks a month)"
    )
    logs, lean = case.breakdown["CloudWatch Logs ingestion"], usage["logs_failures_only_per_million"]
    text += (
        f"; with LogSuccessfulAttempts: false (no line for an attempt that succeeds, {usage['success_log_bytes']:.0f} "
        f"of the {usage['log_bytes']:.0f} log bytes a delivery here), logs ${lean:.2f} instead of ${logs:.2f}: "
        f"${case.total - logs + lean:.2f} in all"
    )
    return text


def stored_bytes(client: Any, table: str, *, with_indexes: bool = True) -> tuple[int, int]:
    """Bytes DynamoDB bills as storage for the table: every item and every index entry (both indexes
    project all attributes; ``with_indexes=False``: the items alone, what point-in-time recovery bills), each with
    its 100 bytes of overhead; and how many deliveries it holds."""
    total = deliveries = 0
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        for item in page.get("Items", []):
            size = item_size(item) + ITEM_OVERHEAD_BYTES
            total += size * (1 + (("gsi1pk" in item) + ("gsi2pk" in item) if with_indexes else 0))
            deliveries += is_delivery({"pk": item["pk"]["S"], "sk": item["sk"]["S"]})
        if "LastEvaluatedKey" not in page:
            return total, deliveries
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def fixed_costs_per_million(
    template: dict[str, Any], *, sweep_dollars: float = 0.0, cold_starts: dict[str, float] | None = None
) -> dict[str, float]:
    """What does not grow with the webhooks, per million webhooks at MONTHLY_WEBHOOKS a month: each SQS event source's
    empty receives, cold starts, the schedule's sweeps (``sweep_dollars`` each, measured), the custom metrics, the
    alarms and the secrets. ``cold_starts``: each function's INIT seconds (default COLD_START_SECONDS)."""
    from herald.local.resources import function_properties

    counts = fixed_counts(template)
    init_gb_s = sum(
        seconds * int(function_properties(template, name).get("MemorySize", 128)) / 1024
        for name, seconds in (cold_starts or COLD_START_SECONDS).items()
    )
    per = 1e6 / MONTHLY_WEBHOOKS
    return {
        "SQS empty receives": counts["sqs_event_sources"] * EMPTY_RECEIVES_PER_MONTH * SQS_REQUEST * per,
        "Lambda cold starts (INIT)": COLD_STARTS_PER_FUNCTION_MONTH * init_gb_s * LAMBDA_ARM_GB_SECOND * per,
        "Schedule sweeps": counts["sweeps_per_month"] * sweep_dollars * per,
        "CloudWatch custom metrics": counts["custom_metrics"] * CLOUDWATCH_METRIC_MONTH * per,
        "CloudWatch alarms": counts["alarm_metrics"] * CLOUDWATCH_ALARM_METRIC_MONTH * per,
        "Secrets Manager secrets": counts["secrets"] * SECRETS_MANAGER_SECRET_MONTH * per,
    }


def fixed_counts(template: dict[str, Any]) -> dict[str, int]:
    """What the fixed monthly charges count, from the template and herald.metrics."""
    from herald.local.event_sources import delivery_schedule
    from herald.metrics import CORE, Metric

    resources = template["Resources"].values()
    sqs_sources = sum(
        1
        for resource in resources
        if resource.get("Type") == "AWS::Serverless::Function"
        for event in (resource.get("Properties", {}).get("Events") or {}).values()
        if event.get("Type") == "SQS"
    )
    alarm_metrics = sum(
        sum(1 for query in resource["Properties"]["Metrics"] if "MetricStat" in query)
        if "Metrics" in resource["Properties"]
        else 1
        for resource in resources
        if resource.get("Type") == "AWS::CloudWatch::Alarm"
    )
    return {
        "sqs_event_sources": sqs_sources,
        "sweeps_per_month": SECONDS_PER_MONTH // delivery_schedule(template).interval_seconds,
        # Each metric the functions write, as if written every hour (billed for each hour it is written in).
        "custom_metrics": len(Metric) if template["Parameters"]["DetailedMetrics"]["Default"] == "true" else len(CORE),
        "alarm_metrics": alarm_metrics,
        "alarms": sum(1 for resource in resources if resource.get("Type") == "AWS::CloudWatch::Alarm"),
        "secrets": sum(1 for resource in resources if resource.get("Type") == "AWS::SecretsManager::Secret"),
    }


def hosted_sender_per_million(fanout: int) -> float:
    """Svix's list price per million webhooks at this fan-out (one message per ``fanout`` webhooks), with
    its plan spread over MONTHLY_WEBHOOKS."""
    return (SVIX_PER_MESSAGE / fanout) * 1e6 + SVIX_PLAN_PER_MONTH * 1e6 / MONTHLY_WEBHOOKS


def eventbridge_per_million(fanout: int) -> float:
    """EventBridge API destinations per million webhooks: one event per ``fanout`` webhooks, one
    invocation per webhook."""
    return (EVENTBRIDGE_PER_EVENT / fanout + EVENTBRIDGE_PER_INVOCATION) * 1e6


def run(
    *, events: int = 20, fanout: int = 10, out: Any = print, cold_starts: dict[str, float] | None = None
) -> list[Figure]:
    """The cost figures. ``cold_starts``: each function's INIT seconds measured in the same run (the coldstart
    figures), else COLD_START_SECONDS."""
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    from benchmarks.receiver import ReceiverProcess
    from herald.local.resources import load_template

    template = load_template()
    # The same fan-out with the template's other batching choice (DeliveryBatching: throughput, 100 a batch and a
    # 1 s window): what a deployment that chose it pays.
    throughput = with_delivery_batching(template, "throughput")
    # 1 event -> 1 is priced as the issue asks, its events published in batches (POST /v1/events/batch, all of
    # the case's events in one: a batch of 20 where the API takes 100); one event a request beside it.
    one_to_one = max(10, events)
    # Every case but one publishes its events in a burst; the default fan-out is also published one event at a time.
    runs = [
        (fanout, events, template, "", 1, False),
        (1, one_to_one, template, "", MAX_BATCH_EVENTS, False),
        (1, one_to_one, template, SINGLE_PUBLISH_SUFFIX, 1, False),
        (fanout, events, throughput, THROUGHPUT_SUFFIX, 1, False),
        (fanout, events, template, BATCH_PUBLISH_SUFFIX, MAX_BATCH_EVENTS, False),
        (fanout, min(events, ONE_AT_A_TIME_EVENTS), template, ONE_AT_A_TIME_SUFFIX, 1, True),
    ]
    cases: list[tuple[CaseResult, str]] = []
    for case_fanout, case_events, case_template, suffix, per_request, one_at_a_time in runs:
        with local_stack(moto="server") as stack, ReceiverProcess(SUBSCRIBER_LATENCY) as receiver:
            case = _run_case(
                stack,
                fanout=case_fanout,
                events=case_events,
                receiver_url=receiver.url,
                template=case_template,
                per_request=per_request,
                one_at_a_time=one_at_a_time,
            )
            # The webhooks' bytes out (request line, headers, body; TLS's records and handshakes not counted), the mean
            # over every request the receiver answered.
            received = receiver.stats()
            request_bytes = received["request_bytes"] / received["count"] if received["count"] else 0.0
            case.usage["webhook_request_bytes"] = request_bytes
            case.breakdown["Data transfer out (webhooks)"] = request_bytes / 1e9 * DATA_TRANSFER_OUT_GB * 1e6
            # Over the deliveries the table holds: both passes' and their warm-up events', not one pass's.
            stored, stored_deliveries = stored_bytes(
                stack.session.client("dynamodb"), stack.services.settings.table_name
            )
            per_delivery = stored / stored_deliveries
            case.usage["stored_bytes"] = per_delivery
            case.breakdown["DynamoDB storage (retention)"] = (
                per_delivery / 1e9 * DYNAMODB_STORAGE_GB_MONTH * RETENTION_MONTHS * 1e6
            )
            table_bytes = stored_bytes(
                stack.session.client("dynamodb"), stack.services.settings.table_name, with_indexes=False
            )[0]
            case.usage["table_bytes"] = table_bytes / stored_deliveries
            case.breakdown["DynamoDB point-in-time recovery"] = (
                table_bytes / stored_deliveries / 1e9 * DYNAMODB_PITR_GB_MONTH * RETENTION_MONTHS * 1e6
            )
            fixed = fixed_costs_per_million(
                case_template, sweep_dollars=case.usage["sweep_dollars"], cold_starts=cold_starts
            )
            case.breakdown.update(fixed)
            counts = fixed_counts(case_template)
            case.notes.append(
                f"data transfer out: {request_bytes:.0f} bytes a webhook request (without TLS) at "
                f"${DATA_TRANSFER_OUT_GB}/GB; EventBridge's published price has no per-byte charge for its API "
                "destinations' requests (its pricing page names data transfer only between regions), so its price "
                "is compared as published"
            )
            case.notes.append(
                f"storage: {per_delivery:.0f} bytes per delivery (the table's bytes with index entries and "
                f"overhead, over the {stored_deliveries} deliveries it holds), kept "
                f"{RETENTION_MONTHS:.2f} months; point-in-time recovery on the items' "
                f"{case.usage['table_bytes']:.0f} bytes at ${DYNAMODB_PITR_GB_MONTH}/GB-month"
            )
            case.notes.append(
                f"fixed monthly charges at {MONTHLY_WEBHOOKS:,} webhooks a month, per million: "
                f"empty receives of {counts['sqs_event_sources']} SQS event sources "
                f"${fixed['SQS empty receives']:.3f}; "
                f"cold starts ${fixed['Lambda cold starts (INIT)']:.3f} (one an hour a function, INIT "
                f"{', '.join(f'{name} {value:.2f} s' for name, value in (cold_starts or COLD_START_SECONDS).items())}"
                f", {'measured in this run' if cold_starts else 'from COLD_START_SECONDS'}); "
                f"{counts['sweeps_per_month']:,} sweeps a "
                f"month (one measured at {case.usage['sweep_ms']:.0f} ms and "
                f"{case.usage['sweep_aws_requests']:.0f} AWS requests, idle) ${fixed['Schedule sweeps']:.3f}; "
                f"{counts['custom_metrics']} custom metrics ${fixed['CloudWatch custom metrics']:.3f}; "
                f"{counts['alarms']} alarms reading {counts['alarm_metrics']} metrics "
                f"${fixed['CloudWatch alarms']:.3f}; {counts['secrets']} secrets "
                f"${fixed['Secrets Manager secrets']:.3f} (free tiers ignored)"
            )
            cases.append((case, suffix))
    figures = []
    for case, suffix in cases:
        batching = {
            THROUGHPUT_SUFFIX: " (DeliveryBatching: throughput)",
            SINGLE_PUBLISH_SUFFIX: " (one event an API request)",
            BATCH_PUBLISH_SUFFIX: " (events published in batches)",
            ONE_AT_A_TIME_SUFFIX: " (events published one at a time)",
        }.get(
            suffix, " (events published in batches)" if case.invocations["api"] < case.deliveries / case.fanout else ""
        )
        out(
            f"  cost per million webhooks, 1 event -> {case.fanout} subscription(s){batching}, subscriber answering "
            "in 100 ms:"
        )
        for item, dollars in sorted(case.breakdown.items(), key=lambda entry: -entry[1]):
            out(f"    {item:32s} ${dollars:7.3f}")
        eventbridge = eventbridge_per_million(case.fanout)
        hosted = hosted_sender_per_million(case.fanout)
        out(
            f"    {'total':32s} ${case.total:7.3f}   (EventBridge API destinations at the same fan-out: "
            f"${eventbridge:.2f}; Svix list price: ${hosted:.2f})"
        )
        for note in case.notes:
            out(f"    {note}")
        figures.append(
            Figure(
                name=f"cost_per_million_fanout_{case.fanout}{suffix}",
                value=case.total,
                unit="$",
                baseline=eventbridge,
                baseline_label=f"EventBridge API destinations, 1 event -> {case.fanout}{batching}",
                target="ratio <= 1 (the peer doing the same work)",
                met=case.total <= eventbridge,
                low=0.01,  # a cost near nothing means something was not metered
                high=1.0,
                note=_cost_note(case),
                details={
                    "prices": PRICES_DATE,
                    "breakdown_per_million": {key: round(value, 4) for key, value in case.breakdown.items()},
                    "per_delivery": {key: round(value, 6) for key, value in case.usage.items()},
                    "invocations": case.invocations,
                    "eventbridge_same_fanout_per_million": eventbridge,
                    "hosted_sender_per_million": hosted,
                    "hosted_sender_price": SVIX_PRICE_SOURCE,
                    "monthly_webhooks_assumed": MONTHLY_WEBHOOKS,
                    "notes": case.notes,
                },
            )
        )
    (default,) = [case for case, suffix in cases if not suffix and case.fanout == fanout]
    (batched,) = [case for case, suffix in cases if suffix == THROUGHPUT_SUFFIX]
    (published,) = [case for case, suffix in cases if suffix == BATCH_PUBLISH_SUFFIX]
    (alone,) = [case for case, suffix in cases if suffix == ONE_AT_A_TIME_SUFFIX]
    return figures + per_delivery_figures(default, batched, published) + per_delivery_figures_one_at_a_time(alone)


#: The issue's targets per delivered webhook on the happy path.
WRU_TARGET = 1.5
CALLS_TARGET = 0.3


def _aws_requests(usage: dict[str, float]) -> float:
    """AWS requests per delivered webhook of a case: DynamoDB's and SQS's."""
    return usage["dynamodb_requests"] + usage["sqs_requests"]


def per_delivery_figures(case: CaseResult, batched: CaseResult, published: CaseResult) -> list[Figure]:
    """Write units and AWS requests per delivered webhook at 1 event -> ``case.fanout`` (the default batching, one
    event a request), from the same metered run as its cost; ``batched`` (DeliveryBatching: throughput) and
    ``published`` (the same fan-out, its events published in batches) are in the notes."""
    usage, other, in_batches = case.usage, batched.usage, published.usage
    calls, other_calls, batch_published_calls = (_aws_requests(run.usage) for run in (case, batched, published))
    where = (
        f"1 event -> {case.fanout}, DeliveryBatching: latency, on the happy path, the events published in a burst (an "
        "invocation's and a stream window's fixed costs shared by all the deliveries that arrive together; "
        f"{ONE_AT_A_TIME_SUFFIX} gives one event at a time)"
    )
    return [
        _wru_figure(
            "dynamodb_wru_per_delivery",
            usage["wru"],
            f"{where}: {case.notes[2]}; with DeliveryBatching: throughput, {other['wru']:.2f}",
            details={"throughput_wru": other["wru"]},
        ),
        _calls_figure(
            "aws_calls_per_delivery",
            calls,
            f"{where}, publishing's calls included ({usage['api_aws_calls_per_event']:.0f} per event; the "
            f"worker's {usage['worker_aws_calls_per_delivery']:.2f} per delivery; SQS's "
            f"{usage['sqs_requests']:.2f}, up to ten deliveries to a message: Lambda receives and deletes 10 messages "
            f"a call, a send carries 10): {case.notes[1]}; with DeliveryBatching: throughput, {other_calls:.2f}; "
            f"with the events published in batches (POST /v1/events/batch), {batch_published_calls:.2f} "
            f"(publishing's {in_batches['api_aws_calls_per_event']:.2f} per event)",
            usage,
            details={"throughput": other_calls, "batch_published": batch_published_calls},
        ),
    ]


def _wru_figure(name: str, wru: float, note: str, *, details: dict[str, Any] | None = None) -> Figure:
    """A figure of DynamoDB write units per delivered webhook, against the issue's target."""
    return Figure(
        name=name,
        value=wru,
        unit="WRU",
        baseline=WRU_TARGET,
        baseline_label="the issue's target, not measured",
        target=f"ratio <= 1 (<= {WRU_TARGET} write units per delivered webhook)",
        met=wru <= WRU_TARGET,
        note=note,
        low=1 / WRU_TARGET,  # a delivered webhook is written at least once
        high=1.0,
        details=details or {},
    )


def _calls_figure(
    name: str, calls: float, note: str, usage: dict[str, Any], *, details: dict[str, Any] | None = None
) -> Figure:
    """A figure of AWS requests per delivered webhook, against the issue's target; its details give the worker's
    and SQS's share (``usage``)."""
    return Figure(
        name=name,
        value=calls,
        unit="calls",
        baseline=CALLS_TARGET,
        baseline_label="the issue's target, not measured",
        target=f"ratio <= 1 (<= {CALLS_TARGET} AWS requests per delivered webhook)",
        met=calls <= CALLS_TARGET,
        note=note,
        low=1 / 100 / CALLS_TARGET,  # fewer than one request per batch of deliveries: requests not counted
        high=1.0,
        details={
            "worker_per_delivery": usage["worker_aws_calls_per_delivery"],
            "sqs_per_delivery": usage["sqs_requests"],
            **(details or {}),
        },
    )


def per_delivery_figures_one_at_a_time(case: CaseResult) -> list[Figure]:
    """Write units and AWS requests per delivered webhook at 1 event -> ``case.fanout`` with each event published and
    worked before the next: the same targets as the burst's figures, for a trickle of events."""
    usage, calls = case.usage, _aws_requests(case.usage)
    where = (
        f"1 event -> {case.fanout}, DeliveryBatching: latency, on the happy path, each event published one a request "
        "and worked before the next: an invocation's fixed calls (receive, delete, the batch's reads and writes) and "
        f"a stream window's stats writes are shared by one event's {case.fanout} deliveries, not by a burst's"
    )
    return [
        _wru_figure(f"dynamodb_wru_per_delivery{ONE_AT_A_TIME_SUFFIX}", usage["wru"], f"{where}: {case.notes[2]}"),
        _calls_figure(
            f"aws_calls_per_delivery{ONE_AT_A_TIME_SUFFIX}",
            calls,
            f"{where}; publishing's {usage['api_aws_calls_per_event']:.0f} calls per event included, the "
            f"worker's {usage['worker_aws_calls_per_delivery']:.2f} per delivery: {case.notes[1]}",
            usage,
        ),
    ]
