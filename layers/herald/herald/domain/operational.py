"""Operational events: Herald tells the operator about its subscriptions' health.

The operator registers endpoints with the admin key (``/v1/operator/webhooks``). They are ordinary
subscriptions of a reserved tenant that has no API key and an unlisted record (no listing or broadcast
sees it), so tenants can neither see them nor act for it; Herald publishes operational events
(``catalog.operational_catalog``) to that tenant through the normal path (stored event, fan-out, signed and
retried deliveries, attempt log).

Each operational event has an id derived from what it reports (``subscription.disabled`` of this
subscription at this time, ``delivery.failing`` of this delivery, ...), so a worker that reports the
same thing twice (a message shown twice, a crash and a retry) publishes it once. Nothing is stored
or queued when the operator has no endpoint for the event type: one Query decides.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from herald import ids
from herald.records import WILDCARD

if TYPE_CHECKING:
    from herald.services import Services

logger = logging.getLogger(__name__)

#: The reserved tenant whose subscriptions are the operator's endpoints. Its tenant record is unlisted
#: (``TenantRepository.create_unlisted``: broadcasts and tenant listings skip it), and it never has API keys
#: (so only the admin key reaches them).
OPERATOR_TENANT_ID = f"{ids.TENANT}_{'0' * 26}"


class OperationalEventError(Exception):
    """An operational event that the catalog does not declare, or whose data does not fit it."""


def operational_event_id(event_type: str, *key: str) -> str:
    """The id of the operational event reporting ``event_type`` about ``key``: the same report, the same id."""
    digest = hashlib.sha256("\x1f".join((event_type, *key)).encode()).hexdigest()
    return f"{ids.OPERATIONAL_EVENT_PREFIX}{digest[:32]}"


def has_listeners(services: Services, event_type: str) -> bool:
    """Whether any enabled operator endpoint takes ``event_type``."""
    for route in (event_type, WILDCARD):
        sub_ids, _ = services.store.subscriptions.routed(OPERATOR_TENANT_ID, route, limit=1, cursor=None)
        if sub_ids:
            return True
    return False


def emit(services: Services, event_type: str, data: dict[str, Any], *, key: tuple[str, ...]) -> str | None:
    """Publish an operational event to the operator's endpoints, once per ``key``. Returns its id, or
    None when no endpoint takes it (nothing is stored then)."""
    # Imported here: the delivery worker imports this module, and a delivery that succeeds emits nothing, so its
    # cold start does not build the event catalog's models (nor validate its examples).
    from herald.catalog import operational_catalog
    from herald.domain.publishing import new_event, store_and_queue

    entry = operational_catalog.get(event_type)
    if entry is None:
        raise OperationalEventError(f"{event_type!r} is not an operational event type")
    if not has_listeners(services, event_type):
        return None
    payload = entry.validate(data)
    event = new_event(
        event_type, payload, tenant_id=OPERATOR_TENANT_ID, event_id=operational_event_id(event_type, *key)
    )
    stored = store_and_queue(services, event, fingerprint=event.id)
    if stored.queued:
        logger.info("operational event published", extra={"event_id": stored.stored.event.id, "event_type": event_type})
    return stored.stored.event.id
