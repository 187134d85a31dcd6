"""Warm API latency through the ApiFunction's Mangum handler (API Gateway HTTP API, payload v2 events).

``GET /health`` (no authentication, no AWS call) is the baseline: what Mangum, FastAPI and the
middleware cost. ``GET /v1/event-types`` adds authentication and the catalog; ``POST /v1/events``
adds validation, DynamoDB and SQS. The requests are interleaved after a warm-up, so noise hits them
alike; the time spent in AWS calls (moto) is measured apart.
"""

from __future__ import annotations

import time
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
    percentile,
)
from benchmarks.results import Ratio, Result

WARMUP_REQUESTS = 5


def run(*, requests: int = 200, moto: str = "inprocess", moto_deepcopy: bool = False, out: Any = print) -> Result:
    result = Result("api", f"Warm API latency through the Mangum handler ({requests} requests each, moto {moto})")
    with local_stack(moto=moto, moto_deepcopy=moto_deepcopy) as stack:
        services = stack.services
        tenant = make_tenant(services)
        make_subscriptions(services, tenant.id, 1, UNUSED_URL)
        calls = AwsCallLog()
        calls.instrument(services.store.client, services.queue.client)
        api = ApiGateway(services)
        publish_body = event_in(tenant.id).model_dump(mode="json", exclude_none=True)
        routes: dict[str, tuple[str, str, Any, int]] = {
            "GET /health": ("GET", "/health", None, 200),
            "GET /v1/event-types": ("GET", "/v1/event-types", None, 200),
            "POST /v1/events": ("POST", "/v1/events", publish_body, 202),
        }
        times: dict[str, list[float]] = {name: [] for name in routes}
        aws: dict[str, list[float]] = {name: [] for name in routes}
        aws_calls: dict[str, int] = dict.fromkeys(routes, 0)
        for index in range(WARMUP_REQUESTS + requests):
            for name, (method, path, body, expected) in routes.items():
                started = time.perf_counter()
                status, payload = api.request(method, path, body=body, headers=ADMIN_HEADERS)
                finished = time.perf_counter()
                if status != expected:
                    raise BenchmarkError(f"{name} answered {status}: {payload}")
                if index >= WARMUP_REQUESTS:
                    times[name].append(finished - started)
                    aws[name].append(calls.busy_seconds(started, finished))
                    aws_calls[name] += sum(calls.counts(started, finished).values())
                calls.reset()

    base = median(times["GET /health"])
    for name in routes:
        own = [total - in_aws for total, in_aws in zip(times[name], aws[name], strict=True)]
        result.measured.update(
            {
                f"{name} median_s": median(times[name]),
                f"{name} p90_s": percentile(times[name], 0.9),
                f"{name} without_aws_median_s": median(own),
                f"{name} aws_calls_per_request": aws_calls[name] / requests,
            }
        )
        out(
            f"  {name:20s} median {median(times[name]) * 1000:6.2f} ms, "
            f"p90 {percentile(times[name], 0.9) * 1000:6.2f} ms; without AWS calls {median(own) * 1000:6.2f} ms "
            f"({aws_calls[name] / requests:.1f} AWS calls/request)"
        )
    publish = "POST /v1/events"
    publish_own = median([total - in_aws for total, in_aws in zip(times[publish], aws[publish], strict=True)])
    result.ratios += [
        Ratio("GET /v1/event-types / GET /health", median(times["GET /v1/event-types"]), base, "s", "~1"),
        Ratio("POST /v1/events / GET /health", median(times["POST /v1/events"]), base, "s", "AWS-bound"),
        Ratio("POST /v1/events without AWS / GET /health", publish_own, base, "s", "a few"),
    ]
    return result
