"""Recovery and redelivery jobs: the job records, the window locks that find a running job again, and
per delivery a job's ticket and the delivery's recovery lock (its one extra attempt, reserved and used
up exactly once: see ``herald.worker.jobs``)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from herald.errors import AttemptUnderWay, ServiceUnavailableError
from herald.records import RecoveryJob, RecoveryStatus
from herald.storage import keys
from herald.storage.table import cancellation_codes, conditional_failure, from_item, record, strip, to_item, values

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from datetime import datetime

    from herald.storage.table import Table

#: A job ticket's states: reserved and not yet used, used with a delivered attempt, used with a failed one.
OPEN, SENT, FAILED = "open", "sent", "failed"
#: A recovery's ticket closed without an attempt: its delivery was no longer failed when its turn came (a manual
#: retry, or an overlapping job, delivered it meanwhile). Counted nowhere: the job found one failed delivery less.
SKIPPED = "skipped"
#: A redelivery's ticket for a subscription that never had the event: its first delivery, no extra attempt.
FIRST = "first"
#: A ticket's ``origin`` when this code wrote it first (``take_ticket``).
NEW_TICKET = "new"


def lock_check(delivery_id: str, job_id: str, *, now: int) -> dict[str, Any]:
    """A transaction's check that ``job_id`` holds the delivery's recovery lock (claiming its extra attempt)."""
    return {
        "ConditionCheck": {
            "Key": to_item(keys.recovery_lock(delivery_id)),
            "ConditionExpression": "job_id = :job AND expires_at > :now",
            "ExpressionAttributeValues": values(job=job_id, now=now),
        }
    }


def _free_lock(delivery_id: str, job_id: str) -> dict[str, Any]:
    return {
        "Key": to_item(keys.recovery_lock(delivery_id)),
        "ConditionExpression": "job_id = :job",
        "ExpressionAttributeValues": values(job=job_id),
    }


def _lock_put(delivery_id: str, job_id: str, *, now: int, seconds: int) -> dict[str, Any]:
    """A transaction's Put of the delivery's recovery lock for ``job_id`` for ``seconds``: refused while another job
    holds it (``take_ticket``, ``relock``)."""
    lock = {**keys.recovery_lock(delivery_id), "job_id": job_id, "expires_at": now + seconds}
    return {
        "Put": {
            "Item": to_item(lock),
            "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now OR job_id = :job",
            "ExpressionAttributeValues": values(now=now, job=job_id),
        }
    }


def _settle_ticket(job_id: str, delivery_id: str, outcome: str) -> dict[str, Any]:
    return {
        "Key": to_item(keys.job_ticket(job_id, delivery_id)),
        "UpdateExpression": "SET #state = :outcome",
        "ConditionExpression": "#state = :open",
        "ExpressionAttributeNames": {"#state": "state"},
        "ExpressionAttributeValues": values(outcome=outcome, open=OPEN),
    }


def use_ticket(delivery_id: str, job_id: str, outcome: str) -> list[dict[str, Any]]:
    """A transaction's actions that use up the job's ticket for the delivery (``outcome``: sent or failed)
    and free the delivery's recovery lock: with the attempt's record, exactly once."""
    return [{"Delete": _free_lock(delivery_id, job_id)}, {"Update": _settle_ticket(job_id, delivery_id, outcome)}]


def _take_lock(key: keys.Key, job_id: str, holder: str | None, *, now: int, until: int) -> dict[str, Any]:
    """A transaction's Put of a lock held by ``job_id`` until ``until``: refused if another job holds it, but for
    ``holder`` (a finished job) or a lock expired."""
    condition = "attribute_not_exists(pk) OR expires_at <= :now"
    placeholders: dict[str, Any] = {"now": now}
    if holder is not None:
        condition += " OR job_id = :old"
        placeholders["old"] = holder
    return {
        "Put": {
            "Item": to_item({**key, "job_id": job_id, "expires_at": until}),
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values(**placeholders),
        }
    }


def _job_item(job: RecoveryJob, *, expires_at: int, listed: bool) -> dict[str, Any]:
    fields = record(job)
    for counted in COUNTS:  # read from the tickets until the job is done (``JobRepository.finish``)
        fields.pop(counted, None)
    return to_item({**keys.recovery_job(job.id), **fields, "listed": listed, "expires_at": expires_at})


#: A recovery job's counts, as its answer gives them: read from its tickets, stored once the job is done.
COUNTS = ("queued", "sent", "failed")
#: The job item's attribute keeping its counts as last read while it ran (``JobRepository.note_progress``).
PROGRESS = "progress"
#: The job item's attribute naming when a request took the reading of its tickets anew (``take_progress_read``).
PROGRESS_READ = "progress_read"


class Progress(NamedTuple):
    """A running job's counts (``COUNTS``) as read from its tickets at ``at_ms`` (epoch milliseconds):
    ``note_progress``."""

    counts: dict[str, int]
    at_ms: int

    def stored(self) -> dict[str, int]:
        """As the job item keeps it (``PROGRESS``): the counts, and ``at_ms``."""
        return {**{name: self.counts[name] for name in COUNTS}, "at_ms": self.at_ms}


class StoredJob(NamedTuple):
    """A recovery job as stored, whether all its deliveries have been listed, and whether its counts are final:
    stored with it when it was found done (``JobRepository.finish``), so its tickets need not be read again.
    ``version`` is its ``updated_at`` as stored, which every change of it moves (``finish`` is refused if it moved).
    ``progress``: its counts as last read while it ran (``note_progress``), None if never."""

    job: RecoveryJob
    listed: bool
    counted: bool
    version: str
    progress: Progress | None = None


class JobRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def window_holder(self, window: str) -> str | None:
        """The job holding the lock of ``window`` (subscription, since, until), None if no lock is held."""
        held = self._table.read(keys.recovery_window(window))
        return None if held is None else str(held["job_id"])

    def slot_holders(self, subscription_id: str) -> dict[int, str]:
        """The subscription's recovery slots whose lock is held: slot number -> the job holding it. Read strongly."""
        items, _ = self._table.query(
            key={"pk": keys.recovery_slots_partition(subscription_id)},
            prefix=keys.RECOVERY_SLOT_PREFIX,
            limit=1000,
            cursor=None,
            consistent=True,
        )
        return {int(item["sk"].removeprefix(keys.RECOVERY_SLOT_PREFIX)): str(item["job_id"]) for item in items}

    def create(
        self,
        job: RecoveryJob,
        *,
        window: str,
        window_holder: str | None,
        slot: int,
        slot_holder: str | None,
        lock_expires_at: int,
        expires_at: int,
    ) -> bool:
        """Store a new recovery job with the lock of its ``window`` (subscription, since, until), so that an
        identical request finds it, and of one of its subscription's recovery slots (so many unfinished jobs at
        once): one transaction. A lock held by a finished job (``window_holder``, ``slot_holder``) is taken over.
        False if a lock was held by another job meanwhile (a concurrent request): nothing was stored."""
        now = self._table.now()
        slot_key = keys.recovery_slot(job.subscription_id, slot)
        try:
            self._table.transact(
                conflict_attempts=3,  # requests for other windows at once go for the same slot: DynamoDB cancels one
                actions=[
                    {
                        "Put": {
                            "Item": _job_item(job, expires_at=expires_at, listed=False),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    _take_lock(keys.recovery_window(window), job.id, window_holder, now=now, until=lock_expires_at),
                    _take_lock(slot_key, job.id, slot_holder, now=now, until=lock_expires_at),
                ],
            )
        except ClientError:
            return False
        return True

    def get(self, job_id: str) -> StoredJob | None:
        """The job as stored (its counts zero until it is done and ``counted``) and whether all its deliveries have
        been listed."""
        item = self._table.read(keys.recovery_job(job_id))
        if item is None:
            return None
        noted = item.pop(PROGRESS, None)
        item.pop(PROGRESS_READ, None)
        job = RecoveryJob.model_validate(strip(item))
        counted = bool(item.get("counted")) and job.status is RecoveryStatus.DONE
        progress = None
        if isinstance(noted, dict):
            progress = Progress({name: int(noted.get(name, 0)) for name in COUNTS}, int(noted.get("at_ms", 0)))
        return StoredJob(job, bool(item.get("listed")), counted, str(item.get("updated_at", "")), progress)

    def take_progress_read(self, job_id: str, *, now: int, hold_seconds: int) -> bool:
        """Let one request read a running job's tickets anew once its kept counts are stale (``note_progress``):
        True for the first to ask, and for any once the last one to take it has held it ``hold_seconds`` (it died, or
        its read is that slow); False while another holds it (it answers the kept counts meanwhile), or the job is
        gone or counted. Its version (``updated_at``) stays."""
        return self._update_if(
            job_id,
            UpdateExpression="SET #read = :now",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(counted) "
            "AND (attribute_not_exists(#read) OR #read <= :stale)",
            ExpressionAttributeNames={"#read": PROGRESS_READ},
            ExpressionAttributeValues=values(now=now, stale=now - hold_seconds),
        )

    def give_back_progress_read(self, job_id: str, *, taken: int) -> None:
        """Give back the reading of a job's counts taken at ``taken`` (``take_progress_read``) by a request whose read,
        or whose write of what it read, was not made (the write that keeps or finishes the counts frees it): the next
        poller reads them, instead of all answering the stale counts for the rest of its hold. A read taken again
        since stays; a failure here is left to the hold."""
        with contextlib.suppress(ServiceUnavailableError):
            self._update_if(
                job_id,
                UpdateExpression="REMOVE #read",
                ConditionExpression="#read = :taken",
                ExpressionAttributeNames={"#read": PROGRESS_READ},
                ExpressionAttributeValues=values(taken=taken),
            )

    def note_progress(self, job_id: str, counts: dict[str, int], *, at_ms: int) -> bool:
        """Keep a running job's ``counts`` (``COUNTS``) as read from its tickets at ``at_ms``, and let the next reading
        of them be taken (``take_progress_read``): a poller's next read within ``HERALD_RECOVERY_PROGRESS_SECONDS``
        answers them (``StoredJob.progress``) instead of reading every ticket again. Its version (``updated_at``)
        stays: this changes nothing of the job. Nothing is written for a job gone (expired) or counted meanwhile, nor
        over counts read later than ``at_ms`` (a slower read of older tickets): False then."""
        noted = Progress(counts, at_ms).stored()
        return self._update_if(
            job_id,
            UpdateExpression="SET #progress = :progress REMOVE #read",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(counted) "
            "AND (attribute_not_exists(#progress) OR #progress.#at < :at)",
            ExpressionAttributeNames={"#progress": PROGRESS, "#read": PROGRESS_READ, "#at": "at_ms"},
            ExpressionAttributeValues=values(progress=noted, at=at_ms),
        )

    def _update_if(self, job_id: str, **request: Any) -> bool:
        """One conditional UpdateItem of the job's item: True if made, False if its condition refused it."""
        try:
            self._table.call("update_item", Key=to_item(keys.recovery_job(job_id)), **request)
        except ClientError as exc:
            if not conditional_failure(exc):
                raise
            return False
        return True

    def finish(self, job_id: str, counts: dict[str, int], *, version: str, updated_at: datetime) -> bool:
        """Mark a listed job ``done`` with its final counts (``COUNTS``, read from its tickets with none open, after
        the job was read at ``version``). Refused (False) if the job is gone (expired), not listed, or changed since
        that read: a page of a copy of its listing message that read it unlisted may have taken tickets since
        (``reopen``), which the counts may have missed; the next read counts them again. The final counts replace
        those kept while it ran (``note_progress``), as of ``updated_at``: should a late page reopen it, no count read
        before (a slower read's) is kept over them."""
        fields = {"status": RecoveryStatus.DONE.value, **{name: counts[name] for name in COUNTS}}
        final = Progress(counts, int(updated_at.timestamp() * 1000)).stored()
        return self._update_if(
            job_id,
            UpdateExpression="SET counted = :true, updated_at = :at, #kept = :final, "
            + ", ".join(f"#{name} = :{name}" for name in fields)
            + " REMOVE #read",
            ConditionExpression="attribute_exists(pk) AND listed = :true AND updated_at = :seen",
            ExpressionAttributeNames={f"#{name}": name for name in fields}
            | {"#kept": PROGRESS, "#read": PROGRESS_READ},
            ExpressionAttributeValues=values(true=True, at=updated_at.isoformat(), seen=version, final=final, **fields),
        )

    def start_listing(self, job_id: str, lister: str, *, now: datetime, idle_before: datetime) -> bool:
        """Mark the job running, listed by ``lister`` (the SQS message id of its first message). True for the
        message that starts the listing, and for that same message received again (a crash midway); False for
        any other first message of the job (a repeated request sent one while the job was queued), unless the
        listing it finds was last moved on before ``idle_before`` (``renew_listing``: its chain is gone, e.g. its
        message dead-lettered, and this one is its redrive, with a new id)."""
        return self._update_if(
            job_id,
            UpdateExpression="SET #status = :running, lister = :me, listing_at = :at, updated_at = :now",
            ConditionExpression="attribute_exists(pk) AND (#status = :queued OR lister = :me "
            "OR attribute_not_exists(lister) OR listing_at < :idle)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values(
                running=RecoveryStatus.RUNNING.value,
                queued=RecoveryStatus.QUEUED.value,
                me=lister,
                now=now.isoformat(),
                at=int(now.timestamp()),
                idle=int(idle_before.timestamp()),
            ),
        )

    def renew_listing(self, job_id: str, *, now: datetime) -> None:
        """Note that the job's listing moves on (a continuation message of its chain runs): a first message of the
        job that comes meanwhile does not take it over."""
        self._update_if(  # refused if the job expired meanwhile
            job_id,
            UpdateExpression="SET listing_at = :at",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=values(at=int(now.timestamp())),
        )

    def reopen(self, job_id: str, *, now: datetime) -> None:
        """Note that a page took tickets. A job's listing is one chain of messages, but a copy of one of its messages
        (SQS shows a message twice, or again after its visibility timeout) that read the job unlisted may take
        tickets after the chain listed it: a job stored ``done`` meanwhile runs again, its counts read from its
        tickets, and a ``finish`` that read the job before this is refused (its ``updated_at`` moved)."""
        self._update_if(  # refused if the job expired meanwhile: nothing left to count
            job_id,
            UpdateExpression="SET #status = :running, updated_at = :now REMOVE counted",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values(running=RecoveryStatus.RUNNING.value, now=now.isoformat()),
        )

    def update(self, job_id: str, *, updated_at: datetime, **fields: Any) -> None:
        """Set fields of a job (``status``, ``listed``)."""
        fields = {**fields, "updated_at": updated_at.isoformat()}
        self._update_if(  # refused if the job expired meanwhile: nothing left to update
            job_id,
            UpdateExpression="SET " + ", ".join(f"#{key} = :{key}" for key in fields),
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={f"#{key}": key for key in fields},
            ExpressionAttributeValues=values(**fields),
        )

    def ticket_counts(self, job_id: str) -> dict[str, int]:
        """How many of a job's tickets are ``open`` (queued, not yet attempted), ``sent``, ``failed`` and
        ``skipped``. Read strongly: the job's ``listed`` is, and a replica that had not seen tickets written a
        moment before it would count none open, and call a job just listed done with nothing queued."""
        counts = {OPEN: 0, SENT: 0, FAILED: 0, SKIPPED: 0}
        for item in self._tickets(job_id, ProjectionExpression="#state", ExpressionAttributeNames={"#state": "state"}):
            state = item.get("state", {}).get("S", OPEN)
            counts[state] = counts.get(state, 0) + 1
        return counts

    def _tickets(self, job_id: str, **request: Any) -> Iterator[dict[str, Any]]:
        """Every ticket item of the job (as DynamoDB answers it), read strongly, a page after another; ``request``
        adds to the Query (a projection, a filter: ``:p`` and ``:prefix`` are taken)."""
        placeholders = request.pop("ExpressionAttributeValues", {})
        kwargs: dict[str, Any] = {
            "ConsistentRead": True,
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": values(p=keys.job_tickets_partition(job_id), prefix=keys.TICKET_PREFIX)
            | placeholders,
            **request,
        }
        while True:
            response = self._table.call("query", **kwargs)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def take_ticket(
        self, job_id: str, delivery_id: str, *, lock_seconds: int, ticket_seconds: int, page: str = ""
    ) -> bool:
        """Reserve a delivery's one extra attempt for a job: the delivery's recovery lock (no other job may
        re-send it meanwhile; it lasts ``lock_seconds`` should the attempt never be made) and the job's
        ticket for it (kept ``ticket_seconds``, noting the ``page`` that took it: ``open_tickets``), in one
        transaction. True if reserved now, or by this job before and not used yet (a page read again); False if
        another job holds the lock, or this job has made its attempt already. The ticket counts how often it was
        taken (``takes``), and whether this code wrote it first (``origin``: ``new``, else the delivery id a ticket
        held already, one an earlier version wrote without a count included): ``release_tickets`` gives back only
        one this code wrote and took once."""
        now = self._table.now()
        try:
            self._table.transact(
                [
                    _lock_put(delivery_id, job_id, now=now, seconds=lock_seconds),
                    {
                        "Update": {
                            "Key": to_item(keys.job_ticket(job_id, delivery_id)),
                            # Every SET reads the item as it was before this update: ``origin`` is ``new`` only
                            # on the ticket's first write.
                            "UpdateExpression": (
                                "SET delivery_id = :delivery, #state = :open, #page = :page, expires_at = :expires, "
                                "origin = if_not_exists(delivery_id, :new) ADD takes :one"
                            ),
                            "ConditionExpression": "attribute_not_exists(pk) OR #state = :open",
                            "ExpressionAttributeNames": {"#state": "state", "#page": "page"},
                            "ExpressionAttributeValues": values(
                                delivery=delivery_id,
                                open=OPEN,
                                page=page,
                                expires=now + ticket_seconds,
                                one=1,
                                new=NEW_TICKET,
                            ),
                        }
                    },
                ]
            )
        except ClientError:
            return False
        return True

    def release_tickets(self, job_id: str, delivery_ids: Sequence[str]) -> None:
        """Give back the tickets a job took for deliveries whose messages SQS did not take, with the delivery's
        recovery lock, in one transaction: each ticket only while it is open and was taken once, by this code (one
        an earlier version wrote, with no count, is taken again by this run). A ticket taken again (a page run
        again, or two copies of its message at once) may have a message of the other run on the queue, or making
        its attempt, whose record needs it open: it is kept, and settled as a ticket whose send was uncertain
        (by its message, taken again if the page lists it again, or by the page's ``_settle_left_behind``). The
        page, run again, takes the given-back tickets again for the deliveries it still lists; one it no longer
        lists (delivered meanwhile, or gone) leaves no open ticket behind, which nothing would close and which
        would hold the job ``running``."""
        for delivery_id in delivery_ids:
            ticket = {
                "Key": to_item(keys.job_ticket(job_id, delivery_id)),
                "ConditionExpression": "#state = :open AND takes = :one AND origin = :new",
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": values(open=OPEN, one=1, new=NEW_TICKET),
            }
            # Both at once: a run taking the ticket again between two deletes would have its lock freed under it.
            try:
                self._table.transact([{"Delete": dict(ticket)}, {"Delete": _free_lock(delivery_id, job_id)}])
            except ClientError as exc:
                if cancellation_codes(exc)[:1] == ["None"]:
                    # The ticket was this run's alone, and the lock is gone (expired) or another job's (it expired,
                    # and was taken): the ticket alone goes.
                    with contextlib.suppress(ClientError):
                        self._table.call("delete_item", **ticket)

    def open_tickets(self, job_id: str, page: str | None) -> list[str]:
        """The deliveries whose tickets of the job the page starting at ``page`` (every page: None) took and are
        still open, read strongly (a page run again sees what its first run took)."""
        of_page = {} if page is None else {"page": page}
        items = self._tickets(
            job_id,
            FilterExpression="#state = :open" + (" AND #page = :page" if of_page else ""),
            ExpressionAttributeNames={"#state": "state"} | ({"#page": "page"} if of_page else {}),
            ExpressionAttributeValues=values(open=OPEN, **of_page),
        )
        return [from_item(item)["delivery_id"] for item in items]

    def note_first(self, job_id: str, delivery_id: str, *, ticket_seconds: int) -> None:
        """Note that a redelivery gives this delivery its first delivery (its subscription never had the event):
        a ticket used from the start, so that the job's page, run again once that delivery exists, does not take
        it for one more attempt (``take_ticket`` takes an absent or open ticket only)."""
        ticket = {
            **keys.job_ticket(job_id, delivery_id),
            "delivery_id": delivery_id,
            "state": FIRST,
            "expires_at": self._table.now() + ticket_seconds,
        }
        with contextlib.suppress(ClientError):  # noted by an earlier run of the same page
            self._table.call("put_item", Item=to_item(ticket), ConditionExpression="attribute_not_exists(pk)")

    def relock(self, job_id: str, delivery_id: str, *, lock_seconds: int) -> bool:
        """Take a delivery's recovery lock again for ``job_id``, whose lock expired before its attempt (its message
        held back longer: a rate limit over a large recovery, a backlog), in one transaction with a check that the
        job's ticket is still open: a copy of the message that recorded its attempt meanwhile settled the ticket and
        freed the lock, and a lock taken again then would let this copy send once more. True unless another job
        holds the lock now, or the ticket is used."""
        ticket = {
            "Key": to_item(keys.job_ticket(job_id, delivery_id)),
            "ConditionExpression": "#state = :open",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": values(open=OPEN),
        }
        lock = _lock_put(delivery_id, job_id, now=self._table.now(), seconds=lock_seconds)
        try:
            self._table.transact([{"ConditionCheck": ticket}, lock])
        except ClientError:
            return False
        return True

    def get_ticket(self, job_id: str, delivery_id: str) -> tuple[str | None, str | None]:
        """(the ticket's state, the job holding the delivery's recovery lock), either None if absent."""
        ticket = self._table.read(keys.job_ticket(job_id, delivery_id))
        lock = self._table.read(keys.recovery_lock(delivery_id))
        return (ticket["state"] if ticket else None), (lock["job_id"] if lock else None)

    def end_ticket(self, job_id: str, delivery_id: str, *, delivery: keys.Key | None) -> bool:
        """Settle a job's open ticket ``failed`` without an attempt and free the delivery's lock if the job holds it,
        in one transaction, unless an attempt of the delivery is under way (the lease on its item, at ``delivery``,
        is live): ``AttemptUnderWay`` then. False if the ticket is settled already.

        A claim of the delivery for this job checks the job's lock in its own transaction: either the claim comes
        first and this refuses, or this does and the claim refuses (nothing is sent). So with the lock another job's
        (this one's expired, and taken since), no attempt of this job can be under way: the ticket is settled alone,
        the lease not looked at (it is the other job's, or anyone's)."""
        now = self._table.now()
        actions: list[dict[str, Any]] = [
            {"Update": _settle_ticket(job_id, delivery_id, FAILED)},
            {
                "Delete": {
                    "Key": to_item(keys.recovery_lock(delivery_id)),
                    "ConditionExpression": "attribute_not_exists(pk) OR job_id = :job",
                    "ExpressionAttributeValues": values(job=job_id),
                }
            },
        ]
        if delivery is not None:
            actions.append(
                {
                    "ConditionCheck": {
                        "Key": to_item(delivery),
                        "ConditionExpression": "attribute_not_exists(lease_until) OR lease_until < :now",
                        "ExpressionAttributeValues": values(now=now),
                    }
                }
            )
        try:
            self._table.transact(actions)
        except ClientError as exc:
            refused = [code == "ConditionalCheckFailed" for code in cancellation_codes(exc)]
            if len(refused) < 2 or refused[0]:
                return False  # settled already
            if not refused[1]:
                # The lock this job's and a lease on the delivery live: this job's attempt (its record settles the
                # ticket), or another's (a manual retry, a scheduled one), which would not. Which, nothing here says:
                # the caller must try again once the lease is over.
                raise AttemptUnderWay(
                    f"an attempt of delivery {delivery_id} is under way: try again once it is over"
                ) from None
            try:
                self._table.call("update_item", **_settle_ticket(job_id, delivery_id, FAILED))
            except ClientError:
                return False  # settled meanwhile
        return True

    def close_ticket(self, job_id: str, delivery_id: str, outcome: str) -> None:
        """Settle a job's ticket without an attempt (nothing could be sent), freeing the lock if the job holds it."""
        with contextlib.suppress(ClientError):
            self._table.call("delete_item", **_free_lock(delivery_id, job_id))
        with contextlib.suppress(ClientError):  # settled already
            self._table.call("update_item", **_settle_ticket(job_id, delivery_id, outcome))
