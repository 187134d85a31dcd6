"""The delivery worker's metrics, in CloudWatch Embedded Metric Format (Powertools Metrics).

One EMF document per invocation (``flush`` at its end; more when a metric has more than EMF's 100
values a document). CloudWatch turns the log lines into metrics: no PutMetricData call, no
extra latency. The only dimension is the service: a subscription or tenant dimension would make one
billed metric per customer; per-subscription numbers are in the stats the API serves instead.

Each metric is billed ($0.30 a month) for every hour it is written in. A deployment writes the ``CORE``
metrics, which its alarms read and which say whether webhooks arrive, on time and once; the others, which say
why not, are written only with ``HERALD_DETAILED_METRICS`` (template parameter ``DetailedMetrics``).
"""

from __future__ import annotations

import json
from enum import StrEnum

from aws_lambda_powertools.metrics import MetricResolution, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

SERVICE = "herald"
#: The most values one metric may have in an EMF document (CloudWatch's embedded metric format specification: a
#: target member's array holds at most 100). Powertools' ``MAX_METRICS``, also 100, is metrics per document.
MAX_VALUES_PER_METRIC = 100


class Metric(StrEnum):
    SUCCEEDED = "DeliverySucceeded"  # attempts answered with a 2xx
    FAILED = "DeliveryFailed"  # attempts made that failed (any other answer, or none)
    RETRIED = "DeliveryRetried"  # failed attempts after which another one is scheduled
    EXHAUSTED = "DeliveryExhausted"  # deliveries that failed for good
    REFUSED = "DeliveryRefused"  # attempts not made: the URL policy refused the address
    POSTPONED = "DeliveryPostponed"  # attempts put off by the subscription's rate limit
    LATENCY = "DeliveryLatency"  # milliseconds of one attempt
    PUBLISH_LATENCY = "PublishToDeliveryLatency"  # milliseconds from the event's creation to an attempt's response
    TO_SLOW_LANE = "DeliveryToSlowLane"  # delivery messages forwarded to the slow lane before any attempt
    HANDED_OVER = "AttemptHandedToSlowLane"  # attempts cut short on the work queue and tried again on the slow lane
    MARKED_SLOW = "SubscriptionMarkedSlow"  # subscriptions put on the slow lane by a slow or timed-out attempt
    BREAKER_OPENED = "BreakerOpened"  # circuit breakers opened after timeouts in a row
    BREAKER_HELD = "DeliveryHeldByBreaker"  # deliveries rescheduled, without an attempt, while a breaker is open
    FANOUT_SIZE = "FanoutSize"  # deliveries queued by one fan-out message
    QUEUE_AGE = "QueueAgeAtPickup"  # seconds between a delivery message's sending and its first pickup
    DUPLICATE_SENDS = "DuplicateSends"  # first attempts sent by two copies of one message at once (one recorded)
    SWEEP_LAG = "ScheduleSweepLag"  # seconds the schedule's sweep is behind (0 while it keeps up), once a sweep


#: Written by every deployment: those the alarms read (``template.yaml``: successes, failures, the sweep's lag), and
#: the deliveries failed for good, how late webhooks arrive, and how often one is sent twice. The others are written
#: only with detailed metrics.
CORE: frozenset[Metric] = frozenset(
    {
        Metric.SUCCEEDED,
        Metric.FAILED,
        Metric.EXHAUSTED,
        Metric.PUBLISH_LATENCY,
        Metric.DUPLICATE_SENDS,
        Metric.SWEEP_LAG,
    }
)

_UNITS = {
    Metric.LATENCY: MetricUnit.Milliseconds,
    Metric.PUBLISH_LATENCY: MetricUnit.Milliseconds,
    Metric.QUEUE_AGE: MetricUnit.Seconds,
    Metric.SWEEP_LAG: MetricUnit.Seconds,
}


class DeliveryMetrics:
    """Each worker has its own metric set (Powertools' ``Metrics`` class shares one per process, which
    two workers on two threads, as in the local stack and tests, would interleave).

    Values are kept here until ``flush`` and serialised by Powertools then: its ``add_metric`` formats the
    metric's whole list of values for a debug line on every call, whether debug logging is on or not, so a
    batch of 100 deliveries paid for each list a hundred times over (about a fifteenth of the worker's CPU)."""

    def __init__(self, namespace: str, *, detailed: bool, service: str = SERVICE) -> None:
        self._provider = AmazonCloudWatchEMFProvider(namespace=namespace, service=service)
        self._written = frozenset(Metric) if detailed else CORE
        self._values: dict[Metric, list[float]] = {}

    def add(self, metric: Metric, value: float = 1) -> None:
        """Keep a value of ``metric`` for the next flush (nothing for a detailed metric, unless they are written)."""
        if metric in self._written:
            self._values.setdefault(metric, []).append(float(value))

    def flush(self) -> None:
        """Print the EMF documents of what was added since the last flush (nothing if nothing was): one, or
        more when a metric holds more than EMF's 100 values a document."""
        pending, self._values = self._values, {}
        if is_metrics_disabled():
            return
        while pending:
            document = {
                metric.value: {
                    "Unit": _UNITS.get(metric, MetricUnit.Count).value,
                    "StorageResolution": MetricResolution.Standard.value,
                    "Value": values[:MAX_VALUES_PER_METRIC],
                }
                for metric, values in pending.items()
            }
            print(json.dumps(self._provider.serialize_metric_set(metrics=document), separators=(",", ":")))
            pending = {
                metric: values[MAX_VALUES_PER_METRIC:]
                for metric, values in pending.items()
                if len(values) > MAX_VALUES_PER_METRIC
            }
