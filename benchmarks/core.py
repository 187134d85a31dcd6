"""What the benchmarks share: an embedded AWS built from template.yaml, a slow receiver on 127.0.0.1,
a log of AWS calls, the API behind its Mangum handler, and small statistics."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import os
import statistics
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herald import ids
from herald.catalog import catalog
from herald.messages import MAX_DELIVERIES_PER_MESSAGE
from herald.records import ApiKey, SigningSecret, Subscription, Tenant, utcnow
from herald.schemas import EventIn

if TYPE_CHECKING:
    import boto3

    from herald.local.poller import SqsPoller
    from herald.local.resources import LocalResources
    from herald.services import Services
    from herald.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
API_HANDLER_FILE = ROOT / "functions" / "api" / "herald_api_handler.py"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
EVENT_TYPE = "invoice.paid"
#: Subscriber URLs that are never called (fan-out only queues delivery messages).
UNUSED_URL = "http://127.0.0.1:9/unused"


class BenchmarkError(Exception):
    """A benchmark could not measure what it set out to measure (the system did not do the work)."""


# ---------------------------------------------------------------------------------------------- statistics


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def union_seconds(intervals: list[tuple[float, float]], start: float | None = None, end: float | None = None) -> float:
    """Wall time covered by at least one of ``intervals`` (clipped to [start, end])."""
    clipped = sorted(
        (max(begin, start) if start is not None else begin, min(stop, end) if end is not None else stop)
        for begin, stop in intervals
    )
    total = 0.0
    current_begin: float | None = None
    current_end = 0.0
    for begin, stop in clipped:
        if stop <= begin:
            continue
        if current_begin is None or begin > current_end:
            if current_begin is not None:
                total += current_end - current_begin
            current_begin, current_end = begin, stop
        else:
            current_end = max(current_end, stop)
    if current_begin is not None:
        total += current_end - current_begin
    return total


# ---------------------------------------------------------------------------------------------- environment


@contextlib.contextmanager
def fake_aws_environment(**extra: str) -> Iterator[None]:
    """Fake credentials and a region (never a real account), restored afterwards."""
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }
    removed = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
    saved = {name: os.environ.get(name) for name in (*values, *removed)}
    for name in removed:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def bench_settings(resources: LocalResources, **overrides: Any) -> Settings:
    from herald.settings import Settings
    from herald.urls import LOCAL_NETWORKS

    values: dict[str, Any] = {
        "table_name": resources.table_name,
        "queue_url": resources.queue_url,
        "dead_letter_queue_url": resources.dead_letter_queue_url,
        "slow_queue_url": resources.slow_queue_url,
        "admin_key_secret_arn": resources.admin_key_secret_arn,
        "max_receive_count": resources.max_receive_count,
        "allowed_target_networks": LOCAL_NETWORKS,
        "allow_http_urls": True,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Stack:
    """Herald's services on an embedded AWS (moto), built from template.yaml."""

    session: boto3.session.Session
    resources: LocalResources
    services: Services
    endpoint_url: str | None = None

    def sqs(self) -> Any:
        return self.session.client("sqs", endpoint_url=self.endpoint_url)


@contextlib.contextmanager
def local_stack(*, moto: str = "inprocess", moto_deepcopy: bool = False, **settings_overrides: Any) -> Iterator[Stack]:
    """The table, queues and secret of template.yaml on moto, and Services pointed at them.

    ``moto="inprocess"`` is ``mock_aws`` in this process; ``"server"`` is a moto server in its own
    process (AWS as a remote service: its work takes neither this process's GIL nor its memory).
    Either way moto is fixed as ``herald.local.moto_fixes`` explains.
    """
    import boto3

    from benchmarks.moto_server import MotoServerProcess
    from herald.local.moto_fixes import moto_fixes
    from herald.local.resources import create_local_resources
    from herald.services import Services

    with contextlib.ExitStack() as stack:
        endpoint_url: str | None = None
        if moto == "server":
            endpoint_url = stack.enter_context(MotoServerProcess(moto_deepcopy=moto_deepcopy)).endpoint_url
            stack.enter_context(fake_aws_environment(AWS_ENDPOINT_URL=endpoint_url))
        elif moto == "inprocess":
            from moto import mock_aws

            stack.enter_context(fake_aws_environment())
            stack.enter_context(mock_aws())
            stack.enter_context(moto_fixes(deepcopy_transactions=moto_deepcopy))
        else:
            raise ValueError(f"moto is 'inprocess' or 'server', not {moto!r}")
        session = boto3.session.Session(region_name="us-east-1")
        resources = create_local_resources(admin_key=ADMIN_KEY, session=session, endpoint_url=endpoint_url)
        services = Services.create(bench_settings(resources, **settings_overrides), session=session)
        yield Stack(session, resources, services, endpoint_url)


# ---------------------------------------------------------------------------------------------- Herald data


def make_tenant(services: Services, name: str = "Bench") -> Tenant:
    """A tenant with an API key, written straight through the store (the key itself is not needed)."""
    tenant = Tenant(id=ids.new_id(ids.TENANT), name=name, created_at=utcnow())
    key = ApiKey(id=ids.new_id(ids.API_KEY), tenant_id=tenant.id, prefix="hrk_bench", created_at=utcnow())
    services.store.tenants.create(tenant, key, ids.hash_api_key(ids.new_api_key()))
    return tenant


def make_subscriptions(
    services: Services, tenant_id: str, count: int, url: str, filters: Sequence[str | None] = ()
) -> list[Subscription]:
    """``count`` subscriptions to ``EVENT_TYPE``: one through ``store.subscriptions.create``, many through
    ``store.subscriptions.import_many`` (BatchWriteItem, as a bulk import does; no HTTP). The first
    ``len(filters)`` carry those payload filters (stored form, ``CompiledFilter.to_stored``)."""
    now = utcnow()
    subs = [
        Subscription(
            id=ids.new_id(ids.SUBSCRIPTION),
            tenant_id=tenant_id,
            url=f"{url}/{index}" if url != UNUSED_URL else url,
            event_types=[EVENT_TYPE],
            filter=filters[index] if index < len(filters) else None,
            secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
            created_at=now,
            updated_at=now,
        )
        for index in range(count)
    ]
    if count == 1:
        services.store.subscriptions.create(subs[0])
    else:
        services.store.subscriptions.import_many(subs)
    return subs


def event_in(tenant_id: str) -> EventIn:
    entry = catalog.get(EVENT_TYPE)
    assert entry is not None
    return EventIn(type=EVENT_TYPE, data=dict(entry.example), tenant_id=tenant_id)


def published_deliveries(services: Services, poller: SqsPoller, tenant_id: str, count: int) -> list[Any]:
    """Publish an event to a tenant with ``count`` subscriptions (one route each) and receive the messages of its
    ``count`` deliveries off the work queue (up to ten to a message), unsettled: queued by publishing itself when
    the routes fit its direct path, else by the fan-out message, which ``poller`` runs first."""
    from herald.domain.publishing import publish

    sqs, queue_url = poller.client, services.settings.queue_url
    publish(services, event_in(tenant_id), idempotency_key=None)
    if count > services.settings.direct_fanout_max and poller.invoke(receive_exactly(sqs, queue_url, 1)).deleted != 1:
        raise BenchmarkError("the fan-out message was not settled")
    return receive_exactly(sqs, queue_url, math.ceil(count / MAX_DELIVERIES_PER_MESSAGE))


def receive_exactly(sqs: Any, queue_url: str, count: int, *, timeout: float = 60.0) -> list[Any]:
    """Receive ``count`` messages (10 per call), as Lambda's poller gathers a batch."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        if time.monotonic() > deadline:
            raise BenchmarkError(f"received {len(messages)} of {count} messages within {timeout:.0f} s")
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, count - len(messages)),
            AttributeNames=["All"],
        )
        messages.extend(response.get("Messages", []))
    return messages


# ---------------------------------------------------------------------------------------------- AWS call log


@dataclass
class AwsCallLog:
    """Every AWS call made through the instrumented clients: (operation, start, end), from botocore's
    ``before-call`` / ``after-call`` events, so the time spent in DynamoDB/SQS can be told apart."""

    calls: list[tuple[str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def instrument(self, *clients: Any) -> None:
        for client in clients:
            events = client.meta.events
            events.register("before-call", self._before)
            events.register("after-call", self._after)
            events.register("after-call-error", self._after)

    def _before(self, context: dict[str, Any], model: Any, **_: Any) -> None:
        context["bench_call"] = (model.name, time.perf_counter())

    def _after(self, context: dict[str, Any], **_: Any) -> None:
        call = context.pop("bench_call", None)
        if call is not None:
            with self.lock:
                self.calls.append((call[0], call[1], time.perf_counter()))

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    def between(self, start: float, end: float) -> list[tuple[str, float, float]]:
        with self.lock:
            return [call for call in self.calls if call[1] >= start and call[2] <= end]

    def busy_seconds(self, start: float, end: float) -> float:
        """Wall time in [start, end] during which at least one AWS call was in flight."""
        return union_seconds([(begin, stop) for _, begin, stop in self.between(start, end)], start, end)

    def counts(self, start: float, end: float) -> Counter[str]:
        return Counter(name for name, _, _ in self.between(start, end))

    def describe(self, start: float, end: float) -> str:
        """``Operation count x mean duration`` for the calls in [start, end], most frequent first."""
        durations: dict[str, list[float]] = {}
        for name, begin, stop in self.between(start, end):
            durations.setdefault(name, []).append(stop - begin)
        ordered = sorted(durations.items(), key=lambda entry: -len(entry[1]))
        return ", ".join(
            f"{name} {len(values)} x {sum(values) / len(values) * 1000:.1f} ms" for name, values in ordered
        )


# ---------------------------------------------------------------------------------------------- receiver


def per_call_us(call: Callable[[], object], *, loops: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time of one call in a loop of ``loops`` (µs)."""
    samples = []
    for _ in range(rounds):
        began = time.perf_counter_ns()
        for _ in range(loops):
            call()
        samples.append((time.perf_counter_ns() - began) / loops / 1000)
    return statistics.median(samples)


def measure_receiver_latency(url: str, *, samples: int = 5) -> float:
    """Median round trip of one POST to ``url`` from this process (the baseline of the batch ratios)."""
    import httpx

    times = []
    with httpx.Client(trust_env=False) as client:
        for _ in range(samples):
            started = time.perf_counter()
            response = client.post(url, content=b"{}")
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    return median(times)


# ---------------------------------------------------------------------------------------------- the API


class ApiGateway:
    """The real ApiFunction entry point (``functions/api/herald_api_handler.py``, its Mangum handler),
    called with API Gateway HTTP API (payload v2) events, on the given services."""

    def __init__(self, services: Services) -> None:
        spec = importlib.util.spec_from_file_location("bench_herald_api_handler", API_HANDLER_FILE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        with warnings.catch_warnings():
            # Mangum asks for the thread's event loop (deprecated when there is none) and sets one.
            warnings.simplefilter("ignore", DeprecationWarning)
            spec.loader.exec_module(module)
        module.app.state.services = services
        self.handler: Callable[[dict[str, Any], Any], dict[str, Any]] = module.handler
        self.context = _ApiContext()

    def request(
        self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        event = api_gateway_event(method, path, body=body, headers=headers)
        response = self.handler(event, self.context)
        text = response.get("body") or ""
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = text
        return int(response["statusCode"]), payload


def api_gateway_event(
    method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API event (payload format 2.0, ``$default`` stage and route)."""
    raw = json.dumps(body) if body is not None else None
    now = datetime.now(UTC)
    all_headers = {"host": "api.example.com", "user-agent": "herald-bench", **(headers or {})}
    if raw is not None:
        all_headers.update({"content-type": "application/json", "content-length": str(len(raw))})
    path, _, query = path.partition("?")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "herald-bench",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": raw,
        "isBase64Encoded": False,
    }


@dataclass
class _ApiContext:
    function_name: str = "ApiFunction"
    aws_request_id: str = "bench"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN_KEY}"}


def with_delivery_batching(template: dict[str, Any], choice: str) -> dict[str, Any]:
    """A copy of ``template`` deployed with ``DeliveryBatching: choice`` (``latency`` or ``throughput``)."""
    changed = copy.deepcopy(template)
    changed["Parameters"]["DeliveryBatching"]["Default"] = choice
    return changed
