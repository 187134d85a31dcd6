"""The DeliveryFunction's schedule, emulated: what EventBridge Scheduler does for the local stack, from the
``ScheduleV2`` event in template.yaml (its rate and its input), the way ``poller`` emulates the SQS event."""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald.local.resources import (
    DELIVERY_FUNCTION_ID,
    TemplateResourceNotFoundError,
    function_properties,
    load_template,
)

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours)\)$")
_UNIT_SECONDS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}


@dataclass(frozen=True)
class ScheduleSettings:
    interval_seconds: int
    input: dict[str, Any]


def delivery_schedule(template: dict[str, Any] | None = None) -> ScheduleSettings:
    """The DeliveryFunction's one ScheduleV2 event: how often it runs and with which input."""
    template = template if template is not None else load_template()
    events = [
        event.get("Properties", {})
        for event in (function_properties(template, DELIVERY_FUNCTION_ID).get("Events") or {}).values()
        if isinstance(event, dict) and event.get("Type") == "ScheduleV2"
    ]
    if len(events) != 1:
        raise TemplateResourceNotFoundError(f"{DELIVERY_FUNCTION_ID} needs one ScheduleV2 event, found {len(events)}")
    match = _RATE.match(str(events[0].get("ScheduleExpression", "")))
    if match is None:
        raise TemplateResourceNotFoundError("the local stack emulates rate(N minutes|hours) schedules only")
    return ScheduleSettings(int(match[1]) * _UNIT_SECONDS[match[2]], json.loads(events[0].get("Input", "{}")))


def run_schedule(
    stop: threading.Event, schedule: ScheduleSettings, handler: Callable[[dict[str, Any], Any], Any]
) -> None:
    """Invoke ``handler`` with the schedule's input every interval until ``stop`` is set."""
    while not stop.wait(schedule.interval_seconds):
        try:
            handler(schedule.input, None)
        except Exception:
            logger.exception("the scheduled invocation failed; the next one runs on time")
