"""What can go wrong on the operator's side of the API, each with a stable code like the API's own."""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """Base of the errors the ``herald`` command reports as ``error: <code>: <message>``."""

    code = "cli_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class CliConfigError(CliError):
    """The API's URL or key is not configured and could not be read from the stack."""

    code = "not_configured"


class CliConnectionError(CliError):
    """The API could not be reached (refused, DNS, TLS, timeout)."""

    code = "connection_failed"


class CliApiError(CliError):
    """The API answered with an error (its ``{"error": {"code", "message", "details"}}`` shape)."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.details = details or []
        #: A 429 or 503 not asked again because its wait would end past the request's deadline.
        self.out_of_time = False
