"""What a batch leaves besides its deliveries: event counters, subscription stats and health (auto-disable),
metrics and operational events, written once per batch rather than once per attempt.

An event's ``succeeded`` / ``failed`` counters are not written per delivery: the worker adds up the changes
of the deliveries a batch settles, per event, and writes each event's sum once when the batch is done, on a
small counts item beside the event; a delivery to a subscription its event names is not counted at all (its
state is read with the event: ``storage.events``). The attempts a batch makes to a subscription are counted in its stats
and failure streak when the batch is done, in the order they finished, with one write per subscription, but
for first attempts that succeeded: the table's stream counts those (``herald.worker.streamed``), and a
subscription whose attempts in the batch are all such, with no failure streak to end, is not written at all
(the common case: a delivered webhook is then one write, its delivery). A 410, or a streak failing for the
whole window, disables the subscription; operational events
(``herald.domain.operational``) tell the operator (what an attempt did to its delivery right after it, what
the batch did to the subscription at its end). Both are bookkeeping, not the record: if an invocation dies
after settling deliveries and before its batch is done, they miss those deliveries, while the deliveries
and their attempts, which are what is sent and listed, stay exact; but for a delivery's own notice, which its
message, back undeleted, reports then (``report_missed``), and for the notice that a subscription was disabled,
written with the disabling itself and published from the table's stream too (``herald.worker.streamed``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from herald.domain.operational import OPERATOR_TENANT_ID, OperationalEventError, emit
from herald.errors import ServiceUnavailableError
from herald.messages import NoticeMessage, dump_message, problems
from herald.metrics import Metric
from herald.records import DeliveryStatus, ErrorKind
from herald.storage import AttemptTally, SubscriptionHealth

if TYPE_CHECKING:
    from collections.abc import Callable

    from herald.records import Delivery, Event, Subscription
    from herald.sender import Outcome
    from herald.storage.deliveries import DeliveryState
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)

#: The failed step of its retry schedule after which the operator hears that a delivery is failing (Svix: the 4th
#: attempt; a hand-over to the slow lane is no step, nor is an attempt asked for).
FAILING_NOTICE_ATTEMPT = 4

type Report = tuple[str, dict[str, Any], tuple[str, ...]]


@dataclass
class _Tally:
    """The attempts made to one subscription in this batch."""

    sub: Subscription
    expires_at: int
    log: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    #: Each outcome's publish-to-response latency (ms), in the same order.
    latencies: list[int] = field(default_factory=list)
    #: Whether each outcome is counted from the table's stream, in the same order.
    streamed: list[bool] = field(default_factory=list)


def recovered(ref: dict[str, Any], failing_since: datetime, recovered_at: datetime) -> Report:
    """The operator's notice that a subscription's failing streak is over (``ref``: its tenant, id and URL); one
    per streak, keyed by when it began."""
    data = {**ref, "failing_since": failing_since, "recovered_at": recovered_at}
    return "subscription.recovered", data, (ref["subscription_id"], failing_since.isoformat())


def disabled_notice(
    ref: dict[str, Any],
    reason: str,
    disabled_at: datetime,
    failing_since: datetime | None,
    last_status_code: int | None,
) -> Report:
    """The operator's notice that Herald disabled a subscription (``ref``: its tenant, id and URL); one per disabling,
    keyed by when it was. Written on the subscription by the disabling write (``disable_for_failing``), whose stream
    record publishes it again should the worker not live to (``herald.worker.streamed``)."""
    data = {
        **ref,
        "reason": reason,
        "disabled_at": disabled_at,
        "failing_since": failing_since,
        "last_status_code": last_status_code,
    }
    return "subscription.disabled", data, (ref["subscription_id"], disabled_at.isoformat())


def _as_message(notice: Report) -> NoticeMessage:
    event_type, data, key = notice
    return NoticeMessage(event_type=event_type, data=data, key=list(key))


def worth_reporting(worker: Worker, failing_since: datetime, recovered_at: datetime) -> bool:
    """Whether the end of a failing streak is news to the operator: the streak lasted
    ``recovered_notice_after_seconds`` or more. An endpoint that fails half its requests ends a streak of
    ``failing_after_failures`` every few seconds at a high rate: one ``subscription.recovered`` each time would be a
    stream of them, about an endpoint that was never down for long."""
    return (recovered_at - failing_since).total_seconds() >= worker.settings.recovered_notice_after_seconds


#: Waits before publishing an operational event again after AWS refused it (seconds): three tries in all.
REPORT_RETRY_DELAYS = (0.2, 1.0)
#: Attempts that made no request (the URL policy refused the address; the transform failed): no response to time.
_NO_REQUEST = frozenset({ErrorKind.REFUSED_BY_POLICY, ErrorKind.TRANSFORM})
#: A retry is made only with this long left of the invocation after its wait: the batch's bookkeeping comes after it.
REPORT_RETRY_MARGIN_SECONDS = 15.0


#: How long a notice left to the work queue (``NoticeMessage``) waits there before it is tried again (seconds).
NOTICE_DELAY_SECONDS = 30


async def report(worker: Worker, reports: list[Report], log: dict[str, Any]) -> bool:
    """Publish operational events, each tried again after AWS refused it (``REPORT_RETRY_DELAYS``, while the
    invocation has time for it: its id is what it reports, so a try that stored it and failed to queue it is
    completed by the next, and nothing is sent twice). One AWS still refuses is left to the work queue, as a
    ``NoticeMessage`` a later batch publishes (``publish_notice``). One that fails otherwise (a bug: its data does not
    fit its type), or that SQS refuses too, is logged, never raised: what it reports is recorded, and its message is
    done. Whether every one was published or queued."""
    handled = True
    for event_type, data, key in reports:
        for delay in (*REPORT_RETRY_DELAYS, None):
            try:
                await worker.io(emit, worker.services, event_type, data, key=key)
                break
            except Exception as failure:
                if isinstance(failure, ValidationError):  # its data does not fit its type: a bug, no try will do
                    # Without a traceback: the error's text quotes the data, a subscriber's URL among it.
                    extra = {**log, "event_type": event_type, "problems": problems(failure)}
                    logger.error("operational event not published: its data does not fit its type", extra=extra)
                    handled = False
                    break
                if not isinstance(failure, ServiceUnavailableError):  # not refused by AWS: a bug, no try will do
                    logger.exception("operational event not published", extra={**log, "event_type": event_type})
                    handled = False
                    break
                if delay is None or worker.clock() + delay + REPORT_RETRY_MARGIN_SECONDS > worker.deadline:
                    handled = await _leave_to_queue(worker, (event_type, data, key), log) and handled
                    break
                await asyncio.sleep(delay)
    return handled


async def _leave_to_queue(worker: Worker, notice: Report, log: dict[str, Any]) -> bool:
    """Queue an operational event AWS refused to publish, to be published by a later batch (``NoticeMessage``).
    Whether it is queued."""
    event_type = notice[0]
    message = _as_message(notice)
    extra = {**log, "event_type": event_type}
    try:
        await worker.io(worker.queue.send, message, delay_seconds=NOTICE_DELAY_SECONDS)
    except Exception:
        logger.exception("operational event not published, nor queued to be", extra=extra)
        return False
    logger.warning("operational event refused; queued to be published later", extra=extra)
    return True


async def publish_notice(worker: Worker, message: NoticeMessage, body: str, redrives: int) -> None:
    """Publish an operational event left to the work queue by ``report``. AWS refusing it again raises: the message
    comes back (and goes to the dead-letter queue if it keeps failing). One the catalog does not take (a type it does
    not declare, data that does not fit: another version's notice) is parked in the dead-letter queue with the
    reason, as poison: no try of this code will work it."""
    try:
        await worker.io(emit, worker.services, message.event_type, message.data, key=tuple(message.key))
    except (OperationalEventError, ValidationError) as exc:
        # The problems without their input: the notice's data (a subscriber's URL) would be logged with the reason.
        why = problems(exc) if isinstance(exc, ValidationError) else exc
        reason = f"operational event not publishable: {why}"
        await worker.io(worker.queue.dead_letter, body, reason, redrives=redrives, unworkable=True)


def exhausted(previous: Delivery | None, settled: Delivery) -> bool:
    """Whether this attempt failed the delivery for good (a manual attempt on a failed one does not)."""
    before = previous.status if previous is not None else DeliveryStatus.PENDING
    return before is DeliveryStatus.PENDING and settled.status is DeliveryStatus.FAILED


def _exhaustion_reason(delivery: Delivery) -> str:
    """Why a delivery failed for good by its latest attempt."""
    if delivery.last_status_code == 410:
        return "the endpoint answered 410 Gone"
    if delivery.last_error_kind is ErrorKind.REFUSED_BY_POLICY:
        return "the URL policy refused the endpoint's address"
    if delivery.last_error_kind is ErrorKind.TRANSFORM:
        return "the subscription's transform failed on this event"
    return "every scheduled attempt failed"


def _delivery_ref(sub: Subscription, event_type: str, delivery: Delivery) -> dict[str, Any]:
    """What a notice about a delivery says of it, as its latest attempt left it."""
    return {
        "tenant_id": sub.tenant_id,
        "subscription_id": sub.id,
        "url": sub.url,
        "event_id": delivery.event_id,
        "event_type": event_type,
        "delivery_id": delivery.id,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error_kind": delivery.last_error_kind and delivery.last_error_kind.value,
    }


def _failing(delivery: Delivery, data: dict[str, Any]) -> Report:
    """The operator's notice that a delivery failed the ``FAILING_NOTICE_ATTEMPT``th step of its retry schedule."""
    return "delivery.failing", {**data, "next_attempt_at": delivery.next_attempt_at}, (delivery.id,)


def _exhausted(delivery: Delivery, data: dict[str, Any]) -> Report:
    """The operator's notice that a delivery failed for good by its attempts."""
    return "delivery.exhausted", {**data, "reason": _exhaustion_reason(delivery)}, (delivery.id,)


#: How a delivery fails without an attempt of its own (its subscription disabled or deleted, its event expired, its
#: message discarded): no ``delivery.exhausted`` for those.
_FAILED_WITHOUT_ATTEMPT = frozenset({ErrorKind.SUBSCRIPTION_GONE, ErrorKind.EVENT_EXPIRED, ErrorKind.DISCARDED})


def has_notice(state: DeliveryState) -> bool:
    """Whether the delivery's latest attempt had a notice to report (``report_missed``): it failed the delivery for
    good by its attempts, or failed the ``FAILING_NOTICE_ATTEMPT``th step of its schedule and the delivery is still
    retried."""
    return _missed(state) is not None


def _missed(state: DeliveryState) -> Callable[[Delivery, dict[str, Any]], Report] | None:
    delivery = state.delivery
    if delivery.attempts == 0:
        return None
    if delivery.status is DeliveryStatus.FAILED:
        return None if delivery.last_error_kind in _FAILED_WITHOUT_ATTEMPT else _exhausted
    # Still pending: its latest attempt failed (a 2xx settles a delivery, ``schedule.next_step``).
    if (
        delivery.status is DeliveryStatus.PENDING
        and state.scheduled_attempts == FAILING_NOTICE_ATTEMPT
        and delivery.next_attempt_at is not None
    ):
        return _failing
    return None


async def report_missed(
    worker: Worker, sub: Subscription, event_type: str, state: DeliveryState, log: dict[str, Any]
) -> None:
    """Report again what a delivery's latest scheduled attempt did, for a message of it that came back to find that
    attempt made (``dispatch``): the invocation that made it may have died after recording it and before reporting
    it (``attempted``), and the message, not deleted then, is that invocation's. A notice's id is what it reports,
    so one that was published is not published twice (``has_notice`` says whether there is one)."""
    notice = _missed(state)
    if notice is None or sub.tenant_id == OPERATOR_TENANT_ID:
        return
    await report(worker, [notice(state.delivery, _delivery_ref(sub, event_type, state.delivery))], log)


def _count_changes(previous: Delivery | None, settled: Delivery) -> dict[str, int]:
    """The event counters' deltas when a delivery goes from ``previous`` to ``settled``."""
    before = previous.status if previous is not None else DeliveryStatus.PENDING
    deltas = dict.fromkeys((DeliveryStatus.SUCCEEDED.value, DeliveryStatus.FAILED.value), 0)
    if before is settled.status:
        return deltas
    if before is not DeliveryStatus.PENDING:
        deltas[before.value] -= 1
    if settled.status is not DeliveryStatus.PENDING:
        deltas[settled.status.value] += 1
    return deltas


class Bookkeeping:
    """One worker's bookkeeping of the batch at hand; ``finish`` writes it when the batch is done."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        #: Event counter changes of the deliveries settled in this batch: event id -> (expiry, deltas).
        self._event_counts: dict[str, tuple[int, Counter[str]]] = {}
        #: The attempts made in this batch, per subscription, for its stats and health.
        self._tallies: dict[str, _Tally] = {}

    # --- per delivery -----------------------------------------------------------------------------------

    def settled(self, event_id: str, expires_at: int, previous: Delivery | None, settled: Delivery) -> None:
        """Add a settled delivery's change to its event's counters, to be written when the batch is done."""
        deltas = {key: value for key, value in _count_changes(previous, settled).items() if value}
        if deltas:
            _, counts = self._event_counts.setdefault(event_id, (expires_at, Counter()))
            counts.update(deltas)

    def measure(self, outcome: Outcome, settled: Delivery, previous: Delivery | None) -> None:
        metrics = self._worker.metrics
        if outcome.handed_over:
            # Cut short by Herald, not failed by the endpoint (``AttemptHandedToSlowLane`` counts it): its retry
            # from the slow lane is the attempt measured, so a slow endpoint that answers fails nothing.
            return
        if outcome.error_kind is ErrorKind.REFUSED_BY_POLICY:
            metrics.add(Metric.REFUSED)
        else:
            metrics.add(Metric.SUCCEEDED if outcome.succeeded else Metric.FAILED)
            if outcome.error_kind is not ErrorKind.TRANSFORM:  # a transform that failed made no request to time
                metrics.add(Metric.LATENCY, outcome.duration_ms)
        if not outcome.succeeded and settled.status is DeliveryStatus.PENDING and settled.next_attempt_at is not None:
            metrics.add(Metric.RETRIED)
        if exhausted(previous, settled):
            metrics.add(Metric.EXHAUSTED)

    async def attempted(
        self,
        event: Event,
        sub: Subscription,
        outcome: Outcome,
        settled: Delivery,
        previous: Delivery | None,
        *,
        expires_at: int,
        log: dict[str, Any],
        streamed: bool = False,
        scheduled: int | None = None,
    ) -> None:
        """What follows a recorded attempt: it joins the subscription's tally for this batch (``streamed``: its
        stats count it from the table's stream), and the operator hears what it did to its delivery
        (``scheduled``: the steps of its retry schedule made with this attempt; None for one asked for). The
        attempt is recorded already: a failure here is logged, never turned into a repeated attempt."""
        tally = self._tallies.get(sub.id)
        if tally is None:
            tally_log = {"subscription_id": sub.id, "tenant_id": sub.tenant_id}
            tally = self._tallies[sub.id] = _Tally(sub, expires_at, tally_log)
        latency = outcome.latency_ms(event.created_at)
        if not outcome.handed_over and outcome.error_kind not in _NO_REQUEST:
            # Cut short by Herald (its retry's response is measured), or no request made: no response to measure to.
            self._worker.metrics.add(Metric.PUBLISH_LATENCY, latency)
        tally.outcomes.append(outcome)
        tally.latencies.append(latency)
        tally.streamed.append(streamed)
        tally.expires_at = max(tally.expires_at, expires_at)
        if sub.tenant_id == OPERATOR_TENANT_ID or outcome.handed_over:
            # The operator's own endpoints: never report on them to themselves (no loops). An attempt handed over:
            # no step of the retry schedule, nothing the endpoint did (the slow lane's attempt says it).
            return
        reports: list[Report] = []
        delivery_ref = _delivery_ref(sub, event.type, settled)  # the outcome's status and error, as settled holds them
        if not outcome.succeeded and scheduled == FAILING_NOTICE_ATTEMPT and settled.next_attempt_at is not None:
            # The 4th step of its retry schedule (a hand-over to the slow lane is none, nor is an attempt asked for),
            # still being retried: once per delivery.
            reports.append(_failing(settled, delivery_ref))
        if exhausted(previous, settled):
            reports.append(_exhausted(settled, delivery_ref))
        await report(self._worker, reports, log)

    # --- when the batch is done -------------------------------------------------------------------------

    async def finish(self) -> None:
        """Settle the subscriptions' stats and health, then write the event counters."""
        await self._settle_subscriptions()
        await self._flush_event_counts()

    async def _flush_event_counts(self) -> None:
        """Write the batch's event counter changes: one UpdateItem per event, all at once."""
        pending, self._event_counts = self._event_counts, {}
        worker = self._worker

        def write(event_id: str, expires_at: int, deltas: Counter[str]) -> None:
            try:
                worker.store.events.count(event_id, expires_at=expires_at, **deltas)
            except Exception:
                logger.warning("event counters not updated", extra={"event_id": event_id, **deltas})

        await asyncio.gather(*(worker.io(write, key, *value) for key, value in pending.items()))

    async def _settle_subscriptions(self) -> None:
        """Count each subscription's attempts in its stats (one write per subscription, not per attempt),
        then disable those that answered 410 or have been failing for the whole window, and tell the
        operator."""
        tallies, self._tallies = self._tallies, {}
        results = await asyncio.gather(
            *(self._settle_subscription(tally) for tally in tallies.values()), return_exceptions=True
        )
        for tally, result in zip(tallies.values(), results, strict=True):
            if isinstance(result, BaseException):
                # The attempts are recorded: a failure here is logged, never turned into a repeated attempt.
                logger.error("subscription health not settled", extra=tally.log, exc_info=result)

    async def _settle_subscription(self, tally: _Tally) -> None:
        worker = self._worker
        sub = tally.sub
        ordered = sorted(
            zip(tally.outcomes, tally.latencies, tally.streamed, strict=True), key=lambda entry: entry[0].finished
        )
        outcomes = [outcome for outcome, _, _ in ordered]
        if all(tally.streamed) and worker.reads.without_streak(sub.id):
            return  # successes the stream counts, and no streak for them to end: nothing to write or report
        try:
            health = await worker.io(
                worker.store.health.count_attempts,
                sub.id,
                [
                    AttemptTally(
                        outcome.succeeded,
                        outcome.status_code,
                        outcome.finished,
                        latency,
                        streamed,
                        handed_over=outcome.handed_over,
                    )
                    for outcome, latency, streamed in ordered
                ],
                failing_after=worker.settings.failing_after_failures,
                expires_at=tally.expires_at,
                version=sub.version,
            )
        except Exception:
            logger.exception("subscription stats not updated", extra=tally.log)
            health = SubscriptionHealth(0, None)
        deciding, reason = self._disable_reason(outcomes, health)
        ref = {"tenant_id": sub.tenant_id, "subscription_id": sub.id, "url": sub.url}
        reports: list[Report] = []
        if reason:
            # Imported here, as the operational events are: a batch that disables nothing does not load the catalog.
            from herald.domain.subscriptions import disable_for_failing

            now = worker.now()
            notice = None
            if sub.tenant_id != OPERATOR_TENANT_ID:
                notice = disabled_notice(ref, reason, now, health.failing_since, deciding.status_code)
            written = None if notice is None else dump_message(_as_message(notice))
            disabled = await worker.io(disable_for_failing, worker.store, sub, reason, now, notice=written)
            if disabled is not None and notice is not None:
                reports.append(notice)
        if sub.tenant_id == OPERATOR_TENANT_ID:
            return  # the operator's own endpoints: never report on them to themselves (no loops)
        reports += [
            recovered(ref, failing_since, recovered_at)
            for failing_since, recovered_at in health.recoveries
            if worth_reporting(worker, failing_since, recovered_at)
        ]
        await report(worker, reports, tally.log)

    def _disable_reason(self, outcomes: list[Outcome], health: SubscriptionHealth) -> tuple[Outcome, str | None]:
        """Why to disable a subscription after these attempts (in the order they finished), and the attempt
        that decided it: a 410 Gone, or a streak still failing at the end that has lasted the whole window. An
        attempt handed to the slow lane decides nothing: the endpoint was not given its whole timeout."""
        gone = next((outcome for outcome in outcomes if outcome.status_code == 410), None)
        if gone is not None:
            return gone, f"the endpoint answered 410 Gone on {gone.finished.isoformat()}"
        answered = [outcome for outcome in outcomes if not outcome.handed_over]
        if not answered:
            return outcomes[-1], None
        last = answered[-1]
        if last.succeeded or health.failing_since is None:
            return last, None
        window = timedelta(hours=self._worker.settings.disable_after_failing_hours)
        if last.finished - health.failing_since < window:
            return last, None
        return last, (
            f"failing continuously since {health.failing_since.isoformat()} "
            f"({health.consecutive_failures} failed attempts in a row)"
        )
