"""Which subscriptions an event goes to: the routing items of its type and of ``*``, through their filters.

Shared by the worker's fan-out and by redelivery (a page of routes at a time).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from herald.delivery_options import InvalidFilterError, filter_from_stored

if TYPE_CHECKING:
    from herald.records import Event
    from herald.storage import Route

logger = logging.getLogger(__name__)


def matching(event: Event, routed: list[Route]) -> tuple[list[str], int]:
    """The routed subscriptions whose filter takes ``event`` (those without one take every event), and how
    many filters skipped it. A stored filter that no longer compiles (a rule tightened since it was set) lets
    the event through: a filter only ever holds back deliveries the subscriber asked not to get."""
    matched: list[str] = []
    for route in routed:
        if route.filter is None or _passes(route.filter, event):
            matched.append(route.subscription_id)
    return matched, len(routed) - len(matched)


def _passes(stored: str, event: Event) -> bool:
    data = event.data  # parsed from the payload when first asked for: not the filter's error if it fails
    try:
        return filter_from_stored(stored).matches(event.type, data)
    except (InvalidFilterError, ValueError):
        logger.warning("a stored filter does not compile: the event goes through", extra={"event_id": event.id})
        return True
