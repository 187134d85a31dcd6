"""Fixes to moto 5 so that the local stack, the tests and the benchmarks exercise Herald rather than the emulator.

1. DynamoDB requests are serialized. moto's tables are plain dicts; the worker calls DynamoDB from
   up to 32 threads, and moto's ``TransactWriteItems`` deep-copies a table while another thread
   writes it, which raises ``RuntimeError: dictionary changed size during iteration`` inside the
   call (the delivery then fails as a batch item). Real DynamoDB is linearizable per item; one lock
   gives that. Throughput is unchanged: moto runs under one GIL anyway. The table's stream is read under
   the same lock: a ``GetRecords`` made while a transaction that is then cancelled runs would hand out
   the records its actions had added, which fix 7 takes back (and whose sequence numbers the next
   writes reuse, so the reader, past them, would skip as many real records).
2. ``TransactWriteItems`` snapshots only what it may have to roll back (unless
   ``deepcopy_transactions``). moto (``moto/dynamodb/models/__init__.py``,
   ``DynamoDBBackend.transact_write_items``) deep-copies every table a transaction touches, once per
   action: O(table size) per call; 1,500 subscriptions already take minutes to create. The snapshot
   here copies the table's item containers and deep-copies only the items an ``Update`` action
   changes in place (Put and Delete replace or remove items), so the rollback is the same.
3. ``SendMessage`` / ``SendMessageBatch`` and ``ReceiveMessage`` stop scanning the queue.
   ``SQSBackend.send_message`` (``moto/sqs/models.py``) reads ``queue.attributes`` for one flag, and that
   property computes ApproximateNumberOf* over every message in the queue: O(queue depth) per message sent,
   so the 10,000 messages of a fan-out take hours. A receive reads it three times per message received (its
   retention period): 1.2 s to receive 10 messages from a queue of 5,000. While a message is sent or
   received, ``attributes`` is a mapping that computes only the attribute asked for, with the value the full
   property would give.
4. ``TransactWriteItems`` honours ``ClientRequestToken`` as DynamoDB does (moto ignores it): within 10
   minutes, a request repeating a token that committed succeeds again without writing anything (the
   retry of a call whose answer was lost), and one repeating it with other items is refused with
   ``IdempotentParameterMismatchException``.
5. ``BatchExecuteStatement`` runs the PartiQL INSERTs Herald writes (``herald.storage.table.insert_statement``)
   as DynamoDB does: an INSERT whose key is taken is refused with ``DuplicateItem`` (moto overwrites the item),
   and nothing else is read or written. moto runs each statement by copying every item of every table into
   its PartiQL engine (O(all tables) per statement); here an INSERT is the single conditional put it is, with
   PutItem's validation and stream record. More than 25 statements are refused whole, as by DynamoDB. A batch
   holding any other statement goes to moto's own engine.
6. SQS requests that change a queue's messages are serialized. moto's ``SQSBackend.receive_message`` checks that
   a message is visible and then marks it received, without a lock: two consumers receiving at once can both
   take the same message (20 duplicates in 30 rounds of 4 threads draining 400 messages), which SQS does only
   rarely; a test running two workers at once then saw a webhook sent twice. ``Queue.delete_message`` also
   rebuilds the message list while ``SendMessage`` appends to it under another lock (a message sent during a
   delete could be dropped). Sends, deletes, visibility changes, purges and each pass of a receive over the
   queue take one lock; a long poll waits for messages outside it.
7. A cancelled ``TransactWriteItems`` leaves nothing in the table's stream. moto rolls a transaction back by
   putting back copies of its tables, but each action already added its record to the stream: a transaction
   cancelled at its second action streamed the first one's INSERT of an item that never existed. (Copies made
   by ``deepcopy_transactions`` even brought a new stream shard, which the iterators handed out before never
   read.) The table put back keeps the stream shard it had, cut back to the records it held before.
8. The server finds a request's service without listing moto's package folder. ``DomainDispatcherApplication``
   (``moto/moto_server/werkzeug_app.py``) calls ``backends.list_of_moto_modules()`` for every request, under the
   lock all requests share: a listing of moto's 170-odd folders and a ``stat`` of each until the name is found
   (of all of them for a host that is not a folder's name), one request at a time.
   The list is read once. On the local stack, a batch of 100 events published during a 1,000-subscription
   fan-out was answered in 27 to 36 s instead of 64 (measured on a 2-core machine).
9. An expression (update, condition, key condition, filter, projection; also in a transaction's actions) over
   4 KB is refused with ``ValidationException``, as by DynamoDB; moto runs it.
10. An ``UpdateItem`` refused midway leaves the item as it was, as DynamoDB's do. moto applies an update's actions
   to the stored item one by one, and one that takes the item over 400 KB raises after those before it were
   applied: the caller gets a ``ValidationException`` for a write that was partly made.
11. ``ChangeMessageVisibility``'s 12-hour cap counts from the message's last receive, as SQS's does. moto counts
   it from the message's send: a message in a queue for more than 12 hours could not be made visible again
   (``VisibilityTimeout: 0``, as the dead-letter listing does after its look), nor hidden for any time.
12. A stream's shard iterator is forgotten once the one its ``GetRecords`` answered with is used. moto keeps every
   iterator it hands out (``DynamoDBStreamsBackend.shard_iterators``) for good, and each ``GetRecords`` hands out
   a new one: the stream's event source, reading four times a second, grew ``make run`` by about 1 GB a day.
   DynamoDB's expire after 15 minutes. An iterator stays readable until its successor is read, so a read retried
   after its answer was lost gets the same records again; each reader follows its own iterators, so readers at
   once do not drop each other's. One never used is kept (one per reader, and one per lost answer). A read of
   an iterator forgotten is refused with ``ExpiredIteratorException``, as DynamoDB refuses an expired one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

_STATE = threading.local()
_DYNAMODB_LOCK = threading.RLock()
_SQS_LOCK = threading.RLock()
#: How long DynamoDB remembers a transaction's ClientRequestToken.
TOKEN_SECONDS = 600


def _snapshot(table: Any, updated: list[Any]) -> Any:
    """A copy of ``table`` with new item containers; the items in ``updated`` are deep-copied."""
    clone = copy.copy(table)
    items: defaultdict[Any, Any] = defaultdict(dict)
    ranged = table.range_key_attr is not None
    for hash_key, value in table.items.items():
        items[hash_key] = dict(value) if ranged else value
    for item in updated:
        if ranged and item.range_key in items.get(item.hash_key, {}):
            items[item.hash_key][item.range_key] = copy.deepcopy(item)
        elif not ranged and item.hash_key in items:
            items[item.hash_key] = copy.deepcopy(item)
    clone.items = items
    return clone


def _mismatch_error() -> type[Exception]:
    from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException

    class IdempotentParameterMismatch(DynamodbException):
        def __init__(self) -> None:
            super().__init__(
                ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException",
                message="The request uses the same client token as a previous, but non-identical request.",
            )

    return IdempotentParameterMismatch


class _LazyQueueAttributes(Mapping[str, Any]):
    """``Queue.attributes``, each value computed when it is read (same keys and values)."""

    def __init__(self, queue: Any, to_snake: Any) -> None:
        self._queue = queue
        self._to_snake = to_snake
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        if queue.policy:
            names.append("Policy")
        if queue.redrive_policy:
            names.append("RedrivePolicy")
        self._names = names

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name == "Policy":
            return self._queue.policy
        if name == "RedrivePolicy":
            return json.dumps(self._queue.redrive_policy)
        value = getattr(self._queue, self._to_snake(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


type Undo = Callable[[], None]


def _patch(owner: Any, name: str, value: Any) -> Undo:
    """Set ``owner.name`` (a class attribute, or a module namespace's key) and return how to put it back."""
    if isinstance(owner, dict):
        original = owner[name]
        owner[name] = value
        return lambda: owner.__setitem__(name, original)
    if name not in owner.__dict__:  # inherited: the subclass's own attribute goes again
        setattr(owner, name, value)
        return lambda: delattr(owner, name)
    original = owner.__dict__[name]
    setattr(owner, name, value)
    return lambda: setattr(owner, name, original)


def _serialize_dynamodb() -> list[Undo]:
    """Fix 1: one DynamoDB request at a time, the streams' included."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    def locked(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def call_action(self: Any) -> Any:
            with _DYNAMODB_LOCK:
                return original(self)

        return call_action

    return [
        _patch(DynamoHandler, "call_action", locked(DynamoHandler.call_action)),
        _patch(DynamoDBStreamsHandler, "call_action", locked(DynamoDBStreamsHandler.call_action)),
    ]


def _cheap_transaction_snapshots() -> list[Undo]:
    """Fix 2: a transaction snapshots only what it may roll back."""
    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.models.table import Table

    backend = dynamodb_models.DynamoDBBackend
    original = backend.transact_write_items

    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        updated = getattr(_STATE, "updated", None)
        if isinstance(value, Table) and updated is not None:
            return _snapshot(value, [item for table_name, item in updated if table_name == value.name])
        return copy.deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        updated = []
        for action in transact_items:
            for kind, operation in action.items():
                if kind == "Update":
                    current = self.get_item(operation["TableName"], operation["Key"])
                    if current is not None:
                        updated.append((operation["TableName"], current))
        _STATE.updated = updated
        try:
            original(self, transact_items)
        finally:
            _STATE.updated = None

    # The module's ``copy`` is the stdlib module it imported: its deepcopy becomes the cheap snapshot.
    namespace = vars(dynamodb_models)
    return [
        _patch(namespace, "copy", SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)),
        _patch(backend, "transact_write_items", transact_write_items),
    ]


def _streams_roll_back() -> list[Undo]:
    """Fix 7: a cancelled transaction's stream records are taken back with its writes."""
    from moto.dynamodb import models as dynamodb_models

    backend = dynamodb_models.DynamoDBBackend
    original = backend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        names = {operation.get("TableName") for action in transact_items for operation in action.values()}
        shards = {
            name: (table.stream_shard, len(table.stream_shard.items))
            for name, table in self.tables.items()
            if name in names and table.stream_shard is not None
        }
        try:
            original(self, transact_items)
        except Exception:
            for name, (shard, length) in shards.items():
                del shard.items[length:]
                table = self.tables[name]
                table.stream_shard, shard.table = shard, table
            raise

    return [_patch(backend, "transact_write_items", transact_write_items)]


def _honour_request_tokens() -> list[Undo]:
    """Fix 4: ``ClientRequestToken`` makes a repeated transaction succeed once, without writing again."""
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.transact_write_items
    tokens: dict[str, tuple[str, float]] = {}
    mismatch = _mismatch_error()

    def transact_write_items(self: Any) -> Any:
        token = self.body.get("ClientRequestToken")
        if not token:
            return original(self)
        digest = hashlib.sha256(json.dumps(self.body["TransactItems"], sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        seen = tokens.get(token)
        if seen is not None and now - seen[1] < TOKEN_SECONDS:
            if seen[0] != digest:
                raise mismatch()
            return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
        result = original(self)
        tokens[token] = (digest, now)
        return result

    return [_patch(DynamoHandler, "transact_write_items", transact_write_items)]


def _cheap_sends() -> list[Undo]:
    """Fix 3: sending or receiving a message reads only the queue attribute it needs."""
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs import models as sqs_models

    original_attributes = sqs_models.Queue.__dict__["attributes"]
    original_send = sqs_models.SQSBackend.send_message
    original_receive = sqs_models.SQSBackend.receive_message

    def attributes(self: Any) -> Any:
        if getattr(_STATE, "lazy_attributes", False):
            return _LazyQueueAttributes(self, camelcase_to_underscores)
        return original_attributes.fget(self)

    def lazily(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            _STATE.lazy_attributes = True
            try:
                return method(self, *args, **kwargs)
            finally:
                _STATE.lazy_attributes = False

        return call

    return [
        _patch(sqs_models.Queue, "attributes", property(attributes)),
        _patch(sqs_models.SQSBackend, "send_message", lazily(original_send)),
        _patch(sqs_models.SQSBackend, "receive_message", lazily(original_receive)),
    ]


def _visibility_from_receive() -> list[Undo]:
    """Fix 11: the visibility cap counts from the message's last receive (applied before fix 6, whose lock holds
    it)."""
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import Message, SQSBackend

    original_mark = Message.mark_received
    original_change = SQSBackend.change_message_visibility

    def mark_received(self: Any, visibility_timeout: int | None = None) -> None:
        self.received_ms = int(unix_time_millis())
        original_mark(self, visibility_timeout)

    def change_message_visibility(self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int) -> None:
        found = [m for m in self.get_queue(queue_name)._messages if m.had_receipt_handle(receipt_handle)]
        received = getattr(found[0], "received_ms", None) if found else None
        if received is None:
            original_change(self, queue_name, receipt_handle, visibility_timeout)
            return
        # moto measures from sent_timestamp: it is the receive's for the length of the call.
        message, sent = found[0], found[0].sent_timestamp
        message.sent_timestamp = received
        try:
            original_change(self, queue_name, receipt_handle, visibility_timeout)
        finally:
            message.sent_timestamp = sent

    return [
        _patch(Message, "mark_received", mark_received),
        _patch(SQSBackend, "change_message_visibility", change_message_visibility),
    ]


def _serialize_sqs() -> list[Undo]:
    """Fix 6: one change to a queue's messages at a time; a long poll waits between passes, unlocked."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    undo = []
    for name in ("send_message", "delete_message", "change_message_visibility", "purge_queue"):
        undo.append(_patch(SQSBackend, name, _locked(SQSBackend.__dict__[name])))
    original_receive = SQSBackend.receive_message

    def receive_message(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int, *args: Any, **kwargs: Any
    ) -> Any:
        polling_end = unix_time() + wait_seconds_timeout
        while True:
            with _SQS_LOCK:
                received = original_receive(self, queue_name, count, 0, *args, **kwargs)
            left = polling_end - unix_time()
            if received or left <= 0:
                return received
            self.get_queue(queue_name).wait_for_messages(min(1.0, left))

    undo.append(_patch(SQSBackend, "receive_message", receive_message))
    return undo


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _SQS_LOCK:
            return method(*args, **kwargs)

    return locked


def _conditional_inserts() -> list[Undo]:
    """Fix 5: a batch of PartiQL INSERTs refuses each taken key, one conditional put per statement."""
    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.exceptions import ConditionalCheckFailed, DynamodbException, MockValidationException
    from moto.dynamodb.responses import (
        validate_put_has_empty_attrs,
        validate_put_has_empty_keys,
        validate_put_has_gsi_keys_set_to_none,
    )

    from herald.storage.table import DUPLICATE_ITEM, MAX_BATCH_STATEMENTS, inserted_item

    backend = dynamodb_models.DynamoDBBackend
    original = backend.batch_execute_statement

    def batch_execute_statement(self: Any, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(statements) > MAX_BATCH_STATEMENTS:
            raise MockValidationException(
                f"1 validation error detected: Value at 'statements' failed to satisfy constraint: Member must have "
                f"length less than or equal to {MAX_BATCH_STATEMENTS}"
            )
        inserts = [inserted_item(statement) for statement in statements]
        if not statements or None in inserts:
            return original(self, statements)
        responses: list[dict[str, Any]] = []
        for table_name, item in (insert for insert in inserts if insert is not None):
            table = self.tables.get(table_name)
            if table is None:
                responses.append({"Error": {"Code": "ResourceNotFound", "Message": "Requested resource not found"}})
                continue
            try:
                validate_put_has_empty_keys(item, table)
                validate_put_has_empty_attrs(item, table)
                validate_put_has_gsi_keys_set_to_none(item, table)
                table.put_item(
                    item,
                    condition_expression="attribute_not_exists(#key)",
                    expression_attribute_names={"#key": table.hash_key_attr},
                    overwrite=False,
                )
            except ConditionalCheckFailed:
                responses.append(
                    {"Error": {"Code": DUPLICATE_ITEM, "Message": "Duplicate primary key exists in table"}}
                )
            except DynamodbException as exc:
                responses.append({"Error": {"Code": "ValidationError", "Message": str(exc.message)}})
            else:
                responses.append({"TableName": table_name})
        return responses

    return [_patch(backend, "batch_execute_statement", batch_execute_statement)]


def _backends_listed_once() -> list[Undo]:
    """Fix 8: the server lists moto's service folders once, not on every request."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    return [_patch(vars(backends), "list_of_moto_modules", lambda: modules)]


#: The expressions of a request, each at most ``MAX_EXPRESSION_BYTES`` in DynamoDB.
_EXPRESSIONS = (
    "UpdateExpression",
    "ConditionExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
)
MAX_EXPRESSION_BYTES = 4096


def _expression_limits() -> list[Undo]:
    """Fix 9: an expression over 4 KB is refused, as by DynamoDB."""
    from moto.dynamodb.exceptions import MockValidationException
    from moto.dynamodb.responses import DynamoHandler

    def check(request: Mapping[str, Any]) -> None:
        for name in _EXPRESSIONS:
            size = len(str(request.get(name) or "").encode())
            if size > MAX_EXPRESSION_BYTES:
                raise MockValidationException(
                    f"Invalid {name}: Expression size has exceeded the maximum allowed size; expression size: {size}"
                )

    def checked(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def action(self: Any) -> Any:
            check(self.body)
            for transacted in self.body.get("TransactItems", ()):
                for request in transacted.values():
                    check(request)
            return original(self)

        return action

    operations = ("get_item", "put_item", "update_item", "delete_item", "query", "scan", "transact_write_items")
    return [_patch(DynamoHandler, name, checked(DynamoHandler.__dict__[name])) for name in operations]


def _atomic_updates() -> list[Undo]:
    """Fix 10: an update refused midway leaves the item as it was."""
    from moto.dynamodb.parsing.executors import UpdateExpressionExecutor

    original = UpdateExpressionExecutor.execute

    def execute(self: Any, node: Any = None) -> Any:
        if node is not None:  # a part of the expression, run by the whole's execute below
            return original(self, node)
        before = copy.deepcopy(dict(self.item.attrs))
        try:
            return original(self)
        except Exception:
            self.item.attrs.clear()
            dict.update(self.item.attrs, before)  # as it was, without the size check of its own __setitem__
            raise

    return [_patch(UpdateExpressionExecutor, "execute", execute)]


def _used_iterators_dropped() -> list[Undo]:
    """Fix 12: an iterator is forgotten once its successor is read."""
    from moto.core.exceptions import JsonRESTError
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    original = DynamoDBStreamsBackend.get_records

    def get_records(self: Any, iterator_arn: str, limit: int) -> dict[str, Any]:
        with _DYNAMODB_LOCK:
            if iterator_arn not in self.shard_iterators:
                raise JsonRESTError("ExpiredIteratorException", "The shard iterator has expired.")
            result: dict[str, Any] = original(self, iterator_arn, limit)
            # Each iterator a GetRecords answered with, and the iterator that read was made with.
            issued_by: dict[str, str] = self.__dict__.setdefault("herald_issued_by", {})
            used = issued_by.pop(iterator_arn, None)
            if used is not None:
                self.shard_iterators.pop(used, None)
            issued_by[result["NextShardIterator"]] = iterator_arn
            return result

    return [_patch(DynamoDBStreamsBackend, "get_records", get_records)]


@contextmanager
def moto_fixes(*, deepcopy_transactions: bool = False) -> Iterator[None]:
    """Patch moto for the duration (process-wide: every thread sees it)."""
    undo = _serialize_dynamodb() + _honour_request_tokens() + _cheap_sends() + _conditional_inserts()
    undo += _visibility_from_receive() + _serialize_sqs()
    if not deepcopy_transactions:
        undo += _cheap_transaction_snapshots()
    undo += _streams_roll_back()
    undo += _backends_listed_once()
    undo += _expression_limits()
    undo += _atomic_updates()
    undo += _used_iterators_dropped()
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def release_delays(queue_url: str) -> int:
    """Make every delayed message of an in-process moto queue deliverable now: for a simulated clock that has
    moved past the delays while SQS's own clock has not. Returns how many were delayed."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    name = queue_url.rsplit("/", 1)[-1]
    released = 0
    for backend in sqs_backends[DEFAULT_ACCOUNT_ID].values():
        for message in getattr(backend.queues.get(name), "_messages", []):
            if message.delayed_until:
                message.delayed_until = 0.0
                released += 1
    return released
