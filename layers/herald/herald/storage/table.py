"""Herald's one DynamoDB table: calls, transactions, batches, pages and cursors, and (de)serialization.

Every repository goes through ``Table``: it maps DynamoDB's errors to Herald's (a failed condition is
raised as botocore's ``ClientError`` for the repository to turn into a domain error; anything else,
throttling included, is a ``ServiceUnavailableError``, a 503 at the API), filters out items whose TTL has
passed (DynamoDB deletes them lazily) and gives every transaction an idempotency token, so a transaction
that botocore retries after a lost answer is not applied twice nor refused by its own conditions.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from herald.aws import dynamodb_client, refused_at_once, surely_refused
from herald.errors import InvalidCursorError, OutcomeUnknownError, ServiceUnavailableError
from herald.lambda_response import json_bytes
from herald.storage.keys import STORAGE_ATTRIBUTES

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_dynamodb import DynamoDBClient

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()
NOT_EXPIRED = "(attribute_not_exists(expires_at) OR expires_at > :now)"
#: DynamoDB's limits: actions in one TransactWriteItems, items in one BatchWriteItem, statements in one
#: BatchExecuteStatement.
MAX_TRANSACTION_ACTIONS = 100
MAX_BATCH_WRITE = 25
MAX_BATCH_STATEMENTS = 25
MAX_BATCH_GET = 100
#: Calls of one batch read made side by side (a worker's batch of 100 deliveries reads ~300 keys: 4 calls).
_SIDE_BY_SIDE = 8
#: A statement of a BatchExecuteStatement that failed for want of capacity or for a passing fault, to be run
#: again (the call itself succeeded: botocore retries none of them). Any other code but a duplicate is final.
RETRIED_STATEMENT_ERRORS = frozenset(
    {
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
        "InternalServerError",
        "TransactionConflict",
    }
)
#: The code of an INSERT whose item exists already.
DUPLICATE_ITEM = "DuplicateItem"
_INSERT = re.compile(r"""^INSERT INTO "(?P<table>[A-Za-z0-9_.-]+)" VALUE \{(?P<names>(?:'[^']+': \?(?:, )?)+)\}$""")


@dataclass(frozen=True)
class PageResult[T]:
    items: list[T]
    cursor: str | None


# --- (de)serialization ---------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value as plain JSON-like Python (Decimals become int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def _dynamo_safe(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return [_dynamo_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _dynamo_safe(item) for key, item in value.items()}
    return value


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values as a DynamoDB item (None values are left out)."""
    cleaned = {key: value for key, value in values.items() if value is not None}
    return {key: _SERIALIZER.serialize(_dynamo_safe(value)) for key, value in cleaned.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: plain(_DESERIALIZER.deserialize(value)) for key, value in item.items()}


def values(**named: Any) -> dict[str, Any]:
    """``ExpressionAttributeValues`` for ``:name`` placeholders."""
    return {f":{key}": _SERIALIZER.serialize(_dynamo_safe(value)) for key, value in named.items()}


def record(model: Any) -> dict[str, Any]:
    """A record's fields as stored (pydantic's JSON mode: datetimes as ISO 8601 strings)."""
    return cast(dict[str, Any], model.model_dump(mode="json"))


def strip(item: dict[str, Any]) -> dict[str, Any]:
    """An item without the storage's own attributes: the record's fields."""
    return {key: value for key, value in item.items() if key not in STORAGE_ATTRIBUTES}


#: DynamoDB's answers that the same request will get again: one Herald built wrong (an expression over 4 KB, an item
#: over 400 KB), a permission the role lacks, a table that is gone. Answered as unavailable all the same (a retry
#: is what the caller can do), and logged as errors: they need an operator, not a retry.
PERMANENT_ERRORS = frozenset(
    {
        "ValidationException",
        "SerializationException",
        "AccessDeniedException",
        "ResourceNotFoundException",
        "UnrecognizedClientException",
        "IdempotentParameterMismatchException",
    }
)


def _unavailable(operation: str, exc: ClientError) -> ServiceUnavailableError:
    error = exc.response.get("Error", {})
    code = error.get("Code")
    if code in PERMANENT_ERRORS:
        logger.error(
            "DynamoDB refused a request it will refuse again",
            extra={"operation": operation, "code": code, "reason": str(error.get("Message", ""))[:500]},
        )
    return ServiceUnavailableError(f"DynamoDB {operation} failed: {code}")


#: DynamoDB's answers to a request malformed for the items it names (a key too long, a value it cannot hold): the
#: same request about other items may well succeed, unlike the other ``PERMANENT_ERRORS`` (a permission, a table).
MALFORMED_REQUEST_ERRORS = frozenset({"ValidationException", "SerializationException"})


class CreationKey(NamedTuple):
    """Something made once under an ``Idempotency-Key`` (a subscription, an operator endpoint, a tenant): the key,
    the request's fingerprint, and until when the key holds (epoch seconds). Its record is written in the
    transaction that makes the thing."""

    key: str
    fingerprint: str
    expires_at: int


class CreationKeyTaken(Exception):
    """The ``Idempotency-Key`` made something already (another request with it got there first)."""


def creation_put(record_key: Mapping[str, str], key: CreationKey, made: Mapping[str, str], now: int) -> dict[str, Any]:
    """A transaction's Put of the record at ``record_key`` that ``key`` made ``made`` (its id's attribute and value);
    refused if the key holds for another creation at ``now`` already (``raise_if_key_taken``)."""
    item = {**record_key, **made, "fingerprint": key.fingerprint, "expires_at": key.expires_at}
    condition = "attribute_not_exists(pk) OR expires_at <= :now"
    put = {"Item": to_item(item), "ConditionExpression": condition, "ExpressionAttributeValues": values(now=now)}
    return {"Put": put}


def raise_if_key_taken(exc: ClientError, creation_key: CreationKey | None, position: int) -> None:
    """``CreationKeyTaken`` if ``exc`` cancelled a transaction for its ``creation_put`` at ``position``."""
    if creation_key is not None and cancellation_codes(exc)[position : position + 1] == ["ConditionalCheckFailed"]:
        raise CreationKeyTaken(creation_key.key) from exc


def read_creation(table: Table, record_key: Mapping[str, str], made: str) -> tuple[str, str] | None:
    """The id (``made``) and request fingerprint of the key's record at ``record_key``; None if gone or expired."""
    found = table.read(record_key)
    return (str(found[made]), str(found["fingerprint"])) if found else None


def cancellation_codes(exc: BaseException | None) -> list[str]:
    """The codes of a cancelled transaction's reasons, one for each of its actions in order (``"None"`` for an
    action that was not the cause); [] for any other error."""
    reasons = exc.response.get("CancellationReasons", []) if isinstance(exc, ClientError) else []
    return [str(reason.get("Code") or "None") for reason in reasons]


def malformed_request(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a call on the table as unavailable, is DynamoDB's refusal of a request malformed
    for its items (``MALFORMED_REQUEST_ERRORS``; in a transaction, an action cancelled as ``ValidationError``): the
    same request will be refused again."""
    cause = exc.__cause__
    if not isinstance(cause, ClientError):
        return False
    return cause.response.get("Error", {}).get(
        "Code"
    ) in MALFORMED_REQUEST_ERRORS or "ValidationError" in cancellation_codes(cause)


def write_conflicted(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a single-item write as unavailable, is DynamoDB's refusal of it while a
    transaction on the same item was under way (``TransactionConflictException``, which botocore does not retry):
    the write was not made, and may be made again."""
    cause = exc.__cause__
    return (
        isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "TransactionConflictException"
    )


def conditional_failure(exc: ClientError) -> bool:
    """Whether DynamoDB refused the write for a condition (ours to decode), not for a fault."""
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    return code == "TransactionCanceledException" and "ConditionalCheckFailed" in cancellation_codes(exc)


def refused_item(exc: ClientError) -> dict[str, Any]:
    """The item a single-item write refused for its condition found, as plain values: what DynamoDB hands back
    with ``ReturnValuesOnConditionCheckFailure="ALL_OLD"``; {} when there was none."""
    return from_item(cast(dict[str, Any], exc.response.get("Item") or {}))


def _conflicted(exc: ServiceUnavailableError) -> bool:
    """Whether DynamoDB cancelled a transaction for a concurrent one on one of its items, or throttled one of them:
    nothing of it was made (botocore retries neither), and it may be made again."""
    return any(code in ("TransactionConflict", "ThrottlingError") for code in cancellation_codes(exc.__cause__))


def item_too_large(exc: ServiceUnavailableError) -> bool:
    """Whether DynamoDB refused the write because the item would be over 400 KB (a ``ValidationException``)."""
    cause = exc.__cause__
    error = cause.response.get("Error", {}) if isinstance(cause, ClientError) else {}
    return error.get("Code") == "ValidationException" and "Item size" in str(error.get("Message", ""))


#: Query calls one ``Table.query`` makes at most (a listing's page makes one or two: the deliveries listing
#: reads on into the older kind's). A filter (a status, an event type, expired items) applies after DynamoDB's
#: Limit: a page reads on until it is full, and a partition of items that do not match would take thousands of
#: calls, past the API's 29 s. Past this many, the page ends with what it found (maybe nothing) and a cursor to
#: read on from.
MAX_QUERY_CALLS = 10

#: The most a listing's page may take in the API's answer, counted at its worst (``herald.lambda_response.json_bytes``:
#: its items' stored form stands for what is shown, the API shows little else): Lambda refuses a response over 6 MB,
#: and API Gateway then answers a bare 500. A page of 250 subscriptions each at every limit (URL, description,
#: metadata, headers, filter, transform) would be several times that; the rest of such a page comes with the next
#: cursor.
LISTING_PAGE_BYTES = 4_000_000


#: The longest listing cursor (``iterator``) taken from a caller: the API's query parameter and the portal's
#: pages. One DynamoDB issues (a LastEvaluatedKey of a few short keys, as base64url JSON) is far shorter.
MAX_CURSOR_LENGTH = 2048


def encode_cursor(key: Mapping[str, Any] | None) -> str | None:
    if not key:
        return None
    raw = json.dumps(from_item(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_fields(cursor: str) -> Any:
    """What an ``iterator`` holds (the JSON of a LastEvaluatedKey, base64url without padding), unchecked;
    raises InvalidCursorError if it is not even that."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        json.dumps(raw, ensure_ascii=False).encode()  # no unpaired surrogate: a key DynamoDB issued is Unicode
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidCursorError("the iterator is not one this listing issued") from exc
    return raw


def decode_cursor(  # noqa: PLR0917 - the listing's key, as the caller spells it
    cursor: str,
    partition_attr: str,
    partition_value: str,
    sort_attr: str,
    prefix: str | None,
    between: tuple[str, str] | None = None,
) -> Any:
    """The ExclusiveStartKey of an ``iterator``, which must be one this listing issued (InvalidCursorError),
    within its sort key range if it has one (DynamoDB refuses a start key outside the key condition)."""
    raw = cursor_fields(cursor)
    if (
        not isinstance(raw, dict)
        or raw.get(partition_attr) != partition_value
        or not all(isinstance(value, str) for value in raw.values())
        # Exactly the keys DynamoDB returned, none empty or oversized: real DynamoDB rejects any other
        # ExclusiveStartKey with a ValidationException (moto accepts them), which would be a 503.
        or set(raw) != {"pk", "sk", partition_attr, sort_attr}
        or any(not value or len(value.encode()) > 1024 for value in raw.values())
        or (prefix is not None and not raw[sort_attr].startswith(prefix))
        or (between is not None and not between[0] <= raw[sort_attr] <= between[1])
    ):
        raise InvalidCursorError("the iterator is not one this listing issued")
    return to_item(raw)


def insert_statement(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A PartiQL INSERT of ``item`` (plain values) into ``table``, its values as parameters: refused with
    ``DuplicateItem`` when an item with its key exists, the one conditional write a batch can carry."""
    attributes = to_item(item)
    names = ", ".join(f"'{name}': ?" for name in attributes)
    return {"Statement": f'INSERT INTO "{table}" VALUE {{{names}}}', "Parameters": list(attributes.values())}


def inserted_item(statement: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The table and item (as DynamoDB JSON) of a statement ``insert_statement`` made, or None for any other."""
    found = _INSERT.match(str(statement.get("Statement", "")))
    if found is None:
        return None
    names = re.findall(r"'([^']+)': \?", found["names"])
    parameters = list(statement.get("Parameters", []))
    if len(names) != len(parameters):
        return None
    return found["table"], dict(zip(names, parameters, strict=True))


def within_bytes[T](items: list[T], max_bytes: int, size: Callable[[T], int]) -> list[T]:
    """The first of ``items`` (one at least) that together take at most ``max_bytes`` by ``size``: a page of a
    listing cut to what an answer can hold."""
    total = 0
    for index, item in enumerate(items):
        total += size(item)
        if total > max_bytes and index > 0:
            return items[:index]
    return items


@functools.cache
def _side_by_side() -> ThreadPoolExecutor:
    """The threads that make the calls of one batch read at once (botocore's clients are thread-safe)."""
    return ThreadPoolExecutor(max_workers=_SIDE_BY_SIDE, thread_name_prefix="herald-batch-get")


# --- the table ------------------------------------------------------------------------------------------


class Table:
    """The table's calls for the repositories. ``clock`` (epoch seconds) decides what has expired."""

    def __init__(
        self, name: str, *, client: DynamoDBClient | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self._client = client
        self.clock = clock

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = dynamodb_client()
        return self._client

    def now(self) -> int:
        return int(self.clock())

    def call(self, operation: str, **kwargs: Any) -> Any:
        """One call on the table. A failed condition is raised as is (``ClientError``); any other failure
        (throttling, an outage) as ``ServiceUnavailableError``."""
        try:
            return getattr(self.client, operation)(TableName=self.name, **kwargs)
        except ClientError as exc:
            if conditional_failure(exc):
                raise
            raise _unavailable(operation, exc) from exc
        except BotoCoreError as exc:
            raise ServiceUnavailableError(f"DynamoDB {operation} failed") from exc

    def transact(self, actions: list[dict[str, Any]], *, conflict_attempts: int = 1) -> None:
        """One TransactWriteItems (at most ``MAX_TRANSACTION_ACTIONS``), with an idempotency token: botocore
        retries a call whose answer was lost, and without the token that retry would fail its own
        conditions although the first try committed. ``conflict_attempts`` > 1 tries again (with a new
        token) when DynamoDB cancelled it for a concurrent transaction on the same item, or throttled an item of it
        (``_conflicted``)."""
        if len(actions) > MAX_TRANSACTION_ACTIONS:
            raise ValueError(f"a transaction holds at most {MAX_TRANSACTION_ACTIONS} actions, not {len(actions)}")
        for action in actions:
            next(iter(action.values()))["TableName"] = self.name
        for attempt in range(conflict_attempts):
            try:
                self._transact_once(actions)
                return
            except ServiceUnavailableError as exc:
                if attempt == conflict_attempts - 1 or not _conflicted(exc):
                    raise
                time.sleep(0.02 * 2**attempt)

    def _transact_once(self, actions: list[dict[str, Any]]) -> None:
        try:
            self.client.transact_write_items(
                TransactItems=actions,  # type: ignore[arg-type]
                ClientRequestToken=uuid.uuid4().hex,
            )
        except ClientError as exc:
            if conditional_failure(exc):
                raise
            raise _unavailable("transaction", exc) from exc
        except BotoCoreError as exc:
            raise ServiceUnavailableError("DynamoDB transaction failed") from exc

    def read(self, key: Mapping[str, str], *, consistent: bool = True, live: bool = True) -> dict[str, Any] | None:
        """The item at ``key`` as plain values, None if absent or (``live``: unless asked for as it is) expired."""
        response = self.call("get_item", Key=to_item(key), ConsistentRead=consistent)
        item = response.get("Item")
        if not item:
            return None
        found = from_item(item)
        expires = found.get("expires_at")
        if live and expires is not None and expires <= self.clock():
            return None
        return found

    def query(
        self,
        *,
        key: Mapping[str, str],
        prefix: str | None = None,
        index: str | None = None,
        limit: int,
        cursor: str | None,
        newest_first: bool = False,
        where: Mapping[str, str] | None = None,
        between: tuple[str, str] | None = None,
        consistent: bool = False,
        max_bytes: int | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a Query. ``key`` names the partition attribute and value; the cursor must belong to it.
        ``where`` keeps only the items whose attributes have these values; ``between`` only the sort keys in
        that range (both ends included). Eventually consistent (half the price) unless ``consistent`` (the
        table's own keys only: an index is always eventually consistent). With ``max_bytes``, a page whose items
        would take more once shown (``json_bytes``) ends before (one item at least), its cursor after the last."""
        ((partition_attr, partition_value),) = key.items()
        sort_attr = "sk" if partition_attr == "pk" else partition_attr.replace("pk", "sk")
        condition = "#p = :p"
        names = {"#p": partition_attr}
        placeholders = values(p=partition_value, now=self.now())
        if prefix is not None:
            condition += " AND begins_with(#s, :prefix)"
            names["#s"] = sort_attr
            placeholders.update(values(prefix=prefix))
        elif between is not None:
            condition += " AND #s BETWEEN :low AND :high"
            names["#s"] = sort_attr
            placeholders.update(values(low=between[0], high=between[1]))
        query_filter = NOT_EXPIRED
        for number, (attribute, value) in enumerate((where or {}).items()):
            names[f"#w{number}"] = attribute
            placeholders.update(values(**{f"w{number}": value}))
            query_filter = f"{query_filter} AND #w{number} = :w{number}"
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": condition,
            "FilterExpression": query_filter,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": placeholders,
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        if index is not None:
            kwargs["IndexName"] = index
        if consistent:
            kwargs["ConsistentRead"] = True
        if cursor:
            kwargs["ExclusiveStartKey"] = decode_cursor(
                cursor, partition_attr, partition_value, sort_attr, prefix, None if prefix is not None else between
            )
        items: list[dict[str, Any]] = []
        calls = 0
        while True:
            calls += 1
            response = self.call("query", **kwargs)
            items.extend(from_item(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            # Filtered items (expired ones, ``where``) count in the Limit: read on until the page is full, or
            # MAX_QUERY_CALLS were made (the cursor then reads on from there).
            if not last or len(items) >= limit or calls >= MAX_QUERY_CALLS:
                full = items[:limit]
                page = full if max_bytes is None else within_bytes(full, max_bytes, json_bytes)
                if len(page) < len(full):  # cut for its size: the next page starts after the last item shown
                    attributes = {"pk", "sk", partition_attr, sort_attr}
                    last = to_item({name: page[-1][name] for name in attributes})
                return page, encode_cursor(last) if last else None
            kwargs["ExclusiveStartKey"] = last
            kwargs["Limit"] = limit - len(items)

    def batch_get(self, item_keys: Sequence[Mapping[str, str]], *, consistent: bool = True) -> list[dict[str, Any]]:
        """The unexpired items at these keys (strongly consistent unless told: eventually consistent reads cost
        half), 100 a call, the calls made side by side (one round trip for the lot), retrying unprocessed keys."""
        chunks = [item_keys[start : start + MAX_BATCH_GET] for start in range(0, len(item_keys), MAX_BATCH_GET)]
        if len(chunks) <= 1:
            found = [item for chunk in chunks for item in self._batch_get_once(chunk, consistent)]
        else:
            # Each thread in a copy of the caller's context: an API request's deadline holds there (herald.deadline).
            contexts = [contextvars.copy_context() for _ in chunks]
            found = [
                item
                for answered in _side_by_side().map(
                    lambda context, chunk: context.run(self._batch_get_once, chunk, consistent), contexts, chunks
                )
                for item in answered
            ]
        now = self.clock()
        return [item for item in found if item.get("expires_at") is None or item["expires_at"] > now]

    def _batch_get_once(self, item_keys: Sequence[Mapping[str, str]], consistent: bool) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        pending: list[Any] = [to_item(key) for key in item_keys]
        for attempt in range(5):
            try:
                response = self.client.batch_get_item(
                    RequestItems={self.name: {"Keys": pending, "ConsistentRead": consistent}}
                )
            except (ClientError, BotoCoreError) as exc:
                raise ServiceUnavailableError("DynamoDB batch get failed") from exc
            answered: dict[str, Any] = dict(response.get("Responses", {}))
            found += [from_item(item) for item in answered.get(self.name, [])]
            unprocessed: dict[str, Any] = dict(response.get("UnprocessedKeys", {}))
            pending = list(unprocessed.get(self.name, {}).get("Keys", []))
            if not pending:
                return found
            time.sleep(0.05 * 2**attempt)
        raise ServiceUnavailableError("DynamoDB kept keys of a batch get unprocessed")

    def batch_write(self, requests: list[Any]) -> None:
        """Put or delete requests, ``MAX_BATCH_WRITE`` a call, retrying what DynamoDB leaves unprocessed."""
        for start in range(0, len(requests), MAX_BATCH_WRITE):
            self._batch_write_once(requests[start : start + MAX_BATCH_WRITE])

    def _batch_write_once(self, requests: list[Any]) -> None:
        for attempt in range(5):
            try:
                response = self.client.batch_write_item(RequestItems={self.name: requests})
            except (ClientError, BotoCoreError) as exc:
                raise ServiceUnavailableError("DynamoDB batch write failed") from exc
            requests = list(response.get("UnprocessedItems", {}).get(self.name, []))
            if not requests:
                return
            time.sleep(0.05 * 2**attempt)
        raise ServiceUnavailableError("DynamoDB kept items of a batch unprocessed")

    def insert_all(self, items: Sequence[Mapping[str, Any]]) -> list[bool | ServiceUnavailableError]:
        """Write new items, each only if no item has its key: one BatchExecuteStatement of PartiQL INSERTs per
        ``MAX_BATCH_STATEMENTS`` items (BatchWriteItem would overwrite). One answer per item, in order: True if
        written, False if its key was taken, or the error that kept it out (DynamoDB kept refusing its statement, or
        refused the call at its first try), or ``OutcomeUnknownError`` (the call failed otherwise, and the item was not
        found afterwards); statements refused for capacity or a passing fault are run again, with a backoff. At most
        one item of a key per call: give each key once.

        A statement can be refused as a duplicate of its own write: run again after an ``InternalServerError``
        that had written it, or in a call botocore sent again after losing its answer (a PartiQL batch has no
        idempotency token). So a taken key is read (strongly): holding exactly this item, it was this write."""
        answers: list[bool | ServiceUnavailableError] = []
        for start in range(0, len(items), MAX_BATCH_STATEMENTS):
            answers += self._insert_once(items[start : start + MAX_BATCH_STATEMENTS])
        # A key taken, or a call that failed after botocore's retries (its answer may be lost after it wrote):
        # either way, an item found exactly as this write made it was this write. A call refused at its first try
        # wrote nothing: its items are not read (a read that fails would make them unknown).
        unsure = [
            index
            for index, answer in enumerate(answers)
            if not (answer is True or (isinstance(answer, BaseException) and surely_refused(answer)))
        ]
        if unsure:
            try:
                ours = self.holds([items[index] for index in unsure])
            except ServiceUnavailableError as exc:
                # Neither written for sure nor refused for sure: the call may have written them before it failed.
                unknown = set(unsure)
                return [_unknown(str(exc)) if index in unknown else answer for index, answer in enumerate(answers)]
            for index, held in zip(unsure, ours, strict=True):
                if held:
                    answers[index] = True
        return answers

    def put_if(self, item: Mapping[str, Any], **condition: Any) -> bool:
        """PutItem of ``item`` (plain values) on ``condition`` (its ``ConditionExpression`` and values). True if the
        table holds this write: made, or found there exactly after a refusal or a failure. False if refused for
        another item's sake; ``ServiceUnavailableError`` if it failed and is not there.

        A write is found after a refusal when botocore sent the call again after losing its answer (the resend is
        refused by the first send's item), and after a failure when the answer was lost after botocore's last
        retry. Each item a conditional write makes is its own (a token, an attempt, a time), so finding it exactly
        proves the write was this one."""
        try:
            self.call("put_item", Item=to_item(item), **condition)
        except ClientError:
            (ours,) = self.holds([item])
            return ours
        except ServiceUnavailableError as failure:
            try:
                (ours,) = self.holds([item])
            except ServiceUnavailableError:
                raise failure  # noqa: B904 - the write's own failure (and its cause), not the read's
            if not ours:
                raise
        return True

    def put_new(self, item: dict[str, Any]) -> bool:
        """PutItem of a new item (``item`` as DynamoDB JSON), only if no item has its key. True if written; False
        if the key holds another item. A key holding exactly this item is this write's: botocore sent the call
        again after losing its answer, and the resend was refused by the first send's own item."""
        try:
            self.call(
                "put_item",
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            return refused_item(exc) == from_item(item)
        return True

    def holds(self, items: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Whether the table holds exactly each of these items (plain values), read strongly: how a conditional
        write refused after its answer was lost (botocore sent it again) knows it was its own."""
        keys = list(dict.fromkeys((item["pk"], item["sk"]) for item in items))
        found = {(item["pk"], item["sk"]): item for item in self.batch_get([{"pk": pk, "sk": sk} for pk, sk in keys])}
        return [found.get((item["pk"], item["sk"])) == from_item(to_item(item)) for item in items]

    def _insert_once(self, items: Sequence[Mapping[str, Any]]) -> list[bool | ServiceUnavailableError]:
        answers: list[bool | ServiceUnavailableError | None] = [None] * len(items)
        pending = list(range(len(items)))
        statements = [insert_statement(self.name, item) for item in items]
        for attempt in range(5):
            if attempt:
                time.sleep(0.05 * 2 ** (attempt - 1))
            try:
                response = self.client.batch_execute_statement(
                    Statements=[statements[index] for index in pending]  # type: ignore[misc]
                )
            except (ClientError, BotoCoreError) as exc:
                # Refused at its first try (a throttle once botocore's retry quota is spent), the call wrote nothing.
                # Otherwise there is no answer to go by, a throttle's after retries included (an earlier try may have
                # timed out after writing): it may have written any of its statements, or may yet (a request that
                # timed out can still arrive). ``insert_all`` reads them back: one found was written, one not found
                # stays unknown, as ``EventRepository.create`` answers an unanswered put.
                reason = f"DynamoDB batch insert failed: {_code_of(exc)}"
                failed = _failure if refused_at_once(exc) else _unknown
                return [answer if answer is not None else failed(reason, exc) for answer in answers]
            retry = []
            given = response.get("Responses", [])
            for position, index in enumerate(pending):
                code = given[position].get("Error", {}).get("Code") if position < len(given) else "Unanswered"
                if code is None:
                    answers[index] = True
                elif code == DUPLICATE_ITEM:
                    answers[index] = False
                elif code in RETRIED_STATEMENT_ERRORS:
                    retry.append(index)
                else:
                    answers[index] = _failure(f"DynamoDB refused an insert: {code}")
            pending = retry
            if not pending:
                break
        return [answer if answer is not None else _failure("DynamoDB kept refusing an insert") for answer in answers]


def _failure(reason: str, cause: BaseException | None = None) -> ServiceUnavailableError:
    """One error per item (each record raises its own)."""
    failure = ServiceUnavailableError(reason)
    failure.__cause__ = cause
    return failure


def _unknown(reason: str, cause: BaseException | None = None) -> OutcomeUnknownError:
    """One error per item whose write may or may not have been made."""
    unknown = OutcomeUnknownError(f"{reason}: the write may have been made")
    unknown.__cause__ = cause
    return unknown


def _code_of(exc: ClientError | BotoCoreError) -> str:
    return str(exc.response["Error"].get("Code")) if isinstance(exc, ClientError) else type(exc).__name__
