"""The work queue's dead-letter queue: what is in it, and sending the healthy messages back.

Two kinds of message end up there. *Poison*: a message the worker cannot read (not JSON, unknown kind
or version), or reads and cannot work (a ``notice`` its catalog does not take, marked ``herald_unworkable``), parked
at once by the worker with its reason in the ``herald_error`` message attribute. A message parked so that this code
reads and works (a kind or version the worker that parked it did not know yet, a notice type its catalog lacked: a
deploy under way, a rollback) is not poison any more, and a redrive sends it back; a worker that parks it again keeps
its redrive count, so it stays parked once it has been redriven ``dead_letter_max_redrives`` times.
*Retired*: a readable message that SQS moved after ``maxReceiveCount`` receives, because processing it
kept failing (a worker crashing, a dependency down for long). A redrive sends retired messages back
to the work queue, where they are processed normally; poison stays parked, out of the way. So does a
message that came back to the dead-letter queue after ``dead_letter_max_redrives`` redrives: each
redrive stamps ``herald_redrives`` on the message, SQS keeps message attributes when it moves a
message to the dead-letter queue, and a copy that carries the message's work on (``worker.schedule.hold``)
carries its count too.

Looking never consumes: messages are received with a short visibility timeout and made visible again
at once. A redrive is bounded (a limit and a time budget within API Gateway's 29 s): call it again
to move more. Poison can be discarded, and only poison (``discardable``): a message this code works has a way back
(a redrive), and becomes poison only once its redrives are used up; one of a kind or version this code does not
know, or a notice of a type or with fields its catalog does not declare, goes only when the operator names it (newer
code may work it). Discarding the poison and redriving the rest empties the queue, so ``DeadLetterQueueAlarm`` (any
message parked) goes back to OK and notifies again on the next arrival.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from herald.aws import surely_refused
from herald.catalog import operational_catalog
from herald.deadline import time_to_start_calls
from herald.errors import AttemptUnderWay, ServiceUnavailableError
from herald.messages import (
    KINDS,
    VERSION,
    DeliveriesMessage,
    DeliveryMessage,
    FanoutMessage,
    NoticeMessage,
    PoisonMessageError,
    RedeliverMessage,
    WorkMessage,
    parse_message,
    sendable_text,
)
from herald.queue import (
    ERROR_ATTRIBUTE,
    MAX_REASON_CHARS,
    REDRIVES_ATTRIBUTE,
    UNWORKABLE_ATTRIBUTE,
    batch_calls,
    redrive_count,
    redrives_attribute,
    refused_after_retries,
)
from herald.schemas import DeadLetterOut, DeadLettersOut, DiscardOut, NotDiscarded, RedriveOut

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef, SendMessageBatchRequestEntryTypeDef

logger = logging.getLogger(__name__)

#: How long a looked-at message stays hidden if the look is cut short (it is made visible at once otherwise).
PEEK_VISIBILITY_SECONDS = 15
#: How long a message being redriven stays hidden: longer than a whole redrive call.
REDRIVE_VISIBILITY_SECONDS = 60
#: A redrive stops receiving after this long, well within API Gateway's 29 s.
REDRIVE_BUDGET_SECONDS = 15.0
#: A redrive (or discard) in an API request also stops receiving this long before its calls' time runs out
#: (``herald.deadline``): its closing calls (making what it kept visible again, the counts) must still be made.
CLOSING_SECONDS = 5.0
#: A redrive stops receiving once it holds this many poison messages: each is made visible again before the call
#: answers, ten to a call, and those calls must fit in what is left of API Gateway's 29 s.
MAX_KEPT = 500
MAX_SAMPLE = 50
#: Poison messages a discard of ``all_poison`` deletes when it names no ``limit``.
DISCARD_LIMIT = 100
#: The most of a poison message's ``kind`` shown (the kinds Herald knows are a dozen characters).
MAX_KIND_CHARS = 100
BODY_PREVIEW = 1000
#: The most characters of bodies and reasons a discard's answer shows, its messages together: at worst 12 bytes
#: each in the Lambda response that carries it (a character beyond the BMP, ``\\uXXXX`` twice once escaped
#: again), 4.8 MB, under Lambda's 6 MB (API Gateway would answer a bare 500 for messages already deleted).
DISCARD_ANSWER_CHARS = 400_000
_LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Letter:
    message: MessageTypeDef
    out: DeadLetterOut


def _of_other_code(body: str) -> bool:
    """Whether ``body`` is a JSON object naming a kind (as a string) of a kind or a version this code does not know,
    or a notice of an operational event type, or with fields, this code's catalog does not declare."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        return False
    if raw["kind"] not in KINDS or raw.get("v", VERSION) != VERSION:
        return True
    if raw["kind"] != "notice":
        return False
    try:
        notice = parse_message(body)
    except PoisonMessageError:
        return False  # unreadable to any code
    return _unpublishable(notice) == "of other code"


def _unpublishable(message: WorkMessage) -> Literal["of other code", "unfit"] | None:
    """Why ``message`` is a notice this code's operational catalog does not take: ``of other code`` when only newer
    code may take it (a type the catalog does not declare, fields it does not know), ``unfit`` when its data does not
    fit its type; None if it is no notice, or the catalog takes it. One a worker parked as unworkable
    (``UNWORKABLE_ATTRIBUTE``) that this code takes was parked by a worker running other code."""
    if not isinstance(message, NoticeMessage):
        return None
    entry = operational_catalog.get(message.event_type)
    if entry is None:
        return "of other code"
    try:
        entry.validate(message.data)
    except ValidationError as exc:
        return "of other code" if {error["type"] for error in exc.errors()} == {"extra_forbidden"} else "unfit"
    return None


@dataclass
class _Redriving:
    """Where a redrive (``DeadLetterQueue.redrive``) stands."""

    #: Messages sent back to the work queue (one whose delete here failed included: it stays here, hidden).
    moved: int = 0
    #: Poison looked at and left, and healthy messages SQS surely did not take: made visible again at the end.
    kept: list[_Letter] = field(default_factory=list)
    refused: list[_Letter] = field(default_factory=list)
    #: Messages of a send back SQS failed after it may have carried it out: left hidden here.
    uncertain: int = 0
    #: Why the redrive stopped before it was done (an SQS error), or None.
    interrupted: str | None = None

    def started_work(self) -> bool:
        """Whether anything was sent back, or may have been: the answer must say so, not a 503."""
        return bool(self.moved or self.uncertain)


@dataclass
class _Discarding:
    """Where a discard (``DeadLetterQueue.discard``) stands."""

    #: The messages named, or None: any poison, up to ``limit``.
    named: set[str] | None
    limit: int
    #: The first copy of each message discarded, in order; the ids of all of them.
    discarded: list[_Letter] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    #: Messages looked at and left: made visible again at the end.
    left: list[_Letter] = field(default_factory=list)
    #: Messages named that were met; those met and not discarded, with why.
    met: set[str] = field(default_factory=set)
    not_discarded: dict[str, str] = field(default_factory=dict)
    #: Messages of a delete SQS failed after it may have carried it out: perhaps gone, their work settled already;
    #: made visible again at the end, as ``left`` (one still here is discarded again later).
    maybe_discarded: list[_Letter] = field(default_factory=list)
    #: Why the discard stopped before it was done (an SQS error), or None.
    interrupted: str | None = None

    def wanted(self) -> int:
        return self.limit - len(self.discarded) if self.named is None else len(self.named - self.met)

    def receive_size(self) -> int:
        return min(10, self.wanted()) if self.named is None else 10


class DeadLetterQueue:
    """Looks into and redrives the dead-letter queue; the SQS client is injectable."""

    def __init__(
        self,
        client: SQSClient,
        dead_letter_queue_url: str,
        work_queue_url: str,
        *,
        max_redrives: int = 3,
        clock: Callable[[], float] = time.time,
        settle: Callable[[str], object] | None = None,
    ) -> None:
        self.client = client
        self.url = dead_letter_queue_url
        self.work_queue_url = work_queue_url
        self.max_redrives = max_redrives
        self.clock = clock
        #: Called with a message's body before it is discarded, to settle the work it carried
        #: (``herald.domain.deliveries.fail_discarded``); a ``ServiceUnavailableError`` keeps the message.
        self.settle = settle

    def _sqs(self, operation: str, **kwargs: Any) -> Any:
        if not self.url:
            raise ServiceUnavailableError("no dead-letter queue is configured")
        try:
            return getattr(self.client, operation)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailableError(f"SQS {operation} failed on the dead-letter queue") from exc

    def _counts(self) -> tuple[int, int]:
        attributes = self._sqs(
            "get_queue_attributes",
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def _receive(self, count: int, visibility: int, wait: int) -> list[_Letter]:
        messages = self._sqs(
            "receive_message",
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(count, 10)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return [_Letter(message, self.describe(message)) for message in messages]

    def _batch(self, operation: str, url: str, entries: list[Any]) -> list[Any]:
        """``operation`` (an SQS batch call) on ``entries`` (their ``Id`` unique, at most ten), what SQS refuses
        tried again (``refused_after_retries``); returns the entries still refused."""
        refused, _ = refused_after_retries(lambda pending: self._sqs(operation, QueueUrl=url, Entries=pending), entries)
        return refused

    def _reveal(self, letters: list[_Letter]) -> None:
        """Make ``letters`` visible again at once. One SQS keeps refusing comes back by itself when its
        visibility timeout ends."""
        for start in range(0, len(letters), 10):
            chunk = letters[start : start + 10]
            self._batch(
                "change_message_visibility_batch",
                self.url,
                [
                    {"Id": str(index), "ReceiptHandle": letter.message["ReceiptHandle"], "VisibilityTimeout": 0}
                    for index, letter in enumerate(chunk)
                ],
            )

    def describe(self, message: MessageTypeDef) -> DeadLetterOut:
        """What a dead-letter message is and why it is there."""
        body = message.get("Body", "")
        attributes: dict[str, Any] = dict(message.get("MessageAttributes", {}))
        system: dict[str, str] = {str(key): value for key, value in message.get("Attributes", {}).items()}
        error = attributes.get(ERROR_ATTRIBUTE, {}).get("StringValue")
        redrives = redrive_count(attributes.get(REDRIVES_ATTRIBUTE, {}).get("StringValue"))
        receive_count = int(system.get("ApproximateReceiveCount", "0"))
        kind: str | None = None
        event_id = subscription_id = delivery_id = None
        readable = unworkable = False
        try:
            parsed = parse_message(body)
        except PoisonMessageError as exc:
            error = error or str(exc)
            try:
                raw = json.loads(body)
                named = raw.get("kind") if isinstance(raw, dict) else None
                kind = sendable_text(named, MAX_KIND_CHARS) if isinstance(named, str) else None
            except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
                kind = None
        else:
            readable = True
            unworkable = UNWORKABLE_ATTRIBUTE in attributes and _unpublishable(parsed) is not None
            kind = parsed.kind
            # A field of its kind only: a message carries fields of newer code along, whatever their names.
            if isinstance(parsed, FanoutMessage | DeliveryMessage | RedeliverMessage):
                event_id = parsed.event_id
            if isinstance(parsed, DeliveriesMessage):
                # Several deliveries: the ids all of them share, if any (the body lists each).
                events = {planned.event_id for planned in parsed.deliveries}
                event_id = events.pop() if len(events) == 1 else None
                if len(parsed.deliveries) == 1:
                    subscription_id = parsed.deliveries[0].subscription_id
                    delivery_id = parsed.deliveries[0].delivery_id
            elif isinstance(parsed, DeliveryMessage):
                subscription_id = parsed.subscription_id
                delivery_id = parsed.delivery_id
        if error is not None:
            # Bounded and encodable whatever wrote it (SQS moving a message after maxReceiveCount writes no reason;
            # one built here from a body that names a lone surrogate would fail the answer's encoding).
            error = sendable_text(error, MAX_REASON_CHARS)
        if error is not None and (not readable or unworkable):
            # Unreadable, or read and parked as never workable (``UNWORKABLE_ATTRIBUTE``), and this code cannot work it
            # either: no redrive will work it.
            poison, reason = True, f"poison: {error}"
        elif redrives >= self.max_redrives:
            poison, reason = True, f"failed again after {redrives} redrives"
        elif error is not None:
            # Parked as unreadable, or unworkable, by a worker running other code (a kind or version it did not know
            # yet, a notice its catalog did not take, while a deploy was under way or after a rollback): this code
            # reads it, and works it, so a redrive sends it back. Parked again,
            # it keeps its redrive count (``WorkQueue.dead_letter``), so the limit above holds for it too.
            marked = UNWORKABLE_ATTRIBUTE in attributes
            parked, now = ("unworkable", "workable") if marked else ("unreadable", "readable")
            poison, reason = False, f"parked as {parked} by a worker running other code, {now} now ({error[:200]})"
        else:
            poison, reason = False, "processing failed on every receive (the work queue's maxReceiveCount)"
        sent_ms = system.get("SentTimestamp")
        return DeadLetterOut(
            message_id=message.get("MessageId", ""),
            kind=kind,
            reason=reason,
            poison=poison,
            event_id=event_id,
            subscription_id=subscription_id,
            delivery_id=delivery_id,
            sent_at=datetime.fromtimestamp(int(sent_ms) / 1000, UTC) if sent_ms else None,
            receive_count=receive_count,
            redrives=redrives,
            body=body[:BODY_PREVIEW],
        )

    def peek(self, sample_size: int = 10) -> DeadLettersOut:
        """The queue's size and a sample of its messages, none consumed."""
        visible, in_flight = self._counts()
        sample: list[_Letter] = []
        received: list[_Letter] = []
        wanted = min(sample_size, visible)
        if wanted > 0:
            try:
                # A few receives at most: SQS returns up to 10 messages per call, sometimes fewer. Long polling (a
                # second at most): a short poll asks only some of SQS's servers, and on a queue holding a few
                # messages it often answers none.
                for _ in range(-(-sample_size // 10) + 2):
                    got = self._receive(sample_size - len(sample), PEEK_VISIBILITY_SECONDS, 1)
                    received += got
                    seen = {letter.out.message_id for letter in sample}
                    sample += [letter for letter in got if letter.out.message_id not in seen]
                    if not got or len(sample) >= wanted:
                        break
            finally:
                self._reveal(received)
        sent = [letter.out.sent_at for letter in sample if letter.out.sent_at is not None]
        oldest = min(sent) if sent else None
        return DeadLettersOut(
            count=visible,
            in_flight=in_flight,
            oldest_sent_at=oldest,
            oldest_age_seconds=int(self.clock() - oldest.timestamp()) if oldest else None,
            sample=sorted((letter.out for letter in sample), key=lambda out: out.sent_at or _LATEST),
        )

    def _may_go_on(self, started: float) -> bool:
        """Whether a redrive or discard begun at ``started`` may receive more: within ``REDRIVE_BUDGET_SECONDS``, and
        in an API request, ``CLOSING_SECONDS`` before AWS calls may no more be started."""
        left = time_to_start_calls()
        return self.clock() - started < REDRIVE_BUDGET_SECONDS and (left is None or left > CLOSING_SECONDS)

    def redrive(self, limit: int) -> RedriveOut:
        """Send up to ``limit`` healthy messages back to the work queue (and delete them here); poison stays. Should
        SQS fail once something was sent back, or may have been, the answer says what, and why it stopped; before
        that, the failure is raised, and every message held is made visible again."""
        run = _Redriving()
        started = self.clock()
        try:
            while run.moved < limit and len(run.kept) + len(run.refused) < MAX_KEPT and self._may_go_on(started):
                letters = self._receive(min(10, limit - run.moved), REDRIVE_VISIBILITY_SECONDS, 1)
                if not letters:
                    break
                run.kept += [letter for letter in letters if letter.out.poison]
                self._move(run, [letter for letter in letters if not letter.out.poison])
        except ServiceUnavailableError as exc:
            if not run.started_work():
                self._reveal_after_failure(run.kept + run.refused)
                raise
            run.interrupted = exc.message
        visible: int | None
        hidden: int | None
        try:
            self._reveal(run.kept + run.refused)
            visible, hidden = self._counts()
        except ServiceUnavailableError as exc:
            if not run.started_work():
                raise
            run.interrupted, visible, hidden = run.interrupted or exc.message, None, None
        if run.refused:
            logger.warning("dead-letter messages not sent back: SQS refused them", extra={"refused": len(run.refused)})
        if run.moved or run.kept:
            logger.info("dead-letter queue redriven", extra={"moved": run.moved, "kept": len(run.kept)})
        if run.interrupted:
            logger.warning("dead-letter redrive cut short", extra={"reason": run.interrupted})
        return RedriveOut(
            moved=run.moved,
            kept=len(run.kept),
            uncertain=run.uncertain,
            remaining=visible,
            in_flight=hidden,
            interrupted=run.interrupted,
        )

    def _move(self, run: _Redriving, letters: list[_Letter]) -> None:
        """Send ``letters`` back to the work queue and delete them here, counted in ``run``: those sent in ``moved``;
        those SQS surely did not take in ``refused`` (still here, hidden: made visible again once the redrive is done,
        so it does not receive them again meanwhile); those of a send SQS failed after it may have carried it out in
        ``uncertain``. One sent back whose delete here fails, and one of ``uncertain``, stays hidden here for
        ``REDRIVE_VISIBILITY_SECONDS``: made visible at once, a redrive called again after a 503 would send it back a
        second time. Raises ``ServiceUnavailableError`` when a call failed, once ``run`` counts what it did."""
        # A call of SendMessageBatch takes 1 MiB in all (``batch_calls``): a few large letters take a call each. The
        # letters after a call that failed are not sent, and stay here as refused ones do.
        for start, end in batch_calls(_entries(letters)):
            try:
                self._move_in_one_call(run, letters[start:end])
            except ServiceUnavailableError:
                run.refused += letters[end:]
                raise

    def _move_in_one_call(self, run: _Redriving, letters: list[_Letter]) -> None:
        """``_move`` of letters that fit one SendMessageBatch call."""
        if not letters:
            return
        entries = _entries(letters)
        accepted: set[str] = set()

        def send(pending: list[SendMessageBatchRequestEntryTypeDef]) -> Any:
            answer = self._sqs("send_message_batch", QueueUrl=self.work_queue_url, Entries=pending)
            failed = {item["Id"] for item in answer.get("Failed", [])}
            accepted.update(entry["Id"] for entry in pending if entry["Id"] not in failed)
            return answer

        error: ServiceUnavailableError | None = None
        at_once = True
        try:
            refused_after_retries(send, entries)
        except ServiceUnavailableError as exc:
            error = ServiceUnavailableError("the work queue could not be reached")
            error.__cause__ = exc
            at_once = surely_refused(exc)
        done = [letter for index, letter in enumerate(letters) if str(index) in accepted]
        rest = [letter for index, letter in enumerate(letters) if str(index) not in accepted]
        if at_once:
            run.refused += rest
        else:
            run.uncertain += len(rest)
            logger.warning(
                "dead-letter messages perhaps sent back: SQS failed the send after it may have carried it out; "
                "they stay here, hidden for a minute",
                extra={"uncertain": len(rest), "message_ids": [letter.out.message_id for letter in rest]},
            )
        run.moved += len(done)
        if done:
            # A copy left on both queues (a crash before this delete, or a delete SQS refuses or fails) is sent back
            # again by a later redrive: the worker processes duplicates safely, and receivers drop them by id.
            try:
                _, left = self._delete(done)
            except ServiceUnavailableError as exc:
                left, error = done, error or exc
            if left:
                logger.warning(
                    "dead-letter messages sent back but not deleted here: hidden for a minute",
                    extra={"not_deleted": len(left)},
                )
        if error is not None:
            raise error

    def discard(self, message_ids: Sequence[str] | None = None, *, limit: int = DISCARD_LIMIT) -> DiscardOut:
        """Delete poison messages for good (``discardable``): those named by ``message_ids`` (one named and not
        discarded is listed with why), or, with none named, up to ``limit`` of those met. Bounded as a redrive is (its
        time budget, ``MAX_KEPT`` messages set aside); what is looked at and left is made visible again before it
        answers. Should SQS fail once something is discarded, the answer says what was, and why it stopped; before
        that, the failure is raised, saying which messages may be gone (a delete SQS failed after it may have carried
        it out: ``maybe_discarded``)."""
        run = _Discarding(None if message_ids is None else set(message_ids), limit)
        started = self.clock()
        try:
            while run.wanted() > 0 and len(run.left) < MAX_KEPT and self._may_go_on(started):
                letters = self._receive(run.receive_size(), REDRIVE_VISIBILITY_SECONDS, 1)
                if not letters:
                    break
                self._discard_some(run, letters)
        except ServiceUnavailableError as exc:
            if not run.discarded:
                self._reveal_after_failure(run.left + run.maybe_discarded)
                if run.maybe_discarded:
                    raise _perhaps_discarded(exc, run.maybe_discarded) from exc
                raise
            run.interrupted = exc.message
        try:
            # One perhaps discarded is made visible again too: one SQS did not delete is discarded again later.
            self._reveal(run.left + run.maybe_discarded)
            remaining: int | None = self._counts()[0]
        except ServiceUnavailableError as exc:
            if not run.discarded:
                raise
            run.interrupted, remaining = run.interrupted or exc.message, None
        if run.interrupted:
            logger.warning("dead-letter discard cut short", extra={"reason": run.interrupted})
        named = message_ids or ()
        answer = DiscardOut(
            discarded=[letter.out for letter in run.discarded],
            not_discarded=[NotDiscarded(message_id=key, reason=why) for key, why in run.not_discarded.items()],
            not_found=list(dict.fromkeys(key for key in named if key not in run.met)),
            kept=len(run.left),
            remaining=remaining,
            interrupted=run.interrupted,
            maybe_discarded=[letter.out for letter in run.maybe_discarded],
        )
        return _within_answer_size(answer)

    def discardable(self, letter: _Letter, *, named: bool) -> str | None:
        """None when ``letter`` may be discarded, else why not. Poison may: back after its redrives, or parked by a
        worker that could not read it or work it (its reason attached), or no work message at all (no JSON
        object naming a kind). One of a kind or version this code does not know only when ``named``: newer code may
        read it, and only the operator knows whether such code runs. A message this code cannot read but SQS retired
        without a reason never: some worker read it (a newer one, during a deploy or after a rollback), and it is
        readable here once the API runs the same code."""
        out = letter.out
        if not out.poison:
            return "not poison: a redrive sends it back to work"
        if out.redrives >= self.max_redrives:
            return None
        if ERROR_ATTRIBUTE not in letter.message.get("MessageAttributes", {}) and out.kind is not None:
            return (
                "unreadable to the API's code, yet a worker read it (SQS retired it without a reason): a worker "
                "running other code; redrive it once the API runs the same code"
            )
        if not named and _of_other_code(letter.message.get("Body", "")):
            return "of a kind or version this code does not know: newer code may read it (name it to discard it)"
        return None

    def _discard_some(self, run: _Discarding, letters: list[_Letter]) -> None:
        """Delete what ``run`` discards of ``letters`` (another copy of a message discarded already too: SQS may hand
        out a message twice); the others join ``run.left``, to be made visible again."""
        doomed: list[_Letter] = []
        for letter in letters:
            message_id = letter.out.message_id
            if message_id in run.gone:
                doomed.append(letter)
                continue
            named = run.named is not None and message_id in run.named
            why = self.discardable(letter, named=named) if run.named is None or named else "not named"
            if why is None:
                doomed.append(letter)
            else:
                run.left.append(letter)
                if named:
                    run.not_discarded.setdefault(message_id, why)
            if named:
                run.met.add(message_id)
        gone, refused = self._delete_settled(run, self._settled(run, doomed))
        for letter in gone:
            out = letter.out
            if out.message_id in run.gone:
                continue
            run.gone.add(out.message_id)
            run.discarded.append(letter)
            # Logged at once, without the body: the record stays should a later call fail.
            logger.warning(
                "poison message discarded from the dead-letter queue",
                extra={"message_id": out.message_id, "kind": out.kind, "reason": out.reason, "sent_at": out.sent_at},
            )
        for letter in refused:
            if letter.out.message_id not in run.gone:
                run.left.append(letter)
                run.not_discarded[letter.out.message_id] = "SQS kept refusing to delete it: it is still there"

    def _delete_settled(self, run: _Discarding, doomed: list[_Letter]) -> tuple[list[_Letter], list[_Letter]]:
        """``_delete`` ``doomed``, each logged first as being discarded (without its body: the record stays should SQS
        carry the delete out and its answer be lost). Should the delete fail, those not discarded already join
        ``run.left`` if SQS surely deleted none, else ``run.maybe_discarded``."""
        for letter in doomed:
            out = letter.out
            if out.message_id not in run.gone:
                logger.warning(
                    "poison message being discarded from the dead-letter queue",
                    extra={
                        "message_id": out.message_id,
                        "kind": out.kind,
                        "reason": out.reason,
                        "sent_at": out.sent_at,
                    },
                )
        try:
            return self._delete(doomed)
        except ServiceUnavailableError as exc:
            held = [letter for letter in doomed if letter.out.message_id not in run.gone]
            ids = [letter.out.message_id for letter in held]
            if surely_refused(exc):
                run.left += held
                logger.warning("poison messages not discarded: SQS refused their delete", extra={"message_ids": ids})
            else:
                run.maybe_discarded += held
                logger.warning(
                    "poison messages perhaps discarded: SQS failed their delete after it may have carried it out",
                    extra={"message_ids": ids},
                )
            raise

    def _settled(self, run: _Discarding, doomed: list[_Letter]) -> list[_Letter]:
        """Those of ``doomed`` whose work is settled (``settle``) before they are deleted: a delivery a message carried
        is failed first, so it never reads pending with nothing left to carry it on. One whose work DynamoDB did not
        let settle joins ``run.left``, said why: discarded again later, it is settled then (settling twice changes
        nothing)."""
        if self.settle is None:
            return doomed
        kept: list[_Letter] = []
        for letter in doomed:
            if letter.out.message_id not in run.gone:
                try:
                    self.settle(letter.message.get("Body", ""))
                except AttemptUnderWay as exc:
                    run.left.append(letter)
                    run.not_discarded[letter.out.message_id] = f"{exc.message}; it is still there"
                    continue
                except ServiceUnavailableError as exc:
                    run.left.append(letter)
                    run.not_discarded[letter.out.message_id] = (
                        f"the deliveries it carried could not be marked failed ({exc.message}): it is still there"
                    )
                    continue
                except Exception:
                    # A fault of this code's, not DynamoDB's: the operator's discard goes ahead, the rest logged.
                    logger.exception(
                        "a discarded message's work not settled", extra={"message_id": letter.out.message_id}
                    )
            kept.append(letter)
        return kept

    def _reveal_after_failure(self, letters: list[_Letter]) -> None:
        """Make ``letters`` visible again after SQS failed a call; if SQS fails that too, they come back by themselves
        when their visibility timeout ends."""
        try:
            self._reveal(letters)
        except ServiceUnavailableError:
            logger.warning("dead-letter messages left hidden for a minute", extra={"hidden": len(letters)})

    def _delete(self, letters: list[_Letter]) -> tuple[list[_Letter], list[_Letter]]:
        """Delete ``letters`` here: those deleted, and those SQS kept refusing to delete (still here, hidden)."""
        if not letters:
            return [], []
        refused = {
            int(entry["Id"])
            for entry in self._batch(
                "delete_message_batch",
                self.url,
                [
                    {"Id": str(index), "ReceiptHandle": letter.message["ReceiptHandle"]}
                    for index, letter in enumerate(letters)
                ],
            )
        }
        return (
            [letter for index, letter in enumerate(letters) if index not in refused],
            [letter for index, letter in enumerate(letters) if index in refused],
        )


def _perhaps_discarded(exc: ServiceUnavailableError, letters: list[_Letter]) -> ServiceUnavailableError:
    """The error a discard raises when SQS failed a delete it may have carried out (``exc``), nothing else discarded:
    ``letters`` may be gone, the work they carried settled already; each is named, as it was logged."""
    count = len(letters)
    return ServiceUnavailableError(
        f"SQS failed the delete of {count} poison message{'' if count == 1 else 's'} (`details`) and may have carried "
        "it out: each may be gone, the deliveries it carried marked failed already, and each is logged as being "
        f"discarded; nothing else was discarded. Look again, and discard what is still there ({exc.message})",
        details=[
            {"loc": [letter.out.message_id], "msg": "may have been discarded", "type": "maybe_discarded"}
            for letter in letters
        ],
    )


def _within_answer_size(answer: DiscardOut) -> DiscardOut:
    """``answer`` showing at most ``DISCARD_ANSWER_CHARS`` of its messages' bodies and reasons: over it, each message
    keeps an equal share, its reason half of it at most and its body the rest. Every message discarded is still
    listed, with its id, kind, and the start of its reason and body; each reason was logged whole as it went."""
    shown = answer.discarded
    if sum(len(out.body) + len(out.reason) for out in shown) <= DISCARD_ANSWER_CHARS:
        return answer
    share = DISCARD_ANSWER_CHARS // len(shown)
    cut = []
    for out in shown:
        reason = out.reason[: share // 2] if len(out.body) > share // 2 else out.reason[: share - len(out.body)]
        cut.append(out.model_copy(update={"reason": reason, "body": out.body[: share - len(reason)]}))
    # Without the bodies, as every log of a discard (they may carry a tenant's data).
    logger.warning("dead-letter discard answer cut to its size limit", extra={"discarded": len(shown), "share": share})
    return answer.model_copy(update={"discarded": cut})


def _entries(letters: Sequence[_Letter]) -> list[SendMessageBatchRequestEntryTypeDef]:
    """The entries of a SendMessageBatch call that sends ``letters`` back to the work queue, each counting one more
    redrive."""
    return [
        {
            "Id": str(index),
            "MessageBody": letter.message["Body"],
            "MessageAttributes": {REDRIVES_ATTRIBUTE: redrives_attribute(letter.out.redrives + 1)},
        }
        for index, letter in enumerate(letters)
    ]
