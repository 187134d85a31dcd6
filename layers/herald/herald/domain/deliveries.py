"""A tenant's deliveries: finding one of its subscription's, retrying it, and the subscription's stats."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from herald import ids
from herald.domain import subscriptions
from herald.errors import AttemptUnderWay, EventExpiredError, NotFoundError, ServiceUnavailableError
from herald.messages import DeliveriesMessage, DeliveryMessage, PoisonMessageError, RecoverMessage, parse_message
from herald.queue import MAX_DELAY_SECONDS
from herald.records import Delivery, DeliveryStatus, ErrorKind, Trigger
from herald.schemas import SubscriptionStats
from herald.storage.deliveries import kept_until
from herald.storage.schedule import scheduled_name
from herald.storage.table import malformed_request

if TYPE_CHECKING:
    from collections.abc import Sequence

    from herald.records import Subscription
    from herald.services import Services
    from herald.storage import DeliveryState, StoredEvent

logger = logging.getLogger(__name__)


def find(
    services: Services, tenant_id: str, subscription_id: str, delivery_id: str, *, what: str = "subscription"
) -> Delivery:
    """The delivery of the tenant's subscription; any other is as absent as a missing one (``NotFoundError``, its
    subscription named ``what``)."""
    subscriptions.find(services, tenant_id, subscription_id, what=what)
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


def fail_discarded(services: Services, body: str, *, now: datetime | None = None) -> list[Delivery]:
    """Fail, without an attempt, the deliveries whose next attempt the work message ``body`` carried, as it is
    discarded from the dead-letter queue (``herald.dlq``): nothing else would make that attempt, and the delivery
    would read ``pending`` until its item expired. Each is failed as ``discarded``, listed under its status and
    counted failed for its event (in one transaction with its write), so a retry (``POST .../retry``) or a
    recovery of the subscription sends it again.

    Only a message that carries its delivery along the schedule: a first delivery (one of several, or alone), a
    retry or a postponement. An extra attempt (manual, a recovery's, a job's ticket) leaves its delivery as it
    was; a job's has its ticket settled ``failed`` (its lock on the delivery freed), so that the job still reaches
    ``done``, and another recovery may take the delivery, instead of the job reading ``running`` until it expires,
    but while an attempt of the delivery is under way (``JobRepository.end_ticket``): its record settles it.
    A recovery's listing message (``RecoverMessage``) ends its job (``_end_recovery``).
    A delivery is failed only while no other copy of its message may still carry it on (``_carried_on``); a first
    delivery never written is written failed, while its event, of the message's tenant, and its subscription are
    there. Returns the deliveries failed; a body this code cannot read carries none.

    DynamoDB failing for a while raises ``ServiceUnavailableError``: the message must then stay, to be discarded
    again (what was done already is done, each delivery with its count). A delivery whose items cannot be read (a
    corrupt item) or whose writes DynamoDB refuses as malformed (``malformed_request``) is logged and left as it
    is: nothing this code can write would settle it."""
    try:
        message = parse_message(body)
    except PoisonMessageError:
        return []
    if isinstance(message, DeliveriesMessage):
        carried = message.each()
    elif isinstance(message, DeliveryMessage) and message.carries_schedule:
        carried = [message]
    else:
        if isinstance(message, DeliveryMessage) and message.job_id is not None:
            # Unless an attempt of the delivery is under way (a copy of this message's, a page run again: its record
            # settles the ticket, and would be refused by a ticket settled here; or another's, which would not):
            # ``AttemptUnderWay`` keeps the message, to be discarded again once it is over.
            _end_tickets(services, message.job_id, message.subscription_id, [message.delivery_id])
        elif isinstance(message, RecoverMessage):
            _end_recovery(services, message.job_id, now or datetime.now(UTC))
        return []
    now = now or datetime.now(UTC)
    events: dict[str, StoredEvent | None] = {}
    failed: list[Delivery] = []
    for delivery in carried:
        try:
            if delivery.event_id not in events:
                events[delivery.event_id] = services.store.events.get(delivery.event_id)
            settled = _fail_one(services, delivery, events[delivery.event_id], now)
        except Exception as exc:
            if isinstance(exc, ServiceUnavailableError) and not malformed_request(exc):
                raise  # DynamoDB failing for a while: the message stays, to be discarded again
            left = {"delivery_id": delivery.delivery_id}
            logger.exception("a discarded message's delivery is left as it is: it cannot be settled", extra=left)
            continue
        if settled is not None:
            failed.append(settled)
    if failed:
        logger.warning(
            "deliveries failed: the message carrying them was discarded",
            extra={"deliveries": [delivery.id for delivery in failed]},
        )
    return failed


def _end_recovery(services: Services, job_id: str, now: datetime) -> None:
    """End a recovery whose listing message is discarded: its listing went on only through that message. Each ticket
    still open (a delivery queued and not attempted yet, or taken by a run that died before queueing it, which no
    message would ever settle) is settled ``failed``, its lock freed, but for a delivery whose attempt is under way
    (its record settles it), and the job is listed: ``done``, instead of reading ``running`` until it expires,
    holding its window and one of its subscription's recovery slots for a day. A new recovery of the window sends
    what this one did not. Made again whole if DynamoDB fails midway."""
    store = services.store
    found = store.jobs.get(job_id)
    if found is None:
        return  # expired, with its tickets
    job = found.job
    store.jobs.update(job_id, updated_at=now, listed=True)
    _end_tickets(services, job_id, job.subscription_id, store.jobs.open_tickets(job_id, None))
    logger.warning("recovery ended: its listing message was discarded", extra={"job_id": job_id})


def _end_tickets(services: Services, job_id: str, sub_id: str, delivery_ids: list[str]) -> None:
    """End the job's tickets for these deliveries of ``sub_id`` (``JobRepository.end_ticket``), their items' keys read
    together. One whose delivery has an attempt under way is left, the others ended all the same, and then
    ``AttemptUnderWay`` is raised: the discarded message stays, and discarded again it ends what is left."""
    store = services.store
    stored = store.deliveries.stored_keys(sub_id, delivery_ids)
    under_way: AttemptUnderWay | None = None
    for delivery_id in delivery_ids:
        try:
            store.jobs.end_ticket(job_id, delivery_id, delivery=stored.get(delivery_id))
        except AttemptUnderWay as exc:
            under_way = under_way or exc
    if under_way is not None:
        raise under_way


def _fail_one(
    services: Services, message: DeliveryMessage, stored: StoredEvent | None, now: datetime
) -> Delivery | None:
    """``fail_discarded`` for one delivery (``stored``: its event as read): the delivery failed now, or None."""
    if stored is not None and not (
        stored.named_by(message.tenant_id, None) and stored.has_delivery(message.subscription_id, message.delivery_id)
    ):
        stored = None  # an event published again under its id since: not this delivery's
    # Counted failed on its event, with its write, unless the event reads its counts from its deliveries.
    count: list[dict[str, Any]] = []
    if stored is not None and not stored.counted_from_delivery(message.subscription_id):
        count = [services.store.events.count_action(stored.event.id, expires_at=stored.expires_at, deltas=FAILED_ONE)]
    state = services.store.deliveries.get_state(message.subscription_id, message.delivery_id, message.event_id)
    if state is None:
        return _fail_unwritten(services, message, stored, now, count) if stored is not None else None
    if state.delivery.tenant_id != message.tenant_id or state.delivery.status is not DeliveryStatus.PENDING:
        return None
    if _carried_on(services, state, now, message.job_id):
        return None
    return services.store.deliveries.fail_unsendable(
        message.tenant_id,
        message.subscription_id,
        message.delivery_id,
        message.event_id,
        now=now,
        kind=ErrorKind.DISCARDED,
        as_read=state,
        also=count,
    )


#: A delivery failed, as its event counts it.
FAILED_ONE = {DeliveryStatus.FAILED.value: 1}


def _carried_on(services: Services, state: DeliveryState, now: datetime, job_id: str | None) -> bool:
    """Whether another copy of the delivery's message (of ``job_id``'s, the discarded one's) may still carry it on:
    its next attempt (a retry) is still to come, or due but its copy may not have come back yet
    (``_retry_on_its_way``), a worker holds its lease, or a worker held it back without an attempt, a copy of the
    message carrying it on (a rate limit, an open breaker, the slow lane, a put-off), and that copy may not have come
    back yet:

    - its hold's end (``held_until``: a rate limit's slot, however far behind a backlog, an open breaker's end, a
      put-off) is less than 15 minutes past: SQS's longest delay bounds how late a scheduled copy is queued;
    - or it was held (``held_at``) recently enough for any hold: a copy forwarded at once (the slow lane) comes back
      once that lane gets to it, and an item written before holds said their end names only when. Twice the
      breaker's longest hold (``breaker_max_open_seconds`` and its spread) and 15 minutes more bound every hold but a
      slow lane further behind.

    What the discarded message itself left (an expired lease: its worker died) says nothing of another copy."""
    due = state.delivery.next_attempt_at
    if (due is not None and _retry_on_its_way(services, state.delivery, due, now, job_id)) or (
        state.lease_until >= now.timestamp()
    ):
        return True
    if state.held_until > now.timestamp() - MAX_DELAY_SECONDS:
        return True
    horizon = 2 * services.settings.breaker_max_open_seconds + MAX_DELAY_SECONDS
    return state.held_at > now.timestamp() - horizon


def _retry_on_its_way(services: Services, delivery: Delivery, due: datetime, now: datetime, job_id: str | None) -> bool:
    """Whether the copy of a message that makes ``delivery``'s retry due at ``due`` may not have come back yet: the
    retry is still to come; or its copy, delayed by SQS (a wait up to 15 minutes), became visible less than 15 minutes
    ago, as a held copy's grace (below); or its copy waits in the schedule (a longer wait) for a sweep, however far
    behind the sweeps are: its item is read (one GetItem a name, only for a retry due more than 15 minutes ago). A
    copy the sweeps queued more than 15 minutes after it fell due, and no worker has received yet, is not seen."""
    if due.timestamp() > now.timestamp() - MAX_DELAY_SECONDS:
        return True
    names = {scheduled_name(delivery.event_id, delivery.subscription_id, job) for job in (None, job_id)}
    return any(services.store.schedule.holds(name, due.timestamp()) for name in names)


def _fail_unwritten(
    services: Services,
    message: DeliveryMessage,
    stored: StoredEvent,
    now: datetime,
    also: Sequence[dict[str, Any]],
) -> Delivery | None:
    """A first delivery that was never written (its worker died before its attempt was recorded), written failed
    unless it exists, or its subscription does not."""
    if services.store.subscriptions.get(message.tenant_id, message.subscription_id) is None:
        return None
    created = stored.event.created_at if stored.deliveries_by_subscription else now
    delivery = Delivery(
        id=message.delivery_id,
        event_id=stored.event.id,
        subscription_id=message.subscription_id,
        tenant_id=message.tenant_id,
        event_type=stored.event.type,
        status=DeliveryStatus.FAILED,
        last_error_kind=ErrorKind.DISCARDED,
        created_at=created,
        updated_at=now,
    )
    expires_at = kept_until(now, services.settings.attempt_ttl_days, stored.expires_at)
    written = services.store.deliveries.list_new(delivery, scheduled_attempts=0, expires_at=expires_at, also=also)
    return delivery if written else None
