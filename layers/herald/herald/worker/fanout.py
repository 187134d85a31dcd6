"""Fan-out: find the subscriptions an event goes to, a page at a time, and queue a delivery for each (up to
ten to a message, ten messages to a ``SendMessageBatch``); a broadcast first fans out to one message per tenant;
a deleted tenant's subscriptions are purged a page at a time.

A fan-out page is counted on its event once (``matched``) however often its message runs, and a message
hands over to a continuation long before its invocation's timeout.

Payload filters: each routing item carries its subscription's filter (stored JSON), evaluated against the
event's type and data with no extra read (``herald.routing``); only the matches are queued, and the page counts
the others on the event (``filtered``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from aws_lambda_powertools import Logger

from herald.errors import ServiceUnavailableError
from herald.messages import DeliveryMessage, FanoutMessage, pack
from herald.metrics import Metric
from herald.records import WILDCARD
from herald.routing import matching

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from herald.messages import PurgeTenantMessage, RevokeKeysMessage, WorkMessage
    from herald.storage import Route, StoredEvent
    from herald.storage.events import FanoutClaim
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)

#: Subscriptions handled by one fan-out message before it hands over to a continuation message.
FANOUT_MAX_PER_MESSAGE = 5_000
#: A fan-out message stops reading pages when its invocation has less time left than this.
FANOUT_MIN_SECONDS_LEFT = 15.0
#: Another message may take over a position of a fan-out whose claim was last taken this long ago. Less than the
#: work queue's visibility timeout (360 s): a message redriven from the dead-letter queue, with a new id, however
#: it was redriven (Herald's redrive, or SQS's), comes at least that long after its last receive, when it last took
#: its claim. A second copy that comes later than this runs the rest of the fan-out again (its pages' plans keep
#: the counts exact), which is better than a redriven message dropped for good.
CLAIM_IDLE_SECONDS = 5 * 60


async def fanout(worker: Worker, message: FanoutMessage, record: SQSRecord, deadline: float) -> None:
    stored = await worker.io(worker.store.events.get, message.event_id)
    if not _fans_out(stored, message) or await _requeued(worker, stored):
        return
    event = stored.event
    claim = await _claimed(worker, message, record, stored)
    if claim is None:
        logger.info("fan-out worked from here by another message: this copy dropped", extra={"event_id": event.id})
        return
    expires_at = stored.expires_at
    if message.repeat and not await worker.io(worker.store.events.take_repeat_fanout, event.id, expires_at=expires_at):
        logger.info("repeat's fan-out dropped: the first try's counted the event", extra={"event_id": event.id})
        return
    if message.tenant_id is None:
        await _fanout_tenants(worker, message, stored)
        return
    handled = queued = 0  # routing items read, deliveries queued
    route, cursor = message.route, message.cursor
    while True:
        page = await route_page(worker, message.tenant_id, event.type, route, cursor)
        marker = _position(message.tenant_id, page.route, page.cursor)
        sub_ids, filtered = matching(event, page.routed)
        plan = _PagePlan(sub_ids, page.last, page.next_route, page.next_cursor)
        # Count the page first, once however often this message runs; then queue it. A crash or a failed send in
        # between runs the page again: it queues what it counted (the plan kept with its marker; a subscription
        # deleted or disabled since has its delivery cancelled and counted), under the same delivery ids, so nothing
        # is sent twice, and goes on where the first run would have. A page that reads empty now is not counted, but
        # run again it may have been: its plan is looked up then (a run again only: an empty page is common).
        if sub_ids or filtered or page.last:
            counted_before = not await worker.io(
                worker.store.events.count_fanout_page,
                event.id,
                marker,
                expires_at=expires_at,
                plan=plan.stored(),
                matched=len(sub_ids),
                filtered=filtered,
                fanout_open=-1 if page.last else 0,
            )
        else:
            counted_before = claim.again
        if counted_before:
            plan = _PagePlan.of(await worker.io(worker.store.events.fanout_page_plan, event.id, marker)) or plan
        deliveries = [DeliveryMessage.of(stored, message.tenant_id, sub_id) for sub_id in plan.sub_ids]
        await send_concurrently(worker, deliveries)
        handled += len(page.routed)
        queued += len(deliveries)
        if plan.last:
            worker.metrics.add(Metric.FANOUT_SIZE, queued)
            logger.info("fan-out finished", extra={"event_id": event.id, "tenant_id": message.tenant_id})
            return
        route, cursor = plan.next_route, plan.next_cursor
        if handled >= FANOUT_MAX_PER_MESSAGE or deadline - worker.clock() < FANOUT_MIN_SECONDS_LEFT:
            # Hand over to a continuation message, well before the invocation's timeout.
            continuation = FanoutMessage(
                event_id=event.id, tenant_id=message.tenant_id, route=route, cursor=cursor, event_ms=stored.event_ms
            )
            await worker.io(worker.queue.send, continuation)
            worker.metrics.add(Metric.FANOUT_SIZE, queued)
            return


def _fans_out(stored: StoredEvent | None, message: FanoutMessage) -> TypeGuard[StoredEvent]:
    """Whether ``stored`` is the event ``message`` fans out (read by its id); if not, says why in the log."""
    if stored is None or not stored.named_by(message.tenant_id, message.event_ms):
        # Gone, or its id published again since it expired: the message outlived its event (redriven from the
        # dead-letter queue), and the new event is not its own to count or queue.
        logger.warning("fan-out of an event that no longer exists", extra={"event_id": message.event_id})
        return False
    return True


async def _requeued(worker: Worker, stored: StoredEvent) -> bool:
    """Whether ``stored`` was counted when stored (its direct fan-out): then its deliveries not written yet are queued
    again, and this fan-out message does nothing more. This code never sends one for such an event: an older API
    answers a repeat of its publish with one (after a rollback), maybe because the first try never queued its
    deliveries. Its page would count them a second time, and leave one pending for good: instead they are queued
    again as this code's own answer to such a repeat queues them (``publishing.copies_to_requeue``: held back, each
    claimed before it sends), and nothing is counted again."""
    if not stored.counted_when_stored:
        return False
    # Imported here: only this message of older code needs publishing's code.
    from herald.domain.publishing import copies_to_requeue

    copies = await worker.io(copies_to_requeue, worker.services, [stored])
    logger.warning(
        "fan-out of an event whose deliveries publishing queued itself: its deliveries not written yet queued again",
        extra={"event_id": stored.event.id, "deliveries": len(copies)},
    )
    sent = await worker.io(worker.queue.send_each, copies)
    if not all(sent):
        raise ServiceUnavailableError(f"the work queue did not take {len(sent) - sent.count(True)} deliveries")
    return True


def _position(tenant_id: str | None, route: str | None, cursor: str | None) -> str:
    """A place in an event's fan-out, as its page markers and its messages' claims name it: a tenant's routes from
    ``route`` and ``cursor``, or a broadcast's page of tenants from ``cursor`` (``tenant_id`` None)."""
    if tenant_id is None:
        return f"tenants|{cursor or ''}"
    return f"{tenant_id}|{route or ''}|{cursor or ''}"


async def _claimed(
    worker: Worker, message: FanoutMessage, record: SQSRecord, stored: StoredEvent
) -> FanoutClaim | None:
    """This message's claim to work the fan-out from its position (``EventRepository.claim_fanout``); None for a
    second copy of the message that works it."""
    position = _position(message.tenant_id, message.route, message.cursor)
    now = int(worker.clock())
    claim, expires_at = worker.store.events.claim_fanout, stored.expires_at
    idle_before = now - CLAIM_IDLE_SECONDS
    return await worker.io(
        claim, stored.event.id, position, record.message_id, now=now, idle_before=idle_before, expires_at=expires_at
    )


@dataclass(frozen=True)
class _PagePlan:
    """What a fan-out page queues and where the fan-out goes on from it, kept with the page's marker when it is
    counted: the page run again queues what it counted, and goes on from where its first run would have, whatever
    a new read of the routes shows."""

    sub_ids: list[str]
    last: bool
    next_route: str
    next_cursor: str | None

    def stored(self) -> dict[str, Any]:
        cursor = {"cursor": self.next_cursor} if self.next_cursor is not None else {}
        return {"subs": self.sub_ids, "last": self.last, "route": self.next_route, **cursor}

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> _PagePlan | None:
        if stored is None:
            return None
        subs, last, route, cursor = (stored.get(name) for name in ("subs", "last", "route", "cursor"))
        if not isinstance(subs, list) or not isinstance(last, bool) or not isinstance(route, str):
            return None
        return cls([str(sub) for sub in subs], last, route, cursor if isinstance(cursor, str) else None)


@dataclass(frozen=True)
class RoutePage:
    """One page of an event's routing items: where it starts (``route``, ``cursor``), its items, whether it is
    the last, and where the next one starts (what a continuation message carries)."""

    route: str
    cursor: str | None
    routed: list[Route]
    last: bool
    next_route: str
    next_cursor: str | None


async def route_page(
    worker: Worker, tenant_id: str, event_type: str, route: str | None, cursor: str | None
) -> RoutePage:
    """The page of the routing items of an event's type, then of ``*``, that starts at ``route`` and ``cursor``."""
    routes = [event_type, WILDCARD]
    current = route if route in routes else routes[0]
    routed, next_cursor = await worker.io(
        worker.store.subscriptions.routed, tenant_id, current, limit=worker.settings.fanout_page_size, cursor=cursor
    )
    last = next_cursor is None and current == routes[-1]
    following = routes[routes.index(current) + 1] if next_cursor is None and not last else current
    return RoutePage(current, cursor, routed, last, following, next_cursor)


async def route_pages(
    worker: Worker, tenant_id: str, event_type: str, route: str | None, cursor: str | None
) -> AsyncIterator[RoutePage]:
    """The routing items of an event's type, then of ``*``, a page at a time, from ``route`` and ``cursor`` (a
    continuation's) on."""
    while True:
        page = await route_page(worker, tenant_id, event_type, route, cursor)
        yield page
        if page.last:
            return
        route, cursor = page.next_route, page.next_cursor


async def _fanout_tenants(worker: Worker, message: FanoutMessage, stored: StoredEvent) -> None:
    """A broadcast: one fan-out message per tenant, a page of tenants at a time. The page's tenants are kept with its
    marker: run again (its send failed), it queues the tenants it counted in ``fanout_open``, whatever a new listing
    shows (a tenant deleted since still gets its message: its fan-out finds the routes its purge has not yet
    deleted, as any event published before the deletion does, and closes its count)."""
    page = await worker.io(worker.store.tenants.list, limit=100, cursor=message.cursor)
    tenant_ids, next_cursor = [tenant.id for tenant in page.items], page.cursor
    marker = _position(None, None, message.cursor)
    plan = {"tenants": tenant_ids, **({"cursor": next_cursor} if next_cursor is not None else {})}
    # Opened before they are queued, so the fan-out never looks complete while tenants remain.
    counted = await worker.io(
        worker.store.events.count_fanout_page,
        message.event_id,
        marker,
        expires_at=stored.expires_at,
        plan=plan,
        fanout_open=len(tenant_ids) - (1 if next_cursor is None else 0),
    )
    if not counted:
        earlier = await worker.io(worker.store.events.fanout_page_plan, message.event_id, marker)
        if earlier is not None and isinstance(earlier.get("tenants"), list):
            tenant_ids = [str(tenant_id) for tenant_id in earlier["tenants"]]
            next_cursor = earlier["cursor"] if isinstance(earlier.get("cursor"), str) else None
    event_ms = stored.event_ms
    per_tenant = [
        FanoutMessage(event_id=message.event_id, tenant_id=tenant_id, event_ms=event_ms) for tenant_id in tenant_ids
    ]
    await send_concurrently(worker, per_tenant)
    if next_cursor is not None:
        # Not ``repeat``: the note of a repeat's fan-out is taken as it starts (``fanout``), once.
        following = message.model_copy(update={"cursor": next_cursor, "event_ms": event_ms, "repeat": None})
        await worker.io(worker.queue.send, following)


async def send_concurrently(worker: Worker, messages: Sequence[WorkMessage]) -> None:
    """Queue messages, plain first deliveries packed up to ten a message (``messages.pack``), ten messages a
    SendMessageBatch, the batches at once."""
    messages = pack(messages)
    chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
    await asyncio.gather(*(worker.io(worker.queue.send_batch, chunk) for chunk in chunks))


async def try_send_concurrently(worker: Worker, messages: Sequence[WorkMessage]) -> list[bool | None]:
    """Queue messages as they are (none packed), ten a SendMessageBatch, the batches at once, raising for none: for
    each message, in order, whether SQS took it (``WorkQueue.send_each``: None if it may have)."""
    chunks = [[(message, 0) for message in messages[start : start + 10]] for start in range(0, len(messages), 10)]
    outcomes = await asyncio.gather(*(worker.io(worker.queue.send_each, chunk) for chunk in chunks))
    return [outcome for chunk in outcomes for outcome in chunk]


async def purge(worker: Worker, message: PurgeTenantMessage) -> None:
    """Delete a page of a deleted tenant's subscriptions; a continuation message carries on. Each message deletes
    the tenant's API keys once more first: the deletion found them through an index, whose read may miss a key
    issued a moment before (DynamoDB's eventual consistency); by the purge, delayed past any request under way,
    the index lists it, and the key stops working then instead of never. A tenant that still exists is left alone:
    its deletion queued the purge, then failed before the tenant's item went (a 503), and the operator may keep it;
    the deletion asked again queues a purge of its own."""
    if await worker.io(worker.store.tenants.get, message.tenant_id) is not None:
        logger.warning("purge of a tenant that still exists: dropped", extra={"tenant_id": message.tenant_id})
        return
    await worker.io(worker.store.tenants.delete_keys, message.tenant_id)
    done = await worker.io(worker.store.subscriptions.purge_page, message.tenant_id)
    if not done:
        await worker.io(worker.queue.send, message)


async def revoke_keys(worker: Worker, message: RevokeKeysMessage) -> None:
    """Revoke once more the tenant's API keys issued before ``message.older_than``: a rotation's revocation
    (``domain.tenants.issue_key``) listed them through an index, which may have missed a key issued a moment before;
    by now, a minute on, the index lists it. Only for a rotation noted as done (``confirm_rotation``, by the new key's
    hash): one answered 503 is not, and its new key, never shown, may still be there (its delete failed too), so
    revoking the older keys would leave the tenant none it holds. A rotation noted as done revokes the older keys even
    if its new key was revoked since (that key leaked too, say)."""
    tenants = worker.store.tenants
    if message.new_key_hash is not None and not await worker.io(tenants.rotation_confirmed, message.new_key_hash):
        logger.info(
            "revocation of a rotation not noted as done (it was answered 503): dropped",
            extra={"tenant_id": message.tenant_id, "api_key_id": message.older_than},
        )
        return
    await worker.io(worker.store.tenants.delete_keys, message.tenant_id, older_than=message.older_than)
