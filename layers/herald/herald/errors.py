"""Herald's domain errors. Adapters raise them; only the HTTP edge maps them to status codes."""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""

    code = "herald_error"
    #: The event the error is about, when the answer must name it (an event stored and not fully queued).
    event_id: str | None = None

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFoundError(HeraldError):
    """The resource does not exist, or belongs to someone else."""

    code = "not_found"


class ConflictError(HeraldError):
    """The request conflicts with the current state of the resource."""

    code = "conflict"


class IdempotencyConflictError(ConflictError):
    """An idempotency key or event id was reused with a different request."""

    code = "idempotency_key_reused"


class EventExpiredError(ConflictError):
    """The event is no longer kept (its retention ended): nothing is left to send."""

    code = "event_expired"


class InvalidInputError(HeraldError):
    """The request is well-formed but its content is not acceptable."""

    code = "invalid_input"


class RequestShapeError(InvalidInputError):
    """A part of the request does not match its expected shape: what FastAPI answers a whole body that does not
    (``validation_error``), for a part the app validates itself (an event of a batch)."""

    code = "validation_error"


class InvalidCursorError(InvalidInputError):
    """A pagination cursor was not issued by Herald for this listing."""

    code = "invalid_cursor"


class UnknownEventTypeError(InvalidInputError):
    """An event type is not in the catalog."""

    code = "unknown_event_type"


class UrlNotAllowedError(InvalidInputError):
    """A subscriber URL is refused by the delivery policy."""

    code = "url_not_allowed"


class PayloadTooLargeError(HeraldError):
    """A request body or event payload is over its size limit."""

    code = "payload_too_large"


class AuthenticationError(HeraldError):
    """Credentials are missing or not valid."""

    code = "unauthorized"


class PermissionDeniedError(HeraldError):
    """The caller is authenticated but its role may not do this."""

    code = "forbidden"


class ServiceUnavailableError(HeraldError):
    """A dependency (DynamoDB, SQS, Secrets Manager) could not be reached; the request can be retried."""

    code = "service_unavailable"


class OutcomeUnknownError(ServiceUnavailableError):
    """A write whose call failed without an answer to go by, and that was not found afterwards (or could not be read
    back): it may have been made, or be made yet (a request that timed out can still arrive)."""


class AttemptUnderWay(ServiceUnavailableError):
    """A job's ticket cannot be ended now: an attempt of its delivery is under way (``JobRepository.end_ticket``); the
    same request, once the attempt is over, can."""
