"""Recovery and redelivery jobs, as the API starts and reads them (``herald.worker.jobs`` runs them).

A recovery re-sends the failed deliveries of one subscription in a time window; an identical request
while its job runs finds that job (a window lock), so a caller's retry never starts a second one. A
job's counts are read from its tickets (one per delivery it queued), so they are exact however often
its messages ran; once it is done they are stored with it, and its tickets are not read again.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from herald import ids
from herald.catalog import PING_EVENT_TYPE
from herald.domain import subscriptions
from herald.domain.publishing import event_retention
from herald.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError
from herald.limits import too_many_recoveries
from herald.messages import RecoverMessage, RedeliverMessage
from herald.records import RecoveryJob, RecoveryStatus, utcnow
from herald.schemas import RedeliveryOut

if TYPE_CHECKING:
    from herald.records import Subscription
    from herald.schemas import RecoveryIn
    from herald.services import Services
    from herald.storage.jobs import StoredJob

logger = logging.getLogger(__name__)

RECOVERY = "rcv"
REDELIVERY = "rdl"
#: How long an identical recovery request finds a job that has not finished.
WINDOW_LOCK_SECONDS = 24 * 3600


def as_utc(moment: datetime, field: str, where: str = "body") -> datetime:
    """``moment`` in UTC; a time with no UTC value is invalid input at ``(where, field)``."""
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # a time at the very edge of the calendar, with no UTC value
        raise InvalidInputError(
            f"`{field}` is out of range",
            details=[{"loc": [where, field], "msg": "no UTC value", "type": "out_of_range"}],
        ) from exc


def start_recovery(services: Services, sub: Subscription, body: RecoveryIn) -> RecoveryJob:
    """Queue a recovery of ``sub``'s failed deliveries in the window, or return the job already at work on
    the same window (an identical request while it runs). A disabled subscription is enabled first (409): a
    recovery would send to an endpoint its tenant or Herald stopped."""
    subscriptions.require_enabled(sub, note="the deliveries it failed while disabled stay in the window")
    now = utcnow()
    # No further back than events are kept: a delivery whose event is gone could not be sent again.
    reach = min(timedelta(days=services.settings.recovery_max_days), event_retention(services))
    oldest = now - reach
    since = as_utc(body.since, "since")
    until = as_utc(body.until, "until") if body.until is not None else now
    if since < oldest:
        whole_days = reach == timedelta(days=reach.days)
        shown = f"{reach.days} days" if whole_days else f"{reach / timedelta(hours=1):.0f} hours"
        raise InvalidInputError(
            f"`since` may be at most {shown} ago",
            details=[{"loc": ["body", "since"], "msg": f"before {oldest.isoformat()}", "type": "too_old"}],
        )
    if since > now:
        raise InvalidInputError(
            "`since` is in the future: a recovery resends deliveries that failed already, once",
            details=[{"loc": ["body", "since"], "msg": "after now", "type": "in_future"}],
        )
    if until > now:
        # The job lists what has failed by the time it runs, once: what fails later in the window would never be
        # resent, though the job would read `done` over all of it.
        raise InvalidInputError(
            "`until` is in the future: a recovery resends deliveries that failed already, once; leave it out for now",
            details=[{"loc": ["body", "until"], "msg": "after now", "type": "in_future"}],
        )
    if since >= until:
        raise InvalidInputError(
            "`since` must be before `until` (and before now when `until` is left out)",
            details=[{"loc": ["body", "since"], "msg": "not before `until`", "type": "empty_window"}],
        )
    request = f"{sub.id}|{since.isoformat()}|{until.isoformat() if body.until is not None else 'now'}"
    window = f"{sub.id}#{hashlib.sha256(request.encode()).hexdigest()[:32]}"
    store = services.store
    for _ in range(3):
        held = store.jobs.window_holder(window)
        if held is not None:
            # A job just done is done: a new one starts.
            existing = read_recovery(services, held, tenant_id=sub.tenant_id, subscription_id=sub.id, now=True)
            if existing is not None and existing.status is not RecoveryStatus.DONE:
                if existing.status is RecoveryStatus.QUEUED:
                    # Not started yet: its message may never have been sent (the first request failed midway, and
                    # this is the caller's retry). Send it again; a job message that runs twice sends nothing twice.
                    services.queue.send(RecoverMessage(job_id=existing.id))
                return existing
        slot, slot_holder = _free_slot(services, sub.id)
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
        stored = store.jobs.create(
            job,
            window=window,
            window_holder=held,  # finished, or its job gone: a new run over the same window
            slot=slot,
            slot_holder=slot_holder,
            lock_expires_at=int(now.timestamp()) + WINDOW_LOCK_SECONDS,
            expires_at=_job_expiry(services, now),
        )
        if stored:
            services.queue.send(RecoverMessage(job_id=job.id))
            logger.info("recovery queued", extra={"job_id": job.id, "subscription_id": sub.id})
            return job
        # A concurrent request took the window (found as it runs again) or the slot (another is found).
    raise ConflictError("the recovery could not be started: concurrent requests; retry")


def _free_slot(services: Services, subscription_id: str) -> tuple[int, str | None]:
    """A recovery slot of the subscription no unfinished job holds: its number, and the finished job holding it
    (None if none does). Every slot held by a job still at work: 422 ``limit_exceeded``."""
    limit = services.settings.max_recoveries_per_subscription
    holders = services.store.jobs.slot_holders(subscription_id)
    for number in range(limit):
        if number not in holders:
            return number, None
    for number in range(limit):
        if _finished(services, holders[number]):
            return number, holders[number]
    raise too_many_recoveries(limit)


def _finished(services: Services, job_id: str) -> bool:
    """Whether the job is done (every delivery listed and attempted) or gone. Its tickets are read only once it is
    listed, and once found done it is marked so, with its counts: a job's tickets (thousands for a long window) are
    read in full at most once after it is done, however often its subscription's slots are all held. Until then,
    its counts kept for its pollers answer (``_progress``): a request that finds every slot held is refused for up
    to ``HERALD_RECOVERY_PROGRESS_SECONDS`` after a job's end."""
    found = services.store.jobs.get(job_id)
    if found is None:
        return True
    if found.counted or found.job.status is RecoveryStatus.DONE:
        return True
    return found.listed and _progress(services, found).status is RecoveryStatus.DONE


def read_recovery(
    services: Services, job_id: str, *, tenant_id: str, subscription_id: str, now: bool = False
) -> RecoveryJob | None:
    """The tenant's job of ``subscription_id`` with its counts and its status (None if there is no such job of
    theirs: nothing of another's is read or written); those of a running job as read from its tickets at most
    ``HERALD_RECOVERY_PROGRESS_SECONDS`` ago (``_progress``), or ``now``."""
    found = services.store.jobs.get(job_id)
    if found is None or (found.job.tenant_id, found.job.subscription_id) != (tenant_id, subscription_id):
        return None
    return _progress(services, found, anew=now)


#: How long a request that took the reading of a job's tickets anew holds it (``JobRepository.take_progress_read``)
#: before another may: the read of a job of a million deliveries takes some 13 s of its partition's throughput.
PROGRESS_READ_HOLD_SECONDS = 60


def _progress(services: Services, found: StoredJob, *, anew: bool = False) -> RecoveryJob:
    """The job with its counts: those stored once it was found done, else read from its tickets. A listed job with no
    ticket open is done, and is stored so with its counts (``JobRepository.finish``): its tickets are not read again,
    however often its progress is asked for (a poller's GET reads one item).

    A running job's counts are kept with it once read (``JobRepository.note_progress``), and answered again for
    ``HERALD_RECOVERY_PROGRESS_SECONDS`` (``noted``): a job of a long window has a ticket per delivery, all in one
    partition, and pollers reading them all on each GET would pay for it, and could take the partition's whole read
    throughput. Once they are stale, one request reads the tickets anew (``take_progress_read``), and the others
    answer the kept counts meanwhile. Its end is so seen up to ``noted`` seconds late (or as long as the read takes).
    Keeping the counts is no part of the answer: a write DynamoDB refuses is logged, and the counts read are answered
    all the same.
    ``anew``: read from the tickets whatever is kept (and kept in turn, so no poller is answered older ones)."""
    if found.counted:
        return found.job
    noted = services.settings.recovery_progress_seconds
    moment = utcnow().timestamp()
    at, at_ms = int(moment), int(moment * 1000)
    kept = found.progress
    taken = False
    if kept is not None and noted and not anew:
        taken = not 0 <= at_ms - kept.at_ms < noted * 1000 and _take_read(services, found.job.id, at)
        if not taken:  # fresh, or another request reads them anew
            return found.job.model_copy(update=kept.counts)
    freed = False  # the reading taken, freed by the write that keeps or finishes the counts, else given back
    try:
        job, freed = _counted(services, found, noted=noted, at_ms=at_ms)
        return job
    finally:
        if taken and not freed:
            services.store.jobs.give_back_progress_read(found.job.id, taken=at)


def _counted(services: Services, found: StoredJob, *, noted: int, at_ms: int) -> tuple[RecoveryJob, bool]:
    """``found`` with its counts read from its tickets (``_progress``): kept (``noted``) while it runs, stored with
    it once it is done. Whether that write was made (it frees a reading taken)."""
    counts = services.store.jobs.ticket_counts(found.job.id)
    progress = {
        "queued": counts["open"] + counts["sent"] + counts["failed"],
        "sent": counts["sent"],
        "failed": counts["failed"],
    }
    if not found.listed or counts["open"]:
        kept = False
        if noted:
            try:
                kept = services.store.jobs.note_progress(found.job.id, progress, at_ms=at_ms)
            except ServiceUnavailableError:
                logger.warning("recovery progress not kept", extra={"job_id": found.job.id}, exc_info=True)
        return found.job.model_copy(update=progress), kept
    now = utcnow()
    finished = services.store.jobs.finish(found.job.id, progress, version=found.version, updated_at=now)
    job = found.job.model_copy(
        update={**progress, "status": RecoveryStatus.DONE} | ({"updated_at": now} if finished else {})
    )
    return job, finished


def _take_read(services: Services, job_id: str, at: int) -> bool:
    """Whether this request reads the job's stale counts anew (``take_progress_read``): also when DynamoDB refused
    to say (it reads them, as every request did before they were kept)."""
    try:
        return services.store.jobs.take_progress_read(job_id, now=at, hold_seconds=PROGRESS_READ_HOLD_SECONDS)
    except ServiceUnavailableError:
        logger.warning("recovery progress read not taken", extra={"job_id": job_id}, exc_info=True)
        return True


def start_redelivery(services: Services, event_id: str) -> RedeliveryOut:
    """Queue one more attempt of an event to every subscription it goes to (operator). The event of a deleted tenant
    is not found: its subscriptions are gone, or going (the tenant's purge)."""
    stored = services.store.events.get(event_id)
    if stored is None or (
        stored.event.tenant_id is not None and services.store.tenants.get(stored.event.tenant_id) is None
    ):
        raise NotFoundError(f"event {event_id} not found")
    event = stored.event
    if event.type == PING_EVENT_TYPE:
        # A test event was for one subscription, and routing by its type would send it to every `*` subscription of
        # its tenant instead: a new test is asked of the subscription.
        raise ConflictError(
            f"event {event.id} is a test event: send a new one with POST /v1/subscriptions/{{id}}/test",
        )
    job_id = ids.new_id(REDELIVERY)
    services.queue.send(
        RedeliverMessage(job_id=job_id, event_id=event.id, tenant_id=event.tenant_id, event_ms=stored.event_ms)
    )
    logger.info("redelivery queued", extra={"job_id": job_id, "event_id": event.id})
    return RedeliveryOut(id=job_id, event_id=event.id, status=RecoveryStatus.QUEUED)


def _job_expiry(services: Services, now: datetime) -> int:
    return int((now + timedelta(days=services.settings.recovery_job_ttl_days)).timestamp())
