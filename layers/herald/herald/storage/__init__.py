"""Herald's storage: one DynamoDB table (``table``), its key layout (``keys``) and one repository per kind
of item, each returning typed records and raising ``herald.errors`` errors.

``Store`` gathers them, so code reads ``store.subscriptions.get(...)``, ``store.deliveries.claim(...)``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herald.storage import keys
from herald.storage.deliveries import DeliveryRepository, DeliveryState, delivery_key, state_of
from herald.storage.events import EventExistsError, EventRepository, StoredEvent
from herald.storage.health import AttemptTally, HealthRepository, SubscriptionHealth
from herald.storage.isolation import IsolationRepository
from herald.storage.jobs import JobRepository
from herald.storage.portal import PortalRepository
from herald.storage.schedule import ScheduleRepository
from herald.storage.subscriptions import Route, SubscriptionRepository, subscription_of
from herald.storage.table import PageResult, Table
from herald.storage.tenants import TenantRepository

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from mypy_boto3_dynamodb import DynamoDBClient

    from herald.records import Subscription

__all__ = [
    "AttemptTally",
    "BatchRead",
    "DeliveryState",
    "EventExistsError",
    "PageResult",
    "Route",
    "Store",
    "StoredEvent",
    "SubscriptionHealth",
    "Table",
]


@dataclass(frozen=True)
class BatchRead:
    """Subscriptions (by tenant and id) and delivery states (by delivery id) read together; what is absent was
    not found (or has expired)."""

    subscriptions: dict[tuple[str, str], Subscription]
    states: dict[str, DeliveryState]
    #: Each subscription's failure streak (``consecutive_failures`` of its stats; 0 when it has none yet).
    streaks: dict[str, int]
    #: The events found (by id); one not found may have been written a moment before (an eventually
    #: consistent read need not show it yet): read it again, strongly.
    events: dict[str, StoredEvent] = field(default_factory=dict)


class Store:
    """The repositories over one table: ``tenants`` (and API keys), ``subscriptions`` (and routing),
    ``events``, ``deliveries`` (and attempts), ``jobs`` (recovery and redelivery), ``health`` (stats and
    rate slots), ``isolation`` (slow lane and circuit breaker), ``schedule`` (work due later than SQS can delay
    it), ``portal`` (portal links and sessions)."""

    def __init__(
        self, table_name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.table = Table(table_name, client=client, clock=clock)
        self.tenants = TenantRepository(self.table)
        self.subscriptions = SubscriptionRepository(self.table)
        self.events = EventRepository(self.table)
        self.deliveries = DeliveryRepository(self.table)
        self.jobs = JobRepository(self.table)
        self.health = HealthRepository(self.table)
        self.isolation = IsolationRepository(self.table)
        self.schedule = ScheduleRepository(self.table)
        self.portal = PortalRepository(self.table)

    def batch_read(
        self,
        subscriptions: Iterable[tuple[str, str]],
        deliveries: Iterable[tuple[str, str, str]],
        events: Iterable[str] = (),
    ) -> BatchRead:
        """Subscriptions, their failure streaks, delivery states (``deliveries``: each one's subscription, id and
        event) and events in one BatchGetItem (100 keys a call), eventually consistent (half the price of a
        strong read; a write of the last second may not show yet): what a worker's batch reads before it sends.
        An event never changes once written, so such a read finds it as it is, or not yet."""
        pairs = list(dict.fromkeys(subscriptions))
        streaks = dict.fromkeys((sub_id for _, sub_id in pairs), 0)
        wanted = [keys.subscription(tenant_id, sub_id) for tenant_id, sub_id in pairs]
        wanted += [keys.subscription_stats(sub_id) for sub_id in streaks]
        wanted += [delivery_key(*delivery) for delivery in dict.fromkeys(deliveries)]
        wanted += [keys.event(event_id) for event_id in dict.fromkeys(events)]
        subs: dict[tuple[str, str], Subscription] = {}
        states: dict[str, DeliveryState] = {}
        found: dict[str, StoredEvent] = {}
        for item in self.table.batch_get(wanted, consistent=False) if wanted else []:
            if keys.is_delivery(item):
                state = state_of(item)
                states[state.delivery.id] = state
            elif item["sk"] == keys.EVENT_SORT:
                try:
                    stored = StoredEvent.of(item)
                except Exception:
                    # Left out: the deliveries of an event that cannot be read fail on their own read, not the
                    # whole batch here.
                    logger.warning("an event item that cannot be read", extra={"pk": item["pk"]})
                    continue
                found[stored.event.id] = stored
            elif item["sk"] == keys.STATS_SORT:
                streaks[item["pk"].removeprefix(keys.STATS_PREFIX)] = int(item.get("consecutive_failures", 0))
            else:  # anything else asked for is a subscription
                sub = subscription_of(item)
                subs[sub.tenant_id, sub.id] = sub
        return BatchRead(subs, states, streaks, found)

    @property
    def client(self) -> DynamoDBClient:
        return self.table.client

    @property
    def table_name(self) -> str:
        return self.table.name
