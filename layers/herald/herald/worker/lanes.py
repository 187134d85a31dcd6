"""Isolation of slow endpoints: the slow lane and the per-subscription circuit breaker.

A batch ends when its slowest send ends, and a worker stuck on an endpoint that hangs takes no other work:
without isolation one hanging subscriber delays every tenant's webhooks. Two mechanisms keep it apart,
both learned from the subscription's own attempts and kept on its item (``Isolation``, written by
``storage.isolation`` without touching the record's version):

- **The slow lane.** An attempt still unanswered after ``slow_lane_after_seconds``, or one that timed out, puts its
  subscription on the slow lane: a second queue with its own event source (its own ``MaximumConcurrency``) on the
  same function. It stays there ``slow_lane_seconds`` at least after its latest slow attempt, then until an attempt
  answers within ``slow_lane_after_seconds`` (``learn`` takes it off), and ``slow_lane_max_seconds`` at most: an
  endpoint that gets an event an hour, slow each time, stays on it, rather than each of its deliveries being started
  on the work queue, cut short and sent again from the slow lane. A delivery message of a slow subscription received
  from the work queue is forwarded there before any attempt (no attempt, no step of its retry schedule), so the work
  queue's invocations only ever wait for endpoints that answer. A scheduled attempt made from the work queue before
  its subscription was known to be slow is cut short at ``slow_lane_after_seconds`` and handed over (unless its
  answer's head has arrived: its status is then the answer, with the body as far as it came, and a 2xx is not sent
  again): it is logged as a timeout that neither moves the retry schedule nor counts towards the breaker (the
  endpoint was not given its whole timeout: a slow endpoint that answers is no reason to hold its deliveries), and
  the delivery is tried again at once from the slow lane, with the whole timeout. So an endpoint that starts hanging
  holds a work queue invocation for ``slow_lane_after_seconds`` at most, however many of its deliveries were under
  way: those of the batch still waiting for a connection then are forwarded (``forwarded``, which knows what this
  worker marked), not sent.
- **The circuit breaker.** After ``breaker_timeouts`` timeouts in a row the breaker opens for
  ``breaker_open_seconds``, doubled each time it opens again without an answer in between (at most
  ``breaker_max_open_seconds``). Deliveries arriving meanwhile are held (``schedule.hold``) until it closes,
  without an attempt and without a step of their retry schedule; none is lost. Once its time is over it is
  half-open: one delivery takes the probe (a conditional write), made from the slow lane (a delivery received
  from the work queue is forwarded there first), the others wait for the probe's outcome.
  Any answer that is not a timeout closes it; a timeout opens it again, for longer.

An attempt someone asked for (a manual retry, a recovery, a redelivery, a test event) is not held by the
breaker: it serves as a probe. Everything here runs after the delivery's lease is taken; a delivery diverted gives
its lease back first, like a rate-limit postponement.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from herald.metrics import Metric
from herald.records import ErrorKind, Trigger
from herald.sender import Outcome, Progress, cut_short
from herald.storage.isolation import Reopened
from herald.worker.pacing import START_MARGIN_SECONDS
from herald.worker.schedule import hold

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from herald.messages import DeliveryMessage
    from herald.records import Subscription
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)

#: Held deliveries come back spread over this share of their wait (at least a second), not all at once.
HOLD_SPREAD = 0.1
#: What each worker marked slow itself in its current batch, and until when: the attempts of one batch to one slow
#: endpoint write once, and those still waiting for a connection are forwarded. Forgotten when the batch ends
#: (``forget``): the next batch reads what was written, which a subscription's new URL resets.
_MARKED: weakref.WeakKeyDictionary[Worker, dict[str, float]] = weakref.WeakKeyDictionary()
#: The half-open breakers' probes each worker took in its current batch, by delivery id: until when each was taken
#: (``probe_taken_elsewhere``), so that an attempt that made no request gives its probe back (``learn``).
_PROBES: weakref.WeakKeyDictionary[Worker, dict[str, float]] = weakref.WeakKeyDictionary()
#: The subscriptions whose timeouts each worker counted in its current batch: an answer after them (a later
#: attempt of the same batch) ends their streak and closes the breaker they may have opened, though the batch's
#: read of the subscription, from before those timeouts, shows neither (``learn``).
_COUNTED: weakref.WeakKeyDictionary[Worker, set[str]] = weakref.WeakKeyDictionary()
#: The breakers each worker's timeouts opened (or opened again) in its current batch, and until when: the batch's
#: deliveries still waiting for a connection or a rate-limit slot then are held, not sent (``probe_taken_elsewhere``),
#: though the batch's read of the subscription, from before, shows the breaker closed.
_OPENED: weakref.WeakKeyDictionary[Worker, dict[str, float]] = weakref.WeakKeyDictionary()


def forget(worker: Worker) -> None:
    """The batch is over: what it marked slow is known from the subscriptions' items from now on."""
    _MARKED.pop(worker, None)
    _PROBES.pop(worker, None)
    _COUNTED.pop(worker, None)
    _OPENED.pop(worker, None)


def on_slow_lane(worker: Worker, record: SQSRecord) -> bool:
    """Whether this record was received from the slow lane's queue (its event source's ARN names it)."""
    slow_url = worker.settings.slow_queue_url
    source = record.event_source_arn or ""
    return bool(slow_url) and source.rsplit(":", 1)[-1] == slow_url.rstrip("/").rsplit("/", 1)[-1]


async def diverted(
    worker: Worker,
    message: DeliveryMessage,
    record: SQSRecord,
    sub: Subscription,
    *,
    single_shot: bool,
    release: Callable[[float], Awaitable[Any]],
    log: dict[str, Any],
) -> bool:
    """Before an attempt: forward a slow subscription's delivery to the slow lane, or hold it while its
    breaker is open. True when the delivery was diverted: its lease is given back and its message carried on
    by a copy; no attempt is made here. A half-open breaker's probe is taken later, right before the send
    (``probe_taken_elsewhere``)."""
    now = worker.clock()
    breaker_until = _breaker_until(worker, sub)
    held_back = _breaker_holds(message, single_shot)
    if held_back and breaker_until > now:
        # Open: held from where it is, not forwarded to the slow lane first (a hop, and a receive on the slow lane's
        # few invocations, only to be held there); its copy comes back to the lane ``for_later`` names.
        await _held_by_breaker(worker, message, record, sub, breaker_until - now, release=release, log=log)
        return True
    # A half-open breaker's probe is made from the slow lane too, with the whole timeout: from the work queue it
    # would be cut short and handed over, and the probe it took would hold every other delivery meanwhile.
    half_open = held_back and _half_open(worker, sub, now)
    # Otherwise closed, half-open, or asked for (a manual retry, a recovery, a redelivery, a test): not held here.
    return await forwarded(worker, message, record, sub, release=release, log=log, half_open=half_open)


async def probe_taken_elsewhere(
    worker: Worker,
    message: DeliveryMessage,
    record: SQSRecord,
    sub: Subscription,
    *,
    single_shot: bool,
    release: Callable[[float], Awaitable[Any]],
    log: dict[str, Any],
) -> bool:
    """Right before a scheduled attempt to a subscription whose breaker is half-open, with its connection (and
    rate-limit slot) held: take the probe, one attempt at a time until it reports back (or could have: its
    whole time). Taken earlier, a probe would run out while its attempt waited, letting a second one through, or
    be kept by an attempt postponed or put off, holding every other delivery meanwhile. True when another
    delivery holds the probe, or when this worker's own timeouts opened the breaker while the attempt waited
    (``_OPENED``): this one is held, its lease given back, and its message carried on by a copy."""
    now = worker.clock()
    if not _breaker_holds(message, single_shot):
        return False
    breaker_until = _breaker_until(worker, sub)
    if breaker_until > now:  # opened by this batch's own timeouts while the attempt waited
        await _held_by_breaker(worker, message, record, sub, breaker_until - now, release=release, log=log)
        return True
    if not _half_open(worker, sub, now):
        return False
    probe_until = now + worker.settings.delivery_timeout_seconds + START_MARGIN_SECONDS
    probe = await worker.io(worker.store.isolation.take_probe, sub.tenant_id, sub.id, now=now, until=probe_until)
    if probe == "taken":
        _PROBES.setdefault(worker, {})[message.delivery_id] = probe_until
        logger.info("circuit breaker half-open: this delivery probes the endpoint", extra=log)
        return False
    if probe == "closed":
        return False  # another delivery's probe closed it since the batch read the subscription: send as usual
    # Held until the breaker's new end if another delivery's probe opened it again (coming back sooner would only
    # find it open and be held once more), else for as long as the probe taken elsewhere may take.
    wait = probe.until - now if isinstance(probe, Reopened) else probe_until - now
    await _held_by_breaker(worker, message, record, sub, wait, release=release, log=log)
    return True


def _breaker_holds(message: DeliveryMessage, single_shot: bool) -> bool:
    """Whether the breaker may hold the delivery back: a scheduled attempt. One asked for (a manual retry, a
    recovery, a redelivery, a test) is never held: it probes the endpoint."""
    return not single_shot and message.trigger is Trigger.SCHEDULED


def _breaker_until(worker: Worker, sub: Subscription) -> float:
    """Until when the subscription's breaker is open: as its item said when it was read, or as this worker's timeouts
    opened it since, in this batch (``_OPENED``)."""
    return max(sub.isolation.breaker_until, _OPENED.get(worker, {}).get(sub.id, 0.0))


def _half_open(worker: Worker, sub: Subscription, now: float) -> bool:
    """Whether the subscription's breaker, as read or as this batch opened it, opened once and its time is over:
    the next attempt probes."""
    return 0 < _breaker_until(worker, sub) <= now


async def _held_by_breaker(
    worker: Worker,
    message: DeliveryMessage,
    record: SQSRecord,
    sub: Subscription,
    wait: float,
    *,
    release: Callable[[float], Awaitable[Any]],
    log: dict[str, Any],
) -> None:
    wait += worker.rng.uniform(0, max(1.0, wait * HOLD_SPREAD))
    until = worker.clock() + wait
    await release(until)
    worker.metrics.add(Metric.BREAKER_HELD)
    logger.info("delivery held by the circuit breaker", extra={**log, "held_seconds": round(wait, 1)})
    await hold(worker, for_later(worker, message, sub, until), record, until)


def slow_span(worker: Worker) -> float:
    """How long a mark of the slow lane lasts from when it is made, unless an attempt that answers in time takes the
    subscription off it earlier (``learn``)."""
    settings = worker.settings
    return float(max(settings.slow_lane_seconds, settings.slow_lane_max_seconds))


def slow_until(worker: Worker, sub: Subscription) -> float:
    """Until when the subscription is on the slow lane: as its item said when it was read, or as this worker has
    marked it since, in this batch (``watch``; an attempt may wait for a connection while another is slow)."""
    return max(sub.isolation.slow_until, _MARKED.get(worker, {}).get(sub.id, 0.0))


def surely_slow_until(worker: Worker, sub: Subscription) -> float:
    """Until when the subscription stays on the slow lane whatever its attempts answer: ``slow_lane_seconds`` after
    its latest mark (made ``slow_span`` before the mark's end); an attempt that answers in time may take it off from
    then on (``_left_slow_lane``)."""
    until = slow_until(worker, sub)
    return until - slow_span(worker) + worker.settings.slow_lane_seconds if until > 0 else 0.0


async def forwarded(
    worker: Worker,
    message: DeliveryMessage,
    record: SQSRecord,
    sub: Subscription,
    *,
    release: Callable[[float], Awaitable[Any]],
    log: dict[str, Any],
    half_open: bool = False,
) -> bool:
    """Forward a delivery received from the work queue to the slow lane if its subscription is on it (or its breaker
    is half-open: ``half_open``): its lease given back, its message carried on by a copy on the slow lane, no
    attempt made here. True if forwarded."""
    now = worker.clock()
    if not (slow_until(worker, sub) > now or half_open) or not worker.settings.slow_queue_url:
        return False
    if on_slow_lane(worker, record):
        return False
    await release(now)
    worker.metrics.add(Metric.TO_SLOW_LANE)
    logger.info("delivery forwarded to the slow lane", extra=log)
    await hold(worker, message.model_copy(update={"lane": "slow"}), record, now)
    return True


def for_later(worker: Worker, message: DeliveryMessage, sub: Subscription, until: float) -> DeliveryMessage:
    """The message to hold for a later attempt, at ``until``: it keeps the slow lane only if its subscription is
    sure to be on it then, whatever its attempts answer meanwhile (``surely_slow_until``: as read for this attempt,
    or as this batch marked it). A delivery forwarded once must not stay on the slow lane's few invocations for the
    rest of its retries, nor come back to them hours on, when its endpoint is fast again; should the subscription be
    slow still then, the work queue forwards it again (one hop)."""
    if message.lane == "slow" and surely_slow_until(worker, sub) <= until:
        return message.model_copy(update={"lane": None})
    return message


def for_later_unread(worker: Worker, message: DeliveryMessage, until: float) -> DeliveryMessage:
    """``for_later`` for a copy held before its subscription is read (``dispatch._due``: the delivery is not due, or
    leased). A wait ending more than ``slow_lane_seconds`` from now (the least a mark of the slow lane lasts) may
    outlast the subscription's time on it: the copy waits for the work queue, which forwards it again should the
    subscription still be slow then. Copies held for the same long wait then agree on their lane, and so on the
    schedule's one item they share (a duplicate copy from the slow lane would otherwise rewrite it, lane and all).
    A shorter wait keeps the lane."""
    if message.lane == "slow" and until > worker.clock() + worker.settings.slow_lane_seconds:
        return message.model_copy(update={"lane": None})
    return message


async def watch(
    worker: Worker,
    sub: Subscription,
    sending: Awaitable[Outcome],
    log: dict[str, Any],
    *,
    hand_over: bool = False,
    progress: Progress | None = None,
) -> Outcome:
    """The attempt, watched: once it has been unanswered for ``slow_lane_after_seconds`` (shorter than the
    timeout), its subscription goes to the slow lane at once, so that its next deliveries are forwarded even
    before this one ends. With ``hand_over`` (a scheduled attempt from the work queue) the attempt is then cut
    short: its outcome says ``handed_over``, and the caller carries the delivery on from the slow lane. An
    attempt whose answer's head has arrived by then (``progress``, kept by the sender) is not handed over: its
    body is cut short there, and its status is the answer (a 2xx handed over would be sent again)."""
    settings = worker.settings
    task = asyncio.ensure_future(sending)
    after = settings.slow_lane_after_seconds
    if not settings.slow_queue_url or after >= settings.delivery_timeout_seconds:
        return await task  # no slow lane, or the timeout itself says it (``learn``)
    hand_over = hand_over and settings.slow_lane_hand_over
    marked = _MARKED.setdefault(worker, {})
    span, renew_after = slow_span(worker), settings.slow_lane_seconds / 2
    # Marked in the last half of ``slow_lane_seconds``: no write (a later slow attempt renews it, and an attempt that
    # answers in time takes it off only ``slow_lane_seconds`` after the latest mark).
    marked_lately = slow_until(worker, sub) > worker.clock() + span - renew_after
    if marked_lately and not hand_over:
        return await task  # on the slow lane, marked lately: no write
    started = worker.now()
    try:
        return await asyncio.wait_for(asyncio.shield(task), after)
    except TimeoutError:
        until = worker.clock() + span
        if not marked_lately and marked.get(sub.id, 0.0) <= until - renew_after:
            marked[sub.id] = until
            try:
                if await worker.io(worker.store.isolation.mark_slow, sub.tenant_id, sub.id, until=until, url=sub.url):
                    worker.metrics.add(Metric.MARKED_SLOW)
                    logger.info("subscription on the slow lane: an attempt is slow to answer", extra=log)
            except Exception:
                logger.exception("subscription not put on the slow lane", extra=log)
        if not hand_over or task.done():
            return await task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if progress is not None and progress.answered:
            logger.info("answer's body cut short on the work queue: its status is the answer", extra=log)
            return cut_short(progress, f"its body was still arriving after {after:g} s on the work queue: cut short")
        worker.metrics.add(Metric.HANDED_OVER)
        logger.info("attempt cut short on the work queue and handed to the slow lane", extra=log)
        return Outcome(
            status_code=None,
            error_kind=ErrorKind.TIMEOUT,
            error_message=f"no answer within {after:g} s on the work queue: handed to the slow lane, which tries "
            "again at once with the whole timeout",
            body=None,
            retry_after=None,
            started=started,
            finished=worker.now(),
            handed_over=True,
        )


#: Outcomes of attempts that made no request: they say nothing of the endpoint.
_NO_REQUEST = frozenset(
    {ErrorKind.REFUSED_BY_POLICY, ErrorKind.TRANSFORM, ErrorKind.SUBSCRIPTION_GONE, ErrorKind.EVENT_EXPIRED}
)


async def learn(
    worker: Worker, sub: Subscription, message: DeliveryMessage, outcome: Outcome, log: dict[str, Any]
) -> None:
    """After a recorded attempt of ``message``'s delivery: a timeout counts towards the breaker (and puts the
    subscription on the slow lane); any other outcome of a request closes the breaker and ends the timeout streak,
    and one made within ``slow_lane_after_seconds`` takes the subscription off the slow lane once its latest mark is
    ``slow_lane_seconds`` old (``_left_slow_lane``).
    An attempt cut short and handed to the slow lane says neither: the slow lane's attempt, with the whole
    timeout, will; nor does one that made no request (the URL policy refused the address, the transform failed on
    the event), which gives back the half-open breaker's probe if it took it. Writes only when something changes;
    a failure here is logged, never turned into a repeated attempt."""
    probe_until = _PROBES.get(worker, {}).pop(message.delivery_id, None)
    if outcome.handed_over:
        return  # its subscription is on the slow lane already (``watch`` put it there)
    if outcome.error_kind in _NO_REQUEST:
        if probe_until is not None:
            try:
                await worker.io(worker.store.isolation.release_probe, sub.tenant_id, sub.id, until=probe_until)
            except Exception:
                logger.exception("the probe is not given back: it is free again once its time is over", extra=log)
        return
    settings, store, now = worker.settings, worker.store, worker.clock()
    learned = sub.isolation
    counted_here = _COUNTED.setdefault(worker, set())
    try:
        if outcome.error_kind is ErrorKind.TIMEOUT:
            counted = await worker.io(
                store.isolation.count_timeout,
                sub.tenant_id,
                sub.id,
                now=now,
                slow_until=now + slow_span(worker),
                threshold=settings.breaker_timeouts,
                open_seconds=settings.breaker_open_seconds,
                max_open_seconds=settings.breaker_max_open_seconds,
                url=sub.url,
            )
            counted_here.add(sub.id)
            if slow_until(worker, sub) <= now:  # not marked while it was unanswered (``watch``), nor before
                worker.metrics.add(Metric.MARKED_SLOW)
            # What the timeout says holds for the rest of this batch too (its read of the subscription is older):
            # those of its deliveries still waiting are forwarded to the slow lane, or held while the breaker is open.
            _MARKED.setdefault(worker, {})[sub.id] = now + slow_span(worker)
            if counted is not None and counted[0].breaker_until > now:
                _OPENED.setdefault(worker, {})[sub.id] = counted[0].breaker_until
            if counted is not None and counted[1]:
                worker.metrics.add(Metric.BREAKER_OPENED)
                until = counted[0].breaker_until
                logger.warning(
                    "circuit breaker opened: the endpoint keeps timing out",
                    extra={**log, "timeouts": counted[0].timeouts, "open_seconds": round(until - now)},
                )
        elif learned.timeouts or learned.breaker_until or learned.probe_until or sub.id in counted_here:
            counted_here.discard(sub.id)
            _OPENED.get(worker, {}).pop(sub.id, None)
            await worker.io(store.isolation.reset, sub.tenant_id, sub.id, url=sub.url)
            if learned.breaker_until:
                logger.info("circuit breaker closed: the endpoint answered", extra=log)
        if outcome.error_kind is not ErrorKind.TIMEOUT:
            await _left_slow_lane(worker, sub, outcome, now, log)
    except Exception:
        logger.exception("what the attempt says of the endpoint is not recorded", extra=log)


async def _left_slow_lane(worker: Worker, sub: Subscription, outcome: Outcome, now: float, log: dict[str, Any]) -> None:
    """Take the subscription off the slow lane after an attempt that answered within ``slow_lane_after_seconds``
    (a quick failure too: the endpoint no longer keeps a request waiting), if its mark, as read, was made
    ``slow_lane_seconds`` ago or more; not if this batch marked it (its read is older than that mark). The write is
    conditional on the mark read: one made since by a slow attempt stays."""
    settings = worker.settings
    marked_until = sub.isolation.slow_until
    if marked_until <= now or sub.id in _MARKED.get(worker, {}):
        return
    if surely_slow_until(worker, sub) > now:
        return  # marked lately: an endpoint slow now and then stays on the slow lane in between
    if (outcome.finished - outcome.started).total_seconds() >= settings.slow_lane_after_seconds:
        return
    left = await worker.io(
        worker.store.isolation.leave_slow_lane, sub.tenant_id, sub.id, marked_until=marked_until, url=sub.url
    )
    if left:
        logger.info("subscription off the slow lane: an attempt answered in time", extra=log)
