"""Herald's storage: one DynamoDB table (``table``), its key layout (``keys``) and one repository per kind
of item, each returning typed records and raising ``herald.errors`` errors.

``Store`` gathers them, so code reads ``store.subscriptions.get(...)``, ``store.deliveries.claim(...)``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from herald.storage.deliveries import DeliveryRepository, DeliveryState
from herald.storage.events import EventExistsError, EventRepository, StoredEvent
from herald.storage.health import AttemptTally, HealthRepository, SubscriptionHealth
from herald.storage.isolation import IsolationRepository
from herald.storage.jobs import JobRepository
from herald.storage.portal import PortalRepository
from herald.storage.schedule import ScheduleRepository
from herald.storage.subscriptions import Route, SubscriptionRepository
from herald.storage.table import PageResult, Table
from herald.storage.tenants import TenantRepository

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "AttemptTally",
    "DeliveryState",
    "EventExistsError",
    "PageResult",
    "Route",
    "Store",
    "StoredEvent",
    "SubscriptionHealth",
    "Table",
]


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

    @property
    def client(self) -> DynamoDBClient:
        return self.table.client

    @property
    def table_name(self) -> str:
        return self.table.name
