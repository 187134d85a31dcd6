"""A tenant's deliveries: finding one of its subscription's, retrying it, and the subscription's stats."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from herald import ids
from herald.domain import subscriptions
from herald.errors import EventExpiredError, NotFoundError
from herald.messages import DeliveryMessage
from herald.records import Delivery, Trigger
from herald.schemas import SubscriptionStats

if TYPE_CHECKING:
    from herald.records import Subscription
    from herald.services import Services


def find(services: Services, tenant_id: str, subscription_id: str, delivery_id: str) -> Delivery:
    """The delivery of the tenant's subscription; any other is as absent as a missing one (``NotFoundError``)."""
    subscriptions.find(services, tenant_id, subscription_id)
    found = ids.is_id(delivery_id, ids.DELIVERY)
    delivery = services.store.deliveries.get(subscription_id, delivery_id) if found else None
    if delivery is None or delivery.subscription_id != subscription_id or delivery.tenant_id != tenant_id:
        raise NotFoundError(f"delivery {delivery_id} not found")
    return delivery


def retry(services: Services, delivery: Delivery) -> None:
    """One more attempt, right away (a manual attempt in the log), whatever the delivery's state, while its event is
    kept (``EventExpiredError`` after: a delivery's log is kept longer than its event when attempts were made late).
    The message carries the attempts made so far: one more attempt than ``delivery`` shows, never two, however
    often SQS hands the message over (a retry asked for twice before either ran makes one attempt too). A disabled
    subscription's delivery is refused (``ConflictError``), as a recovery is: it receives nothing until enabled."""
    sub = subscriptions.find(services, delivery.tenant_id, delivery.subscription_id)
    subscriptions.require_enabled(sub)
    stored = services.store.events.get(delivery.event_id)
    if stored is None or not stored.has_delivery(delivery.subscription_id, delivery.id):
        raise EventExpiredError(
            f"the event {delivery.event_id} of delivery {delivery.id} has expired: it cannot be sent again"
        )
    services.queue.send(DeliveryMessage.for_delivery(delivery, trigger=Trigger.MANUAL, attempts_seen=delivery.attempts))


def stats(services: Services, sub: Subscription) -> SubscriptionStats:
    """The subscription's delivery stats: success rate, latency percentiles, its lane and breaker."""
    return SubscriptionStats.of(services.store.health.get_stats(sub.id), sub, time.time())


def stats_of_many(services: Services, subs: list[Subscription]) -> list[SubscriptionStats]:
    """The stats of several subscriptions (one batch read), in their order."""
    found = services.store.health.get_stats_many([sub.id for sub in subs]) if subs else {}
    now = time.time()
    return [SubscriptionStats.of(found.get(sub.id, {}), sub, now) for sub in subs]
