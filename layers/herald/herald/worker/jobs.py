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

A redelivery respects payload filters as the fan-out does (the filter each routing item carries, as it is
now); a recovery re-sends deliveries that exist, so their event passed the filter when it was fanned out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from herald.errors import ServiceUnavailableError
from herald.messages import DeliveryMessage, RecoverMessage, RedeliverMessage
from herald.records import DeliveryStatus, Trigger
from herald.routing import matching
from herald.storage.events import COUNTED_APART
from herald.storage.jobs import FAILED, SKIPPED
from herald.worker import dispatch
from herald.worker.fanout import route_pages, send_concurrently, try_send_concurrently
from herald.worker.schedule import receive_count

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from herald.records import Delivery, RecoveryJob
    from herald.storage import StoredEvent
    from herald.worker.runtime import Worker

logger = logging.getLogger(__name__)

#: Deliveries read per query page of a recovery.
PAGE_SIZE = 100
#: Tenants read per page of a broadcast's redelivery (each gets a redelivery message of its own).
TENANTS_PER_PAGE = 100
#: Deliveries handled by one job message before it hands over to a continuation message.
MAX_PER_MESSAGE = 2_000
#: A job message stops reading pages when its invocation has less time left than this.
MIN_SECONDS_LEFT = 15.0
#: A listing not moved on for longer than this may be taken over by another first message of the job. Less than the
#: work queue's visibility timeout (360 s): a first message redriven from the dead-letter queue (with a new message
#: id), however it was redriven (Herald's redrive, or SQS's), comes at least that long after its last receive, and
#: each message of a chain moves the listing on (``renew_listing``) as it starts, running 60 s at most. Another
#: first message coming later than this (a repeated request's, behind a backlog) lists the job again: its tickets
#: keep every delivery to one attempt.
LISTER_IDLE_SECONDS = 5 * 60
#: A redelivery of an event whose fan-out is still open waits for it this long at a time (seconds), for as long as a
#: fan-out message failing each time takes to reach the dead-letter queue (``_fanout_waits``).
FANOUT_WAIT_SECONDS = 60
#: The work queue's visibility timeout (template.yaml): a message failing each time is received again this long after.
VISIBILITY_TIMEOUT_SECONDS = 360
#: Deliveries whose tickets a message run again looks at in one step (``_settle_left_behind``).
SETTLE_READS = 1000
#: How long a delivery's recovery lock lasts if its message never runs (its attempt is then given up). A message that
#: runs later (held back by a rate limit over a large recovery, or by a backlog) takes it again unless another job has.
LOCK_SECONDS = 24 * 3600


def _ticket_seconds(worker: Worker) -> int:
    """How long a job's tickets are kept: as long as the job."""
    return worker.settings.recovery_job_ttl_days * 86_400


async def _take(worker: Worker, job_id: str, delivery_id: str, *, page: str = "") -> bool:
    return await worker.io(
        worker.store.jobs.take_ticket,
        job_id,
        delivery_id,
        lock_seconds=LOCK_SECONDS,
        ticket_seconds=_ticket_seconds(worker),
        page=page,
    )


async def _take_page(worker: Worker, job_id: str, deliveries: list[Delivery], page: str) -> list[Delivery]:
    """Take the job's tickets for a page's deliveries: those it holds now. A page that took any notes it on the job
    (``JobRepository.reopen``): its counts, stored if it was found done meanwhile, no longer hold."""
    taken = await asyncio.gather(*(_take(worker, job_id, d.id, page=page) for d in deliveries))
    ticketed = [d for d, ok in zip(deliveries, taken, strict=True) if ok]
    if ticketed:
        await worker.io(worker.store.jobs.reopen, job_id, now=worker.now())
    return ticketed


def _fanout_waits(worker: Worker) -> int:
    """How often a redelivery waits for an open fan-out: ``MaxReceiveCount`` receives a visibility timeout apart (an
    hour by default), the longest a fan-out message failing each time stays on the work queue."""
    return worker.settings.max_receive_count * VISIBILITY_TIMEOUT_SECONDS // FANOUT_WAIT_SECONDS


async def _settle_left_behind(
    worker: Worker, job: RecoveryJob, page: str | None, listed: set[str], *, deadline: float | None = None
) -> None:
    """Settle the tickets an earlier run of this page (of any page: ``page`` None) took for deliveries it lists no more
    (``listed``). That run died between taking them and queueing their messages, or its send failed and it kept the
    tickets of messages SQS may hold (or giving the others back failed too): a delivery retried by hand since is no
    longer failed, and its ticket, with no message to settle it, would hold the job ``running`` for good. Settled as
    its message would have: ``skipped`` when the delivery is no longer failed, ``failed`` when it is gone. A delivery
    still failed (listed on another page now) keeps its ticket for it.

    The deliveries' states are read ``SETTLE_READS`` at a time (BatchGetItem calls side by side: thousands a
    second). With a ``deadline``, the look stops while the invocation still has time for its pages, logged: the
    rest waits for a later run again, if any (the open tickets of a job whose attempts wait behind a rate limit
    are read each time, and a look longer than the invocation would never let its pages be listed)."""
    store = worker.store
    left = [
        delivery_id
        for delivery_id in await worker.io(store.jobs.open_tickets, job.id, page)
        if delivery_id not in listed
    ]
    for start in range(0, len(left), SETTLE_READS):
        if deadline is not None and deadline - worker.clock() < 2 * MIN_SECONDS_LEFT:
            logger.warning(
                "tickets left behind not all looked at: time ran short",
                extra={"job_id": job.id, "looked_at": start, "open": len(left)},
            )
            return
        chunk = left[start : start + SETTLE_READS]
        found = await worker.io(store.deliveries.statuses, job.subscription_id, chunk)
        closes = [
            worker.io(store.jobs.close_ticket, job.id, delivery_id, SKIPPED if delivery_id in found else FAILED)
            for delivery_id in chunk
            if found.get(delivery_id) != DeliveryStatus.FAILED.value
        ]
        await asyncio.gather(*closes)


async def _subscription_deleted(worker: Worker, job: RecoveryJob) -> bool:
    """Whether the job's subscription is gone: one read a page of up to ``PAGE_SIZE`` deliveries."""
    return await worker.io(worker.store.subscriptions.get, job.tenant_id, job.subscription_id) is None


async def _settle_when_deleted(worker: Worker, job: RecoveryJob) -> None:
    """The job's subscription is gone and its listing stops: each ticket still open gets a message, which finds the
    subscription gone and settles it failed, as any of the job's messages does (``dispatch.deliver``). A ticket whose
    message is queued already is settled by whichever comes first (the other finds nothing to do); one an earlier
    run took and never queued (it died between), on a page no listing will run again, would otherwise hold the job
    ``running`` until it expires. A ticket of a delivery gone too is settled here."""
    store = worker.store
    open_ids = await worker.io(store.jobs.open_tickets, job.id, None)
    found = await asyncio.gather(*(worker.io(store.deliveries.get, job.subscription_id, d) for d in open_ids))
    messages = []
    for delivery_id, delivery in zip(open_ids, found, strict=True):
        if delivery is None:
            await worker.io(store.jobs.close_ticket, job.id, delivery_id, FAILED)
        else:
            messages.append(DeliveryMessage.for_delivery(delivery, trigger=Trigger.RECOVER, job_id=job.id))
    await send_concurrently(worker, messages)


async def _note_first(worker: Worker, job_id: str, delivery_id: str) -> None:
    await worker.io(worker.store.jobs.note_first, job_id, delivery_id, ticket_seconds=_ticket_seconds(worker))


async def run_recovery(
    worker: Worker, message: RecoverMessage, record: SQSRecord, deadline: float, *, redriven: bool = False
) -> None:
    """Pages of the subscription's failed deliveries in the window: take a ticket for each and queue its attempt.
    One chain of messages lists them: a first message (no cursor) starts only if it is the job's first to come,
    that same one received again, or one that finds the listing idle for five minutes
    (``JobRepository.start_listing``; a first message redriven from the dead-letter queue always does)."""
    store = worker.store
    found = await worker.io(store.jobs.get, message.job_id)
    if found is None:
        logger.warning("recovery job no longer exists", extra={"job_id": message.job_id})
        return
    job, listed = found.job, found.listed
    if listed:
        return  # a duplicate of a message whose job listed everything already
    log = {"job_id": job.id, "subscription_id": job.subscription_id}
    if not await _listing(worker, message, record, job.id):
        # A repeated request sent another first message while the job was queued: the first one lists it.
        logger.info("recovery listed by another message: this one dropped", extra=log)
        return
    cursor = message.cursor
    handled = 0
    # Only a message received again (or redriven) runs pages an earlier run may have ticketed: a first run has no
    # tickets to settle, and reading the job's tickets (every one of them, filtered) on each page would cost as
    # much as the job's size for every page.
    rerun = redriven or receive_count(record) > 1
    if rerun:
        # A page is known by its cursor, the last key of the page before it: pages after the first start elsewhere
        # once a delivery listed before is failed no more, so an earlier run's pages are not all this run's. Their
        # tickets left behind are settled once, here; each page then settles what changed since.
        await _settle_left_behind(worker, job, None, set(), deadline=deadline)
    while True:
        if not rerun and await _subscription_deleted(worker, job):
            # Nothing of it can be sent any more: the pages not listed yet would only queue attempts that fail, a
            # message each. The job is listed, and done once its open tickets are settled (``_settle_when_deleted``).
            # (A message received again keeps listing, as before: it settles what its earlier run left on its pages.)
            await _settle_when_deleted(worker, job)
            await worker.io(store.jobs.update, job.id, updated_at=worker.now(), listed=True)
            logger.info("recovery stopped: its subscription was deleted", extra=log)
            return
        page = await worker.io(
            store.deliveries.between,
            job.subscription_id,
            DeliveryStatus.FAILED,
            since=job.since,
            until=job.until,
            limit=PAGE_SIZE,
            cursor=cursor,
        )
        deliveries = [d for d in page.items if d.tenant_id == job.tenant_id]
        if rerun:
            await _settle_left_behind(worker, job, cursor or "", {d.id for d in deliveries})
        await _queue_attempts(worker, job.id, await _take_page(worker, job.id, deliveries, cursor or ""))
        handled += len(page.items)
        if page.cursor is None:
            await worker.io(store.jobs.update, job.id, updated_at=worker.now(), listed=True)
            logger.info("recovery listed every delivery", extra=log)
            return
        cursor = page.cursor
        if handled >= MAX_PER_MESSAGE or deadline - worker.clock() < MIN_SECONDS_LEFT:
            await worker.io(worker.queue.send, RecoverMessage(job_id=job.id, cursor=cursor))
            return


async def _listing(worker: Worker, message: RecoverMessage, record: SQSRecord, job_id: str) -> bool:
    """Whether this message lists the job's pages: a first message (no cursor) takes the listing
    (``JobRepository.start_listing``), a continuation renews it."""
    now = worker.now()
    if message.cursor is not None:
        await worker.io(worker.store.jobs.renew_listing, job_id, now=now)
        return True
    # A redriven first message comes back at least a visibility timeout after its last receive: a listing idle that
    # long is its own.
    idle = now - timedelta(seconds=LISTER_IDLE_SECONDS)
    return bool(await worker.io(worker.store.jobs.start_listing, job_id, record.message_id, now=now, idle_before=idle))


async def _queue_attempts(worker: Worker, job_id: str, ticketed: list[Delivery]) -> None:
    """Queue the attempts of a page's ticketed deliveries; raises ``ServiceUnavailableError`` if the queue did not take
    them all."""
    sent = await try_send_concurrently(
        worker, [DeliveryMessage.for_delivery(d, trigger=Trigger.RECOVER, job_id=job_id) for d in ticketed]
    )
    if all(sent):
        return
    # The message comes back and lists the page again: its tickets are taken again then, for what is still failed (a
    # ticket of a delivery no longer listed would stay open, the job running, for ever). Only the tickets of messages
    # SQS surely does not hold are given back: a message it took may be making its attempt already, whose record
    # needs the ticket open (given back, the webhook would go out unrecorded, and the page, run again, would send it
    # once more). Its message settles its ticket, and one SQS may hold keeps its ticket too: taken again if the page
    # lists it, or settled by ``_settle_left_behind``. A ticket an earlier run took too is kept as well
    # (``release_tickets``): that run's message may be on the queue, or making its attempt.
    unsent = [d.id for d, ok in zip(ticketed, sent, strict=True) if ok is False]
    with contextlib.suppress(ServiceUnavailableError):
        await worker.io(worker.store.jobs.release_tickets, job_id, unsent)
    missing = len(sent) - sent.count(True)
    raise ServiceUnavailableError(f"the work queue did not take {missing} messages of a recovery page")


async def run_redelivery(worker: Worker, message: RedeliverMessage, deadline: float, *, rerun: bool = False) -> None:
    """Pages of the subscriptions an event goes to: a ticketed single attempt for each existing delivery,
    a first delivery, claimed with a lease, for a subscription that never had the event. ``rerun``: the message was
    received before (or redriven), so its pages may have been counted already."""
    store = worker.store
    stored = await worker.io(store.events.get_with_counts, message.event_id, live=False)
    if stored is None or not stored.named_by(message.tenant_id, message.event_ms):
        # Gone, or its id published again since it expired (the message redriven from the dead-letter queue): the
        # new event is not the one asked to be redelivered.
        logger.warning("redelivery of an event that no longer exists", extra={"event_id": message.event_id})
        return
    event = stored.event
    log = {"job_id": message.job_id, "event_id": event.id, "tenant_id": message.tenant_id}
    waits = message.fanout_waits or 0
    fanning_out = message.tenant_id is not None and stored.enqueued and stored.fanout_open > 0
    if fanning_out and waits < _fanout_waits(worker):
        # The event's fan-out is queued and still under way: a subscription it has not counted yet would be counted
        # here as one that never had the event, then again by the fan-out's page. Come back once it is done, or,
        # should it never be (its message discarded from the dead-letter queue: what a redelivery is for), after the
        # last wait. (An event whose fan-out was never queued, its publish refused, has none to wait for.)
        later = message.model_copy(update={"fanout_waits": waits + 1, "event_ms": stored.event_ms})
        await worker.io(worker.queue.send, later, delay_seconds=FANOUT_WAIT_SECONDS)
        logger.info("redelivery waits for the event's fan-out", extra={**log, "waits": waits + 1})
        return
    if fanning_out:
        logger.warning(
            "redelivery goes on though the event's fan-out is still open: a page of it still to come counts its "
            "subscriptions again",
            extra=log,
        )
    if message.tenant_id is None:
        # A broadcast: one redelivery message per tenant, a page of tenants at a time. Each tenant's is new: the
        # message's cursor is the tenants' listing's, not a position in that tenant's routes. The next page's
        # message goes in the same calls.
        page = await worker.io(store.tenants.list, limit=TENANTS_PER_PAGE, cursor=message.cursor)
        tenants_and_next = [
            RedeliverMessage(
                job_id=message.job_id, event_id=message.event_id, tenant_id=tenant.id, event_ms=stored.event_ms
            )
            for tenant in page.items
        ]
        if page.cursor is not None:
            tenants_and_next.append(message.model_copy(update={"cursor": page.cursor, "event_ms": stored.event_ms}))
        if tenants_and_next:
            await worker.io(worker.queue.send_batch, tenants_and_next)
        return
    tenant_id = message.tenant_id
    handled = 0
    counted = _Counted(worker, stored)
    async for found in route_pages(worker, tenant_id, event.type, message.route, message.cursor):
        marker = f"redeliver|{message.job_id}|{tenant_id}|{found.route}|{found.cursor or ''}"
        # Filters hold as at fan-out: a subscription whose filter skips the event gets nothing (not counted
        # again: the event's ``filtered`` is what its fan-out skipped).
        sub_ids, _ = matching(event, found.routed)
        messages = await _redelivery_messages(
            worker, message, stored, tenant_id, sub_ids, marker=marker, counted=counted, rerun=rerun
        )
        await send_concurrently(worker, messages)
        handled += len(found.routed)
        if found.last:
            logger.info("redelivery queued every subscription", extra={"job_id": message.job_id, "event_id": event.id})
            return
        if handled >= MAX_PER_MESSAGE or deadline - worker.clock() < MIN_SECONDS_LEFT:
            update = {"route": found.next_route, "cursor": found.next_cursor, "event_ms": stored.event_ms}
            continuation = message.model_copy(update=update)
            await worker.io(worker.queue.send, continuation)
            return


class _Counted:
    """Which subscriptions an event's ``matched`` counts already: those its direct fan-out counted (``stored``, read
    with its counts: ``StoredEvent.counted_directly``), and those its pages counted (a fan-out's, earlier
    redeliveries'), read once a redelivery message first needs them. A subscription the fan-out queued whose first
    attempt is still to come has no delivery yet, and is one of them."""

    def __init__(self, worker: Worker, stored: StoredEvent) -> None:
        self._worker, self._stored = worker, stored
        self._pages: frozenset[str] | None = None

    async def of(self, sub_ids: list[str]) -> set[str]:
        """Those of ``sub_ids`` the event counts already."""
        stored = self._stored
        if self._pages is None:
            self._pages = await self._worker.io(self._worker.store.events.counted_subscriptions, stored.event.id)
        return {sub for sub in sub_ids if sub in self._pages or stored.counted_directly(sub)}


async def _redelivery_messages(
    worker: Worker,
    message: RedeliverMessage,
    stored: StoredEvent,
    tenant_id: str,
    sub_ids: list[str],
    *,
    marker: str,
    counted: _Counted,
    rerun: bool = False,
) -> list[DeliveryMessage]:
    """The messages of a page of a redelivery (``marker``): a ticketed single attempt (``manual``) for each existing
    delivery whose ticket this job takes, a first delivery, claimed with a lease (``resumed``), for each subscription
    that never had the event (noted in the job's tickets: the page run again later does not take that delivery for
    one more attempt).

    The first deliveries the event does not count yet (``counted``) are counted in its ``matched``, each once for the
    event, however often the page runs and however many redeliveries count it at once (two that read it uncounted
    together): each has a marker of its own beside the event (``_count_first``), written with its count. The page's
    marker keeps what it counted and queued (its ``plan``), and the page run again queues the first deliveries it
    counted then, not those of a subscription made since, and counts those again (what its first run counted is
    not counted twice), with those it counted that it lists no more (deleted or disabled since), whose messages cancel
    and count them; a page that lists no first delivery now looks for what it counted only when run again
    (``rerun``)."""
    event_id = stored.event.id
    delivery_ids = {sub_id: stored.delivery_id(sub_id) for sub_id in sub_ids}
    existing = await asyncio.gather(
        *(worker.io(worker.store.deliveries.get, sub, delivery_ids[sub], event_id=event_id) for sub in sub_ids)
    )
    again = [sub for sub, found in zip(sub_ids, existing, strict=True) if found is not None]
    first = [sub for sub, found in zip(sub_ids, existing, strict=True) if found is None]
    uncounted: list[str] = []
    counted_before = rerun  # a page that lists no first delivery now may have counted some when it first ran
    if first:
        before = await counted.of(first)
        uncounted = [sub for sub in first if sub not in before]
        plan = {"subs": uncounted, "first": first, COUNTED_APART: True}
        count = worker.store.events.count_fanout_page
        counted_before = not await worker.io(count, event_id, marker, expires_at=stored.expires_at, plan=plan)
    if counted_before:
        earlier = await worker.io(worker.store.events.fanout_page_plan, event_id, marker) or {}
        first, uncounted = _first_as_counted(earlier, sub_ids, first)
    await asyncio.gather(*(_count_first(worker, stored, sub) for sub in uncounted))
    # Before their messages are sent: a run of this page after those deliveries exist makes no extra attempt of them.
    await asyncio.gather(*(_note_first(worker, message.job_id, stored.delivery_id(sub)) for sub in first))
    taken = await asyncio.gather(*(_take(worker, message.job_id, delivery_ids[sub]) for sub in again))
    messages = [
        DeliveryMessage.of(stored, tenant_id, sub, trigger=Trigger.MANUAL, job_id=message.job_id)
        for sub, ok in zip(again, taken, strict=True)
        if ok
    ]
    # A first delivery is claimed with a lease before it is sent (``resumed``), not sent on its batch's read alone: the
    # delivery may have a copy on the queue already (one a repeated publish queued and held back, also claimed
    # so), and of two such copies worked at once only one sends.
    messages += [DeliveryMessage.of(stored, tenant_id, sub, resumed=True) for sub in first]
    return messages


def _first_as_counted(earlier: dict[str, Any], sub_ids: list[str], first: list[str]) -> tuple[list[str], list[str]]:
    """A redelivery page's first deliveries as its first run counted them (``earlier``, the plan it kept): of
    ``first``, those it queued (not a subscription made since), and those it queued that the page lists no more
    (``sub_ids``: deleted or disabled since; their messages cancel and count them); and, when there is any to queue,
    the subscriptions it counted apart, to count again (each once for the event: that run may have died before)."""
    queued = earlier.get("first")
    if isinstance(queued, list):
        gone = [sub for sub in queued if isinstance(sub, str) and sub not in sub_ids]
        first = [sub for sub in first if sub in queued] + gone
    counted_then = earlier.get("subs")
    # A page counted before its first deliveries were counted apart counted them with its marker.
    if not first or not isinstance(counted_then, list) or earlier.get(COUNTED_APART) is not True:
        return first, []
    return first, [sub for sub in counted_then if isinstance(sub, str)]


async def _count_first(worker: Worker, stored: StoredEvent, sub_id: str) -> None:
    """Count a redelivery's first delivery to ``sub_id`` in its event's ``matched``, once for the event: a marker of its
    own, written with the count in one transaction, whose ``plan`` names it (``counted_subscriptions`` then finds it
    counted)."""
    await worker.io(
        worker.store.events.count_fanout_page,
        stored.event.id,
        f"first|{sub_id}",
        expires_at=stored.expires_at,
        plan={"subs": [sub_id]},
        matched=1,
    )


async def deliver(worker: Worker, message: DeliveryMessage, record: SQSRecord, deadline: float) -> None:
    """A job's delivery message: make its one attempt if the job's ticket is still open, else let it go."""
    job_id = message.job_id
    assert job_id is not None
    store = worker.store
    delivery_id = message.delivery_id
    log = {"job_id": job_id, "delivery_id": delivery_id, "event_id": message.event_id}
    state, holder = await worker.io(store.jobs.get_ticket, job_id, delivery_id)
    if state != "open":
        # Used up already (a duplicate message, or one whose attempt was recorded before a crash), or never
        # taken: nothing to send.
        logger.info("job delivery already attempted: dropped", extra={**log, "ticket": state})
        return
    if holder != job_id:
        # Expired before its attempt: held back longer than the lock lasts. Taken again, unless another job has it
        # (that job sends the delivery, and this one leaves it ``queued``, as a delivery some other attempt got to),
        # or another copy of this message used the ticket since it was read (its attempt is the job's).
        if not await worker.io(store.jobs.relock, job_id, delivery_id, lock_seconds=LOCK_SECONDS):
            logger.info("recovery lock held by another job, or the ticket used by another copy: dropped", extra=log)
            await worker.io(store.jobs.close_ticket, job_id, delivery_id, SKIPPED)
            return
        logger.info("the job's recovery lock expired before its attempt: taken again", extra=log)
    delivery, event, sub = await asyncio.gather(
        worker.io(store.deliveries.get, message.subscription_id, delivery_id, event_id=message.event_id),
        worker.io(store.events.get, message.event_id),
        worker.io(store.subscriptions.get, message.tenant_id, message.subscription_id),
    )
    if event is not None and not event.has_delivery(message.subscription_id, delivery_id):
        event = None  # its id published again once it expired: a new event, not this delivery's
    if delivery is None or event is None or sub is None:
        logger.info("job delivery cannot be attempted: its delivery, event or subscription is gone", extra=log)
        await worker.io(store.jobs.close_ticket, job_id, delivery_id, FAILED)
        return
    if message.trigger is Trigger.RECOVER and (delivery.status is not DeliveryStatus.FAILED or not sub.enabled):
        # Listed failed, and delivered since (a manual retry, an overlapping job whose listing showed it first): a
        # recovery sends what is still failed, and never a delivery twice. Or its subscription was disabled since
        # the job started (to stop what it sends): nothing more is sent to it.
        logger.info(
            "recovered delivery not sent: no longer failed, or its subscription is disabled",
            extra={**log, "status": delivery.status, "enabled": sub.enabled},
        )
        await worker.io(store.jobs.close_ticket, job_id, delivery_id, SKIPPED)
        return
    await dispatch.deliver(worker, message, record, deadline)
