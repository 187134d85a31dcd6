"""A subscription's health: its delivery stats and failure streak, and its rate-limit slot.

A subscription's stats (``attempts``, ``succeeded``, ``failed``, ``last_success_at``, ``last_failure_at``,
``last_status_code``, ``consecutive_failures``, ``failing_since``) are an item of their own, which expires
``attempt_ttl_days`` after its latest attempt and, like an event's delivery counters, is written once per
worker batch. Two writers share it: a first attempt that succeeded is counted from the table's stream, a
window of them in one write (``count_streamed``); the worker counts every other attempt and follows the
failure streak (``count_attempts``), writing for a success only when it ends a streak it read. The stream's
write ends a streak too when no later failure is counted: one opened after the worker's read. Writes land in
any order (a slow batch's after a later one's, the stream's seconds behind): attempts older than the latest
success counted add to the counts only, never to the streak or the latest status, so a batch written late
cannot open a streak that a later success ended, nor set a healthy subscription failing. The rate slot
holds when the subscription's next delivery may start.

Stats past their expiry are none to every write, as to every read (TTL deletes them up to two days late): a write
that finds them expired deletes them, if they still hold that expiry, and is made again as on no stats, so their old
counts, streak and failing clock never come back with the next attempt (``_reset_expired``).

Both writers add (``ADD``), and botocore sends a call again when its answer was lost: each write leaves a token
of its own on the item and is made only if the item does not hold it, so that a resend is refused instead of
counted twice, and knows the write it repeats for its own. (Should another write of the same writer land
between the two sends, the token is no longer there and the resend counts again, as an event's counts do.)
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from herald.errors import ServiceUnavailableError
from herald.storage import keys
from herald.storage.table import NOT_EXPIRED, from_item, item_too_large, refused_item, strip, to_item, values

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from herald.storage.table import Table


class RateSlot(NamedTuple):
    """A take of a subscription's rate slot (``HealthRepository.take_rate_slot``)."""

    #: Seconds from the take's ``now`` until the slot opens (0.0: now).
    wait: float
    #: Whether the slot is the caller's (False: another's; ask again then, or postpone).
    taken: bool


#: How many conditional writes one take of a rate slot makes at most. Each refusal names the slot to try for next,
#: and the item's ``tat`` only grows while ``now`` stays: a take is over by its third write (a reservation refused
#: for a slot free now, the free one taken by another first, then the reservation of the one after), or its fourth
#: when the item expired meanwhile.
_RATE_SLOT_TRIES = 4


@dataclass(frozen=True)
class SubscriptionHealth:
    """A subscription's failure streak right after attempts were counted: how many attempts in a row
    failed, since when it counts as failing (None if it does not), and each failing streak these
    attempts ended, as (failing since, recovered at)."""

    consecutive_failures: int
    failing_since: datetime | None
    recoveries: tuple[tuple[datetime, datetime], ...] = ()


@dataclass(frozen=True)
class AttemptTally:
    """What a subscription's stats keep of one attempt."""

    succeeded: bool
    status_code: int | None
    at: datetime
    #: Publish-to-response latency in milliseconds (successful attempts' are kept for the stats' percentiles).
    latency_ms: int | None = None
    #: Counted from the table's stream (``count_streamed``): the worker follows the streak past it, no more.
    streamed: bool = False
    #: Cut short by Herald and handed to the slow lane: an attempt, and one that failed, but it says nothing of the
    #: endpoint (it was not given its whole timeout), so it moves neither the streak nor the latest status.
    handed_over: bool = False


#: Appends ``:latencies`` to the stats' recent latencies (``:no_latency``: the empty list to start from).
_APPEND_LATENCIES = "recent_latency_ms = list_append(if_not_exists(recent_latency_ms, :no_latency), :latencies)"
#: A ``:name`` placeholder in an expression.
_PLACEHOLDER = re.compile(r":(\w+)")
#: The stats keep the latencies of the latest successful attempts: at least this many, at most twice as many
#: (a list on the stats item, trimmed by one extra write every LATENCY_SAMPLES deliveries). The item stays
#: under 1 KB, one write unit, while the latencies are under 100 s (five digits: 979 bytes with the list full and
#: four stream windows' ids); a failing subscription's stats, with their failing clock kept twice, may take two.
LATENCY_SAMPLES = 64
#: The most list elements one trim removes. An expression is at most 4 KB and each element removed takes about 24
#: bytes (``recent_latency_ms[123], ``): a list grown longer (writes that raced, or an item written before a write
#: appended at most ``LATENCY_SAMPLES``) is cut down over the next writes, the oldest first.
MAX_TRIMMED = 150
#: The token of the latest ``count_attempts`` write, and the streak as that write found it (its length, and
#: since when it counted as failing, "" for not failing): a resend of the write is refused by the token and
#: still learns the streak it needs from these (``ALL_OLD`` is not returned for a refused write).
COUNTED_BY = "counted_by"
STREAK_BEFORE = "streak_before"
FAILING_SINCE_BEFORE = "since_before"
#: The subscription's version whose change reset the failure streak (moved to a new URL, or re-enabled), and when
#: (epoch seconds): a batch that read an older version made its attempts to the subscription as it was, and moves
#: neither the new streak nor its failing clock (nor reports a recovery of a streak the new one never had).
STREAK_RESET_VERSION = "streak_reset_version"
STREAK_RESET_AT = "streak_reset_at"
#: How long a reset's mark holds: longer than any batch lasts (an invocation of the DeliveryFunction, 60 s). A mark
#: whose change was never made (its write refused after the reset, the request out of time) holds no longer either:
#: no version reaches it, and until then every batch's attempts would be counted only.
RESET_HOLDS_SECONDS = 300
#: The same for the stream's writes (``count_streamed``): the token of the latest (its window's id), and since when
#: the stats counted as failing when its first write ended the streak ("" for not failing).
STREAMED_BY = "streamed_by"
STREAM_FAILING_SINCE_BEFORE = "stream_since_before"
#: The windows counted before the latest, newest first: a window handed over again (Lambda retries a batch whose
#: invocation died) is recognised by its id while it is one of the last ``len(EARLIER_WINDOWS) + 1`` counted,
#: whatever other shards counted since. Short names: they sit on every stats item (about 60 bytes in all).
EARLIER_WINDOWS = ("sw2", "sw3", "sw4")
#: How many times one call resets stats found expired (``HealthRepository._reset_expired``) before it gives up: once
#: is the rule; again only if a write of expired stats (an ``expires_at`` already past) came between.
_EXPIRED_RESETS = 2


def _newer(tally: AttemptTally, than: str | None) -> bool:
    """Whether the attempt finished after ``than`` (an ISO time as stored; None: after anything)."""
    return than is None or tally.at.isoformat() > than


def _since_success(ordered: Sequence[AttemptTally], after: str | None) -> list[AttemptTally]:
    """The attempts that follow the stats' latest success ``after`` (all of them if None), but for those handed
    over: the only ones that move the streak and the latest status. A batch's stats written late, after a later
    success was counted (by the stream, or another worker's batch), must not count its older failures as a
    streak."""
    return [tally for tally in ordered if not tally.handed_over and _newer(tally, after)]


def _moving(latest: Sequence[AttemptTally], failure_before: str | None) -> list[AttemptTally]:
    """Of ``latest`` (``_since_success``), those that move the streak: all of them, unless a failure counted
    already (``failure_before``, the stats' latest failure) came after their last success. Then the streak and
    the latest status stand as stored: that failure is later than anything here. The stored streak may then hold
    failures from before this batch's success, and leaves out this batch's failures after it: the item keeps no
    time for each failure, so the two cannot be told apart (a race of two batches, rare: the streak is off by the
    few attempts they made in between)."""
    successes = [tally for tally in latest if tally.succeeded]
    if successes and failure_before is not None and successes[-1].at.isoformat() < failure_before:
        return []
    return list(latest)


def _nothing_later(bound: str, failure_bound: str | None) -> tuple[str, dict[str, Any]]:
    """The condition (and its values) of a batch's first stats write: no success counted after ``bound`` (the
    batch's last success, or its first attempt), and no failure counted after ``failure_bound`` (the earlier of its
    last success and its last failure; None if every attempt was handed over)."""
    condition = "(attribute_not_exists(last_success_at) OR last_success_at < :bound)"
    if failure_bound is None:
        return condition, {"bound": bound}
    condition += " AND (attribute_not_exists(last_failure_at) OR last_failure_at < :failure_bound)"
    return condition, {"bound": bound, "failure_bound": failure_bound}


def _first_write_bounds(ordered: Sequence[AttemptTally]) -> tuple[str, str | None]:
    """What a batch's first stats write is conditioned on (``_nothing_later``): no success counted after its last
    success (or its first attempt, if none succeeded), and no failure counted after its last success (its streak) nor
    after its last failure (the latest)."""
    answered = _since_success(ordered, None)
    successes = [tally for tally in answered if tally.succeeded]
    bound = (successes[-1] if successes else ordered[0]).at.isoformat()
    lasts = [last[-1].at for last in (successes, [tally for tally in answered if not tally.succeeded]) if last]
    return bound, (min(lasts).isoformat() if lasts else None)


def _not_reset(
    condition: str, placeholders: dict[str, Any], version: int | None, reset_before: int
) -> tuple[str, dict[str, Any]]:
    """``condition``, and that the streak was not reset by a change since the batch read the subscription at
    ``version`` (None: not asked), after ``reset_before`` (epoch seconds: an older mark holds no longer): else its
    attempts were made to the subscription as it was."""
    if version is None:
        return condition, placeholders
    not_reset = (
        f"(attribute_not_exists({STREAK_RESET_VERSION}) OR {STREAK_RESET_VERSION} <= :version "
        f"OR {STREAK_RESET_AT} < :reset_before)"
    )
    return f"{condition} AND {not_reset}", {**placeholders, "version": version, "reset_before": reset_before}


def _still_found(after: str | None, failure_before: str | None) -> tuple[str, dict[str, Any]]:
    """The condition (and its values) of a write made as the stats were found: their latest success and latest
    failure are still ``after`` and ``failure_before`` (None: not there)."""
    conditions, placeholders = [], {}
    for name, value in (("last_success_at", after), ("last_failure_at", failure_before)):
        if value is None:
            conditions.append(f"attribute_not_exists({name})")
        else:
            placeholders[name] = value
            conditions.append(f"{name} = :{name}")
    return " AND ".join(conditions), placeholders


def _newest_failure(ordered: Sequence[AttemptTally], failure_before: str | None, *, found: bool) -> AttemptTally | None:
    """The batch's latest failure (a hand-over is none: the endpoint did not fail it), if it is later than every
    failure counted: than ``failure_before`` when the stats were read (``found``); the first write's condition puts
    it after every failure counted (``_nothing_later``)."""
    failures = [tally for tally in ordered if not tally.succeeded and not tally.handed_over]
    if not failures:
        return None
    return failures[-1] if not found or _newer(failures[-1], failure_before) else None


def _stats_update(
    ordered: Sequence[AttemptTally],
    *,
    failing_after: int,
    expires_at: int,
    token: str,
    after: str | None = None,
    failure_before: str | None = None,
    found: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The UpdateExpression (and its values) that counts ``ordered`` attempts in a subscription's stats, but
    for the ones counted from the stream, which only move the streak and the latest status; only those after
    ``after``, the latest success the stats hold, move them (``_since_success``), and only as ``failure_before``,
    the latest failure they hold, lets them (``_moving``; a failure older than it is never the latest; ``found``:
    the two were read from the item, not left to the first write's condition, ``_nothing_later``). It leaves
    ``token`` and the streak it found on the item (DynamoDB evaluates every operand on the item as it was before
    the update)."""
    counted = [tally for tally in ordered if not tally.streamed]
    failed = [tally for tally in ordered if not tally.succeeded]
    latest = _since_success(ordered, after)
    values: dict[str, Any] = {"exp": expires_at, "token": token, "zero": 0, "never": ""}
    adds: list[str] = []
    removes: list[str] = []
    sets = [
        "expires_at = :exp",
        f"{COUNTED_BY} = :token",
        f"{STREAK_BEFORE} = if_not_exists(consecutive_failures, :zero)",
        f"{FAILING_SINCE_BEFORE} = if_not_exists(failing_since, :never)",
    ]
    if counted:
        adds.append("attempts :n")
        values["n"] = len(counted)
    if counted_successes := [tally for tally in counted if tally.succeeded]:
        adds.append("succeeded :ok")
        values["ok"] = len(counted_successes)
    if latest_successes := [tally for tally in latest if tally.succeeded and not tally.streamed]:
        # Only those counted here: the stream's write sets the latest success of its own, and tells by it
        # whether a write of its was made already (``count_streamed``).
        sets.append("last_success_at = :success_at")
        values["success_at"] = latest_successes[-1].at.isoformat()
    if failed:
        adds.append("failed :failed")
        values["failed"] = len(failed)
    if (newest := _newest_failure(ordered, failure_before, found=found)) is not None:
        # Only a failure later than every one counted: an older one must not move the latest failure back, which
        # the stream's write reads to know whether a later failure is counted (``count_streamed``).
        sets.append("last_failure_at = :failure_at")
        values["failure_at"] = newest.at.isoformat()
    latencies = _recent([tally.latency_ms for tally in counted if tally.succeeded and tally.latency_ms is not None])
    if latencies:
        sets.append(_APPEND_LATENCIES)
        values.update(no_latency=[], latencies=latencies)
    if moving := _moving(latest, failure_before):
        if _newer(moving[-1], failure_before):
            _latest_status(moving[-1], sets=sets, removes=removes, values=values)
        _move_streak(moving, failing_after=failing_after, adds=adds, sets=sets, removes=removes, values=values)
    elif newest is not None and any(tally is newest for tally in latest):
        # The streak stands as stored (``_moving``), but the latest attempt is this batch's failure, later than every
        # one counted: the latest status is its, as the latest failure's time is.
        _latest_status(newest, sets=sets, removes=removes, values=values)
    expression = ("ADD " + ", ".join(adds) + " " if adds else "") + "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return expression, values


def _latest_status(tally: AttemptTally, *, sets: list[str], removes: list[str], values: dict[str, Any]) -> None:
    """Add to a stats update that ``tally`` is the latest attempt: its status code (none: removed)."""
    if tally.status_code is not None:
        sets.append("last_status_code = :code")
        values["code"] = tally.status_code
    else:
        removes.append("last_status_code")


def _move_streak(
    latest: Sequence[AttemptTally],
    *,
    failing_after: int,
    adds: list[str],
    sets: list[str],
    removes: list[str],
    values: dict[str, Any],
) -> None:
    """Add to a stats update what ``latest`` attempts (``_moving``) make of the failure streak."""
    if any(tally.succeeded for tally in latest):
        # The streak after the last success does not depend on what was stored before: set it.
        last_success = max(index for index, tally in enumerate(latest) if tally.succeeded)
        trailing = latest[last_success + 1 :]
        sets.append("consecutive_failures = :streak")
        values["streak"] = len(trailing)
        if len(trailing) >= failing_after:
            sets.append("failing_since = :since")
            values["since"] = trailing[failing_after - 1].at.isoformat()
        else:
            removes.append("failing_since")
    else:
        adds.append("consecutive_failures :streak")
        values["streak"] = len(latest)


def _follow_streak(
    streak: int, since: datetime | None, ordered: Sequence[AttemptTally], *, failing_after: int
) -> SubscriptionHealth:
    """A failure streak (its length, since when it counts as failing) after ``ordered`` attempts, one by one."""
    recoveries: list[tuple[datetime, datetime]] = []
    for tally in ordered:
        if tally.succeeded:
            if since is not None:
                recoveries.append((since, tally.at))
            streak, since = 0, None
        else:
            streak += 1
            if since is None and streak >= failing_after:
                since = tally.at
    return SubscriptionHealth(streak, since, tuple(recoveries))


def _ended(
    since: str | None, before: dict[str, Any], ordered: Sequence[AttemptTally]
) -> tuple[datetime, datetime] | None:
    """The failing streak (since when, recovered at) that successes ended: the first of them after the latest
    failure ``before`` their write (the first of them if a later failure was counted since, for a write read
    back after its resend); None if the stats did not count as failing."""
    if not since:
        return None
    last_failure = str(before.get("last_failure_at", ""))
    recovered = next((tally.at for tally in ordered if tally.at.isoformat() > last_failure), ordered[0].at)
    return datetime.fromisoformat(since), recovered


def _recent(latencies: list[int]) -> list[int]:
    """The latencies a write appends: the latest ``LATENCY_SAMPLES`` (a trim keeps no more), so that a batch of a
    thousand successes neither grows the item by kilobytes nor needs a trim longer than an expression may be."""
    return latencies[-LATENCY_SAMPLES:]


def _latencies_added(ordered: Sequence[AttemptTally]) -> int:
    """How many latencies a write of ``ordered`` appends to the stats' list."""
    added = sum(1 for tally in ordered if tally.succeeded and tally.latency_ms is not None and not tally.streamed)
    return min(added, LATENCY_SAMPLES)


def _streamed_counts(
    ordered: Sequence[AttemptTally], *, expires_at: int, token: str
) -> tuple[list[str], dict[str, Any]]:
    """What every write of a stream window sets (its counts are the ``ADD``), and the values of its expressions:
    the window's token in front of the windows counted before, which move down one place (DynamoDB reads every
    operand from the item before the update), and the latencies."""
    at = ordered[-1].at.isoformat()
    placeholders: dict[str, Any] = {
        "n": len(ordered),
        "exp": expires_at,
        "at": at,
        "zero": 0,
        "token": token,
        "never": "",
    }
    shifted = zip(EARLIER_WINDOWS, (STREAMED_BY, *EARLIER_WINDOWS[:-1]), strict=True)
    counts = [
        "expires_at = :exp",
        f"{STREAMED_BY} = :token",
        *(f"{later} = if_not_exists({earlier}, :never)" for later, earlier in shifted),
    ]
    if latencies := _recent([tally.latency_ms for tally in ordered if tally.latency_ms is not None]):
        counts.append(_APPEND_LATENCIES)
        placeholders.update(no_latency=[], latencies=latencies)
    return counts, placeholders


class HealthRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def count_attempts(
        self,
        sub_id: str,
        attempts: Sequence[AttemptTally],
        *,
        failing_after: int,
        expires_at: int,
        version: int | None = None,
    ) -> SubscriptionHealth:
        """Count attempts of a subscription (a worker's batch of them) in its stats and follow its failure
        streak, as if counted one by one in the order they finished: one UpdateItem, plus one conditional
        write when failures alone take a streak to ``failing_after`` in a row (the failing clock starts
        then, at the failure that reached it, once per streak). ``version``: the subscription's, as the batch read it;
        older than the change that last reset the streak (``reset_failing_streak``), its attempts are counted only.

        A separate item on purpose, not the subscription: the subscription is versioned and rewritten
        whole by the API, and not in the delivery's transaction either: every delivery of a
        subscription adds to this one item, and concurrent transactions on one item cancel each other."""
        ordered = sorted(attempts, key=lambda tally: tally.at)
        if not ordered:
            return SubscriptionHealth(0, None)
        token = uuid.uuid4().hex[:12]
        # The streak and the latest status are written as these attempts make them only if nothing later is
        # counted already: no success after the batch's last success (or its first attempt, if none succeeded), and
        # no failure after that success (or after its last failure). If something is, the write is made again as
        # the stats found say (``after``, their latest success; ``failure_before``, their latest failure), on
        # condition that they still say it; a third try counts the attempts without moving the streak.
        bound, failure_bound = _first_write_bounds(ordered)
        after: str | None = None
        failure_before: str | None = None
        reset_since = False  # the streak was reset by a change the batch did not see: its attempts are counted only
        reset_before = self._table.now() - RESET_HOLDS_SECONDS
        for tries_left in (2, 1, 0):
            if tries_left == 2:
                nothing_later, placeholders_extra = _not_reset(
                    *_nothing_later(bound, failure_bound), version, reset_before
                )
            elif tries_left and not reset_since:
                nothing_later, placeholders_extra = _not_reset(
                    *_still_found(after, failure_before), version, reset_before
                )
            else:
                placeholders_extra, nothing_later = {}, ""
                after = failure_before = "~"  # later than any time: counts only
            expression, placeholders = _stats_update(
                ordered,
                failing_after=failing_after,
                expires_at=expires_at,
                token=token,
                after=after,
                failure_before=failure_before,
                found=tries_left < 2,
            )
            # Alone, without parentheses of its own: ``_counting`` adds them (DynamoDB refuses redundant ones).
            condition = f"attribute_not_exists({COUNTED_BY}) OR {COUNTED_BY} <> :token"
            try:
                old = from_item(
                    self._counting(
                        sub_id,
                        Key=to_item(keys.subscription_stats(sub_id)),
                        UpdateExpression=expression,
                        ConditionExpression=f"({condition}) AND {nothing_later}" if nothing_later else condition,
                        ExpressionAttributeValues=values(**placeholders, **placeholders_extra),
                        ReturnValues="ALL_OLD",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ).get("Attributes", {})
                )
                length = len(old.get("recent_latency_ms", [])) + _latencies_added(ordered)
                streak, before = int(old.get("consecutive_failures", 0)), old.get("failing_since")
                break
            except ClientError as exc:
                current = refused_item(exc)
                if current.get(COUNTED_BY) == token:
                    # Refused by this write's own token: botocore sent it again after its answer was lost. It was
                    # made once; the streak it found is on the item.
                    length = len(current.get("recent_latency_ms", []))
                    streak, before = int(current[STREAK_BEFORE]), current[FAILING_SINCE_BEFORE] or None
                    break
                if not tries_left:
                    raise
                # Something later is counted already: these attempts move the stats as those say. Or the streak was
                # reset since the batch began: they are counted only.
                reset_since = (
                    version is not None
                    and int(current.get(STREAK_RESET_VERSION, 0)) > version
                    and int(current.get(STREAK_RESET_AT, 0)) >= reset_before
                )
                after, failure_before = current.get("last_success_at"), current.get("last_failure_at")
        answered = _since_success(ordered, after)
        latest = _moving(answered, failure_before)
        self._trim_latencies(sub_id, length)
        health = _follow_streak(
            streak, datetime.fromisoformat(before) if before else None, latest, failing_after=failing_after
        )
        beaten = [tally.at for tally in answered if tally.succeeded] if not latest else []
        if beaten and health.failing_since is not None and health.failing_since < beaten[-1]:
            # A success here came before a failure counted already: the streak stands, but not its clock.
            self._restart_failing_clock(sub_id, beaten[-1])
            return SubscriptionHealth(health.consecutive_failures, beaten[-1])
        since = health.failing_since
        if any(tally.succeeded for tally in latest) or before is not None or since is None:
            return health
        return SubscriptionHealth(health.consecutive_failures, self._start_failing_clock(sub_id, since, failing_after))

    def count_streamed(
        self, sub_id: str, successes: Sequence[AttemptTally], *, expires_at: int, window: str | None = None
    ) -> tuple[datetime, datetime] | None:
        """Count first attempts that succeeded, as the table's stream shows them (a window of them), in one
        UpdateItem that adds them up and, if no later attempt is counted already (the worker writes failures at
        once; the stream comes seconds behind), makes the latest of them the stats' latest attempt and ends any
        failure streak: the worker leaves that to the stream when its batch read no streak, and a failure
        counted since (by another batch, or past an eventually consistent read) would otherwise stay open.
        Failing that condition, a second write adds the counts, and moves the latest success if these are
        later. Returns the failing streak these successes ended, as (failing since, recovered at), if they did.

        Each write leaves this call's token (``STREAMED_BY``: ``window``, the id of the records' window, else a
        new one) and is made only if the item does not hold it among the last windows counted (``EARLIER_WINDOWS``):
        a write botocore sent again after its answer was lost is refused, and known for this call's own (the first
        write keeps the streak it ended, ``STREAM_FAILING_SINCE_BEFORE``, so that the resend still reports it), and
        so is a window counted already (the stream handing the same records over again), which is not counted
        again."""
        ordered = sorted(successes, key=lambda tally: tally.at)
        if not ordered:
            return None
        latest = ordered[-1]
        at = latest.at.isoformat()
        token = window or uuid.uuid4().hex[:12]
        counts, placeholders = _streamed_counts(ordered, expires_at=expires_at, token=token)
        latest_attempt = [
            "last_success_at = :at",
            "consecutive_failures = :zero",
            f"{STREAM_FAILING_SINCE_BEFORE} = if_not_exists(failing_since, :never)",
        ]
        if latest.status_code is not None:
            latest_attempt.append("last_status_code = :code")
            placeholders["code"] = latest.status_code
        newer_success = "(attribute_not_exists(last_success_at) OR last_success_at < :at)"
        newer_failure = "(attribute_not_exists(last_failure_at) OR last_failure_at < :at)"
        not_mine = f"NOT (:token IN ({', '.join((STREAMED_BY, *EARLIER_WINDOWS))}))"
        key = to_item(keys.subscription_stats(sub_id))
        refused: dict[str, Any] = {}  # what the latest refused write found
        made: dict[str, Any] = {}  # what a write found made by its own first send (its resend was refused)
        counted_before: dict[str, Any] = {}  # what a write found, this window counted before another

        def update(sets: list[str], condition: str, *, remove: str = "") -> dict[str, Any] | None:
            """The stats before the write, or None when it was refused (``refused``, or ``made``: its own)."""
            expression = "ADD attempts :n, succeeded :n SET " + ", ".join(sets) + remove
            condition = f"{condition} AND {not_mine}" if condition else not_mine
            used = set(_PLACEHOLDER.findall(f"{expression} {condition}"))
            try:
                response = self._counting(
                    sub_id,
                    Key=key,
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values(**{name: placeholders[name] for name in used}),
                    ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:  # the condition only (``Table.call`` raises anything else as unavailable)
                found = refused_item(exc)
                if found.get(STREAMED_BY) == token:
                    made.update(found)
                elif token in (found.get(name) for name in EARLIER_WINDOWS):
                    counted_before.update(found)
                else:
                    refused.update(found)
                return None
            return from_item(response.get("Attributes", {}))

        old = update(counts + latest_attempt, f"{newer_success} AND {newer_failure}", remove=" REMOVE failing_since")
        if made:
            # The first write's own: it ended the streak it kept, and left the latest failure as it found it.
            self._trim_latencies(sub_id, len(made.get("recent_latency_ms", [])))
            return _ended(made.get(STREAM_FAILING_SINCE_BEFORE), made, ordered)
        if counted_before:
            return None  # this window is counted already: the stream handed its records over again
        if old is None:
            # A later failure is counted already: add these, as the latest success if no later one is counted.
            # Neither ends a streak: a resend of theirs, or the window handed over again, must not report one.
            counts.append(f"{STREAM_FAILING_SINCE_BEFORE} = :never")
            if str(refused.get("last_success_at", "")) < at:
                old = update([*counts, "last_success_at = :at"], newer_success)
            if old is None and not made and not counted_before:
                old = update(counts, "")
            if str(refused.get("failing_since") or "~") < at:
                self._restart_failing_clock(sub_id, latest.at)
            length = len((made or old or {}).get("recent_latency_ms", []))
            self._trim_latencies(sub_id, length if made else length + _latencies_added(ordered))
            return None
        self._trim_latencies(sub_id, len(old.get("recent_latency_ms", [])) + _latencies_added(ordered))
        return _ended(old.get("failing_since"), old, ordered)

    def _reset_expired(self, sub_id: str, found: dict[str, Any], now: int) -> bool:
        """Whether the stats a write was refused on (``found``, ``ALL_OLD``) were past their expiry at ``now``, the
        write's: every read takes them for none (TTL deletes them up to two days late), so every write must too, or
        their old counts and failure streak come back with the next attempt. They are deleted then, on condition
        that they still hold that expiry, and the caller makes its write again, as on no stats. Of writers that found
        them expired at once, the first deletes them; the others' deletes are refused (the stats are gone, or were
        written afresh since: every write moves the expiry on), and their writes add to whatever is there then."""
        expires = found.get("expires_at")
        if expires is None or int(expires) > now:
            return False
        with contextlib.suppress(ClientError):  # deleted already, or written afresh since: not expired any more
            self._table.call(
                "delete_item",
                Key=to_item(keys.subscription_stats(sub_id)),
                ConditionExpression="expires_at = :expired",
                ExpressionAttributeValues=values(expired=expires),
            )
        return True

    def _start_failing_clock(self, sub_id: str, since: datetime, failing_after: int) -> datetime | None:
        """Start the failing clock at ``since``, the failure that took the streak to ``failing_after`` in a row, once
        per streak: what it is then (started by a concurrent attempt, or none: a success ended the streak meanwhile)."""
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.subscription_stats(sub_id)),
                UpdateExpression="SET failing_since = :at",
                ConditionExpression=(
                    "attribute_not_exists(failing_since) AND consecutive_failures >= :n "
                    "AND (attribute_not_exists(last_success_at) OR last_success_at < :at)"
                ),
                ExpressionAttributeValues=values(at=since.isoformat(), n=failing_after),
            )
        except ClientError:
            # Started by a concurrent attempt, or a success ended the streak meanwhile: read which.
            stored = (self._table.read(keys.subscription_stats(sub_id)) or {}).get("failing_since")
            return datetime.fromisoformat(stored) if stored else None
        return since

    def _restart_failing_clock(self, sub_id: str, success_at: datetime) -> None:
        """A success counted after a later failure was (two batches' writes crossing, or the stream's, seconds
        behind): the streak stands as stored (``_moving``), but the subscription was not failing all along since
        before that success. Its failing clock starts again at the success (at the earliest: the failures after it
        are not told apart from those before), so it is never disabled for a streak a success broke."""
        with contextlib.suppress(ClientError):  # no clock, or one started after the success already
            self._table.call(
                "update_item",
                Key=to_item(keys.subscription_stats(sub_id)),
                UpdateExpression="SET failing_since = :at",
                ConditionExpression="failing_since < :at",
                ExpressionAttributeValues=values(at=success_at.isoformat()),
            )

    def _counting(self, sub_id: str, **request: Any) -> Any:
        """A write that counts attempts in the stats, or sets their counts (``set_counts``; its request asks for
        ``ALL_OLD`` on a refusal, and its condition, if any, is kept), made only on
        stats not past their expiry: stats found past it are none, as every read takes them, and are reset
        (``_reset_expired``) before the write is made again; a refusal for anything else is raised. Counts, streak
        and failing clock from before ``attempt_ttl_days`` without an attempt never come back with the next one."""
        condition = request.get("ConditionExpression")
        request["ConditionExpression"] = f"({condition}) AND {NOT_EXPIRED}" if condition else NOT_EXPIRED
        for resets in range(_EXPIRED_RESETS + 1):
            now = self._table.now()
            request["ExpressionAttributeValues"] = {**request["ExpressionAttributeValues"], **values(now=now)}
            try:
                return self._sized(sub_id, request)
            except ClientError as exc:
                if resets == _EXPIRED_RESETS or not self._reset_expired(sub_id, refused_item(exc), now):
                    raise
        return None  # not reached: the last try returns or raises

    def _sized(self, sub_id: str, request: dict[str, Any]) -> Any:
        """A counting write (``_counting``). One DynamoDB refuses for the item's size (a latency list grown without
        bound before a write appended at most ``LATENCY_SAMPLES``: 400 KB) drops the list and is made again, so the
        subscription's counts, streak and auto-disable work again."""
        try:
            return self._table.call("update_item", **request)
        except ServiceUnavailableError as exc:
            if not item_too_large(exc):
                raise
        dropped = "subscription stats at DynamoDB's item size limit: their latencies dropped"
        logger.warning(dropped, extra={"subscription_id": sub_id})
        self._table.call("update_item", Key=request["Key"], UpdateExpression="REMOVE recent_latency_ms")
        return self._table.call("update_item", **request)

    def _trim_latencies(self, sub_id: str, length: int) -> None:
        """Drop the oldest latencies once the list has grown to ``length`` >= twice ``LATENCY_SAMPLES`` (appends
        go to the end, so the front is always the oldest, whatever other workers appended meanwhile)."""
        if length < 2 * LATENCY_SAMPLES:
            return
        doomed = ", ".join(f"recent_latency_ms[{index}]" for index in range(min(length - LATENCY_SAMPLES, MAX_TRIMMED)))
        # Tidying only: a trim refused (the list changed) or not made (throttled) is made by a later write.
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.subscription_stats(sub_id)),
                UpdateExpression=f"REMOVE {doomed}",
                ConditionExpression="size(recent_latency_ms) >= :length",
                ExpressionAttributeValues=values(length=length),
            )
        except ClientError:
            pass
        except ServiceUnavailableError as exc:
            logger.warning(
                "the stats' latency list was not trimmed", extra={"subscription_id": sub_id, "error": exc.message}
            )

    def get_stats(self, sub_id: str) -> dict[str, Any]:
        """The subscription's stats item as plain values (empty before its first attempt)."""
        item = self._table.read(keys.subscription_stats(sub_id))
        return strip(item or {})

    def get_stats_many(self, sub_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stats items of several subscriptions, by subscription id (absent before a first attempt)."""
        by_key = {keys.subscription_stats(sub_id)["pk"]: sub_id for sub_id in sub_ids}
        items = self._table.batch_get([keys.subscription_stats(sub_id) for sub_id in sub_ids])
        return {by_key[item["pk"]]: strip(item) for item in items}

    def reset_failing_streak(self, sub_id: str, *, version: int) -> None:
        """A re-enabled subscription starts afresh: no failure streak, no failing clock (the tenant says it
        is fixed; if it is not, the clock starts again after ``failing_after`` failures, a whole window). ``version``,
        the subscription's as the change writes it, is kept with the time (``STREAK_RESET_VERSION``,
        ``STREAK_RESET_AT``): a batch that read an older one, its attempts made to the subscription as it was, counts
        them without moving the new streak (``count_attempts``), for ``RESET_HOLDS_SECONDS``. A change older than the
        mark there resets nothing (a slow request's, whose write will be refused), nor does the same one within the
        hold (two requests at once); the same one after it does (a change refused after its reset, asked again: the
        subscription, still as it was, may have failed since); stats that are none (never written, or past their
        expiry, which every reader takes for none) get a fresh item holding the mark alone."""
        now = self._table.now()
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.subscription_stats(sub_id)),
                UpdateExpression=f"SET consecutive_failures = :zero, {STREAK_RESET_VERSION} = :version, "
                f"{STREAK_RESET_AT} = :now REMOVE failing_since",
                ConditionExpression=f"attribute_exists(pk) AND {NOT_EXPIRED} "
                f"AND (attribute_not_exists({STREAK_RESET_VERSION}) OR {STREAK_RESET_VERSION} < :version "
                f"OR ({STREAK_RESET_VERSION} = :version AND {STREAK_RESET_AT} < :held_since))",
                ExpressionAttributeValues=values(
                    zero=0, version=version, now=now, held_since=now - RESET_HOLDS_SECONDS
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return
        except ClientError as exc:
            current = refused_item(exc)
        if current and not self._reset_expired(sub_id, current, now):
            return  # the mark of this change, or of a later one, is there: the streak was reset for it
        fresh = {
            **keys.subscription_stats(sub_id),
            "consecutive_failures": 0,
            STREAK_RESET_VERSION: version,
            STREAK_RESET_AT: now,
            "expires_at": now + RESET_HOLDS_SECONDS,
        }
        with contextlib.suppress(ClientError):  # written meanwhile (a batch's count): the next reset is on it
            self._table.call(
                "put_item",
                Item=to_item(fresh),
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues=values(now=now),
            )

    def take_rate_slot(
        self, sub_id: str, *, interval: float, now: float, within: float = 0.0, busy: bool = False
    ) -> RateSlot:
        """Take a slot of the subscription's rate for a delivery at ``now`` (epoch seconds): the next one if it is
        free now, else, if it opens within ``within`` seconds, that one, reserved ahead (the caller waits for it);
        else none, and the answer says when the next opens. Slots are ``interval`` seconds apart (1 / rate).

        The slots are counted on one item per subscription, shared by every worker: it holds the theoretical
        arrival time ``tat`` of the next allowed delivery (GCRA with no burst allowance), so two deliveries never
        start less than ``interval`` apart, and no window of one second ever holds more than ``rate + 1`` starts (a
        fixed per-second counter would let ``2 x rate`` through across a window boundary). Each write is
        conditional, and a refusal hands back the item it found (``ALL_OLD``), which decides the next try:

        - a slot free now is taken if ``tat`` is not after ``now`` (``tat`` then moves to ``now + interval``);
        - a slot ahead is reserved by moving ``tat`` on by ``interval``, if it is after ``now`` and within reach:
          the reserved slot is the ``tat`` it replaced. That write needs no read and does not race: however many
          workers reserve at once, DynamoDB applies their writes one after another, each its own slot.

        ``busy`` (the caller last saw the slots taken ahead) tries the reservation first: a subscription kept at its
        rate then costs one write per slot, whatever the number of workers. A try refused by the write of its own
        first send (botocore sent it again after its answer was lost: its token, ``taken_by``, is on the item) took
        its slot."""
        latest = now + within
        expires = int(now) + 86_400
        reserve = busy and within > 0
        tat: float | None = None
        for _ in range(_RATE_SLOT_TRIES):
            token = uuid.uuid4().hex[:12]
            try:
                if reserve:
                    answer = self._table.call(
                        "update_item",
                        Key=to_item(keys.rate_slot(sub_id)),
                        UpdateExpression="SET tat = tat + :interval, expires_at = :exp, taken_by = :token",
                        ConditionExpression=(
                            "tat > :now AND tat <= :latest AND (attribute_not_exists(taken_by) OR taken_by <> :token)"
                        ),
                        ExpressionAttributeValues=values(
                            now=now, latest=latest, interval=interval, exp=expires, token=token
                        ),
                        ReturnValues="UPDATED_OLD",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                    return RateSlot(float(from_item(answer["Attributes"])["tat"]) - now, taken=True)
                self._table.call(
                    "update_item",
                    Key=to_item(keys.rate_slot(sub_id)),
                    UpdateExpression="SET tat = :next, expires_at = :exp, taken_by = :token",
                    ConditionExpression="attribute_not_exists(tat) OR tat <= :now",
                    ExpressionAttributeValues=values(now=now, next=now + interval, exp=expires, token=token),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return RateSlot(0.0, taken=True)
            except ClientError as exc:
                old = refused_item(exc)
            if "tat" not in old:
                if reserve:  # no slot counted (the item expired meanwhile): the next is free
                    reserve = False
                    continue
                item = self._table.read(keys.rate_slot(sub_id))
                tat = float(item["tat"]) if item and "tat" in item else now + interval
                return RateSlot(max(tat - now, 0.001), taken=False)
            tat = float(old["tat"])
            if old.get("taken_by") == token:  # the first send of this very try took it
                return RateSlot(max(tat - interval - now, 0.0) if reserve else 0.0, taken=True)
            if tat > latest:
                return RateSlot(tat - now, taken=False)
            # Free now (after a refused reservation: the slots ahead ran out) or within reach: try that way.
            reserve = tat > now
        # Not reached (``_RATE_SLOT_TRIES``); were it, the caller would postpone the delivery to the slot last seen.
        return RateSlot(max((tat or now) - now, 0.001), taken=False)

    def set_counts(self, sub_id: str, counts: dict[str, int], *, expires_at: int) -> None:
        """Set the subscription's ``attempts``, ``succeeded`` and ``failed`` (a recount from the attempt log). Stats
        that exist keep their expiry (moved on by every counting write, as the deployment keeps attempts);
        ``expires_at`` is that of stats written afresh, as are stats found past their expiry (``_reset_expired``)."""
        self._counting(
            sub_id,
            Key=to_item(keys.subscription_stats(sub_id)),
            UpdateExpression=(
                "SET attempts = :a, succeeded = :s, failed = :f, expires_at = if_not_exists(expires_at, :exp)"
            ),
            ExpressionAttributeValues=values(
                a=counts["attempts"], s=counts["succeeded"], f=counts["failed"], exp=expires_at
            ),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
