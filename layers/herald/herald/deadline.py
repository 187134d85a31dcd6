"""The time an API request served by Lambda has left for its AWS calls.

``herald.api.middleware.Deadline`` sets ``REQUEST_DEADLINE`` from the Lambda context; every AWS client Herald makes
(``herald.aws``) checks it before each attempt of a call. Outside such a request (the worker, the CLI, the local
stack) none is set and nothing is checked.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from botocore.exceptions import BotoCoreError

logger = logging.getLogger(__name__)

#: When the answer of the API request being served is due (``time.monotonic()``); None outside a request served
#: by Lambda.
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("herald_request_deadline", default=None)


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
