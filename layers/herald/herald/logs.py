"""The functions' log lines: Powertools' structured JSON, with what a line needs and no more.

Each line is paid for at ingestion (CloudWatch Logs, $0.50 a GB), and the delivery function writes one per
attempt: the line of a delivered webhook is its largest log cost (with ``LogSuccessfulAttempts: false`` a
deployment writes only the failures' lines; the delivery log keeps every attempt). Powertools'
``inject_lambda_context`` puts the function's name, memory size and ARN on every line, which the log group (one
per function) already says; they are left out, as is the asyncio task's name that Python 3.12 adds to every
record. Each line keeps the invocation's request id and whether it was a cold start, beside its own fields.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

#: Keys ``inject_lambda_context`` adds that every line of a function's log group would repeat alike.
REPEATED_CONTEXT_KEYS = ("function_name", "function_memory_size", "function_arn")

type Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def function_logger() -> Logger:
    """The parent of Herald's loggers (``service=herald``), for a function's entry point."""
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # (Python 3.12+) no ``taskName`` on every record
    return Logger(service="herald")


def logged(logger: Logger) -> Callable[[Handler], Handler]:
    """A Lambda handler whose log lines carry the invocation's request id and cold start, and none of the keys
    that every line of its log group would repeat."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def lines_trimmed(event: dict[str, Any], context: Any) -> dict[str, Any]:
            logger.remove_keys(REPEATED_CONTEXT_KEYS)
            return handler(event, context)

        injected: Handler = logger.inject_lambda_context(lines_trimmed)
        return injected

    return decorate
