"""The DeliveryFunction's events, emulated as Lambda and EventBridge would deliver them, from ``template.yaml``:
its SQS event sources (``poller`` polls each with these settings), its DynamoDB stream event source
(``stream_poller``) and its ``ScheduleV2`` schedule (the sweep)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald.local.poller import LambdaContext
from herald.local.resources import (
    DELIVERY_FUNCTION_ID,
    LAMBDA_DEFAULT_TIMEOUT_SECONDS,
    SQS_EVENT_DEFAULT_BATCH_SIZE,
    TABLE_ID,
    WORK_QUEUE_ID,
)
from herald.local.template import (
    Resolver,
    TemplateResourceNotFoundError,
    function_properties,
    load_template,
    references,
    refuse_unknown,
)

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)


#: Each event type's properties the local stack emulates, and those with no local meaning (names, descriptions, the
#: cloud side's encryption, metrics and roles). Any other is refused, as a resource's untranslatable property is: an
#: event source set up in the template and silently left out here would make the local stack behave otherwise.
_EMULATED = {
    "SQS": frozenset(
        {"Queue", "BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes", "ScalingConfig"}
    ),
    "DynamoDB": frozenset(
        {
            "Stream",
            "StartingPosition",
            "BatchSize",
            "MaximumBatchingWindowInSeconds",
            "MaximumRetryAttempts",
            "FilterCriteria",
            "FunctionResponseTypes",
        }
    ),
    "ScheduleV2": frozenset({"ScheduleExpression", "Input"}),
}
_NO_LOCAL_MEANING = {
    "SQS": frozenset({"KmsKeyArn", "MetricsConfig"}),
    "DynamoDB": frozenset({"KmsKeyArn", "MetricsConfig"}),
    "ScheduleV2": frozenset(
        {"OmitName", "Name", "Description", "GroupName", "KmsKeyArn", "PermissionsBoundary", "RoleArn"}
    ),
}
#: Properties within properties: ``ScalingConfig`` and ``FilterCriteria``.
_EMULATED_WITHIN = {"ScalingConfig": frozenset({"MaximumConcurrency"}), "FilterCriteria": frozenset({"Filters"})}
_EMULATED_WITHIN_NAMES = frozenset(f"{outer}.{inner}" for outer, inners in _EMULATED_WITHIN.items() for inner in inners)


def _emulated_events(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The properties of each of the delivery function's events of type ``kind``, in template order, refusing any
    property the local stack does not emulate (``TemplateTranslationError`` naming it)."""
    found = []
    for name, event in (function_properties(template, DELIVERY_FUNCTION_ID).get("Events") or {}).items():
        if not isinstance(event, dict) or event.get("Type") != kind:
            continue
        spec = event.get("Properties") or {}
        within = {
            f"{outer}.{inner}"
            for outer in _EMULATED_WITHIN
            if isinstance(spec.get(outer), dict)
            for inner in spec[outer]
        }
        refuse_unknown(
            f"{DELIVERY_FUNCTION_ID} event {name} ({kind})",
            set(spec) | within,
            _EMULATED[kind] | _NO_LOCAL_MEANING[kind] | _EMULATED_WITHIN_NAMES,
            doing="emulate",
        )
        found.append(spec)
    return found


@dataclass(frozen=True)
class EventSourceSettings:
    """How Lambda would feed the delivery function from one of its queues (the local poller mimics it)."""

    batch_size: int
    maximum_batching_window_seconds: int
    function_timeout_seconds: int
    report_batch_item_failures: bool
    #: The template's logical id of the queue this event source reads.
    queue_id: str = WORK_QUEUE_ID
    #: ``ScalingConfig.MaximumConcurrency``: most invocations at once (None: no cap of its own).
    maximum_concurrency: int | None = None


def delivery_event_sources(template: dict[str, Any] | None = None) -> list[EventSourceSettings]:
    """Every SQS event of the delivery function (the work queue's, then the others in template order), with
    Globals and AWS defaults applied: the local stack and the tests poll each queue with its own settings."""
    template = template if template is not None else load_template()
    resolver = Resolver(template)
    properties = function_properties(template, DELIVERY_FUNCTION_ID)
    timeout = int(resolver.resolve(properties.get("Timeout", LAMBDA_DEFAULT_TIMEOUT_SECONDS)))
    sources: list[EventSourceSettings] = []
    for spec in _emulated_events(template, "SQS"):
        queues = [ref for ref in references(spec.get("Queue")) if ref in template.get("Resources", {})]
        if len(queues) != 1:
            raise TemplateResourceNotFoundError(
                f"an SQS event of {DELIVERY_FUNCTION_ID} names no queue of the template"
            )
        concurrency = (spec.get("ScalingConfig") or {}).get("MaximumConcurrency")
        sources.append(
            EventSourceSettings(
                batch_size=int(resolver.resolve(spec.get("BatchSize", SQS_EVENT_DEFAULT_BATCH_SIZE))),
                maximum_batching_window_seconds=int(resolver.resolve(spec.get("MaximumBatchingWindowInSeconds", 0))),
                function_timeout_seconds=timeout,
                report_batch_item_failures="ReportBatchItemFailures"
                in resolver.resolve(spec.get("FunctionResponseTypes", [])),
                queue_id=queues[0],
                maximum_concurrency=None if concurrency is None else int(resolver.resolve(concurrency)),
            )
        )
    sources.sort(key=lambda source: source.queue_id != WORK_QUEUE_ID)
    if not sources or sources[0].queue_id != WORK_QUEUE_ID or len({s.queue_id for s in sources}) != len(sources):
        raise TemplateResourceNotFoundError(
            f"{DELIVERY_FUNCTION_ID} needs exactly one SQS event on {WORK_QUEUE_ID} (and at most one per other queue)"
        )
    return sources


def delivery_event_source(template: dict[str, Any] | None = None) -> EventSourceSettings:
    """The delivery function's SQS event on the work queue (``delivery_event_sources``' first)."""
    return delivery_event_sources(template)[0]


#: Lambda's defaults for a DynamoDB stream event source: 100 records a batch, retried until they expire (-1).
STREAM_EVENT_DEFAULT_BATCH_SIZE = 100
STREAM_EVENT_DEFAULT_RETRIES = -1


@dataclass(frozen=True)
class StreamSourceSettings:
    """How Lambda would feed the delivery function from the table's stream (``StreamPoller`` mimics it)."""

    batch_size: int
    maximum_batching_window_seconds: int
    #: ``TRIM_HORIZON`` (every record the stream holds) or ``LATEST`` (from when the mapping starts).
    starting_position: str
    #: How many times a batch the function failed is handed over again (-1: until its records expire).
    maximum_retry_attempts: int
    #: The filter criteria's patterns, as written: a record is handed over if any matches (none: every record).
    patterns: tuple[str, ...]
    #: ``FunctionResponseTypes`` has ``ReportBatchItemFailures``: the function's response can fail part of a batch.
    report_batch_item_failures: bool = False


def delivery_stream_source(template: dict[str, Any] | None = None) -> StreamSourceSettings:
    """The DeliveryFunction's one DynamoDB event, on the stream of the template's table."""
    template = template if template is not None else load_template()
    resolver = Resolver(template)
    events = _emulated_events(template, "DynamoDB")
    if len(events) != 1 or list(references(events[0].get("Stream"))) != [TABLE_ID]:
        raise TemplateResourceNotFoundError(f"{DELIVERY_FUNCTION_ID} needs one DynamoDB event, on {TABLE_ID}'s stream")
    spec = events[0]
    filters = (spec.get("FilterCriteria") or {}).get("Filters") or []
    return StreamSourceSettings(
        batch_size=int(resolver.resolve(spec.get("BatchSize", STREAM_EVENT_DEFAULT_BATCH_SIZE))),
        maximum_batching_window_seconds=int(resolver.resolve(spec.get("MaximumBatchingWindowInSeconds", 0))),
        starting_position=str(resolver.resolve(spec["StartingPosition"])),
        maximum_retry_attempts=int(resolver.resolve(spec.get("MaximumRetryAttempts", STREAM_EVENT_DEFAULT_RETRIES))),
        patterns=tuple(str(resolver.resolve(entry["Pattern"])) for entry in filters),
        report_batch_item_failures="ReportBatchItemFailures" in resolver.resolve(spec.get("FunctionResponseTypes", [])),
    )


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours)\)$")
_UNIT_SECONDS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}


@dataclass(frozen=True)
class ScheduleSettings:
    interval_seconds: int
    input: dict[str, Any]
    #: The function's timeout: what its context says is left when an invocation starts.
    function_timeout_seconds: int = LAMBDA_DEFAULT_TIMEOUT_SECONDS


def delivery_schedule(template: dict[str, Any] | None = None) -> ScheduleSettings:
    """The DeliveryFunction's one ScheduleV2 event: how often it runs and with which input (and the function's
    timeout, with Globals and AWS's default applied)."""
    template = template if template is not None else load_template()
    properties = function_properties(template, DELIVERY_FUNCTION_ID)
    events = _emulated_events(template, "ScheduleV2")
    if len(events) != 1:
        raise TemplateResourceNotFoundError(f"{DELIVERY_FUNCTION_ID} needs one ScheduleV2 event, found {len(events)}")
    match = _RATE.match(str(events[0].get("ScheduleExpression", "")))
    if match is None:
        raise TemplateResourceNotFoundError("the local stack emulates rate(N minutes|hours) schedules only")
    timeout = int(Resolver(template).resolve(properties.get("Timeout", LAMBDA_DEFAULT_TIMEOUT_SECONDS)))
    return ScheduleSettings(int(match[1]) * _UNIT_SECONDS[match[2]], json.loads(events[0].get("Input", "{}")), timeout)


type ScheduledHandler = Callable[[dict[str, Any], Any], Any]


def run_schedule(
    stop: threading.Event,
    schedule: ScheduleSettings,
    handler: ScheduledHandler,
    *,
    concurrency: int = 1,
    new_handler: Callable[[], ScheduledHandler] | None = None,
) -> None:
    """Invoke ``handler`` with the schedule's input at a fixed rate until ``stop`` is set, each time with a context
    that gives it the function's timeout (as Lambda's does: the sweep works until shortly before it).

    The times are counted from the start: start + k x interval, as EventBridge Scheduler's ``rate()`` fires, however
    long each invocation takes. EventBridge invokes the function on time even while the last invocation runs, and
    Lambda runs the new one in another container: here up to ``concurrency`` invocations run at once (the local
    stack's cap on an event source's concurrent invocations, ``--workers``), each in its own thread with a handler
    of its own (``handler``, then ones from ``new_handler``: another worker, as another container, is needed
    because a worker runs one invocation at a time). At the cap (always, with ``concurrency`` 1 or no
    ``new_handler``: the invocation then runs in the calling thread), a time that comes while every handler is busy
    is kept until one is free and invoked at once then, as Lambda's throttling and EventBridge's retry would do;
    further times missed meanwhile come to that one invocation rather than a burst (a sweep queues everything due,
    so a second one straight after would find nothing more), and the times after it stay on the schedule.
    Invocations still running when ``stop`` is set are waited for."""
    interval = schedule.interval_seconds
    threaded = concurrency > 1 and new_handler is not None
    idle = [handler]
    made = 1
    lock = threading.Lock()
    freed = threading.Event()
    running: list[threading.Thread] = []

    def invoke(function: ScheduledHandler) -> None:
        context = LambdaContext(DELIVERY_FUNCTION_ID, schedule.function_timeout_seconds, time.time(), str(uuid.uuid4()))
        try:
            function(schedule.input, context)
        except Exception:
            logger.exception("the scheduled invocation failed; the next one runs on time")

    def invoke_and_free(function: ScheduledHandler) -> None:
        try:
            invoke(function)
        finally:
            with lock:
                idle.append(function)
                freed.set()

    def free_handler() -> ScheduledHandler | None:
        nonlocal made
        with lock:
            if idle:
                return idle.pop()
            if new_handler is not None and made < concurrency:
                made += 1
                return new_handler()
            freed.clear()
            return None

    start = time.monotonic()
    fires = 1  # the number of the next time: start + fires x interval
    try:
        while not stop.wait(max(0.0, start + fires * interval - time.monotonic())):
            if not threaded:
                invoke(handler)
            else:
                function = free_handler()
                while function is None:
                    if stop.is_set():
                        return
                    freed.wait(1)
                    function = free_handler()
                running[:] = [thread for thread in running if thread.is_alive()]
                running.append(
                    threading.Thread(
                        target=invoke_and_free, args=(function,), name="delivery-schedule-invocation", daemon=True
                    )
                )
                running[-1].start()
            # The next time; if it has passed already, the last one passed (invoked at once).
            passed = int((time.monotonic() - start) // interval) if interval > 0 else 0
            fires = max(fires + 1, passed)
    finally:
        for thread in running:
            thread.join()
