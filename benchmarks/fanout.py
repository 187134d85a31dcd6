"""Fan-out: one event to N subscriptions.

The subscriptions are written straight through ``Store.create_subscription`` (no HTTP). The event is
published through the API's Mangum handler, and the API's latency is compared with publishing to a
tenant with one subscription: fan-out is off the request path, so the two should match. Then the
fan-out message, and every continuation it hands over to, goes through ``Worker.handle`` as its own
invocation (one-record SQS events built here, as Lambda would deliver them), while a botocore hook
on the services' SQS client counts SendMessageBatch calls and catches the continuations. The
deliveries it queues (up to ten to a message) are counted, not delivered.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Any

from benchmarks.core import (
    ADMIN_HEADERS,
    UNUSED_URL,
    ApiGateway,
    AwsCallLog,
    BenchmarkError,
    event_in,
    local_stack,
    make_subscriptions,
    make_tenant,
    median,
)
from benchmarks.results import Ratio, Result
from herald.delivery_options import compile_filter
from herald.local.event_sources import delivery_event_source
from herald.local.poller import LambdaContext, sqs_event
from herald.messages import MAX_DELIVERIES_PER_MESSAGE, FanoutMessage, deliveries_of, parse_message
from herald.worker import Worker, settle_all


class _QueueWatch:
    """Counts SendMessageBatch calls and their entries, keeps every SendMessage body, and notes how many deliveries
    each page of routes (each routing Query on ``table``) queued."""

    def __init__(self, client: Any, table: Any) -> None:
        self.batch_calls = 0
        self.batch_entries: list[str] = []
        self.sent: list[str] = []
        self.pages: list[set[str]] = []  # the deliveries queued after each routing Query, by id
        self.lock = threading.Lock()  # a page's batches are sent side by side
        events = client.meta.events
        events.register("before-parameter-build.sqs.SendMessageBatch", self._batch)
        events.register("before-parameter-build.sqs.SendMessage", self._single)
        table.meta.events.register("before-parameter-build.dynamodb.Query", self._query)

    def _batch(self, params: dict[str, Any], **_: Any) -> None:
        bodies = [entry["MessageBody"] for entry in params.get("Entries", [])]
        deliveries = {d.delivery_id for body in bodies for d in deliveries_of(parse_message(body))}
        with self.lock:
            self.batch_calls += 1
            self.batch_entries += bodies
            if self.pages:
                self.pages[-1] |= deliveries

    def _single(self, params: dict[str, Any], **_: Any) -> None:
        self.sent.append(params["MessageBody"])

    def _query(self, params: dict[str, Any], **_: Any) -> None:
        if str(params.get("ExpressionAttributeValues", {}).get(":p", {}).get("S", "")).startswith("ROUTE#"):
            with self.lock:
                self.pages.append(set())

    def fewest_calls(self) -> int:
        """The fewest SendMessageBatch calls that queue each page's deliveries (each once) once the page is read:
        ten deliveries to a message, ten messages to a call. A delivery queued twice, or a call resent, is then
        an extra call, not a higher floor."""
        return sum(math.ceil(math.ceil(len(ids) / MAX_DELIVERIES_PER_MESSAGE) / 10) for ids in self.pages)

    def reset(self) -> None:
        self.batch_calls = 0
        self.batch_entries = []
        self.sent = []
        self.pages = []


def _publish(api: ApiGateway, tenant_id: str) -> tuple[float, str]:
    body = event_in(tenant_id).model_dump(mode="json", exclude_none=True)
    started = time.perf_counter()
    status, payload = api.request("POST", "/v1/events", body=body, headers=ADMIN_HEADERS)
    elapsed = time.perf_counter() - started
    if status != 202:
        raise BenchmarkError(f"publishing answered {status}: {payload}")
    return elapsed, str(payload["id"])


def run(
    *,
    subscriptions: int = 10_000,
    publish_samples: int = 15,
    filtered_share: float = 0.5,
    moto: str = "inprocess",
    moto_deepcopy: bool = False,
    out: Any = print,
) -> Result:
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    result = Result("fanout", f"Fan-out: one event to {subscriptions:,} subscriptions (moto {moto})")
    source = delivery_event_source()
    with local_stack(moto=moto, moto_deepcopy=moto_deepcopy) as stack:
        services = stack.services
        attributes = stack.sqs().get_queue_attributes(QueueUrl=services.settings.queue_url, AttributeNames=["QueueArn"])
        queue_arn = attributes["Attributes"]["QueueArn"]
        big, small = make_tenant(services, "Big"), make_tenant(services, "Small")
        # Of the filtered share, half take the event and half skip it (the "half of them have filters").
        with_filter = int(subscriptions * filtered_share)
        skipping = with_filter // 2
        takes, skips = compile_filter({"amount_cents": {"$gte": 0}}), compile_filter({"amount_cents": {"$lt": 0}})
        filters = [skips.to_stored()] * skipping + [takes.to_stored()] * (with_filter - skipping)
        matched = subscriptions - skipping
        started = time.perf_counter()
        make_subscriptions(services, big.id, subscriptions, UNUSED_URL, filters)
        create_s = time.perf_counter() - started
        out(f"  created {subscriptions:,} subscriptions in {create_s:.1f} s ({subscriptions / create_s:.0f}/s)")
        # The small tenant has one subscription more than publishing queues itself: both publishes then hand the
        # fan-out to a fan-out message, and the figure shows what stays constant beyond that page.
        small_count = services.settings.direct_fanout_max + 1
        make_subscriptions(services, small.id, small_count, UNUSED_URL)

        watch = _QueueWatch(services.queue.client, services.store.client)
        calls = AwsCallLog()
        calls.instrument(services.store.client, services.queue.client)
        api = ApiGateway(services)
        _publish(api, small.id)  # warm the API (first request builds what it caches)
        big_times: list[float] = []
        small_times: list[float] = []
        big_calls: list[int] = []
        small_calls: list[int] = []
        fanout_body: str | None = None
        for _ in range(publish_samples):
            watch.reset()
            began = time.perf_counter()
            elapsed, event_id = _publish(api, big.id)
            big_times.append(elapsed)
            big_calls.append(sum(calls.counts(began, time.perf_counter()).values()))
            if fanout_body is None:
                fanout_body = next(body for body in watch.sent if isinstance(parse_message(body), FanoutMessage))
                fanned_event = event_id
            began = time.perf_counter()
            small_times.append(_publish(api, small.id)[0])
            small_calls.append(sum(calls.counts(began, time.perf_counter()).values()))
        assert fanout_body is not None

        worker = Worker(services)
        watch.reset()
        calls.reset()
        invocations: list[float] = []
        pending = [fanout_body]
        fanout_started = time.perf_counter()
        try:
            while pending:
                body = pending.pop(0)
                before = len(watch.sent)
                message: Any = {
                    "MessageId": str(uuid.uuid4()),
                    "ReceiptHandle": uuid.uuid4().hex,
                    "Body": body,
                    "Attributes": {"ApproximateReceiveCount": "1"},
                }
                context: Any = LambdaContext("DeliveryFunction", source.function_timeout_seconds, time.time())
                began = time.perf_counter()
                response = worker.handle(sqs_event([message], queue_arn), context)
                invocations.append(time.perf_counter() - began)
                if response.get("batchItemFailures"):
                    raise BenchmarkError(f"a fan-out invocation failed: {response}")
                pending += [sent for sent in watch.sent[before:] if isinstance(parse_message(sent), FanoutMessage)]
        finally:
            settle_all([worker])
        fanout_s = time.perf_counter() - fanout_started
        aws_s = calls.busy_seconds(fanout_started, fanout_started + fanout_s)
        aws_calls = calls.describe(fanout_started, fanout_started + fanout_s)
        fanout_counts = calls.counts(fanout_started, fanout_started + fanout_s)
        page_size = services.settings.fanout_page_size

        messages = [parse_message(body) for body in watch.batch_entries]
        deliveries = [d for m in messages for d in deliveries_of(m)]
        distinct = {delivery.subscription_id for delivery in deliveries}
        status, event = api.request("GET", f"/v1/events/{fanned_event}", headers=ADMIN_HEADERS)
        counts = event["deliveries"] if status == 200 else {}
        if (
            len(distinct) != matched
            or counts.get("matched") != matched
            or counts.get("filtered") != skipping
            or not counts.get("fanout_complete")
        ):
            raise BenchmarkError(
                f"fan-out queued {len(deliveries)} deliveries to {len(distinct)} subscriptions of {matched} matched "
                f"({skipping} skipped by their filter); the event reports {counts}"
            )

    batch_calls = watch.batch_calls
    per_hundred = batch_calls / (len(deliveries) / 100)
    longest = max(invocations)
    big_ms, small_ms = median(big_times), median(small_times)
    result.measured.update(
        {
            "subscriptions_count": subscriptions,
            "filtered_subscriptions_count": with_filter,
            "skipped_by_filter_count": skipping,
            "create_subscriptions_s": create_s,
            "deliveries_count": len(deliveries),
            "delivery_messages_count": sum(1 for message in messages if deliveries_of(message)),
            "send_message_batch_calls_count": batch_calls,
            "send_message_batch_calls_fewest_count": watch.fewest_calls(),
            "route_pages_count": len(watch.pages),
            "send_message_batch_calls_per_100_deliveries": per_hundred,
            "fanout_invocations_count": len(invocations),
            "continuations_count": len(invocations) - 1,
            "fanout_total_s": fanout_s,
            "fanout_longest_invocation_s": longest,
            "function_timeout_s": source.function_timeout_seconds,
            "fanout_aws_busy_s": aws_s,
            "publish_big_median_s": big_ms,
            "publish_small_median_s": small_ms,
            "fanout_page_size_count": page_size,
            "fanout_pages_count": math.ceil(subscriptions / page_size),
            "fanout_dynamodb_reads_count": sum(
                fanout_counts[name] for name in ("GetItem", "Query", "BatchGetItem", "Scan")
            ),
            "fanout_dynamodb_queries_count": fanout_counts["Query"],
            "publish_big_aws_calls_count": max(big_calls),
            "publish_small_aws_calls_count": max(small_calls),
            "publish_small_subscriptions_count": small_count,
        }
    )
    out(f"  filters: {with_filter:,} of {subscriptions:,} subscriptions have one; {skipping:,} skip the event")
    out(f"  fan-out: {len(invocations)} invocations ({len(invocations) - 1} continuations), {fanout_s:.1f} s in all")
    out("  invocations: " + ", ".join(f"{value:.1f} s" for value in invocations))
    out(
        f"  SendMessageBatch: {batch_calls} calls for {len(deliveries):,} deliveries in "
        f"{result.measured['delivery_messages_count']:,} messages ({per_hundred:.2f} per 100 deliveries)"
    )
    out(
        f"  API publish (median of {publish_samples}): {big_ms * 1000:.1f} ms to {subscriptions:,} subscriptions, "
        f"{small_ms * 1000:.1f} ms to {small_count}"
    )
    result.ratios += [
        Ratio("SendMessageBatch calls / (deliveries / 100)", batch_calls, len(deliveries) / 100, "", "~1.0"),
        Ratio("longest fan-out invocation / function timeout", longest, source.function_timeout_seconds, "s", "< 0.5"),
        Ratio(f"publish latency, {subscriptions:,} subs / {small_count} subs", big_ms, small_ms, "s", "~1"),
    ]
    result.notes.append(
        f"fan-out under moto {moto}: {aws_s:.1f} s of {fanout_s:.1f} s with an AWS call in flight; "
        f"calls (count x mean): {aws_calls}"
    )
    return result
