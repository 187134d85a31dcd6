"""A deployment's limits on what tenants store, checked at the API edge against the settings.

The OpenAPI schema states each limit's ceiling, which is also its default; a deployment may set a lower
limit (``HERALD_MAX_*``), which is enforced here. Anything over a limit is a 422 ``limit_exceeded`` whose
``details`` name the field and, in ``type``, the setting (``max_description_length``, ...). Sizes of whole
bodies are the body-size middleware's (413), of event data the publisher's (413).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from herald.errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from herald.settings import Settings


class LimitExceededError(InvalidInputError):
    """A value is over one of the deployment's limits."""

    code = "limit_exceeded"


def _problem(field: str, limit: str, message: str) -> dict[str, Any]:
    return {"loc": ["body", field], "msg": message, "type": limit}


def metadata_size(metadata: Mapping[str, str]) -> int:
    """Bytes of the metadata as compact JSON (UTF-8), the measure ``max_metadata_bytes`` bounds."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())


def _metadata_problems(settings: Settings, metadata: Mapping[str, str] | None) -> list[dict[str, Any]]:
    if metadata is None:
        return []
    size = metadata_size(metadata)
    if size <= settings.max_metadata_bytes:
        return []
    message = f"metadata is {size} bytes as JSON; the limit is {settings.max_metadata_bytes}"
    return [_problem("metadata", "max_metadata_bytes", message)]


def _raise(problems: list[dict[str, Any]]) -> None:
    if problems:
        raise LimitExceededError("; ".join(problem["msg"] for problem in problems), details=problems)


def check_tenant(settings: Settings, *, metadata: Mapping[str, str] | None) -> None:
    _raise(_metadata_problems(settings, metadata))


def check_subscription(
    settings: Settings,
    *,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """The fields given (None: not given) against the deployment's limits."""
    problems: list[dict[str, Any]] = []
    if url is not None and len(url) > settings.max_url_length:
        message = f"the URL is {len(url)} characters; the limit is {settings.max_url_length}"
        problems.append(_problem("url", "max_url_length", message))
    if event_types is not None and len(event_types) > settings.max_event_types_per_subscription:
        limit = settings.max_event_types_per_subscription
        message = f"{len(event_types)} event types; the limit is {limit} (or subscribe to '*')"
        problems.append(_problem("event_types", "max_event_types_per_subscription", message))
    if description is not None and len(description) > settings.max_description_length:
        message = f"the description is {len(description)} characters; the limit is {settings.max_description_length}"
        problems.append(_problem("description", "max_description_length", message))
    problems += _metadata_problems(settings, metadata)
    _raise(problems)


def too_many_subscriptions(limit: int) -> LimitExceededError:
    """The error for a tenant that already has ``limit`` subscriptions."""
    return LimitExceededError(
        f"the tenant already has {limit} subscriptions, the most it may have; delete one first",
        details=[{"loc": ["body"], "msg": f"at most {limit} subscriptions", "type": "max_subscriptions_per_tenant"}],
    )


def too_many_api_keys(limit: int) -> LimitExceededError:
    """The error for a new API key of a tenant that already holds ``limit``."""
    return LimitExceededError(
        f"the tenant already holds {limit} API keys, the most it may; revoke one first, or rotate (`revoke_existing`)",
        details=[{"loc": ["body"], "msg": f"at most {limit} API keys", "type": "max_api_keys_per_tenant"}],
    )


def too_many_recoveries(limit: int) -> LimitExceededError:
    """The error for a new recovery of a subscription whose ``limit`` recoveries are all unfinished."""
    return LimitExceededError(
        f"the subscription has {limit} recoveries unfinished, the most it may have at once; wait for one to be done "
        "(GET its progress) or ask again for the window of one still running",
        details=[{"loc": ["body"], "msg": f"at most {limit} at once", "type": "max_recoveries_per_subscription"}],
    )
