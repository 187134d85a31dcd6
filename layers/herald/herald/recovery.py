"""Recovery and redelivery: one more attempt of deliveries, exactly once per job.

A *recovery* (``rcv_``) re-sends every failed delivery of one subscription created in a window
(``since`` .. ``until``, at most ``recovery_max_days`` back): after an outage of the subscriber, each
event it missed arrives exactly once more. A *redelivery* (``rdl_``, operator) sends one event once
more to every subscription it goes to, also to subscriptions created after it was published.

Both are jobs on the work queue, processed a page at a time with continuation messages (like a fan-out).
For each delivery a job re-sends, it takes a *ticket*: in one transaction, the delivery's recovery
lock (``DELIVERY#<dlv>`` / ``RECOVERY``: no other job may queue it meanwhile) and the job's ticket
(``RECOVERY#<job>`` / ``DLV#<dlv>``, state ``open``). The delivery message it queues carries the job
id; the worker claims the delivery only while the job holds the lock, and the transaction that
records the attempt also uses the ticket up (``sent`` or ``failed``) and frees the lock. So a
duplicated message, a page read twice or a second job over the same deliveries never sends twice,
and a worker that dies mid-attempt leaves the ticket open for the message's next receive.

The extra attempt is a single shot, like a manual retry (trigger ``recover``, or ``manual`` for a
redelivery): it does not reopen the retry schedule. If it fails, the delivery stays failed and the
job counts it as failed; a later recovery can try again. A job's counts are read from its tickets,
so they are exact however often its messages ran; it is ``done`` once every delivery it found was
listed and each one's attempt was made.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from herald import ids
from herald.errors import ConflictError, InvalidInputError, NotFoundError
from herald.messages import DeliveryMessage, RecoverMessage, RedeliverMessage
from herald.models import (
    WILDCARD,
    DeliveryStatus,
    RecoveryIn,
    RecoveryJob,
    RecoveryStatus,
    RedeliveryOut,
    Trigger,
    utcnow,
)
from herald.store import event_of

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from herald.delivery import Worker
    from herald.messages import WorkMessage
    from herald.models import Subscription
    from herald.queue import WorkQueue
    from herald.services import Services

logger = logging.getLogger(__name__)

RECOVERY = "rcv"
REDELIVERY = "rdl"
#: Deliveries read per query page of a recovery.
PAGE_SIZE = 100
#: Deliveries handled by one job message before it hands over to a continuation message.
MAX_PER_MESSAGE = 2_000
#: A job message stops reading pages when its invocation has less time left than this.
MIN_SECONDS_LEFT = 15.0
#: How long a delivery's recovery lock lasts if its message never runs (the job's attempt is then given up).
LOCK_SECONDS = 24 * 3600
#: How long an identical recovery request finds a job that has not finished.
WINDOW_LOCK_SECONDS = 24 * 3600


def _enqueue(queue: WorkQueue, message: WorkMessage) -> None:
    queue.send(message)


async def _io[T](worker: Worker, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking AWS call on the worker's thread pool."""
    return await worker.loop.run_in_executor(worker.executor, lambda: function(*args, **kwargs))


def _utc(moment: datetime, field: str) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # a time at the very edge of the calendar, with no UTC value
        raise InvalidInputError(
            f"`{field}` is out of range",
            details=[{"loc": ["body", field], "msg": "no UTC value", "type": "out_of_range"}],
        ) from exc


# --- the API side ------------------------------------------------------------------------------------


def start_recovery(services: Services, sub: Subscription, body: RecoveryIn) -> RecoveryJob:
    """Queue a recovery of ``sub``'s failed deliveries in the window, or return the job already at work on
    the same window (an identical request while it runs)."""
    now = utcnow()
    oldest = now - timedelta(days=services.settings.recovery_max_days)
    since = _utc(body.since, "since")
    until = _utc(body.until, "until") if body.until is not None else now
    if since < oldest:
        raise InvalidInputError(
            f"`since` may be at most {services.settings.recovery_max_days} days ago",
            details=[{"loc": ["body", "since"], "msg": f"before {oldest.isoformat()}", "type": "too_old"}],
        )
    if since >= until:
        raise InvalidInputError(
            "`since` must be before `until` (and before now when `until` is left out)",
            details=[{"loc": ["body", "since"], "msg": "not before `until`", "type": "empty_window"}],
        )
    request = f"{sub.id}|{since.isoformat()}|{until.isoformat() if body.until is not None else 'now'}"
    window = f"{sub.id}#{hashlib.sha256(request.encode()).hexdigest()[:32]}"
    store = services.store
    replaces: str | None = None
    for _ in range(3):
        job = RecoveryJob(
            id=ids.new_id(RECOVERY),
            tenant_id=sub.tenant_id,
            subscription_id=sub.id,
            since=since,
            until=until,
            status=RecoveryStatus.QUEUED,
            created_at=now,
            updated_at=now,
        )
        held = store.create_recovery_job(
            job,
            window=window,
            replaces=replaces,
            lock_expires_at=int(now.timestamp()) + WINDOW_LOCK_SECONDS,
            expires_at=_job_expiry(services, now),
        )
        if held is None:
            _enqueue(services.queue, RecoverMessage(job_id=job.id))
            logger.info("recovery queued", extra={"job_id": job.id, "subscription_id": sub.id})
            return job
        existing = read_recovery(services, held)
        if existing is not None and existing.status is not RecoveryStatus.DONE:
            if existing.status is RecoveryStatus.QUEUED:
                # Not started yet: its message may never have been sent (the first request failed midway, and
                # this is the caller's retry). Send it again; a job message that runs twice sends nothing twice.
                _enqueue(services.queue, RecoverMessage(job_id=existing.id))
            return existing
        replaces = held  # that one is finished: a new run over the same window
    raise ConflictError("the recovery could not be started: concurrent requests; retry")


def read_recovery(services: Services, job_id: str) -> RecoveryJob | None:
    """A job with its counts, read from its tickets, and its status."""
    found = services.store.get_recovery_job(job_id)
    if found is None:
        return None
    job, listed = found
    counts = services.store.recovery_ticket_counts(job.id)
    status = job.status
    if listed and counts["open"] == 0:
        status = RecoveryStatus.DONE
    return job.model_copy(
        update={
            "status": status,
            "queued": sum(counts.values()),
            "sent": counts["sent"],
            "failed": counts["failed"],
        }
    )


def start_redelivery(services: Services, event_id: str) -> RedeliveryOut:
    """Queue one more attempt of an event to every subscription it goes to (operator)."""
    item = services.store.get_event_item(event_id)
    if item is None:
        raise NotFoundError(f"event {event_id} not found")
    event = event_of(item)
    job_id = ids.new_id(REDELIVERY)
    _enqueue(services.queue, RedeliverMessage(job_id=job_id, event_id=event.id, tenant_id=event.tenant_id))
    logger.info("redelivery queued", extra={"job_id": job_id, "event_id": event.id})
    return RedeliveryOut(id=job_id, event_id=event.id, status=RecoveryStatus.QUEUED)


def _job_expiry(services: Services, now: datetime) -> int:
    return int((now + timedelta(days=services.settings.recovery_job_ttl_days)).timestamp())


# --- the worker side ------------------------------------------------------------------------------------


def _now(worker: Worker) -> datetime:
    return datetime.fromtimestamp(worker.clock(), UTC)


async def _take(worker: Worker, job_id: str, delivery_id: str) -> bool:
    return await _io(
        worker,
        worker.store.take_recovery_ticket,
        job_id,
        delivery_id,
        lock_seconds=LOCK_SECONDS,
        ticket_seconds=worker.settings.recovery_job_ttl_days * 86_400,
    )


async def _send(worker: Worker, messages: list[DeliveryMessage]) -> None:
    chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
    await asyncio.gather(*(_io(worker, worker.queue.send_batch, chunk) for chunk in chunks))


async def run_recovery(worker: Worker, message: RecoverMessage, deadline: float) -> None:
    """Pages of the subscription's failed deliveries in the window: take a ticket for each and queue its attempt."""
    store = worker.store
    found = await _io(worker, store.get_recovery_job, message.job_id)
    if found is None:
        logger.warning("recovery job no longer exists", extra={"job_id": message.job_id})
        return
    job, listed = found
    if listed:
        return  # a duplicate of a message whose job listed everything already
    log = {"job_id": job.id, "subscription_id": job.subscription_id}
    if job.status is RecoveryStatus.QUEUED:
        await _io(worker, store.update_recovery_job, job.id, updated_at=_now(worker), status=RecoveryStatus.RUNNING)
    cursor = message.cursor
    handled = 0
    while True:
        page = await _io(
            worker,
            store.query_deliveries_between,
            job.subscription_id,
            DeliveryStatus.FAILED,
            since=job.since,
            until=job.until,
            limit=PAGE_SIZE,
            cursor=cursor,
        )
        deliveries = [d for d in page.items if d.tenant_id == job.tenant_id]
        taken = await asyncio.gather(*(_take(worker, job.id, d.id) for d in deliveries))
        await _send(
            worker,
            [
                DeliveryMessage(
                    event_id=d.event_id,
                    tenant_id=d.tenant_id,
                    subscription_id=d.subscription_id,
                    trigger=Trigger.RECOVER,
                    recovery_id=job.id,
                )
                for d, ok in zip(deliveries, taken, strict=True)
                if ok
            ],
        )
        handled += len(page.items)
        if page.cursor is None:
            await _io(worker, store.update_recovery_job, job.id, updated_at=_now(worker), listed=True)
            logger.info("recovery listed every delivery", extra=log)
            return
        cursor = page.cursor
        if handled >= MAX_PER_MESSAGE or deadline - worker.clock() < MIN_SECONDS_LEFT:
            await _io(worker, _enqueue, worker.queue, RecoverMessage(job_id=job.id, cursor=cursor))
            return


async def run_redelivery(worker: Worker, message: RedeliverMessage, deadline: float) -> None:
    """Pages of the subscriptions an event goes to: a ticketed single attempt for each existing delivery,
    a regular first delivery for a subscription that never had the event."""
    store = worker.store
    item = await _io(worker, store.get_event_item, message.event_id)
    if item is None:
        logger.warning("redelivery of an event that no longer exists", extra={"event_id": message.event_id})
        return
    event = event_of(item)
    if message.tenant_id is None:
        # A broadcast: one redelivery message per tenant, a page of tenants at a time.
        page = await _io(worker, store.list_tenants, limit=100, cursor=message.cursor)
        for tenant in page.items:
            await _io(worker, _enqueue, worker.queue, message.model_copy(update={"tenant_id": tenant.id}))
        if page.cursor is not None:
            await _io(worker, _enqueue, worker.queue, message.model_copy(update={"cursor": page.cursor}))
        return
    tenant_id = message.tenant_id
    routes = [event.type, WILDCARD]
    route = message.route if message.route in routes else routes[0]
    cursor = message.cursor
    handled = 0
    while True:
        marker = f"redeliver|{message.job_id}|{tenant_id}|{route}|{cursor or ''}"
        sub_ids, next_cursor = await _io(
            worker, store.query_routes, tenant_id, route, limit=worker.settings.fanout_page_size, cursor=cursor
        )
        delivery_ids = [ids.delivery_id(event.id, sub_id) for sub_id in sub_ids]
        existing = await asyncio.gather(*(_io(worker, store.get_delivery, d) for d in delivery_ids))
        again = [sub for sub, found in zip(sub_ids, existing, strict=True) if found is not None]
        first = [sub for sub, found in zip(sub_ids, existing, strict=True) if found is None]
        taken = await asyncio.gather(*(_take(worker, message.job_id, ids.delivery_id(event.id, sub)) for sub in again))
        messages = [
            DeliveryMessage(
                event_id=event.id,
                tenant_id=tenant_id,
                subscription_id=sub,
                trigger=Trigger.MANUAL,
                recovery_id=message.job_id,
            )
            for sub, ok in zip(again, taken, strict=True)
            if ok
        ]
        messages += [DeliveryMessage(event_id=event.id, tenant_id=tenant_id, subscription_id=sub) for sub in first]
        if first:
            # Deliveries the original fan-out never made: the event counts them, once however often this runs.
            await _io(
                worker, store.count_fanout, event.id, marker, expires_at=int(item["expires_at"]), matched=len(first)
            )
        await _send(worker, messages)
        handled += len(sub_ids)
        if next_cursor is None and route == routes[-1]:
            logger.info("redelivery queued every subscription", extra={"job_id": message.job_id, "event_id": event.id})
            return
        if next_cursor is None:
            route, cursor = routes[routes.index(route) + 1], None
        else:
            cursor = next_cursor
        if handled >= MAX_PER_MESSAGE or deadline - worker.clock() < MIN_SECONDS_LEFT:
            continuation = message.model_copy(update={"route": route, "cursor": cursor})
            await _io(worker, _enqueue, worker.queue, continuation)
            return


async def deliver(worker: Worker, message: DeliveryMessage, record: SQSRecord, deadline: float) -> None:
    """A job's delivery message: make its one attempt if the job's ticket is still open, else let it go."""
    job_id = message.recovery_id
    assert job_id is not None
    store = worker.store
    delivery_id = ids.delivery_id(message.event_id, message.subscription_id)
    log = {"job_id": job_id, "delivery_id": delivery_id, "event_id": message.event_id}
    state, holder = await _io(worker, store.get_recovery_ticket, job_id, delivery_id)
    if state != "open":
        # Used up already (a duplicate message, or one whose attempt was recorded before a crash), or never
        # taken: nothing to send.
        logger.info("job delivery already attempted: dropped", extra={**log, "ticket": state})
        return
    if holder != job_id:
        logger.warning("the job's recovery lock expired before its attempt: given up", extra=log)
        await _io(worker, store.close_recovery_ticket, job_id, delivery_id, "failed")
        return
    delivery, event, sub = await asyncio.gather(
        _io(worker, store.get_delivery, delivery_id),
        _io(worker, store.get_event_item, message.event_id),
        _io(worker, store.get_subscription, message.tenant_id, message.subscription_id),
    )
    if delivery is None or event is None or sub is None:
        logger.info("job delivery cannot be attempted: its delivery, event or subscription is gone", extra=log)
        await _io(worker, store.close_recovery_ticket, job_id, delivery_id, "failed")
        return
    await worker.deliver(message, record, deadline)
