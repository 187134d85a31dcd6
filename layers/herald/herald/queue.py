"""The work queue (SQS): the producer side used by the API and the worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from herald.aws import refused_at_once, sqs_client
from herald.errors import ServiceUnavailableError
from herald.messages import (
    DeliveryMessage,
    PoisonMessageError,
    WorkMessage,
    described,
    dump_message,
    parse_message,
    sendable_text,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef, SendMessageBatchRequestEntryTypeDef

logger = logging.getLogger(__name__)

#: The attribute a message parked as unreadable carries its reason in (``dead_letter``).
ERROR_ATTRIBUTE = "herald_error"
#: The attribute counting a message's redrives from the dead-letter queue (``herald.dlq``).
REDRIVES_ATTRIBUTE = "herald_redrives"
#: Set on a message a worker parked though it reads it: no try of that worker's code will work it (an operational
#: notice its catalog does not take). Poison while the API's code does not work it either (``herald.dlq``).
UNWORKABLE_ATTRIBUTE = "herald_unworkable"
#: The reason a message is set aside with is cut to this many characters (the dead-letter queue's size allows it).
MAX_REASON_CHARS = 1000


#: SQS limits: 10 entries per batch call, 900 s of DelaySeconds, 12 h of visibility, 256 KiB a message (the
#: queues' MaximumMessageSize in template.yaml), and 1 MiB for all the messages of a batch call together (their bodies
#: and attributes; SendMessageBatch refuses a longer call whole, ``BatchRequestTooLong``).
BATCH_SIZE = 10
MAX_DELAY_SECONDS = 900
MAX_MESSAGE_BYTES = 262_144
MAX_BATCH_BYTES = 1_048_576
#: The pause before sending again the entries SQS refused in a call (twice as long before the third try): a
#: refused entry is a passing fault or throttling, and sent again at once it would most likely be refused again.
RESEND_PAUSE_SECONDS = 0.05
_pause = time.sleep

Message = WorkMessage


class _Tried(NamedTuple):
    """What ``WorkQueue._try_entries`` did."""

    #: The entries not known to be sent: refused, never tried, or ``uncertain``.
    unsent: list[SendMessageBatchRequestEntryTypeDef]
    calls: int
    #: Why a call failed after botocore's retries, if one did (the entries after it were not tried).
    error: ServiceUnavailableError | None
    #: Of ``unsent``, those of a call whose answer was lost: SQS may hold them.
    uncertain: list[SendMessageBatchRequestEntryTypeDef]


def refused_after_retries[E: Mapping[str, Any]](
    call: Callable[[list[E]], Mapping[str, Any]], entries: Sequence[E]
) -> tuple[list[E], int]:
    """Make an SQS batch call, ``call(entries)`` (at most ten entries, their ``Id`` unique). A batch call answers each
    entry on its own, in ``Failed`` even when the call succeeds: the entries SQS refuses are tried again up to twice,
    after a pause (``RESEND_PAUSE_SECONDS``, then twice that). Returns the entries still refused, and the calls made."""
    pending = list(entries)
    calls = 0
    for attempt in range(3):
        if attempt:
            _pause(RESEND_PAUSE_SECONDS * 2 ** (attempt - 1))
        calls += 1
        failed = {item["Id"] for item in call(pending).get("Failed", [])}
        pending = [entry for entry in pending if entry["Id"] in failed]
        if not pending:
            break
    return pending, calls


def batch_calls(entries: Sequence[SendMessageBatchRequestEntryTypeDef]) -> list[tuple[int, int]]:
    """Where ``entries`` are cut into batch calls, in order, as (start, end): ``BATCH_SIZE`` entries at most, and at
    most ``MAX_BATCH_BYTES`` together (an entry alone may be as large as a message may be)."""
    cuts: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, entry in enumerate(entries):
        length = _entry_bytes(entry)
        if index > start and (index - start == BATCH_SIZE or size + length > MAX_BATCH_BYTES):
            cuts.append((start, index))
            start, size = index, 0
        size += length
    if start < len(entries):
        cuts.append((start, len(entries)))
    return cuts


def _entry_bytes(entry: SendMessageBatchRequestEntryTypeDef) -> int:
    """An entry's size as SQS counts it against a batch call's limit: its body's UTF-8 bytes, and each attribute's
    name, data type and value."""
    size = len(entry["MessageBody"].encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        # Herald's attributes are strings and numbers (``redrives_attribute``, ``dead_letter``'s reasons).
        size += len(name.encode()) + len(value["DataType"].encode()) + len(value.get("StringValue", "").encode())
    return size


def redrive_count(value: str | None) -> int:
    """A message's redrive count, read from its ``herald_redrives`` value. Herald writes small whole numbers only; a
    message sent by hand may carry ``1.5``, ``-2`` (SQS's Number type takes them) or thousands of digits (as a
    String, which ``int`` refuses), and such a value counts as 0, as does none at all: the message starts its
    redrives afresh, it is never refused for its count."""
    return int(value) if value and len(value) <= 9 and value.isascii() and value.isdigit() else 0


def redrives_attribute(count: int) -> MessageAttributeValueTypeDef:
    """The ``herald_redrives`` attribute a message carries after ``count`` redrives."""
    return {"DataType": "Number", "StringValue": str(count)}


class WorkQueue:
    """Sends work messages; the client is injectable (tests pass a moto-backed one). A delivery message for
    the slow lane goes to the slow lane's queue when there is one."""

    def __init__(
        self,
        queue_url: str,
        dead_letter_queue_url: str = "",
        *,
        slow_queue_url: str = "",
        client: SQSClient | None = None,
    ) -> None:
        self.queue_url = queue_url
        self.dead_letter_queue_url = dead_letter_queue_url
        self.slow_queue_url = slow_queue_url
        self._client = client

    def url_for(self, message: Message) -> str:
        """The queue a message goes to: the slow lane's for a delivery marked ``slow``, else the work queue."""
        if self.slow_queue_url and isinstance(message, DeliveryMessage) and message.lane == "slow":
            return self.slow_queue_url
        return self.queue_url

    @property
    def client(self) -> SQSClient:
        if self._client is None:
            self._client = sqs_client()
        return self._client

    def send(self, message: Message, *, delay_seconds: int = 0, redrives: int = 0) -> None:
        """Send ``message`` to its queue (``url_for``), delayed up to 15 minutes, carrying the count of redrives of
        the work it carries on (``herald_redrives``), if any."""
        self._send_one(self.url_for(message), dump_message(message), delay_seconds, redrives)

    def send_body(self, body: str, *, delay_seconds: int = 0, redrives: int = 0) -> None:
        """``send`` for a message body as it is (scheduled work)."""
        self._send_one(self._url_for_body(body), body, delay_seconds, redrives)

    def _send_one(self, queue_url: str, body: str, delay_seconds: int, redrives: int) -> None:
        request: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MessageBody": body,
            "DelaySeconds": max(0, min(int(delay_seconds), MAX_DELAY_SECONDS)),
        }
        if redrives > 0:
            request["MessageAttributes"] = {REDRIVES_ATTRIBUTE: redrives_attribute(redrives)}
        try:
            self.client.send_message(**request)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailableError("the work queue could not be reached") from exc

    def send_batch(self, messages: Sequence[Message]) -> int:
        """Send messages to the work queue 10 (and at most 1 MiB) per call; entries SQS refuses are sent again up to
        twice, then raise. Returns the call count."""
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "MessageBody": dump_message(message)} for index, message in enumerate(messages)
        ]
        return self._send_entries(self.queue_url, entries, "messages of a batch")

    def send_each(self, messages: Sequence[tuple[Message, int]], *, redrives: Sequence[int] = ()) -> list[bool | None]:
        """Send messages, each with its ``DelaySeconds`` (and its count of ``redrives``, when given: ``send``), to its
        queue (``url_for``), 10 (and at most 1 MiB) per call, raising for none:
        for each message, in order, True if SQS took it, False if it surely did not, None if it may have (its call's
        answer was lost, or SQS failed it after botocore's retries: ``_try_entries``' ``uncertain``). For a caller
        that answers for each message's work on its own (a batch publish), or must know which messages went out: one
        that went out may be at work already (a recovery's)."""
        sent: list[bool | None] = [True] * len(messages)
        by_queue: dict[str, list[SendMessageBatchRequestEntryTypeDef]] = {}
        for index, (message, delay) in enumerate(messages):
            entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(index), "MessageBody": dump_message(message)}
            if delay > 0:
                entry["DelaySeconds"] = min(delay, MAX_DELAY_SECONDS)
            if redrives and redrives[index] > 0:
                entry["MessageAttributes"] = {REDRIVES_ATTRIBUTE: redrives_attribute(redrives[index])}
            by_queue.setdefault(self.url_for(message), []).append(entry)
        for url, entries in by_queue.items():
            tried = self._try_entries(url, entries, past_refusals=True)
            for entry in tried.unsent:
                sent[int(entry["Id"])] = False
            for entry in tried.uncertain:
                sent[int(entry["Id"])] = None
            if tried.unsent:
                logger.warning(
                    "messages not sent, or not known to be",
                    extra={
                        "unsent": len(tried.unsent),
                        "uncertain": len(tried.uncertain),
                        "error": str(tried.error or "refused"),
                    },
                )
        return sent

    def send_bodies(self, entries: Sequence[tuple[str, int]]) -> None:
        """Send message bodies as they are (scheduled work), each with its ``DelaySeconds`` to its queue (a
        delivery of the slow lane to the slow lane's, ``url_for``), 10 (and 1 MiB) per call; entries SQS refuses are
        sent again up to twice, then raise."""
        by_queue: dict[str, list[tuple[str, int]]] = {}
        for body, delay in entries:
            by_queue.setdefault(self._url_for_body(body), []).append((body, delay))
        for url, queued in by_queue.items():
            self._send_bodies(url, queued)

    def _url_for_body(self, body: str) -> str:
        try:
            return self.url_for(parse_message(body))
        except PoisonMessageError:
            return self.queue_url  # the worker sends it on to the dead-letter queue

    def _send_bodies(self, queue_url: str, entries: Sequence[tuple[str, int]]) -> None:
        pending: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "MessageBody": body, "DelaySeconds": max(0, min(delay, MAX_DELAY_SECONDS))}
            for index, (body, delay) in enumerate(entries)
        ]
        self._send_entries(queue_url, pending, "scheduled messages")

    def _send_entries(self, queue_url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef], what: str) -> int:
        """``_try_entries``, raising unless every entry was sent (``what`` names them). Returns the call count."""
        unsent, calls, error, _ = self._try_entries(queue_url, entries, past_refusals=False)
        if error is not None:
            raise error
        if unsent:
            raise ServiceUnavailableError(f"SQS refused {len(unsent)} {what} three times")
        return calls

    def _try_entries(
        self, queue_url: str, entries: Sequence[SendMessageBatchRequestEntryTypeDef], *, past_refusals: bool
    ) -> _Tried:
        """``SendMessageBatch`` ``entries`` (their ``Id`` unique) to ``queue_url``, in calls of ``batch_calls``, in
        order; the entries SQS refuses in a call are sent again up to twice, after a pause (``RESEND_PAUSE_SECONDS``,
        then twice that).
        Returns the entries not known to be sent, the calls made, and the error of a call that failed after botocore's
        retries: the queue is not reached then, so that call's entries and every later one's are not sent (each call
        after it would hold the caller through its retries again, for nothing), except those SQS took in an earlier call
        of the same ten (a resend of refused entries failed), and those of a call SQS may have carried out
        (``uncertain``: its answer lost, or an error after botocore retried it, ``refused_at_once``). Entries still
        refused stop the sending too, unless ``past_refusals``: a caller that raises for them sends nothing after them
        (a message that carries on a job's work, sent last, must not go out when the work before it did not)."""
        accepted: set[str] = set()
        calls = 0

        def send(pending: list[SendMessageBatchRequestEntryTypeDef]) -> Mapping[str, Any]:
            nonlocal calls
            calls += 1
            answer = self.client.send_message_batch(QueueUrl=queue_url, Entries=pending)
            refused = {item["Id"] for item in answer.get("Failed", [])}
            accepted.update(entry["Id"] for entry in pending if entry["Id"] not in refused)
            return answer

        unsent: list[SendMessageBatchRequestEntryTypeDef] = []
        for start, end in batch_calls(entries):
            chunk = entries[start:end]
            try:
                refused, _ = refused_after_retries(send, chunk)
            except (BotoCoreError, ClientError) as exc:
                error = ServiceUnavailableError("the work queue could not be reached")
                error.__cause__ = exc
                left = [entry for entry in chunk if entry["Id"] not in accepted]
                uncertain = [] if refused_at_once(exc) else left
                return _Tried([*unsent, *left, *entries[end:]], calls, error, uncertain)
            unsent += refused
            if refused and not past_refusals:
                return _Tried([*unsent, *entries[end:]], calls, None, [])
        return _Tried(unsent, calls, None, [])

    def dead_letter(self, body: str, reason: str, *, redrives: int = 0, unworkable: bool = False) -> None:
        """Put an unprocessable message straight into the dead-letter queue, with the reason attached, and how
        often it was redriven already (the message's own count, kept so a redrive's limit holds for it too).
        ``unworkable``: one this code reads, and will never work (``UNWORKABLE_ATTRIBUTE``)."""
        if not self.dead_letter_queue_url:
            raise ServiceUnavailableError("no dead-letter queue is configured")
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            ERROR_ATTRIBUTE: {"DataType": "String", "StringValue": sendable_text(reason, MAX_REASON_CHARS)}
        }
        if unworkable:
            attributes[UNWORKABLE_ATTRIBUTE] = {"DataType": "String", "StringValue": "true"}
        if redrives > 0:
            attributes[REDRIVES_ATTRIBUTE] = redrives_attribute(redrives)
        try:
            self.client.send_message(
                QueueUrl=self.dead_letter_queue_url, MessageBody=body, MessageAttributes=attributes
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailableError("the dead-letter queue could not be reached") from exc
        logger.error(
            "work message sent to the dead-letter queue",
            extra={"reason": sendable_text(reason, MAX_REASON_CHARS), "work_message": described(body)},
        )
