"""Concurrent delivery: one worker invocation with a batch of deliveries to a receiver that takes
``latency`` to answer. If the batch is worked concurrently it takes about one latency, not ``batch``
latencies.

Each round publishes an event to a tenant with ``batch`` subscriptions, runs its fan-out through the
worker (when there are more than publishing queues itself), receives the messages of the ``batch`` deliveries
(ten to a message) and hands them to ``Worker.handle`` in one SQS event, through ``SqsPoller.invoke`` (which
then deletes them, as Lambda would). Rounds alternate between an
instant receiver (the engine's own cost, moto included) and the slow one; the receiver runs in its
own process, and so does moto by default, so the worker's wall and CPU time are its own.

Under moto the AWS calls (about four per delivery) are served one at a time, so the batch time is
bound by moto; what shows whether the deliveries overlap is the time the receiver's latency adds to
a batch (slow minus instant, about one latency if they do) and how many requests the receiver held
at once. The worker's CPU time for the batch is reported too: on Lambda, CPU scales with MemorySize.

Last come the rounds that give ``batch_wall_time``: each batch is run on moto with its AWS calls recorded,
then handled again with every call answered by an AWS stand-in that answers concurrently
(``benchmarks.aws_standin``), as AWS does: the batch as it runs against AWS, without moto's one-at-a-time.
Every subscription is on the one receiver, so each of those batches sends over the connections the recording
left open (the HTTP client keeps them ``herald.sender.KEEPALIVE_SECONDS``); the same rounds are run again with
the client's connections closed before the replay, each delivery on a new connection (plaintext: no TLS), as a
batch to subscribers that no batch of the last half minute reached sends.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from benchmarks.aws_standin import LATENCY_S, AwsStandIn
from benchmarks.core import (
    AwsCallLog,
    BenchmarkError,
    Stack,
    local_stack,
    make_subscriptions,
    make_tenant,
    measure_receiver_latency,
    median,
    published_deliveries,
)
from benchmarks.receiver import ReceiverProcess
from benchmarks.results import Ratio, Result
from herald.local.event_sources import delivery_event_source
from herald.local.poller import LambdaContext, SqsPoller, sqs_event
from herald.sender import http_clients
from herald.worker import Worker, settle_all
from herald.worker.events import EventCache


@dataclass
class Round:
    delay: float
    handle_s: float
    aws_busy_s: float
    aws_calls: Counter[str]
    aws_described: str
    cpu_s: float
    receiver: dict[str, float]
    #: How long an AWS call took (median), from the worker's side.
    call_median_s: float = 0.0


class _Bench:
    def __init__(self, stack: Stack, receiver: ReceiverProcess, batch: int) -> None:
        self.stack = stack
        self.receiver = receiver
        self.batch = batch
        # Every round sends an event to the same subscriptions: one attempt slowed past the slow lane's 2 s by
        # the shared machine would put its subscription on the slow lane, and the next round would forward
        # that delivery instead of sending it. This figure is one batch's sends, so the lane is off here.
        services = stack.services
        self.services = dataclasses.replace(
            services, settings=services.settings.model_copy(update={"slow_queue_url": ""})
        )
        self.sqs = stack.sqs()
        self.worker = Worker(self.services)
        self.calls = AwsCallLog()
        self.calls.instrument(self.services.store.client, self.services.queue.client)
        self.handle_times: list[tuple[float, float]] = []
        self.cpu_times: list[float] = []
        source = delivery_event_source()
        self.poller = SqsPoller(
            self.sqs,
            self.services.settings.queue_url,
            self._timed_handle,
            batch_size=source.batch_size,
            function_timeout_seconds=source.function_timeout_seconds,
        )
        self.tenant = make_tenant(self.services)
        self.subscriptions = make_subscriptions(self.services, self.tenant.id, batch, receiver.url)
        self.standin = AwsStandIn([self.services.store.client, self.services.queue.client])
        self.standin_peaks: list[int] = []
        self.standin_answered = 0

    def _timed_handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        cpu = time.process_time()
        started = time.perf_counter()
        try:
            return self.worker.handle(event, context)
        finally:
            self.handle_times.append((started, time.perf_counter()))
            self.cpu_times.append(time.process_time() - cpu)

    def round(self, delay: float) -> Round:
        messages = published_deliveries(self.services, self.poller, self.tenant.id, self.batch)
        self.receiver.reset(delay)
        self.handle_times.clear()
        self.calls.reset()
        result = self.poller.invoke(messages)
        self._check(len(messages), result.deleted, result.failed)
        return self._round(delay)

    def standin_round(self, delay: float, *, new_connections: bool = False) -> Round:
        """The batch as it runs against AWS (``benchmarks.aws_standin``): run on moto with its calls recorded,
        then the same SQS event handled again with every call answered from the recording, concurrently; with
        ``new_connections``, the HTTP client's connections are closed before, and each delivery opens one."""
        messages = published_deliveries(self.services, self.poller, self.tenant.id, self.batch)
        self.receiver.reset(delay)
        with self.standin.recording():
            recorded = self.poller.invoke(messages)
        self._check(len(messages), recorded.deleted, recorded.failed)
        self.receiver.reset(delay)
        self.handle_times.clear()
        self.calls.reset()
        # The worker keeps the events it read: it would not read this one again, and the replay would be less work.
        self.worker.events = EventCache(self.worker)
        context = LambdaContext(self.poller.function_name, self.poller.timeout, time.time(), aws_request_id="standin")
        if new_connections:
            self.worker.loop.run_until_complete(self._close_connections())
        with self.standin.answering():
            response = self._timed_handle(sqs_event(messages, self.poller.queue_arn), context)
        if new_connections and (opened := self._connections()) != self.batch:
            raise BenchmarkError(f"the batch of {self.batch} was to open as many connections; it opened {opened}")
        failed = len((response or {}).get("batchItemFailures", []))
        stats = self.standin.stats()
        if stats["misses"]:
            raise BenchmarkError(
                f"the AWS stand-in had no recorded answer for {len(stats['misses'])} calls, e.g. {stats['misses'][0]}"
            )
        made = sum(self.calls.counts(*self.handle_times[-1]).values())
        if stats["unused"] or stats["answered"] != made:
            raise BenchmarkError(
                f"the stand-in was given {stats['recorded']} answers and {stats['unused']} were never asked for; the "
                f"run against it made {made} AWS calls and it answered {stats['answered']}: the two runs must do the "
                "same work"
            )
        self.standin_peaks.append(stats["peak_in_flight"])
        self.standin_answered = stats["answered"]
        self._check(len(messages), len(messages) - failed, failed)
        return self._round(delay)

    def _pools(self) -> list[Any]:
        """The connection pools of the worker's HTTP clients (httpcore's, under httpx's transport)."""
        return [client.transport._pool for client in http_clients(self.worker.loop)]

    async def _close_connections(self) -> None:
        for pool in self._pools():
            await pool.aclose()  # the pool stays usable: its connections are closed and forgotten

    def _connections(self) -> int:
        """The connections the worker's HTTP clients hold (all kept, open, after a batch: up to 256 per client)."""
        return sum(len(pool.connections) for pool in self._pools())

    def _check(self, messages: int, settled: int, failed: int) -> None:
        """Every message of the batch settled, and the receiver answered each of its deliveries once."""
        answered = self.receiver.stats()["count"]
        if failed or settled != messages or answered != self.batch:
            raise BenchmarkError(
                f"expected {self.batch} successful deliveries in {messages} messages; the worker settled {settled} "
                f"messages, reported {failed} failures, and the receiver answered {answered}"
            )

    def _round(self, delay: float) -> Round:
        (started, finished) = self.handle_times[-1]
        stats = self.receiver.stats()
        return Round(
            delay=delay,
            handle_s=finished - started,
            aws_busy_s=self.calls.busy_seconds(started, finished),
            aws_calls=self.calls.counts(started, finished),
            aws_described=self.calls.describe(started, finished),
            cpu_s=self.cpu_times[-1],
            receiver=stats,
            call_median_s=median([end - start for _, start, end in self.calls.between(started, finished)] or [0.0]),
        )

    def client_cpu_per_call(self, calls: int = 100) -> float:
        """CPU this process spends on one DynamoDB GetItem (boto3's side only when moto is a server)."""
        sub = self.subscriptions[0]
        started = time.process_time()
        for _ in range(calls):
            self.services.store.subscriptions.get(sub.tenant_id, sub.id)
        return (time.process_time() - started) / calls

    def close(self) -> None:
        try:
            settle_all([self.worker])
        finally:
            self.standin.close()


def run(
    *,
    batch: int = 100,
    latency: float = 0.2,
    rounds: int = 3,
    moto: str = "server",
    moto_deepcopy: bool = False,
    out: Any = print,
) -> Result:
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    if moto != "server":
        # moto in process answers inside botocore, before a request could be sent to the AWS stand-in.
        raise BenchmarkError("the delivery benchmark needs moto as a server (moto='server')")
    result = Result("delivery", f"Concurrent delivery: one invocation with {batch} deliveries (moto {moto})")
    with local_stack(moto=moto, moto_deepcopy=moto_deepcopy) as stack, ReceiverProcess(latency) as receiver:
        bench = _Bench(stack, receiver, batch)
        try:
            measured_latency = measure_receiver_latency(receiver.url)
            receiver.reset(0.0)
            cold = bench.round(0.0)  # the first invocation pays for the HTTP client, threads, caches
            instant: list[Round] = []
            slow: list[Round] = []
            for _ in range(rounds):
                instant.append(bench.round(0.0))
                slow.append(bench.round(latency))
            standin = [bench.standin_round(latency) for _ in range(rounds)]
            connecting = [bench.standin_round(latency, new_connections=True) for _ in range(rounds)]
            client_cpu = bench.client_cpu_per_call()
        finally:
            bench.close()

    def mid(rounds_: list[Round]) -> Round:
        return sorted(rounds_, key=lambda item: item.handle_s)[len(rounds_) // 2]

    fast, typical, stood_in, connected = mid(instant), mid(slow), mid(standin), mid(connecting)
    batch_s = typical.handle_s
    latency_added = median([pair[1].handle_s - pair[0].handle_s for pair in zip(instant, slow, strict=True)])
    aws_calls = sum(typical.aws_calls.values())
    peak = typical.receiver["peak_in_flight"]
    where = "Herald, boto3 and httpx only" if moto == "server" else "moto included"
    result.measured.update(
        {
            "batch_size_count": batch,
            "rounds_count": rounds,
            "receiver_latency_s": measured_latency,
            "batch_s": batch_s,
            "batch_min_s": min(item.handle_s for item in slow),
            "batch_instant_receiver_s": fast.handle_s,
            # Run-to-run noise: the spread of the same batch (instant receiver) run `rounds` times.
            "batch_instant_spread_s": max(item.handle_s for item in instant) - min(item.handle_s for item in instant),
            "batch_first_cold_s": cold.handle_s,
            "latency_added_s": latency_added,
            "worker_cpu_s": typical.cpu_s,
            "worker_cpu_per_delivery_s": typical.cpu_s / batch,
            "aws_client_cpu_per_call_s": client_cpu,
            "aws_busy_s": typical.aws_busy_s,
            "aws_calls_count": aws_calls,
            "receiver_peak_in_flight_count": peak,
            "receiver_arrival_spread_s": typical.receiver["arrival_spread_s"],
            "receiver_span_s": typical.receiver["span_s"],
            # The same batch handled again with its AWS calls answered by the stand-in (benchmarks.aws_standin).
            "standin_batch_s": stood_in.handle_s,
            "standin_batch_min_s": min(item.handle_s for item in standin),
            # Run-to-run noise of batch_wall_time and cpu_ms_per_delivery: the spread of their own `rounds` runs.
            "standin_batch_spread_s": max(item.handle_s for item in standin) - min(item.handle_s for item in standin),
            "standin_worker_cpu_spread_s": max(item.cpu_s for item in standin) - min(item.cpu_s for item in standin),
            "standin_call_latency_s": LATENCY_S,
            "standin_call_median_s": stood_in.call_median_s,
            "standin_aws_calls_count": sum(stood_in.aws_calls.values()),
            "standin_aws_busy_s": stood_in.aws_busy_s,
            # The median of the rounds' CPU times (the round of median wall time need not be the one of median CPU).
            "standin_worker_cpu_s": median([item.cpu_s for item in standin]),
            "standin_worker_cpu_per_delivery_s": median([item.cpu_s for item in standin]) / batch,
            "standin_receiver_peak_in_flight_count": stood_in.receiver["peak_in_flight"],
            "standin_peak_aws_calls_in_flight_count": max(bench.standin_peaks),
            "standin_answered_count": bench.standin_answered,
            # The same rounds again, each delivery on a new connection (the client's closed before the replay).
            "standin_new_connections_batch_s": connected.handle_s,
            "standin_new_connections_worker_cpu_per_delivery_s": median([item.cpu_s for item in connecting]) / batch,
        }
    )
    out(f"  receiver latency (one POST, median of 5)   {measured_latency * 1000:7.0f} ms")
    out(f"  batch, slow receiver (median)              {batch_s * 1000:7.0f} ms   (runs: {_list(slow)} ms)")
    out(f"  batch, instant receiver (median)           {fast.handle_s * 1000:7.0f} ms   (runs: {_list(instant)} ms)")
    out(f"  first batch of a new worker (instant)      {cold.handle_s * 1000:7.0f} ms")
    out(
        f"  batch, slow receiver, AWS stand-in (median) {stood_in.handle_s * 1000:6.0f} ms   "
        f"(runs: {_list(standin)} ms; each call answered after {LATENCY_S * 1000:.0f} ms, concurrently; "
        f"worker CPU {stood_in.cpu_s * 1000:.0f} ms; {stood_in.aws_described})"
    )
    out(
        f"  the same, every delivery on a new connection {connected.handle_s * 1000:4.0f} ms   "
        f"(runs: {_list(connecting)} ms; worker CPU {connected.cpu_s * 1000:.0f} ms)"
    )
    out(f"  latency added (slow - instant, median)     {latency_added * 1000:7.0f} ms")
    out(
        f"  worker CPU in the slow batch ({where}): {typical.cpu_s * 1000:.0f} ms, "
        f"{typical.cpu_s / batch * 1000:.1f} ms per delivery, of which ~{client_cpu * aws_calls / batch * 1000:.1f} ms "
        f"in boto3 ({aws_calls / batch:.1f} calls x {client_cpu * 1000:.2f} ms CPU, from 100 serial GetItem calls)"
    )
    out(f"  AWS calls: {typical.aws_busy_s * 1000:.0f} ms with >= 1 in flight; {typical.aws_described}")
    out(
        f"  receiver: at most {peak:.0f} requests in flight, arrivals spread over "
        f"{typical.receiver['arrival_spread_s'] * 1000:.0f} ms, first arrival to last answer "
        f"{typical.receiver['span_s'] * 1000:.0f} ms"
    )
    result.ratios += [
        Ratio("batch time / receiver latency", batch_s, measured_latency, "s", "~1 (not 100)"),
        Ratio(f"batch time / serial ({batch} x latency)", batch_s, batch * measured_latency, "s", f"~1/{batch}"),
        Ratio("latency added / receiver latency", latency_added, measured_latency, "s", "<= 1 (100 if serial)"),
        Ratio("receiver peak in flight / batch size", peak, batch, "", "1"),
        Ratio("worker CPU for the batch / receiver latency", typical.cpu_s, measured_latency, "s", "< 1 (I/O-bound)"),
    ]
    result.notes.append(
        f"the batch made {aws_calls} AWS calls ({aws_calls / batch:.1f} per delivery); moto serves them one at a time "
        f"({typical.aws_busy_s * 1000:.0f} ms of the {batch_s * 1000:.0f} ms had one in flight), so under moto the "
        "batch time is bound by moto, and the latency-added ratio is the measure of concurrency"
    )
    return result


def _list(rounds: list[Round]) -> str:
    return ", ".join(f"{item.handle_s * 1000:.0f}" for item in rounds)
