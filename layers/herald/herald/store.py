"""DynamoDB storage: one table, every read a GetItem or a Query.

Layout (``pk`` / ``sk``; ``gsi1`` and ``gsi2`` are sparse indexes)::

    tenant        TENANT#<tnt>        #TENANT           gsi1: TENANTS / <tnt>
    api key       APIKEY#<sha256>     #APIKEY           gsi1: TENANT#<tnt>#KEYS / <key id>
    subscription  TENANT#<tnt>        SUB#<sub>
    route         ROUTE#<tnt>#<type>  SUB#<sub>         one per enabled subscription and event type ("*" too)
    event         EVENT#<evt>         #EVENT            written once; its counters' starting values
    event counts  EVENT#<evt>         #COUNTS           what the counters gained since, and ``enqueued``
    idempotency   IDEMPOTENCY#<key>   #IDEMPOTENCY
    delivery      DELIVERY#<dlv>      #DELIVERY         gsi1: SUB#<sub> / <created>#<dlv>
                                                        gsi2: SUB#<sub>#<status> / <created>#<dlv> (not once succeeded)
                                                        (both from its first recorded attempt or release)
    fan-out page  EVENT#<evt>         FANOUT#<digest>   marks a fan-out page as counted
    attempt       DELIVERY#<dlv>      ATTEMPT#<nnnnn>     its attempt number, zero-padded (one item per number)
    recovery lock DELIVERY#<dlv>      RECOVERY          ``job_id``: the job whose extra attempt of it is queued
    recovery job  RECOVERY#<rcv>      #RECOVERY         a subscription's recovery (``status``, ``listed``)
    job ticket    RECOVERY#<job>      DLV#<dlv>         ``state``: open, sent or failed; a job's counts
    window lock   RECOVERYWINDOW#<sub>#<digest> #LOCK   the job recovering that window, found by a repeat
    sub stats     STATS#<sub>         #STATS            counters and failure streak of a subscription
    rate slot     RATE#<sub>          #RATE             ``tat``: when the subscription's next delivery may start

Items that expire carry ``expires_at`` (epoch seconds, the table's TTL attribute). TTL deletion is
lazy, so expired items are also filtered out on every read.

Bookkeeping beside the records: an event's counters (``matched``, ``succeeded``, ``failed``,
``fanout_open``: the event item's starting values plus what its counts item adds, read together by
one Query; an item of their own because a write costs by the size of the whole item, and the event's
carries the payload; written per fan-out page and, for deliveries, once per event per worker batch, so
an invocation that dies midway can leave them short); a delivery's lease (``lease_token``,
``lease_until``) and ``scheduled_attempts``, its place in the retry schedule; a subscription's stats
(``attempts``, ``succeeded``, ``failed``, ``last_success_at``, ``last_failure_at``, ``last_status_code``,
``consecutive_failures``, ``failing_since``), which expire ``attempt_ttl_days`` after its latest
attempt and, like the event's delivery counters, are written once per worker batch.
A tenant's ``subscription_count`` is kept by the same transactions that create and delete its subscriptions
(``max_subscriptions_per_tenant`` is checked against it).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from herald.aws import dynamodb_client
from herald.errors import (
    ConflictError,
    IdempotencyConflictError,
    InvalidCursorError,
    NotFoundError,
    ServiceUnavailableError,
)
from herald.limits import too_many_subscriptions
from herald.models import (
    ApiKey,
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    RecoveryJob,
    Subscription,
    Tenant,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()
_KEY_ATTRIBUTES = (
    "pk",
    "sk",
    "gsi1pk",
    "gsi1sk",
    "gsi2pk",
    "gsi2sk",
    "expires_at",
    "lease_token",
    "lease_until",
    "scheduled_attempts",
)
_NOT_EXPIRED = "(attribute_not_exists(expires_at) OR expires_at > :now)"
#: An event's delivery counters: the event item holds their starting values, its counts item the rest.
EVENT_COUNTERS = ("matched", "succeeded", "failed", "fanout_open")


@dataclass(frozen=True)
class PageResult[T]:
    items: list[T]
    cursor: str | None


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


@dataclass(frozen=True)
class DeliveryState:
    """A delivery as the worker sees it: the record, how many of its attempts were scheduled ones (the
    position in the retry schedule; manual attempts do not move it), and until when a worker holds its
    lease (epoch seconds, 0 when free)."""

    delivery: Delivery
    scheduled_attempts: int
    lease_until: float


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    cleaned = {key: value for key, value in values.items() if value is not None}
    return {key: _SERIALIZER.serialize(_dynamo_safe(value)) for key, value in cleaned.items()}


def _dynamo_safe(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return [_dynamo_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _dynamo_safe(item) for key, item in value.items()}
    return value


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(_DESERIALIZER.deserialize(value)) for key, value in item.items()}


def _values(**values: Any) -> dict[str, Any]:
    return {f":{key}": _SERIALIZER.serialize(_dynamo_safe(value)) for key, value in values.items()}


def _record(model: Any) -> dict[str, Any]:
    return cast(dict[str, Any], model.model_dump(mode="json"))


def _strip(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in _KEY_ATTRIBUTES}


def _encode_cursor(key: Mapping[str, Any] | None) -> str | None:
    if not key:
        return None
    plain = _from_item(key)
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _conditional_failure(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons", [])
        return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)
    return False


def _stats_update(
    ordered: Sequence[AttemptTally], *, failing_after: int, expires_at: int
) -> tuple[str, dict[str, Any]]:
    """The UpdateExpression (and its values) that counts ``ordered`` attempts in a subscription's stats."""
    succeeded = [tally for tally in ordered if tally.succeeded]
    failed = [tally for tally in ordered if not tally.succeeded]
    values: dict[str, Any] = {"n": len(ordered), "exp": expires_at}
    adds, sets, removes = ["attempts :n"], ["expires_at = :exp"], []
    if succeeded:
        adds.append("succeeded :ok")
        sets.append("last_success_at = :success_at")
        values.update(ok=len(succeeded), success_at=succeeded[-1].at.isoformat())
    if failed:
        adds.append("failed :failed")
        sets.append("last_failure_at = :failure_at")
        values.update(failed=len(failed), failure_at=failed[-1].at.isoformat())
    if ordered[-1].status_code is not None:
        sets.append("last_status_code = :code")
        values["code"] = ordered[-1].status_code
    else:
        removes.append("last_status_code")
    if succeeded:
        # The streak after the last success does not depend on what was stored before: set it.
        last_success = max(index for index, tally in enumerate(ordered) if tally.succeeded)
        trailing = ordered[last_success + 1 :]
        sets.append("consecutive_failures = :streak")
        values["streak"] = len(trailing)
        if len(trailing) >= failing_after:
            sets.append("failing_since = :since")
            values["since"] = trailing[failing_after - 1].at.isoformat()
        else:
            removes.append("failing_since")
    else:
        adds.append("consecutive_failures :failed")
    expression = "ADD " + ", ".join(adds) + " SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return expression, values


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


def event_of(item: Mapping[str, Any]) -> Event:
    return Event.model_validate(_strip(dict(item)))


class Store:
    """Herald's DynamoDB adapter. AWS errors become domain errors here, HTTP statuses at the edge."""

    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient | None = None,
        clock: Any = time.time,
    ) -> None:
        self.table_name = table_name
        self._client = client
        self._clock = clock

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = dynamodb_client()
        return self._client

    # --- low-level helpers ----------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(TableName=self.table_name, **kwargs)
        except ClientError as exc:
            if _conditional_failure(exc):
                raise
            raise ServiceUnavailableError(f"DynamoDB {operation} failed: {exc.response['Error'].get('Code')}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailableError(f"DynamoDB {operation} failed") from exc

    def _transact(self, actions: list[dict[str, Any]]) -> None:
        for action in actions:
            next(iter(action.values()))["TableName"] = self.table_name
        try:
            self.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except ClientError as exc:
            if _conditional_failure(exc):
                raise
            raise ServiceUnavailableError(f"DynamoDB transaction failed: {exc.response['Error'].get('Code')}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailableError("DynamoDB transaction failed") from exc

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self._call("get_item", Key=_to_item({"pk": pk, "sk": sk}), ConsistentRead=True)
        item = response.get("Item")
        if not item:
            return None
        plain = _from_item(item)
        expires = plain.get("expires_at")
        if expires is not None and expires <= self._clock():
            return None
        return plain

    def _query(
        self,
        *,
        key: Mapping[str, str],
        prefix: str | None = None,
        index: str | None = None,
        limit: int,
        cursor: str | None,
        newest_first: bool = False,
        where: Mapping[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a Query. ``key`` names the partition attribute and value; the cursor must belong to it.
        ``where`` keeps only the items whose attributes have these values."""
        ((partition_attr, partition_value),) = key.items()
        sort_attr = "sk" if partition_attr == "pk" else partition_attr.replace("pk", "sk")
        condition = "#p = :p"
        names = {"#p": partition_attr}
        values = _values(p=partition_value, now=int(self._clock()))
        if prefix is not None:
            condition += " AND begins_with(#s, :prefix)"
            names["#s"] = sort_attr
            values.update(_values(prefix=prefix))
        query_filter = _NOT_EXPIRED
        for number, (attribute, value) in enumerate((where or {}).items()):
            names[f"#w{number}"] = attribute
            values.update(_values(**{f"w{number}": value}))
            query_filter = f"{query_filter} AND #w{number} = :w{number}"
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": condition,
            "FilterExpression": query_filter,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        if index is not None:
            kwargs["IndexName"] = index
        if cursor:
            kwargs["ExclusiveStartKey"] = self._decode_cursor(
                cursor, partition_attr, partition_value, sort_attr, prefix
            )
        items: list[dict[str, Any]] = []
        while True:
            response = self._call("query", **kwargs)
            items.extend(_from_item(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            # Expired items are filtered after the limit applies: keep reading until the page is full.
            if not last or len(items) >= limit:
                return items[:limit], _encode_cursor(last) if last else None
            kwargs["ExclusiveStartKey"] = last
            kwargs["Limit"] = limit - len(items)

    @staticmethod
    def _decode_cursor(
        cursor: str,
        partition_attr: str,
        partition_value: str,
        sort_attr: str,
        prefix: str | None,
    ) -> dict[str, Any]:
        try:
            raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise InvalidCursorError("the iterator is not one this listing issued") from exc
        if (
            not isinstance(raw, dict)
            or raw.get(partition_attr) != partition_value
            or not all(isinstance(value, str) for value in raw.values())
            # Exactly the keys DynamoDB returned, none empty or oversized: real DynamoDB rejects any other
            # ExclusiveStartKey with a ValidationException (moto accepts them), which would be a 503.
            or set(raw) != {"pk", "sk", partition_attr, sort_attr}
            or any(not value or len(value.encode()) > 1024 for value in raw.values())
            or (prefix is not None and not raw[sort_attr].startswith(prefix))
        ):
            raise InvalidCursorError("the iterator is not one this listing issued")
        return _to_item(raw)

    # --- tenants and API keys -------------------------------------------------------------------

    def create_tenant(self, tenant: Tenant, key: ApiKey, key_hash: str) -> None:
        self._transact(
            [
                {
                    "Put": {
                        "Item": self._tenant_item(tenant),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "Item": self._key_item(key, key_hash),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    @staticmethod
    def _tenant_item(tenant: Tenant) -> dict[str, Any]:
        return _to_item(
            {
                "pk": f"TENANT#{tenant.id}",
                "sk": "#TENANT",
                "gsi1pk": "TENANTS",
                "gsi1sk": tenant.id,
                **_record(tenant),
            }
        )

    @staticmethod
    def _key_item(key: ApiKey, key_hash: str) -> dict[str, Any]:
        return _to_item(
            {
                "pk": f"APIKEY#{key_hash}",
                "sk": "#APIKEY",
                "gsi1pk": f"TENANT#{key.tenant_id}#KEYS",
                "gsi1sk": key.id,
                **_record(key),
            }
        )

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        item = self._get(f"TENANT#{tenant_id}", "#TENANT")
        return Tenant.model_validate(_strip(item)) if item else None

    def list_tenants(self, *, limit: int, cursor: str | None) -> PageResult[Tenant]:
        items, next_cursor = self._query(key={"gsi1pk": "TENANTS"}, index="gsi1", limit=limit, cursor=cursor)
        return PageResult([Tenant.model_validate(_strip(item)) for item in items], next_cursor)

    def delete_tenant(self, tenant_id: str) -> None:
        """Delete the tenant and its API keys at once (it is locked out); its subscriptions are purged after."""
        try:
            self._call(
                "delete_item",
                Key=_to_item({"pk": f"TENANT#{tenant_id}", "sk": "#TENANT"}),
                ConditionExpression="attribute_exists(pk)",
            )
        except ClientError as exc:
            raise NotFoundError(f"tenant {tenant_id} not found") from exc
        for key in self.iter_api_keys(tenant_id):
            self._call("delete_item", Key=_to_item({"pk": key["pk"], "sk": "#APIKEY"}))

    def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        self._call(
            "put_item",
            Item=self._key_item(key, key_hash),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def iter_api_keys(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            items, cursor = self._query(
                key={"gsi1pk": f"TENANT#{tenant_id}#KEYS"},
                index="gsi1",
                limit=100,
                cursor=cursor,
            )
            yield from items
            if cursor is None:
                return

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        return [ApiKey.model_validate(_strip(item)) for item in self.iter_api_keys(tenant_id)]

    def delete_api_key(self, tenant_id: str, key_id: str) -> None:
        for item in self.iter_api_keys(tenant_id):
            if item["id"] == key_id:
                self._call("delete_item", Key=_to_item({"pk": item["pk"], "sk": "#APIKEY"}))
                return
        raise NotFoundError(f"API key {key_id} not found")

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        item = self._get(f"APIKEY#{key_hash}", "#APIKEY")
        return ApiKey.model_validate(_strip(item)) if item else None

    # --- subscriptions and their routing entries ------------------------------------------------

    @staticmethod
    def _sub_item(sub: Subscription) -> dict[str, Any]:
        return _to_item({"pk": f"TENANT#{sub.tenant_id}", "sk": f"SUB#{sub.id}", **_record(sub)})

    @staticmethod
    def _route_key(tenant_id: str, event_type: str, sub_id: str) -> dict[str, Any]:
        return _to_item({"pk": f"ROUTE#{tenant_id}#{event_type}", "sk": f"SUB#{sub_id}"})

    @classmethod
    def _routes(cls, sub: Subscription) -> set[str]:
        return set(sub.event_types) if sub.enabled else set()

    @classmethod
    def _route_items(cls, sub: Subscription) -> list[dict[str, Any]]:
        return [
            {**cls._route_key(sub.tenant_id, event_type, sub.id), **_to_item({"subscription_id": sub.id})}
            for event_type in sorted(cls._routes(sub))
        ]

    def create_subscription(self, sub: Subscription, *, max_subscriptions: int | None = None) -> None:
        """Store a new subscription and count it on its tenant, refusing it (LimitExceededError) if the
        tenant already has ``max_subscriptions``, or (NotFoundError) if the tenant is gone."""
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "Item": self._sub_item(sub),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._count_subscriptions(sub.tenant_id, 1, below=max_subscriptions),
        ]
        actions += [{"Put": {"Item": item}} for item in self._route_items(sub)]
        try:
            self._transact_retrying(actions)
        except ClientError as exc:
            if self.get_tenant(sub.tenant_id) is None:
                raise NotFoundError(f"tenant {sub.tenant_id} not found") from exc
            if max_subscriptions is not None and self.subscription_count(sub.tenant_id) >= max_subscriptions:
                raise too_many_subscriptions(max_subscriptions) from exc
            raise ConflictError(f"subscription {sub.id} already exists") from exc

    def import_subscriptions(self, subs: Sequence[Subscription]) -> None:
        """Write many new subscriptions with their routing entries, 25 items per BatchWriteItem (bulk
        imports, load tests). Unlike ``create_subscription`` it does not check that the ids are new."""
        items: list[dict[str, Any]] = []
        for sub in subs:
            items += [self._sub_item(sub), *self._route_items(sub)]
        for start in range(0, len(items), 25):
            self._batch_write([{"PutRequest": {"Item": item}} for item in items[start : start + 25]])
        for tenant_id, count in Counter(sub.tenant_id for sub in subs).items():
            with contextlib.suppress(ClientError):  # no such tenant: nothing to count
                self._call("update_item", **self._count_subscriptions(tenant_id, count)["Update"])

    def get_subscription(self, tenant_id: str, sub_id: str) -> Subscription | None:
        item = self._get(f"TENANT#{tenant_id}", f"SUB#{sub_id}")
        return Subscription.model_validate(_strip(item)) if item else None

    def list_subscriptions(self, tenant_id: str, *, limit: int, cursor: str | None) -> PageResult[Subscription]:
        items, next_cursor = self._query(key={"pk": f"TENANT#{tenant_id}"}, prefix="SUB#", limit=limit, cursor=cursor)
        return PageResult([Subscription.model_validate(_strip(item)) for item in items], next_cursor)

    def replace_subscription(self, old: Subscription, new: Subscription) -> None:
        """Write ``new`` over ``old`` (optimistic: fails with ConflictError if it changed meanwhile)."""
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "Item": self._sub_item(new),
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": _values(v=old.version),
                }
            }
        ]
        before, after = self._routes(old), self._routes(new)
        for event_type in sorted(before - after):
            actions.append({"Delete": {"Key": self._route_key(old.tenant_id, event_type, old.id)}})
        for event_type in sorted(after - before):
            item = {
                **self._route_key(new.tenant_id, event_type, new.id),
                **_to_item({"subscription_id": new.id}),
            }
            actions.append({"Put": {"Item": item}})
        try:
            self._transact(actions)
        except ClientError as exc:
            raise ConflictError("the subscription changed meanwhile; read it again and retry") from exc

    def delete_subscription(self, sub: Subscription) -> None:
        actions: list[dict[str, Any]] = [
            {
                "Delete": {
                    "Key": _to_item({"pk": f"TENANT#{sub.tenant_id}", "sk": f"SUB#{sub.id}"}),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            self._count_subscriptions(sub.tenant_id, -1),
        ]
        actions += [{"Delete": {"Key": self._route_key(sub.tenant_id, t, sub.id)}} for t in sorted(self._routes(sub))]
        try:
            self._transact_retrying(actions)
        except ClientError as exc:
            raise NotFoundError(f"subscription {sub.id} not found") from exc

    def query_routes(
        self, tenant_id: str, route: str, *, limit: int, cursor: str | None
    ) -> tuple[list[str], str | None]:
        """One page of the subscription ids routed for ``route`` (an event type, or ``*``)."""
        items, next_cursor = self._query(key={"pk": f"ROUTE#{tenant_id}#{route}"}, limit=limit, cursor=cursor)
        return [item["subscription_id"] for item in items], next_cursor

    def purge_tenant_page(self, tenant_id: str, *, limit: int = 100) -> bool:
        """Delete up to ``limit`` subscriptions of a deleted tenant with their routes; True when none remain."""
        page = self.list_subscriptions(tenant_id, limit=limit, cursor=None)
        keys: list[dict[str, Any]] = []
        for sub in page.items:
            keys.append(_to_item({"pk": f"TENANT#{tenant_id}", "sk": f"SUB#{sub.id}"}))
            keys += [self._route_key(tenant_id, t, sub.id) for t in sorted(self._routes(sub))]
        for start in range(0, len(keys), 25):
            self._batch_write([{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]])
        return page.cursor is None

    def _batch_write(self, requests: list[Any]) -> None:
        for _ in range(5):
            try:
                response = self.client.batch_write_item(RequestItems={self.table_name: requests})
            except (ClientError, BotoCoreError) as exc:
                raise ServiceUnavailableError("DynamoDB batch write failed") from exc
            requests = list(response.get("UnprocessedItems", {}).get(self.table_name, []))
            if not requests:
                return
            time.sleep(0.1)
        raise ServiceUnavailableError("DynamoDB kept items of a batch unprocessed")

    # --- events ---------------------------------------------------------------------------------

    def create_event(
        self, event: Event, *, fingerprint: str, expires_at: int, **counters: Any
    ) -> dict[str, Any] | None:
        """Store a new event; returns None, or the existing event's item (with its counters, as
        ``get_event_item`` reads it) if its id or idempotency key was used before (raises
        IdempotencyConflictError if that was for a different request). ``counters`` are the event's
        starting counters and flags (a test event is matched and enqueued from the start)."""
        item = {
            "pk": f"EVENT#{event.id}",
            "sk": "#EVENT",
            "expires_at": expires_at,
            "fingerprint": fingerprint,
            "enqueued": False,
            **dict.fromkeys(EVENT_COUNTERS, 0),
            "fanout_open": 1,
            **_record(event),
            **counters,
        }
        put: dict[str, Any] = {
            "Item": _to_item(item),
            "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now",
            "ExpressionAttributeValues": _values(now=int(self._clock())),
        }
        try:
            if not event.idempotency_key:
                self._call("put_item", **put)  # a transaction of one write would bill it twice
                return None
            idem = {
                "pk": f"IDEMPOTENCY#{event.idempotency_key}",
                "sk": "#IDEMPOTENCY",
                "event_id": event.id,
                "fingerprint": fingerprint,
                "expires_at": expires_at,
            }
            self._transact(
                [
                    {"Put": put},
                    {
                        "Put": {
                            "Item": _to_item(idem),
                            "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now",
                            "ExpressionAttributeValues": _values(now=int(self._clock())),
                        }
                    },
                ]
            )
            return None
        except ClientError:
            pass
        existing_id = event.id
        if event.idempotency_key:
            idem_item = self._get(f"IDEMPOTENCY#{event.idempotency_key}", "#IDEMPOTENCY")
            if idem_item is not None:
                existing_id = idem_item["event_id"]
                if idem_item["fingerprint"] != fingerprint:
                    return self._mismatch(existing_id)
        existing = self.get_event_item(existing_id)
        if existing is None:
            raise ConflictError("a concurrent request is publishing this event; retry")
        if existing["fingerprint"] != fingerprint:
            return self._mismatch(existing_id)
        return existing

    @staticmethod
    def _mismatch(event_id: str) -> dict[str, Any]:
        raise IdempotencyConflictError(
            f"event {event_id} was already published with a different body under this id or idempotency key"
        )

    def get_event_record(self, event_id: str) -> dict[str, Any] | None:
        """The event item alone, as published (it never changes): what delivering it needs."""
        return self._get(f"EVENT#{event_id}", "#EVENT")

    def get_event_item(self, event_id: str) -> dict[str, Any] | None:
        """The event item with its current counters and ``enqueued`` flag: the starting values it was
        stored with plus what its counts item (``#COUNTS``) has added since. One strongly consistent
        Query reads both (they are the partition's only sort keys starting with ``#``)."""
        response = self._call(
            "query",
            KeyConditionExpression="pk = :p AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=_values(p=f"EVENT#{event_id}", prefix="#"),
            ConsistentRead=True,
        )
        now = self._clock()
        found = {
            plain["sk"]: plain
            for plain in map(_from_item, response.get("Items", []))
            if plain.get("expires_at") is None or plain["expires_at"] > now
        }
        item = found.get("#EVENT")
        if item is None:
            return None
        counts = found.get("#COUNTS", {})
        for key in EVENT_COUNTERS:
            item[key] = int(item.get(key, 0)) + int(counts.get(key, 0))
        item["enqueued"] = bool(item.get("enqueued")) or bool(counts.get("enqueued"))
        return item

    def get_event(self, event_id: str) -> Event | None:
        item = self.get_event_record(event_id)
        return event_of(item) if item else None

    def mark_enqueued(self, event_id: str, *, expires_at: int) -> None:
        """Note that the event's fan-out is queued (a retried publish then queues nothing more)."""
        self._update_counts(event_id, expires_at=expires_at, deltas={}, flags={"enqueued": True})

    def count_event(self, event_id: str, *, expires_at: int, **deltas: int) -> None:
        """Add to an event's counters (``matched``, ``succeeded``, ``failed``, ``fanout_open``: the fan-out
        messages still at work). ``expires_at`` is the event's: the counts item expires with it."""
        deltas = {key: value for key, value in deltas.items() if value}
        if deltas:
            self._update_counts(event_id, expires_at=expires_at, deltas=deltas)

    def _update_counts(
        self, event_id: str, *, expires_at: int, deltas: Mapping[str, int], flags: Mapping[str, Any] | None = None
    ) -> None:
        """One UpdateItem of the event's counts item: a small item beside the event, so that what changes
        as deliveries settle never rewrites the payload (a write costs by the size of the whole item).
        Created by its first update; one left over from an expired event of the same id is replaced."""
        now = int(self._clock())
        if expires_at <= now:
            return  # the event is gone: nothing left to count
        flags = dict(flags or {})
        sets = ", ".join(["#exp = :exp", *(f"#{key} = :{key}" for key in flags)])
        expression = f"SET {sets}" + (" ADD " + ", ".join(f"#{key} :{key}" for key in deltas) if deltas else "")
        key = _to_item({"pk": f"EVENT#{event_id}", "sk": "#COUNTS"})
        for attempt in range(2):
            try:
                self._call(
                    "update_item",
                    Key=key,
                    UpdateExpression=expression,
                    ConditionExpression="attribute_not_exists(#exp) OR #exp > :now",
                    ExpressionAttributeNames={"#exp": "expires_at"} | {f"#{name}": name for name in [*flags, *deltas]},
                    ExpressionAttributeValues=_values(exp=expires_at, now=now, **flags, **deltas),
                )
                return
            except ClientError:
                if attempt:
                    logger.warning("event counters not updated", extra={"event_id": event_id, **deltas, **flags})
                    return
            # Counts of an earlier, expired event with this id, not yet removed by TTL: start afresh.
            with contextlib.suppress(ClientError):
                self._call(
                    "delete_item",
                    Key=key,
                    ConditionExpression="#exp <= :now",
                    ExpressionAttributeNames={"#exp": "expires_at"},
                    ExpressionAttributeValues=_values(now=now),
                )

    def count_fanout(self, event_id: str, marker: str, *, expires_at: int, **deltas: int) -> bool:
        """Add to an event's counters for one fan-out page, once: ``marker`` names the page, and a page
        already counted (its message ran again after a crash, or SQS delivered it twice) is not counted
        again. True if counted now; False if it was before, or the event is gone.

        Each page leaves a small marker item beside the event (``FANOUT#<digest>``, expiring with it), so
        a fan-out of any size never grows an item that is written often. A crash between the marker and
        the counters leaves the counters one page short; the deliveries themselves are all queued."""
        digest = base64.urlsafe_b64encode(hashlib.sha256(marker.encode()).digest()[:12]).decode()
        key = {"pk": f"EVENT#{event_id}", "sk": f"FANOUT#{digest}"}
        try:
            self._call(
                "put_item",
                Item=_to_item({**key, "expires_at": expires_at}),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError:
            return False  # this page was counted before
        try:
            self.count_event(event_id, expires_at=expires_at, **deltas)
        except ServiceUnavailableError:
            # Not counted (DynamoDB refused after retries): take the marker back, so that the page is
            # counted when its message runs again, instead of never.
            with contextlib.suppress(ClientError, ServiceUnavailableError):
                self._call("delete_item", Key=_to_item(key))
            raise
        return True

    # --- deliveries and attempts ----------------------------------------------------------------

    @staticmethod
    def _delivery_keys(delivery: Delivery) -> dict[str, Any]:
        """The delivery's index entries. The status index (gsi2) lists what needs attention (pending and
        failed deliveries): a delivery that succeeded leaves it, so the common case, a first attempt that
        succeeds, writes one index entry, not two; succeeded deliveries are listed from gsi1."""
        sort = f"{delivery.created_at.isoformat()}#{delivery.id}"
        keys = {"gsi1pk": f"SUB#{delivery.subscription_id}", "gsi1sk": sort}
        if delivery.status is not DeliveryStatus.SUCCEEDED:
            keys |= {"gsi2pk": f"SUB#{delivery.subscription_id}#{delivery.status.value}", "gsi2sk": sort}
        return keys

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        item = self._get(f"DELIVERY#{delivery_id}", "#DELIVERY")
        return Delivery.model_validate(_strip(item)) if item else None

    def get_delivery_state(self, delivery_id: str) -> DeliveryState | None:
        """The delivery with what only the worker needs: its place in the retry schedule and its lease."""
        item = self._get(f"DELIVERY#{delivery_id}", "#DELIVERY")
        if item is None:
            return None
        delivery = Delivery.model_validate(_strip(item))
        return DeliveryState(
            delivery,
            scheduled_attempts=int(item.get("scheduled_attempts", delivery.attempts)),
            lease_until=float(item.get("lease_until", 0)),
        )

    def _delivery_item(
        self, delivery: Delivery, *, scheduled_attempts: int, expires_at: int, listed: bool = True
    ) -> dict[str, Any]:
        return {
            "pk": f"DELIVERY#{delivery.id}",
            "sk": "#DELIVERY",
            **(self._delivery_keys(delivery) if listed else {}),
            **_record(delivery),
            "scheduled_attempts": scheduled_attempts,
            "expires_at": expires_at,
        }

    def claim_delivery(
        self,
        delivery: Delivery,
        *,
        previous: Delivery | None,
        scheduled_attempts: int,
        token: str,
        until: float,
        now: float,
        expires_at: int,
        recovery_id: str | None = None,
    ) -> bool:
        """Take the lease on ``delivery`` for one attempt, until ``until`` (epoch seconds; ``now`` is the
        worker's clock). False if another worker holds it, or the delivery moved on since ``previous``
        was read (a duplicate message), or, with ``recovery_id``, that job no longer holds the delivery's
        recovery lock (its one extra attempt was made already).

        A new delivery is stored without its index entries: ``record_attempt`` (or ``release_delivery``)
        adds them, so a delivery settled at its first attempt writes each index once instead of three
        times (put at the claim, rewritten and moved to its new status at the record). Until then it is
        found by its id, not yet in the subscription's listings: while its first attempt is in flight,
        or, should the worker die during it, until its message comes back and the delivery is carried on."""
        item = {
            **self._delivery_item(
                delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at, listed=previous is not None
            ),
            "lease_token": token,
            "lease_until": until,
        }
        if previous is None:
            condition, values = "attribute_not_exists(pk)", None
        else:
            # The status too: a duplicate message that read the delivery before it was settled or cancelled
            # (which leaves ``attempts`` as it was) must not reopen it.
            condition = (
                "attempts = :attempts AND #status = :status"
                " AND (attribute_not_exists(lease_until) OR lease_until < :now)"
            )
            values = _values(attempts=previous.attempts, status=previous.status.value, now=now)
        kwargs: dict[str, Any] = {
            "Item": _to_item(item),
            "ConditionExpression": condition,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
        try:
            if recovery_id is None:
                self._call("put_item", **kwargs)
            else:
                self._transact([{"Put": kwargs}, self._recovery_lock_check(delivery.id, recovery_id)])
        except ClientError:
            return False
        return True

    def release_delivery(self, delivery: Delivery, token: str) -> None:
        """Give a lease back without an attempt (``delivery`` as claimed). The delivery gets its index
        entries if its claim left them out: it waits, listed as what it is, for its next look."""
        keys = self._delivery_keys(delivery)
        listed = ", ".join(f"{key} = :{key}" for key in keys)
        with contextlib.suppress(ClientError):  # not ours any more: nothing to give back
            self._call(
                "update_item",
                Key=_to_item({"pk": f"DELIVERY#{delivery.id}", "sk": "#DELIVERY"}),
                UpdateExpression=f"SET {listed} REMOVE lease_token, lease_until",
                ConditionExpression="lease_token = :token",
                ExpressionAttributeValues=_values(token=token, **keys),
            )

    def record_attempt(
        self,
        delivery: Delivery,
        attempt: Attempt | None,
        *,
        token: str,
        scheduled_attempts: int,
        expires_at: int,
        recovery_id: str | None = None,
    ) -> bool:
        """Store an attempt (if one was made), then the delivery's new state with its index entries,
        releasing the lease. False if the lease was lost meanwhile.

        Two plain writes, not a transaction (which bills every item twice): the attempt first, under its
        number, then the delivery on the condition that the lease is still this one. If the second write
        does not happen (a crash, a lost lease), the delivery still shows the attempt as not made, so the
        next claim makes attempt ``n`` again and its record replaces this one: the log keeps one record per
        number, and a delivery never counts an attempt that has no record. With ``recovery_id`` both go in
        one transaction with the job's ticket for the delivery (its one extra attempt, used up exactly
        once) and the release of the delivery's recovery lock.

        The event's counters are not touched here: the worker adds up a batch's changes per event and
        writes them once (``count_event``) when the batch is done."""
        delivery_put = {
            "Item": _to_item(
                self._delivery_item(delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at)
            ),
            "ConditionExpression": "lease_token = :token",
            "ExpressionAttributeValues": _values(token=token),
        }
        attempt_put: dict[str, Any] | None = None
        if attempt is not None:
            attempt_item = {
                "pk": f"DELIVERY#{delivery.id}",
                "sk": f"ATTEMPT#{attempt.attempt_number:05d}",
                **_record(attempt),
                "expires_at": expires_at,
            }
            attempt_put = {"Item": _to_item(attempt_item)}
        if recovery_id is None:
            try:
                if attempt_put is not None:
                    self._call("put_item", **attempt_put)
                self._call("put_item", **delivery_put)
            except ClientError:
                return False
            return True
        actions: list[dict[str, Any]] = [{"Put": delivery_put}]
        if attempt_put is not None:
            actions.append({"Put": attempt_put})
        succeeded = attempt is not None and attempt.succeeded
        actions += self._recovery_consume(delivery.id, recovery_id, "sent" if succeeded else "failed")
        try:
            self._transact(actions)
        except ClientError:
            return False
        return True

    def list_deliveries(
        self,
        sub_id: str,
        *,
        status: DeliveryStatus | None,
        limit: int,
        cursor: str | None,
    ) -> PageResult[Delivery]:
        where: dict[str, str] | None = None
        if status is None:
            key, index = {"gsi1pk": f"SUB#{sub_id}"}, "gsi1"
        elif status is DeliveryStatus.SUCCEEDED:
            # Succeeded deliveries have no status-index entry (see ``_delivery_keys``): read the
            # subscription's deliveries and keep those. Pages stay full (``_query`` reads on).
            key, index, where = {"gsi1pk": f"SUB#{sub_id}"}, "gsi1", {"status": status.value}
        else:
            key, index = {"gsi2pk": f"SUB#{sub_id}#{status.value}"}, "gsi2"
        items, next_cursor = self._query(
            key=key, index=index, limit=limit, cursor=cursor, newest_first=True, where=where
        )
        return PageResult([Delivery.model_validate(_strip(item)) for item in items], next_cursor)

    def list_attempts(self, delivery_id: str, *, limit: int, cursor: str | None) -> PageResult[Attempt]:
        items, next_cursor = self._query(
            key={"pk": f"DELIVERY#{delivery_id}"},
            prefix="ATTEMPT#",
            limit=limit,
            cursor=cursor,
        )
        return PageResult([Attempt.model_validate(_strip(item)) for item in items], next_cursor)

    # --- recovery and redelivery jobs (herald.recovery) ---------------------------------------------

    @staticmethod
    def _recovery_lock_key(delivery_id: str) -> dict[str, Any]:
        return _to_item({"pk": f"DELIVERY#{delivery_id}", "sk": "RECOVERY"})

    @staticmethod
    def _recovery_ticket_key(job_id: str, delivery_id: str) -> dict[str, Any]:
        return _to_item({"pk": f"RECOVERY#{job_id}", "sk": f"DLV#{delivery_id}"})

    def _recovery_lock_check(self, delivery_id: str, job_id: str) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "Key": self._recovery_lock_key(delivery_id),
                "ConditionExpression": "job_id = :job AND expires_at > :now",
                "ExpressionAttributeValues": _values(job=job_id, now=int(self._clock())),
            }
        }

    def _recovery_consume(self, delivery_id: str, job_id: str, outcome: str) -> list[dict[str, Any]]:
        return [
            {
                "Delete": {
                    "Key": self._recovery_lock_key(delivery_id),
                    "ConditionExpression": "job_id = :job",
                    "ExpressionAttributeValues": _values(job=job_id),
                }
            },
            {
                "Update": {
                    "Key": self._recovery_ticket_key(job_id, delivery_id),
                    "UpdateExpression": "SET #state = :outcome",
                    "ConditionExpression": "#state = :open",
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": _values(outcome=outcome, open="open"),
                }
            },
        ]

    @staticmethod
    def _recovery_job_item(job: RecoveryJob, *, expires_at: int, listed: bool) -> dict[str, Any]:
        record = _record(job)
        for counted in ("queued", "sent", "failed"):  # read from the tickets, never stored
            record.pop(counted, None)
        return {"pk": f"RECOVERY#{job.id}", "sk": "#RECOVERY", **record, "listed": listed, "expires_at": expires_at}

    def create_recovery_job(
        self, job: RecoveryJob, *, window: str, replaces: str | None, lock_expires_at: int, expires_at: int
    ) -> str | None:
        """Store a new recovery job with the lock of its ``window`` (subscription, since, until), so that an
        identical request finds it. None if stored; otherwise the id of the job holding the window. With
        ``replaces``, that (finished) job's lock is taken over."""
        condition = "attribute_not_exists(pk) OR expires_at <= :now"
        values: dict[str, Any] = {"now": int(self._clock())}
        if replaces is not None:
            condition += " OR job_id = :old"
            values["old"] = replaces
        lock = {"pk": f"RECOVERYWINDOW#{window}", "sk": "#LOCK", "job_id": job.id, "expires_at": lock_expires_at}
        try:
            self._transact(
                [
                    {
                        "Put": {
                            "Item": _to_item(self._recovery_job_item(job, expires_at=expires_at, listed=False)),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "Item": _to_item(lock),
                            "ConditionExpression": condition,
                            "ExpressionAttributeValues": _values(**values),
                        }
                    },
                ]
            )
            return None
        except ClientError:
            pass
        held = self._get(f"RECOVERYWINDOW#{window}", "#LOCK")
        if held is None:
            raise ConflictError("a concurrent request is starting this recovery; retry")
        return str(held["job_id"])

    def get_recovery_job(self, job_id: str) -> tuple[RecoveryJob, bool] | None:
        """The job as stored (its counts still zero) and whether all its deliveries have been listed."""
        item = self._get(f"RECOVERY#{job_id}", "#RECOVERY")
        if item is None:
            return None
        return RecoveryJob.model_validate(_strip(item)), bool(item.get("listed"))

    def update_recovery_job(self, job_id: str, *, updated_at: datetime, **values: Any) -> None:
        """Set fields of a job (``status``, ``listed``)."""
        values = {**values, "updated_at": updated_at.isoformat()}
        with contextlib.suppress(ClientError):  # the job expired meanwhile: nothing left to update
            self._call(
                "update_item",
                Key=_to_item({"pk": f"RECOVERY#{job_id}", "sk": "#RECOVERY"}),
                UpdateExpression="SET " + ", ".join(f"#{key} = :{key}" for key in values),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={f"#{key}": key for key in values},
                ExpressionAttributeValues=_values(**values),
            )

    def recovery_ticket_counts(self, job_id: str) -> dict[str, int]:
        """How many of a job's tickets are ``open`` (queued, not yet attempted), ``sent`` and ``failed``."""
        counts = {"open": 0, "sent": 0, "failed": 0}
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :prefix)",
            "ProjectionExpression": "#state",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": _values(p=f"RECOVERY#{job_id}", prefix="DLV#"),
        }
        while True:
            response = self._call("query", **kwargs)
            for item in response.get("Items", []):
                state = item.get("state", {}).get("S", "open")
                counts[state] = counts.get(state, 0) + 1
            last = response.get("LastEvaluatedKey")
            if not last:
                return counts
            kwargs["ExclusiveStartKey"] = last

    def take_recovery_ticket(self, job_id: str, delivery_id: str, *, lock_seconds: int, ticket_seconds: int) -> bool:
        """Reserve a delivery's one extra attempt for a job: the delivery's recovery lock (no other job may
        re-send it meanwhile; it lasts ``lock_seconds`` should the attempt never be made) and the job's
        ticket for it (kept ``ticket_seconds``), in one transaction. True if reserved now, or by this job
        before and not used yet (a page read again); False if another job holds the lock, or this job has
        made its attempt already."""
        now = int(self._clock())
        lock = {
            "pk": f"DELIVERY#{delivery_id}",
            "sk": "RECOVERY",
            "job_id": job_id,
            "expires_at": now + lock_seconds,
        }
        ticket = {
            "pk": f"RECOVERY#{job_id}",
            "sk": f"DLV#{delivery_id}",
            "delivery_id": delivery_id,
            "state": "open",
            "expires_at": now + ticket_seconds,
        }
        try:
            self._transact(
                [
                    {
                        "Put": {
                            "Item": _to_item(lock),
                            "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now OR job_id = :job",
                            "ExpressionAttributeValues": _values(now=now, job=job_id),
                        }
                    },
                    {
                        "Put": {
                            "Item": _to_item(ticket),
                            "ConditionExpression": "attribute_not_exists(pk) OR #state = :open",
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": _values(open="open"),
                        }
                    },
                ]
            )
        except ClientError:
            return False
        return True

    def get_recovery_ticket(self, job_id: str, delivery_id: str) -> tuple[str | None, str | None]:
        """(the ticket's state, the job holding the delivery's recovery lock), either None if absent."""
        ticket = self._get(f"RECOVERY#{job_id}", f"DLV#{delivery_id}")
        lock = self._get(f"DELIVERY#{delivery_id}", "RECOVERY")
        return (ticket["state"] if ticket else None), (lock["job_id"] if lock else None)

    def close_recovery_ticket(self, job_id: str, delivery_id: str, outcome: str) -> None:
        """Settle a job's ticket without an attempt (nothing could be sent), freeing the lock if the job holds it."""
        with contextlib.suppress(ClientError):
            self._call(
                "delete_item",
                Key=self._recovery_lock_key(delivery_id),
                ConditionExpression="job_id = :job",
                ExpressionAttributeValues=_values(job=job_id),
            )
        with contextlib.suppress(ClientError):  # settled already
            self._call(
                "update_item",
                Key=self._recovery_ticket_key(job_id, delivery_id),
                UpdateExpression="SET #state = :outcome",
                ConditionExpression="#state = :open",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=_values(outcome=outcome, open="open"),
            )

    def query_deliveries_between(
        self,
        sub_id: str,
        status: DeliveryStatus,
        *,
        since: datetime,
        until: datetime,
        limit: int,
        cursor: str | None,
    ) -> PageResult[Delivery]:
        """One page of a subscription's deliveries in ``status`` created in [since, until) (UTC times),
        oldest first. The index's sort key starts with the creation time in ISO 8601, so the window is a
        key condition; a page may hold fewer than ``limit`` (expired items are filtered out)."""
        partition = f"SUB#{sub_id}#{status.value}"
        kwargs: dict[str, Any] = {
            "IndexName": "gsi2",
            "KeyConditionExpression": "gsi2pk = :p AND gsi2sk BETWEEN :low AND :high",
            "FilterExpression": _NOT_EXPIRED,
            "ExpressionAttributeValues": _values(
                p=partition, low=since.isoformat(), high=until.isoformat(), now=int(self._clock())
            ),
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = self._decode_cursor(cursor, "gsi2pk", partition, "gsi2sk", None)
        response = self._call("query", **kwargs)
        items = [_from_item(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return PageResult([Delivery.model_validate(_strip(item)) for item in items], _encode_cursor(last))

    # --- subscription stats and health ------------------------------------------------------------

    @staticmethod
    def _stats_key(sub_id: str) -> dict[str, Any]:
        return _to_item({"pk": f"STATS#{sub_id}", "sk": "#STATS"})

    def count_subscription_attempts(
        self,
        sub_id: str,
        attempts: Sequence[AttemptTally],
        *,
        failing_after: int,
        expires_at: int,
    ) -> SubscriptionHealth:
        """Count attempts of a subscription (a worker's batch of them) in its stats and follow its failure
        streak, as if counted one by one in the order they finished: one UpdateItem, plus one conditional
        write when failures alone take a streak to ``failing_after`` in a row (the failing clock starts
        then, at the failure that reached it, once per streak).

        A separate item on purpose, not the subscription: the subscription is versioned and rewritten
        whole by the API, and not in the delivery's transaction either: every delivery of a
        subscription adds to this one item, and concurrent transactions on one item cancel each other."""
        ordered = sorted(attempts, key=lambda tally: tally.at)
        if not ordered:
            return SubscriptionHealth(0, None)
        expression, values = _stats_update(ordered, failing_after=failing_after, expires_at=expires_at)
        old = _from_item(
            self._call(
                "update_item",
                Key=self._stats_key(sub_id),
                UpdateExpression=expression,
                ExpressionAttributeValues=_values(**values),
                ReturnValues="ALL_OLD",
            ).get("Attributes", {})
        )
        before = old.get("failing_since")
        health = _follow_streak(
            int(old.get("consecutive_failures", 0)),
            datetime.fromisoformat(before) if before else None,
            ordered,
            failing_after=failing_after,
        )
        since = health.failing_since
        if any(tally.succeeded for tally in ordered) or before is not None or since is None:
            return health
        try:
            self._call(
                "update_item",
                Key=self._stats_key(sub_id),
                UpdateExpression="SET failing_since = :at",
                ConditionExpression="attribute_not_exists(failing_since) AND consecutive_failures >= :n",
                ExpressionAttributeValues=_values(at=since.isoformat(), n=failing_after),
            )
        except ClientError:
            # Started by a concurrent attempt, or a success ended the streak meanwhile: read which.
            stored = (self._get(f"STATS#{sub_id}", "#STATS") or {}).get("failing_since")
            since = datetime.fromisoformat(stored) if stored else None
        return SubscriptionHealth(health.consecutive_failures, since)

    def get_subscription_stats(self, sub_id: str) -> dict[str, Any]:
        """The subscription's stats item as plain values (empty before its first attempt)."""
        item = self._get(f"STATS#{sub_id}", "#STATS")
        return {key: value for key, value in (item or {}).items() if key not in _KEY_ATTRIBUTES}

    def reset_failing_streak(self, sub_id: str) -> None:
        """A re-enabled subscription starts afresh: no failure streak, no failing clock (the tenant says it
        is fixed; if it is not, the clock starts again after ``failing_after`` failures, a whole window)."""
        with contextlib.suppress(ClientError):  # no stats yet: nothing to reset
            self._call(
                "update_item",
                Key=self._stats_key(sub_id),
                UpdateExpression="SET consecutive_failures = :zero REMOVE failing_since",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_values(zero=0),
            )

    # --- rate limits ------------------------------------------------------------------------------

    def take_rate_slot(self, sub_id: str, *, interval: float, now: float) -> float:
        """Take the subscription's next delivery slot if it is free at ``now`` (epoch seconds): 0.0 when
        taken, else the seconds until it frees up. Slots are ``interval`` seconds apart (1 / rate).

        One conditional UpdateItem on a per-subscription item, shared by every worker: the item holds
        the theoretical arrival time ``tat`` of the next allowed delivery (GCRA with no burst allowance),
        so two deliveries never start less than ``interval`` apart, and no window of one second ever holds
        more than ``rate + 1`` starts (a fixed per-second counter would let ``2 x rate`` through across a
        window boundary). A refused take writes nothing, and returns the slot's time with the refusal."""
        try:
            self._call(
                "update_item",
                Key=_to_item({"pk": f"RATE#{sub_id}", "sk": "#RATE"}),
                UpdateExpression="SET tat = :next, expires_at = :exp",
                ConditionExpression="attribute_not_exists(tat) OR tat <= :now",
                ExpressionAttributeValues=_values(now=now, next=now + interval, exp=int(now) + 86_400),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            old = cast(dict[str, Any] | None, exc.response.get("Item"))  # with ReturnValuesOnConditionCheckFailure
            tat = float(_from_item(old)["tat"]) if old and "tat" in old else None
            if tat is None:
                item = self._get(f"RATE#{sub_id}", "#RATE")
                tat = float(item["tat"]) if item and "tat" in item else now + interval
            return max(tat - now, 0.001)
        return 0.0

    # --- the subscription count of a tenant ---------------------------------------------------------

    def _count_subscriptions(self, tenant_id: str, delta: int, *, below: int | None = None) -> dict[str, Any]:
        """An Update of the tenant's ``subscription_count`` by ``delta``, for a transaction: the tenant must
        exist, and with ``below`` the count must be under it before the update."""
        condition = "attribute_exists(pk)"
        values: dict[str, Any] = {"delta": delta}
        if below is not None:
            condition += " AND (attribute_not_exists(subscription_count) OR subscription_count < :below)"
            values["below"] = below
        return {
            "Update": {
                "Key": _to_item({"pk": f"TENANT#{tenant_id}", "sk": "#TENANT"}),
                "UpdateExpression": "ADD subscription_count :delta",
                "ConditionExpression": condition,
                "ExpressionAttributeValues": _values(**values),
            }
        }

    def subscription_count(self, tenant_id: str) -> int:
        """How many subscriptions the tenant has (kept by create, delete and import)."""
        item = self._get(f"TENANT#{tenant_id}", "#TENANT")
        return int(item.get("subscription_count", 0)) if item else 0

    def _transact_retrying(self, actions: list[dict[str, Any]], *, attempts: int = 4) -> None:
        """``_transact``, tried again when DynamoDB cancelled it for a conflict with a concurrent transaction
        on the same item (two subscriptions of one tenant created at once both update the tenant's count)."""
        for attempt in range(attempts):
            try:
                self._transact(actions)
                return
            except ServiceUnavailableError as exc:
                cause = exc.__cause__
                reasons = cause.response.get("CancellationReasons", []) if isinstance(cause, ClientError) else []
                if attempt == attempts - 1 or not any(r.get("Code") == "TransactionConflict" for r in reasons):
                    raise
                time.sleep(0.02 * 2**attempt)

    def create_unlisted_tenant(self, tenant: Tenant) -> None:
        """Store a tenant record that no tenant listing or broadcast sees (no ``gsi1`` entry), unless it
        exists: the operator's reserved tenant, which holds the operator's own webhook endpoints."""
        item = {"pk": f"TENANT#{tenant.id}", "sk": "#TENANT", **_record(tenant)}
        with contextlib.suppress(ClientError):  # there already
            self._call("put_item", Item=_to_item(item), ConditionExpression="attribute_not_exists(pk)")
