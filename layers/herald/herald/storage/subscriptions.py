"""Subscriptions, their routing items (what fan-out reads) and the subscription count of their tenant.

A subscription is one item under its tenant's partition; each enabled subscription also has one routing
item per event type it takes (``*`` included), written in the same transaction, so fan-out finds the
subscriptions of an event type with one Query and never reads a disabled one. A routing item carries the
subscription's id and its payload filter (canonical JSON, at most 4 KiB), so fan-out evaluates the filter with
no extra read; it is rewritten whenever the filter changes. A tenant's
``subscription_count`` is kept by the same transactions that create and delete its subscriptions
(``max_subscriptions_per_tenant`` is checked against it).
"""

from __future__ import annotations

import builtins
import contextlib
from collections import Counter
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from herald.errors import ConflictError, NotFoundError, ServiceUnavailableError
from herald.limits import LimitExceededError, too_many_subscriptions
from herald.records import Isolation, Subscription
from herald.storage import keys
from herald.storage.isolation import LAST_WRITE
from herald.storage.table import (
    LISTING_PAGE_BYTES,
    MAX_TRANSACTION_ACTIONS,
    CreationKey,
    PageResult,
    creation_put,
    raise_if_key_taken,
    read_creation,
    record,
    strip,
    to_item,
    values,
    write_conflicted,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from herald.storage.table import Table


class Route(NamedTuple):
    """One routing item as fan-out reads it: the subscription and its filter's stored JSON (None: no filter)."""

    subscription_id: str
    filter: str | None = None


def _item(sub: Subscription) -> dict[str, Any]:
    """The subscription's item as first written: its record, and what the worker learned of its endpoint
    (``Isolation``, set only where it is not the default). Later changes of the record are ``_rewrite``'s."""
    learned = {name: value for name, value in sub.isolation.model_dump().items() if value}
    return to_item({**keys.subscription(sub.tenant_id, sub.id), **record(sub), **learned})


def subscription_of(item: dict[str, Any]) -> Subscription:
    """A subscription item, as read, with its isolation state."""
    fields = strip(item)
    sub = Subscription.model_validate(fields)
    sub.isolation = Isolation.model_validate({name: fields[name] for name in Isolation.ATTRIBUTES if name in fields})
    return sub


#: A subscription item's attribute: the operator's notice that Herald disabled it (a ``NoticeMessage`` as JSON),
#: written by the disabling write itself. The worker publishes it at once; the table's stream publishes it too
#: (``herald.worker.streamed``, the same event id: once), then removes it, so that a worker that dies between the
#: two loses no notice. Any later rewrite of the record removes it as well.
DISABLED_NOTICE = "disabled_notice"
#: What the worker writes on a subscription's item beside its record (``herald.storage.isolation``): the
#: ``Isolation`` fields and the tokens of its writes.
_LEARNED = (*Isolation.ATTRIBUTES, "probe_by", LAST_WRITE)


def _rewrite(old: Subscription, new: Subscription, notice: str | None = None) -> dict[str, Any]:
    """The transaction's Update that writes ``new``'s record over ``old``'s, if the item is still at ``old``'s version.
    The record's attributes only: the worker's writes (``_LEARNED``) do not bump the version, so one made since
    ``old`` was read (a slow-lane mark, a timeout counted, a breaker opened) is kept, not overwritten by what
    ``old`` held. All of them are cleared when the URL changes (nothing is known of the new endpoint yet) and when
    the subscription is enabled again (someone saw to its endpoint: it starts afresh, as its failing window does;
    an open breaker would hold its deliveries for up to an hour more). ``notice`` is written as ``DISABLED_NOTICE``;
    without one, a notice left there is removed (its stream record holds it already)."""
    fields = to_item(record(new))
    cleared = set(to_item(record(old))) - set(fields)  # set before, None now
    if new.url != old.url or (new.enabled and not old.enabled):
        cleared |= set(_LEARNED)
    if notice is None:
        cleared.add(DISABLED_NOTICE)
    else:
        fields[DISABLED_NOTICE] = to_item({DISABLED_NOTICE: notice})[DISABLED_NOTICE]
    names = {f"#a{i}": name for i, name in enumerate([*fields, *sorted(cleared)])}
    placeholder = {name: key for key, name in names.items()}
    expression = "SET " + ", ".join(f"{placeholder[name]} = :a{i}" for i, name in enumerate(fields))
    if cleared:
        expression += " REMOVE " + ", ".join(placeholder[name] for name in sorted(cleared))
    return {
        "Update": {
            "Key": to_item(keys.subscription(old.tenant_id, old.id)),
            "UpdateExpression": expression,
            "ConditionExpression": f"{placeholder['version']} = :v",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {
                **{f":a{i}": value for i, value in enumerate(fields.values())},
                **values(v=old.version),
            },
        }
    }


def _routes(sub: Subscription) -> set[str]:
    return set(sub.event_types) if sub.enabled else set()


def _route_item(sub: Subscription, event_type: str) -> dict[str, Any]:
    return to_item({**keys.route(sub.tenant_id, event_type, sub.id), "subscription_id": sub.id, "filter": sub.filter})


def _count(tenant_id: str, delta: int, *, below: int | None = None) -> dict[str, Any]:
    """An Update of the tenant's ``subscription_count`` by ``delta``, for a transaction: the tenant must
    exist, and with ``below`` the count must be under it before the update."""
    condition = "attribute_exists(pk)"
    placeholders: dict[str, Any] = {"delta": delta}
    if below is not None:
        condition += " AND (attribute_not_exists(subscription_count) OR subscription_count < :below)"
        placeholders["below"] = below
    return {
        "Update": {
            "Key": to_item(keys.tenant(tenant_id)),
            "UpdateExpression": "ADD subscription_count :delta",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values(**placeholders),
        }
    }


#: Routing changes one replace may make: the subscription's own write leaves room for this many.
MAX_ROUTE_CHANGES = MAX_TRANSACTION_ACTIONS - 1


class SubscriptionRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def create(
        self, sub: Subscription, *, max_subscriptions: int | None = None, creation_key: CreationKey | None = None
    ) -> None:
        """Store a new subscription and count it on its tenant, refusing it (LimitExceededError) if the
        tenant already has ``max_subscriptions``, or (NotFoundError) if the tenant is gone. With ``creation_key``,
        in the same transaction, the record that the key made it: refused (``CreationKeyTaken``) if the key holds
        for another creation already."""
        actions: list[dict[str, Any]] = [
            {"Put": {"Item": _item(sub), "ConditionExpression": "attribute_not_exists(pk)"}},
            _count(sub.tenant_id, 1, below=max_subscriptions),
        ]
        if creation_key is not None:
            record_key = keys.subscription_idempotency(sub.tenant_id, creation_key.key)
            actions.append(creation_put(record_key, creation_key, {"subscription_id": sub.id}, self._table.now()))
        actions += [{"Put": {"Item": _route_item(sub, event_type)}} for event_type in sorted(_routes(sub))]
        try:
            self._table.transact(actions, conflict_attempts=4)
        except ClientError as exc:
            raise_if_key_taken(exc, creation_key, 2)
            if self._table.read(keys.tenant(sub.tenant_id)) is None:
                raise NotFoundError(f"tenant {sub.tenant_id} not found") from exc
            if max_subscriptions is not None and self.count(sub.tenant_id) >= max_subscriptions:
                raise too_many_subscriptions(max_subscriptions) from exc
            raise ConflictError(f"subscription {sub.id} already exists") from exc

    def creation(self, tenant_id: str, idempotency_key: str) -> tuple[str, str] | None:
        """The subscription the tenant's ``Idempotency-Key`` made, and the fingerprint of the request that made it
        (read strongly); None if the key made none, or no longer holds."""
        return read_creation(self._table, keys.subscription_idempotency(tenant_id, idempotency_key), "subscription_id")

    def import_many(self, subs: Sequence[Subscription]) -> None:
        """Write many new subscriptions with their routing items by BatchWriteItem (bulk imports, load
        tests). Unlike ``create`` it does not check that the ids are new."""
        items: list[dict[str, Any]] = []
        for sub in subs:
            items += [_item(sub), *(_route_item(sub, event_type) for event_type in sorted(_routes(sub)))]
        self._table.batch_write([{"PutRequest": {"Item": item}} for item in items])
        for tenant_id, count in Counter(sub.tenant_id for sub in subs).items():
            # A transaction of one, for its idempotency token: an ADD that botocore sent again after its answer
            # was lost would count the subscriptions twice.
            with contextlib.suppress(ClientError):  # no such tenant: nothing to count
                self._table.transact([_count(tenant_id, count)])

    def get(self, tenant_id: str, sub_id: str) -> Subscription | None:
        item = self._table.read(keys.subscription(tenant_id, sub_id))
        return subscription_of(item) if item else None

    def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> PageResult[Subscription]:
        items, next_cursor = self._table.query(
            key={"pk": keys.tenant_partition(tenant_id)},
            prefix=keys.SUBSCRIPTION_PREFIX,
            limit=limit,
            cursor=cursor,
            max_bytes=LISTING_PAGE_BYTES,
        )
        return PageResult([subscription_of(item) for item in items], next_cursor)

    def replace(self, old: Subscription, new: Subscription, *, notice: str | None = None) -> None:
        """Write ``new`` over ``old`` (optimistic: ConflictError if it changed meanwhile), moving its routing
        items in the same transaction, and rewriting the routes it keeps when its filter changed (each carries
        the filter). A change of more than ``MAX_ROUTE_CHANGES`` routes at once (possible only above DynamoDB's
        transaction size, e.g. 50 event types swapped for 50 others) is refused with a LimitExceededError: it
        could not be written atomically. ``notice``: the operator's notice of the change, kept on the item until
        the table's stream has published it (``DISABLED_NOTICE``)."""
        before, after = _routes(old), _routes(new)
        removed, added = sorted(before - after), sorted(after - before)
        if old.filter != new.filter:
            added = sorted(after)  # the kept routes carry the old filter: write them again
        changes = len(removed) + len(added)
        if changes > MAX_ROUTE_CHANGES:
            raise LimitExceededError(
                f"this change writes {changes} event type routes at once; at most "
                f"{MAX_ROUTE_CHANGES} can change in one update: change the event types in two steps",
                details=[{"loc": ["body", "event_types"], "msg": "too many changes at once", "type": "max_changes"}],
            )
        actions: list[dict[str, Any]] = [_rewrite(old, new, notice)]
        actions += [{"Delete": {"Key": to_item(keys.route(old.tenant_id, t, old.id))}} for t in removed]
        actions += [{"Put": {"Item": _route_item(new, t)}} for t in added]
        try:
            self._table.transact(actions)
        except ClientError as exc:
            raise ConflictError("the subscription changed meanwhile; read it again and retry") from exc

    def notice_published(self, tenant_id: str, sub_id: str, notice: str) -> None:
        """Remove the subscription's ``DISABLED_NOTICE`` once published, if it is still ``notice`` (a rewrite since
        may have removed it, or written another)."""
        with contextlib.suppress(ClientError):
            self._table.call(
                "update_item",
                Key=to_item(keys.subscription(tenant_id, sub_id)),
                UpdateExpression="REMOVE #notice",
                ConditionExpression="#notice = :notice",
                ExpressionAttributeNames={"#notice": DISABLED_NOTICE},
                ExpressionAttributeValues=values(notice=notice),
            )

    def delete(self, sub: Subscription) -> None:
        """Delete ``sub`` with its routes, as read: only if it is still at ``sub``'s version, since its routes are the
        ones that version has (a change since, a re-enable or new event types, may have written others, which would
        be left behind, routing events to a subscription that is gone). A ``ConflictError`` otherwise (changed, or
        gone): read it again."""
        actions: list[dict[str, Any]] = [
            {
                "Delete": {
                    "Key": to_item(keys.subscription(sub.tenant_id, sub.id)),
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": values(v=sub.version),
                }
            },
            _count(sub.tenant_id, -1),
        ]
        actions += [{"Delete": {"Key": to_item(keys.route(sub.tenant_id, t, sub.id))}} for t in sorted(_routes(sub))]
        try:
            self._table.transact(actions, conflict_attempts=4)
        except ClientError as exc:
            raise ConflictError(f"subscription {sub.id} changed or was deleted meanwhile") from exc

    def routed(
        self, tenant_id: str, route: str, *, limit: int, cursor: str | None
    ) -> tuple[builtins.list[Route], str | None]:
        """One page of the subscriptions routed for ``route`` (an event type, or ``*``), each with its filter. Read
        strongly: an eventually consistent read may miss a route written a moment ago, and the event published
        right after a subscription is created would never reach it (nothing reads its routes again)."""
        items, next_cursor = self._table.query(
            key={"pk": keys.route_partition(tenant_id, route)}, limit=limit, cursor=cursor, consistent=True
        )
        return [Route(item["subscription_id"], item.get("filter")) for item in items], next_cursor

    def purge_page(self, tenant_id: str, *, limit: int = 100) -> bool:
        """Delete up to ``limit`` subscriptions of a deleted tenant with their routes; True when none remain.

        The routes go first, all of them, then the subscriptions: a purge cut short (a call DynamoDB keeps refusing,
        the invocation's end) runs again from the subscriptions it still lists, so a subscription is deleted only
        once nothing it lists is left. Routes do not expire; one left behind by its subscription would stay.

        Each subscription is deleted only at the version listed, as ``delete`` does: a change landing between the
        listing and the delete (a request under way when its tenant went) may have written routes the listing did
        not show. Such a subscription stays, with its new routes, for the next page (False), which lists it again.
        Once it is deleted, a change still under way finds no version to write over, and writes no route."""
        page = self.list(tenant_id, limit=limit, cursor=None)
        routes = [to_item(keys.route(tenant_id, t, sub.id)) for sub in page.items for t in sorted(_routes(sub))]
        self._table.batch_write([{"DeleteRequest": {"Key": key}} for key in routes])
        changed = False
        for sub in page.items:
            try:
                self._table.call(
                    "delete_item",
                    Key=to_item(keys.subscription(tenant_id, sub.id)),
                    ConditionExpression="#v = :v",
                    ExpressionAttributeNames={"#v": "version"},
                    ExpressionAttributeValues=values(v=sub.version),
                )
            except ClientError:  # changed since it was listed, or deleted meanwhile: the next page sees which
                changed = True
            except ServiceUnavailableError as exc:
                if not write_conflicted(exc):
                    raise
                changed = True  # a change's transaction under way on it (the race itself): the next page sees it
        return page.cursor is None and not changed

    def count(self, tenant_id: str) -> int:
        """How many subscriptions the tenant has (kept by create, delete and import)."""
        item = self._table.read(keys.tenant(tenant_id))
        return int(item.get("subscription_count", 0)) if item else 0
