"""Peak memory of a delivery batch, in a process that holds only what the DeliveryFunction holds.

The worker runs in a child process (``python -m benchmarks.memory --child``) that imports the
delivery function's modules and boto3, and talks to a moto server and a slow receiver, each in its
own process. The parent publishes an event and runs its fan-out, then tells the child to receive the
batch and handle it. For each batch the child reports the peak of traced Python allocations
(``tracemalloc``) or the peak resident set size (``VmHWM``, reset before the batch; measured without
tracemalloc, which adds its own memory). The baseline is a batch of one delivery, measured alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.results import Ratio, Result

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def _status(*names: str) -> dict[str, int]:
    """Fields of /proc/self/status, in bytes."""
    values: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in names:
                values[key] = int(value.split()[0]) * 1024
    return values


def _child() -> None:
    """Work the batches the parent announces on stdin, one JSON line each: ``{"count", "mode"}``."""
    import tracemalloc

    import boto3

    from herald.delivery import Worker
    from herald.local.poller import SqsPoller
    from herald.services import Services

    services = Services.create()
    worker = Worker(services)
    sqs = boto3.client("sqs")
    queue_url = services.settings.queue_url
    poller = SqsPoller(sqs, queue_url, worker.handle, batch_size=10_000, function_timeout_seconds=60)
    print(json.dumps({"ready": True, "rss": _status("VmRSS")["VmRSS"]}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        count, mode = int(command["count"]), command["mode"]
        messages: list[Any] = []
        deadline = time.monotonic() + 60
        while len(messages) < count and time.monotonic() < deadline:
            response = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=min(10, count - len(messages)), AttributeNames=["All"]
            )
            messages += response.get("Messages", [])
        report: dict[str, Any] = {"received": len(messages)}
        if mode == "trace":
            tracemalloc.start()
        else:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                refs.write("5")  # resets VmHWM to the current RSS
        report["rss_before"] = _status("VmRSS")["VmRSS"]
        started = time.perf_counter()
        result = poller.invoke(messages)
        report["seconds"] = time.perf_counter() - started
        report["deleted"] = result.deleted
        if mode == "trace":
            report["traced_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            report["rss_peak"] = _status("VmHWM")["VmHWM"]
        print(json.dumps(report), flush=True)


def run(*, batch: int = 100, latency: float = 0.2, out: Any = print) -> Result:
    from benchmarks.core import BenchmarkError, event_in, local_stack, make_subscriptions, make_tenant, receive_exactly
    from benchmarks.receiver import ReceiverProcess
    from herald.delivery import Worker, settle_all
    from herald.local.poller import SqsPoller
    from herald.local.resources import DELIVERY_FUNCTION_ID, function_properties, load_template
    from herald.publishing import publish

    memory_size = int(function_properties(load_template(), DELIVERY_FUNCTION_ID).get("MemorySize", 128))
    result = Result("memory", f"Peak memory of a delivery batch of {batch} (worker alone in its process)")
    with local_stack(moto="server") as stack, ReceiverProcess(latency) as receiver:
        services = stack.services
        sqs = stack.sqs()
        queue_url = services.settings.queue_url
        one, many = make_tenant(services, "One"), make_tenant(services, "Many")
        make_subscriptions(services, one.id, 1, receiver.url)
        make_subscriptions(services, many.id, batch, receiver.url)
        fanout_worker = Worker(services)
        poller = SqsPoller(sqs, queue_url, fanout_worker.handle)
        environment = {
            **os.environ,
            **stack.resources.environment(),
            "HERALD_ALLOW_PRIVATE_URLS": "true",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.memory", "--child"],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        reports: dict[tuple[str, int], dict[str, Any]] = {}
        try:
            ready = json.loads(child.stdout.readline() or "{}")
            if not ready.get("ready"):
                raise BenchmarkError("the worker process did not start")
            plan = [("rss", 1), ("rss", 1), ("rss", batch), ("trace", 1), ("trace", batch)]
            for mode, count in plan:  # the first batch warms the worker up (HTTP client, threads, caches)
                publish(services, event_in((one if count == 1 else many).id), idempotency_key=None)
                if poller.invoke(receive_exactly(sqs, queue_url, 1)).deleted != 1:
                    raise BenchmarkError("the fan-out message was not settled")
                child.stdin.write(json.dumps({"count": count, "mode": mode}) + "\n")
                child.stdin.flush()
                report = json.loads(child.stdout.readline() or "{}")
                if report.get("deleted") != count:
                    raise BenchmarkError(f"the worker settled {report.get('deleted')} of {count} deliveries")
                reports[(mode, count)] = report
        finally:
            child.stdin.close()
            child.wait(30)
            child.stdout.close()
            settle_all([fanout_worker])

    rss_one, rss_many = reports[("rss", 1)], reports[("rss", batch)]
    traced_one, traced_many = reports[("trace", 1)]["traced_peak"], reports[("trace", batch)]["traced_peak"]
    rss_growth_many = rss_many["rss_peak"] - rss_many["rss_before"]
    rss_growth_one = rss_one["rss_peak"] - rss_one["rss_before"]
    per_delivery = (traced_many - traced_one) / max(1, batch - 1)
    result.measured.update(
        {
            "worker_rss_at_start_mib": ready["rss"] / MIB,
            "worker_rss_before_batch_mib": rss_many["rss_before"] / MIB,
            "worker_rss_peak_mib": rss_many["rss_peak"] / MIB,
            "rss_growth_batch_mib": rss_growth_many / MIB,
            "rss_growth_one_mib": rss_growth_one / MIB,
            "traced_peak_batch_mib": traced_many / MIB,
            "traced_peak_one_mib": traced_one / MIB,
            "traced_per_delivery_kib": per_delivery / 1024,
        }
    )
    out(
        f"  worker process RSS: {ready['rss'] / MIB:.1f} MiB after imports, "
        f"{rss_many['rss_before'] / MIB:.1f} MiB warm, "
        f"peak {rss_many['rss_peak'] / MIB:.1f} MiB during the batch of {batch}"
    )
    out(
        f"  RSS growth during a batch: {rss_growth_many / MIB:.1f} MiB for {batch}, "
        f"{rss_growth_one / MIB:.1f} MiB for 1"
    )
    out(
        f"  traced Python allocations, peak: {traced_many / MIB:.2f} MiB for {batch}, {traced_one / MIB:.2f} MiB for 1 "
        f"(~{per_delivery / 1024:.0f} KiB per delivery in flight)"
    )
    result.ratios += [
        Ratio(f"traced peak, batch of {batch} / batch of 1", traced_many / MIB, traced_one / MIB, "MiB", f"<< {batch}"),
        Ratio("worker peak RSS / DeliveryFunction MemorySize", rss_many["rss_peak"] / MIB, memory_size, "MiB", "< 0.5"),
    ]
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        _child()
    else:
        sys.exit("usage: python -m benchmarks.memory --child (run by the memory benchmark)")
