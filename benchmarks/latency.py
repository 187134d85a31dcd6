"""Latency from publication to delivery, measured from outside: the time from the publish call to the
receiver's arrival, through the local stack's emulated SQS event sources (``herald.local.stack``: one poller
per concurrent invocation of each SQS event source of template.yaml, with its batch size and batching
window), the API behind its Mangum handler, and a receiver in its own process.

- ``latency_p50_at_rest``: one subscriber, events published one at a time (each after the previous one
  arrived): the median, against the issue's 1.0 s. The noise is the spread of the medians of three
  consecutive rounds.
- ``latency_p50_at_rest_throughput``: the same at rest under ``DeliveryBatching: throughput`` (a copy of the
  template with it), against the issue's 1.0 s plus one batching window per queue hop: what that setting
  trades for its cheaper batches.
- ``noisy_neighbour_p95_ratio``: a healthy subscriber's p95 while a second subscriber on the same events
  hangs past the delivery timeout, over its p95 alone (measured before and after, with the same events at
  the same pace); target <= 1.5. The noise is the spread of the two runs alone.

For both, the signal is the margin to the target (what the figure claims: it is met by that much); a
margin inside the noise is not counted as met.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Any

from benchmarks.core import (
    ADMIN_HEADERS,
    EVENT_TYPE,
    ApiGateway,
    BenchmarkError,
    Stack,
    local_stack,
    make_subscriptions,
    make_tenant,
    measure_receiver_latency,
    median,
    percentile,
    with_delivery_batching,
)
from benchmarks.receiver import ReceiverProcess
from benchmarks.results import Figure
from herald.catalog import catalog
from herald.local.resources import load_template
from herald.local.stack import DEFAULT_WORKERS, event_source_pollers
from herald.worker import settle_all

AT_REST_TARGET_S = 1.0
NOISY_TARGET = 1.5
#: How long to wait for a published event to arrive before the benchmark gives up.
ARRIVAL_PATIENCE_S = 120.0


class _Bench:
    """The local stack's workers polling every event source, the API, one tenant and a receiver."""

    def __init__(
        self, stack: Stack, receiver: ReceiverProcess, workers: int, template: dict[str, Any] | None = None
    ) -> None:
        self.stack = stack
        self.receiver = receiver
        self.api = ApiGateway(stack.services)
        self.stop = threading.Event()
        sources = event_source_pollers(stack.resources, stack.services, workers, client=stack.sqs(), template=template)
        self.window_s = sources[0][0].maximum_batching_window_seconds
        self.workers = [worker for _, worker, _ in sources]
        self.pollers = [poller for _, _, poller in sources]
        self.lanes = dict(Counter(source.queue_id for source, _, _ in sources))
        self.threads = [threading.Thread(target=poller.run, args=(self.stop,), daemon=True) for poller in self.pollers]
        for thread in self.threads:
            thread.start()
        self.tenant = make_tenant(stack.services)
        entry = catalog.get(EVENT_TYPE)
        assert entry is not None
        self.data = dict(entry.example)
        (self.healthy,) = make_subscriptions(stack.services, self.tenant.id, 1, receiver.url)
        self.healthy_path = self.healthy.url.split(str(receiver.port), 1)[1]

    def publish(self) -> tuple[str, float]:
        started = time.time()
        body = {"type": EVENT_TYPE, "data": self.data, "tenant_id": self.tenant.id}
        status, answer = self.api.request("POST", "/v1/events", body=body, headers=ADMIN_HEADERS)
        if status != 202:
            raise BenchmarkError(f"publishing answered {status}: {answer}")
        return str(answer["id"]), started

    def arrivals(self) -> dict[str, float]:
        """The healthy subscriber's first arrival of each event since the receiver's last reset."""
        first: dict[str, float] = {}
        for path, event_id, at in self.receiver.arrivals():
            if path == self.healthy_path:
                first.setdefault(event_id, at)
        return first

    def wait_for(self, published: dict[str, float]) -> list[float]:
        """The latencies of these events (publish call to arrival, seconds), once they have all arrived."""
        deadline = time.monotonic() + ARRIVAL_PATIENCE_S
        while True:
            arrived = self.arrivals()
            if all(event_id in arrived for event_id in published):
                return [arrived[event_id] - started for event_id, started in published.items()]
            if time.monotonic() > deadline:
                missing = len([event_id for event_id in published if event_id not in arrived])
                raise BenchmarkError(f"{missing} of {len(published)} events never reached the healthy subscriber")
            time.sleep(0.02)

    def at_rest(self, samples: int) -> list[float]:
        """One event at a time, each published once the previous one arrived."""
        self.receiver.reset(0.0)
        latencies: list[float] = []
        for _ in range(samples):
            event_id, started = self.publish()
            latencies += self.wait_for({event_id: started})
        return latencies

    def stream(self, events: int, rate: float) -> list[float]:
        """``events`` events at ``rate`` per second; the healthy subscriber's latencies."""
        self.receiver.reset(0.0)
        published: dict[str, float] = {}
        began = time.monotonic()
        for index in range(events):
            time.sleep(max(0.0, began + index / rate - time.monotonic()))
            event_id, started = self.publish()
            published[event_id] = started
        return self.wait_for(published)

    def close(self, timeout_s: float) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)
        settle_all(self.workers)


def run(
    *, at_rest: int = 12, events: int = 30, rate: float = 2.0, workers: int = DEFAULT_WORKERS, out: Any = print
) -> list[Figure]:
    with local_stack(moto="server") as stack, ReceiverProcess(0.0) as receiver:
        timeout_s = stack.services.settings.delivery_timeout_seconds
        bench = _Bench(stack, receiver, workers)
        try:
            rtt = measure_receiver_latency(receiver.url)
            bench.receiver.reset(0.0)
            rest = bench.at_rest(at_rest)
            alone = [bench.stream(events, rate)]
            (hanging,) = make_subscriptions(
                stack.services, bench.tenant.id, 1, receiver.url.replace("/webhook", "/hang")
            )
            beside = bench.stream(events, rate)
            stack.services.store.subscriptions.delete(hanging)
            alone.append(bench.stream(events, rate))
        finally:
            bench.close(timeout_s + 20)
        # The same at rest with the template's other batching choice, on fresh pollers (and a fresh tenant).
        batched = _Bench(stack, receiver, workers, template=with_delivery_batching(load_template(), "throughput"))
        try:
            rest_batched = batched.at_rest(max(3, at_rest // 2))
        finally:
            batched.close(timeout_s + 20)
    out(f"  pollers per event source (template, at most {workers}): {bench.lanes}")
    out(f"  receiver round trip from here: {rtt * 1000:.1f} ms")
    out(f"  at rest: p50 {median(rest) * 1000:.0f} ms, p95 {percentile(rest, 0.95) * 1000:.0f} ms ({len(rest)} events)")
    out(
        f"  at rest, DeliveryBatching: throughput: p50 {median(rest_batched) * 1000:.0f} ms "
        f"({len(rest_batched)} events, a {batched.window_s:g} s batching window)"
    )
    for label, values in (("alone (1)", alone[0]), ("beside a hanging one", beside), ("alone (2)", alone[1])):
        out(
            f"  {label}: p50 {median(values) * 1000:.0f} ms, p95 {percentile(values, 0.95) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms ({len(values)} events at {rate:g}/s)"
        )
    return [
        _at_rest_figure(rest, rtt),
        _at_rest_batched_figure(rest_batched, rtt, batched.window_s),
        _noisy_figure(alone, beside, timeout_s, rate, bench.lanes),
    ]


def _rounds(values: list[float], count: int = 3) -> list[float]:
    size = max(1, len(values) // count)
    return [statistics.median(values[start : start + size]) for start in range(0, size * count, size)]


def _at_rest_figure(rest: list[float], rtt: float) -> Figure:
    value = median(rest) * 1000
    target = AT_REST_TARGET_S * 1000
    rounds = _rounds(rest)
    return Figure(
        name="latency_p50_at_rest",
        value=value,
        unit="ms",
        baseline=target,
        baseline_label="the issue's target, not measured",
        target="ratio <= 1 (<= 1.0 s)",
        met=value <= target,
        note="publish call to the receiver's arrival, one subscriber, through the emulated event sources with the "
        "template's batching (one queue hop: publishing queues the delivery message of an event with few routes "
        "itself); the noise is the spread of three rounds' medians",
        low=rtt * 1000 / target,  # never faster than one POST to the receiver
        high=1.0,
        noise=(max(rounds) - min(rounds)) * 1000,
        signal=target - value,
        details={
            "samples": len(rest),
            "p95_ms": percentile(rest, 0.95) * 1000,
            "round_medians_ms": [round(item * 1000, 1) for item in rounds],
            "receiver_round_trip_ms": rtt * 1000,
        },
    )


def _at_rest_batched_figure(rest: list[float], rtt: float, window_s: float) -> Figure:
    value = median(rest) * 1000
    # Publishing queues an event with few routes itself: one queue hop, one window waited out whole at rest.
    target = (AT_REST_TARGET_S + window_s) * 1000
    return Figure(
        name="latency_p50_at_rest_throughput",
        value=value,
        unit="ms",
        baseline=target,
        baseline_label=f"latency_p50_at_rest's 1.0 s plus the {window_s:g} s batching window of the one queue hop",
        target=f"ratio <= 1 (<= {target / 1000:g} s)",
        met=value <= target,
        note="as latency_p50_at_rest, with DeliveryBatching: throughput (100 messages a batch, a batching window): at "
        "rest no batch fills, so the window is waited out whole. The figure checks that the setting costs its window "
        "and no more; it does not meet latency_p50_at_rest's 1.0 s, and is not meant to (the default setting does)",
        low=(rtt + window_s) * 1000 / target,  # never faster than the window and one POST to the receiver
        high=1.0,
        details={
            "samples": len(rest),
            "p95_ms": percentile(rest, 0.95) * 1000,
            "batching_window_s": window_s,
            "receiver_round_trip_ms": rtt * 1000,
        },
    )


def _noisy_figure(
    alone: list[list[float]], beside: list[float], timeout_s: float, rate: float, lanes: dict[str, int]
) -> Figure:
    p95_alone = [percentile(values, 0.95) * 1000 for values in alone]
    baseline = statistics.mean(p95_alone)
    value = percentile(beside, 0.95) * 1000
    return Figure(
        name="noisy_neighbour_p95_ratio",
        value=value,
        unit="ms",
        baseline=baseline,
        baseline_label="its p95 alone (mean of a run before and one after)",
        target=f"ratio <= {NOISY_TARGET}",
        met=value <= NOISY_TARGET * baseline,
        note=f"a healthy subscriber's p95 while another on the same events hangs past the {timeout_s:g} s timeout "
        "(slow lane, breaker); the noise is the spread of the two runs alone",
        low=0.5,  # beside a hanging subscriber, twice as fast as alone would be a broken measurement
        high=NOISY_TARGET,
        noise=abs(p95_alone[0] - p95_alone[1]),
        signal=NOISY_TARGET * baseline - value,
        details={
            "events_per_run": len(beside),
            "rate_per_s": rate,
            "p95_alone_ms": [round(item, 1) for item in p95_alone],
            "p50_beside_ms": median(beside) * 1000,
            "max_beside_ms": max(beside) * 1000,
            "pollers": lanes,
        },
    )
