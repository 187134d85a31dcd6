"""The time an API request served by Lambda, or the schedule's sweep, has left for its AWS calls.

``herald.api.middleware.Deadline`` sets ``REQUEST_DEADLINE`` from the Lambda context; the schedule's sweep
(``herald.worker.sweeper``) sets it to its invocation's end. Every AWS client Herald makes (``herald.aws``) checks it
before each attempt of a call. Elsewhere (the worker's deliveries, the CLI, the local stack) none is set and nothing
is checked.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError

if TYPE_CHECKING:
    from herald.settings import Settings

logger = logging.getLogger(__name__)

#: When the answer of the API request being served is due (``time.monotonic()``); None outside a request served
#: by Lambda.
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("herald_request_deadline", default=None)
#: How long an attempt of an AWS call waits to connect.
CONNECT_SECONDS = 3


def attempt_seconds(settings: Settings) -> float:
    """The longest one attempt of an AWS call may take: to connect, then to wait for its answer."""
    return CONNECT_SECONDS + settings.aws_read_timeout_seconds


def time_to_start_calls() -> float | None:
    """How long attempts of AWS calls may still be started in the request being served (``within_deadline``: each
    must be able to end before its deadline), None outside a request with a deadline."""
    deadline = REQUEST_DEADLINE.get()
    if deadline is None:
        return None
    from herald.settings import get_settings

    return deadline - attempt_seconds(get_settings()) - time.monotonic()


class OutOfTime(BotoCoreError):
    """An attempt of an AWS call not made: it might have ended past the request's deadline. A ``BotoCoreError``, so
    that every caller takes it as it takes an AWS outage (a 503, a batch's item answered on its own), and not one
    botocore retries (``ConnectionError``)."""

    fmt = "AWS answered too slowly for this request to finish in time"


def within_deadline(attempt_seconds: float, event_name: str = "", **_: Any) -> None:
    """botocore's ``before-send`` hook (each attempt, retries included): an attempt that might not end before the
    request's deadline, were it to wait its whole connect and read timeouts (``attempt_seconds``), is not made. The
    request answers 503 (``Retry-After``) in Herald's shape, each item of a batch on its own, instead of being cut off
    by Lambda's timeout, which API Gateway answers with a bare 5xx of its own."""
    deadline = REQUEST_DEADLINE.get()
    if deadline is not None and time.monotonic() + attempt_seconds > deadline:
        logger.warning("AWS call not made: the request's time is up", extra={"call": event_name})
        raise OutOfTime
