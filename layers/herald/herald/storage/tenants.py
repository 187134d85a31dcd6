"""Tenants and their API keys (stored as the SHA-256 of the key, never the key)."""

from __future__ import annotations

import contextlib
import itertools
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from herald import ids
from herald.errors import ConflictError, InvalidCursorError, NotFoundError
from herald.records import ApiKey, Tenant
from herald.storage import keys
from herald.storage.table import (
    LISTING_PAGE_BYTES,
    CreationKey,
    PageResult,
    cancellation_codes,
    creation_put,
    cursor_fields,
    encode_cursor,
    raise_if_key_taken,
    read_creation,
    record,
    refused_item,
    strip,
    to_item,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from herald.storage.table import Table


#: A tenant item's attribute: when the tenant's portal access was last revoked (``revoke_portal``). A portal link
#: minted, or a session opened from a link minted, at or before it no longer works.
PORTAL_REVOKED_AT = "portal_revoked_at"
#: A tenant item's attribute: when its deletion began (``mark_deleting``, epoch seconds). No API key is added to it
#: for ``DELETING_HOLDS_SECONDS`` after: a deletion lists the keys to delete after it.
DELETING_AT = "deleting_at"
#: Beside ``DELETING_AT``: the tokens of the deletions under way (a string set), each taken out by its own.
DELETIONS = "deletion_tokens"
#: How long a deletion's mark refuses new keys: past the longest request (API Gateway's 29 s). A deletion that fails
#: (a 503, the tenant still there) takes its mark back (``unmark_deleting``); should that fail too, the tenant can
#: get keys again once this is over.
DELETING_HOLDS_SECONDS = 60


def tenant_item(tenant: Tenant, *, listed: bool = True) -> dict[str, Any]:
    """A tenant's item; ``listed`` puts it in the tenant listing (gsi1), which broadcasts page through."""
    index = {"gsi1pk": keys.TENANTS_PARTITION, "gsi1sk": tenant.id} if listed else {}
    return to_item({**keys.tenant(tenant.id), **index, **record(tenant)})


def _key_item(key: ApiKey, key_hash: str) -> dict[str, Any]:
    index = {"gsi1pk": keys.tenant_keys_partition(key.tenant_id), "gsi1sk": key.id}
    return to_item({**keys.api_key(key_hash), **index, **record(key)})


def _portal_revoked_at(item: dict[str, Any]) -> datetime | None:
    revoked = item.get(PORTAL_REVOKED_AT)
    return datetime.fromisoformat(str(revoked)) if revoked else None


class TenantRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def create(self, tenant: Tenant, key: ApiKey, key_hash: str, *, creation_key: CreationKey | None = None) -> None:
        """A new tenant with its first API key, in one transaction. With ``creation_key``, in the same transaction,
        the record that the key made it: refused (``CreationKeyTaken``) if the key holds for another creation
        already."""
        new = "attribute_not_exists(pk)"
        actions: list[dict[str, Any]] = [
            {"Put": {"Item": tenant_item(tenant), "ConditionExpression": new}},
            {"Put": {"Item": _key_item(key, key_hash), "ConditionExpression": new}},
        ]
        if creation_key is not None:
            record_key = keys.tenant_idempotency(creation_key.key)
            actions.append(creation_put(record_key, creation_key, {"tenant_id": tenant.id}, self._table.now()))
        try:
            # Requests with one key at once: DynamoDB cancels all but one (a conflict); tried again, they find the
            # key's record, and answer the tenant it made.
            self._table.transact(actions, conflict_attempts=4)
        except ClientError as exc:
            raise_if_key_taken(exc, creation_key, 2)
            raise

    def creation(self, idempotency_key: str) -> tuple[str, str] | None:
        """The tenant the operator's ``Idempotency-Key`` made, and the fingerprint of the request that made it (read
        strongly); None if the key made none, or no longer holds."""
        return read_creation(self._table, keys.tenant_idempotency(idempotency_key), "tenant_id")

    def create_unlisted(self, tenant: Tenant) -> None:
        """Store a tenant record that no tenant listing or broadcast sees (no ``gsi1`` entry), unless it
        exists: the operator's reserved tenant, which holds the operator's own webhook endpoints."""
        with contextlib.suppress(ClientError):  # there already
            self._table.call(
                "put_item", Item=tenant_item(tenant, listed=False), ConditionExpression="attribute_not_exists(pk)"
            )

    def get(self, tenant_id: str, *, consistent: bool = True) -> Tenant | None:
        """The tenant, None if there is none. ``consistent=False`` reads at half the price and confirms a miss
        with a strong read, so a tenant created a moment ago is found; one deleted a moment ago may still be,
        for about a second (DynamoDB's eventual consistency): for publishing, where that is the same as
        publishing a moment earlier. What creates or admits anything for a tenant reads strongly."""
        item = self._table.read(keys.tenant(tenant_id), consistent=consistent)
        if item is None and not consistent:
            item = self._table.read(keys.tenant(tenant_id))
        return Tenant.model_validate(strip(item)) if item else None

    def portal_revoked_at(self, tenant_id: str) -> datetime | Literal[False] | None:
        """When the tenant's portal access was last revoked (None: never), read strongly; False when there is no
        such tenant. The portal reads it for every link and session: one read, the check of its tenant too."""
        item = self._table.read(keys.tenant(tenant_id))
        return False if item is None else _portal_revoked_at(item)

    def with_portal_revoked_at(self, tenant_id: str) -> tuple[Tenant, datetime | None] | None:
        """The tenant and when its portal access was last revoked (``portal_revoked_at``), in one strong read; None
        if there is no such tenant."""
        item = self._table.read(keys.tenant(tenant_id))
        return None if item is None else (Tenant.model_validate(strip(item)), _portal_revoked_at(item))

    def revoke_portal(self, tenant_id: str, at: datetime) -> None:
        """Mark every portal link and session of the tenant minted or opened from a link minted at or before ``at``
        as no longer working, whether or not the index that lists them (``PortalRepository.revoke_all``) shows
        them yet. ``NotFoundError`` if there is no such tenant. The mark only ever moves forward: of two revocations
        at once, the earlier one's write landing last does not bring back what the later one revoked."""
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.tenant(tenant_id)),
                UpdateExpression="SET #revoked = :at",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(#revoked) OR #revoked < :at)",
                ExpressionAttributeNames={"#revoked": PORTAL_REVOKED_AT},
                ExpressionAttributeValues=to_item({":at": at.isoformat()}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not refused_item(exc):
                raise NotFoundError(f"tenant {tenant_id} not found") from exc
            # A later revocation's mark is there already: it revokes all this one would.

    def mark_deleting(self, tenant_id: str, now: float) -> str:
        """Note that the tenant's deletion begins at ``now`` (epoch seconds): ``add_key`` refuses its new keys for
        ``DELETING_HOLDS_SECONDS``. The deletion's own token, for ``unmark_deleting``: deletions at once each have
        theirs, and the mark stays while any of them is under way. ``NotFoundError`` if there is no such tenant."""
        token = secrets.token_hex(8)
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.tenant(tenant_id)),
                UpdateExpression="SET #deleting = :now ADD #deletions :token",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#deleting": DELETING_AT, "#deletions": DELETIONS},
                ExpressionAttributeValues=to_item({":now": int(now), ":token": {token}}),
            )
        except ClientError as exc:
            raise NotFoundError(f"tenant {tenant_id} not found") from exc
        return token

    def unmark_deleting(self, tenant_id: str, token: str) -> None:
        """Take back the deletion ``token`` names (``mark_deleting``): it failed, and the tenant stays. The mark goes
        once no other deletion is under way (DynamoDB removes a set left empty), in a second write that checks it;
        a tenant gone is left as it is."""
        with contextlib.suppress(ClientError):
            self._table.call(
                "update_item",
                Key=to_item(keys.tenant(tenant_id)),
                UpdateExpression="DELETE #deletions :token",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#deletions": DELETIONS},
                ExpressionAttributeValues=to_item({":token": {token}}),
            )
            self._table.call(
                "update_item",
                Key=to_item(keys.tenant(tenant_id)),
                UpdateExpression="REMOVE #deleting",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#deletions)",
                ExpressionAttributeNames={"#deleting": DELETING_AT, "#deletions": DELETIONS},
            )

    def list(self, *, limit: int, cursor: str | None) -> PageResult[Tenant]:
        items, next_cursor = self._table.query(
            key={"gsi1pk": keys.TENANTS_PARTITION},
            index="gsi1",
            limit=limit,
            cursor=cursor,
            max_bytes=LISTING_PAGE_BYTES,
        )
        return PageResult([Tenant.model_validate(strip(item)) for item in items], next_cursor)

    def delete_keys(self, tenant_id: str, *, older_than: str | None = None) -> None:
        """Delete every API key of the tenant (it is locked out), or every one issued before the key
        ``older_than`` (ids are time-ordered): each by the item the index lists, unconditionally, so a key revoked
        meanwhile is simply gone (``delete_key`` looks a key up again, and would not find it). One DeleteItem a key:
        the API's role grants no BatchWriteItem.

        Only older keys, not every key but one: of two rotations at once, each deleting all but its own new key
        would delete the other's, and leave the tenant with none. Deleting only older ones, the newest key issued
        is never deleted by any of them."""
        for item in list(self._key_items(tenant_id)):  # listed whole, then deleted
            if older_than is None or str(item["id"]) < older_than:
                self._table.call("delete_item", Key=to_item({"pk": item["pk"], "sk": item["sk"]}))

    def delete(self, tenant_id: str) -> None:
        """Delete the tenant's item: the last step of deleting a tenant (``herald.domain.tenants.delete``, which
        found it first). Unconditional: an item gone already was deleted by this call (botocore sent it again
        after its answer was lost) or by a concurrent one, the same end."""
        self._table.call("delete_item", Key=to_item(keys.tenant(tenant_id)))

    def add_key(self, key: ApiKey, key_hash: str, *, now: float) -> None:
        """Store a new API key of an existing tenant, in one transaction with a check that its tenant is there and
        not being deleted (``mark_deleting`` at ``now`` or in the ``DELETING_HOLDS_SECONDS`` before): a deletion marks
        the tenant, then lists its keys to delete them, then deletes its item, so a key written after its mark is
        refused (``NotFoundError``), and one written before it is one the listing finds (or, missed by the index's
        lag, the purge deletes)."""
        tenant = {
            "Key": to_item(keys.tenant(key.tenant_id)),
            "ConditionExpression": "attribute_exists(pk) AND (attribute_not_exists(#deleting) OR #deleting < :since)",
            "ExpressionAttributeNames": {"#deleting": DELETING_AT},
            "ExpressionAttributeValues": to_item({":since": int(now) - DELETING_HOLDS_SECONDS}),
        }
        new = {"Item": _key_item(key, key_hash), "ConditionExpression": "attribute_not_exists(pk)"}
        try:
            self._table.transact([{"ConditionCheck": tenant}, {"Put": new}])
        except ClientError as exc:
            if cancellation_codes(exc)[:1] == ["ConditionalCheckFailed"]:
                raise NotFoundError(f"tenant {key.tenant_id} not found, or being deleted") from exc
            raise ConflictError(f"an API key with the hash of {key.id} exists") from exc  # a SHA-256 collision: never

    def _key_items(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            items, cursor = self._table.query(
                key={"gsi1pk": keys.tenant_keys_partition(tenant_id)}, index="gsi1", limit=100, cursor=cursor
            )
            yield from items
            if cursor is None:
                return

    def list_keys(self, tenant_id: str, *, limit: int, cursor: str | None) -> PageResult[ApiKey]:
        """A page of the tenant's API keys, oldest first (their records: the keys themselves are never kept).

        The ``iterator`` names the index's partition and the last key's id only: DynamoDB's own start key would hold
        the key item's table key, its hash (``APIKEY#<sha256>``), which no answer shows. A page starts at the key ids
        from that one on (a key revoked since is simply not there)."""
        partition = keys.tenant_keys_partition(tenant_id)
        after = None
        if cursor:  # an empty iterator is the first page, as on every other listing
            raw = cursor_fields(cursor)
            if (
                not isinstance(raw, dict)
                or set(raw) != {"gsi1pk", "gsi1sk"}
                or raw["gsi1pk"] != partition
                or not isinstance(raw["gsi1sk"], str)
                or not ids.is_id(raw["gsi1sk"], ids.API_KEY)
            ):
                raise InvalidCursorError("the iterator is not one this listing issued")
            after = raw["gsi1sk"]
        # One more than the page (and the page before's last key): more follow if it comes.
        wanted = limit + 1 + (after is not None)
        items, cut = self._table.query(
            key={"gsi1pk": partition},
            index="gsi1",
            between=(after or f"{ids.API_KEY}_", f"{ids.API_KEY}_~"),
            limit=wanted,
            cursor=None,
            max_bytes=LISTING_PAGE_BYTES,
        )
        # Fewer than asked for with a cursor: the page was cut for its size, and more follow.
        more = cut is not None and len(items) < wanted
        if after is not None and items and items[0].get("id") == after:
            items = items[1:]  # the last key of the page before
        if len(items) > limit:
            items, more = items[:limit], True
        last = {"gsi1pk": partition, "gsi1sk": str(items[-1]["id"])} if more and items else None
        next_cursor = encode_cursor(to_item(last)) if last is not None else None
        return PageResult([ApiKey.model_validate(strip(item)) for item in items], next_cursor)

    def count_keys(self, tenant_id: str, *, up_to: int) -> int:
        """How many API keys the tenant holds, counted up to ``up_to`` (no further: a cap's check needs no more)."""
        return sum(1 for _ in itertools.islice(self._key_items(tenant_id), up_to))

    def delete_key_with_hash(self, key_hash: str) -> None:
        """Delete the key with this hash, by its own item (a key just written may not be listed by the index yet)."""
        self._table.call("delete_item", Key=to_item(keys.api_key(key_hash)))

    def delete_key(self, tenant_id: str, key_id: str) -> None:
        for item in self._key_items(tenant_id):
            if item["id"] == key_id:
                self._table.call("delete_item", Key=to_item({"pk": item["pk"], "sk": item["sk"]}))
                return
        raise NotFoundError(f"API key {key_id} not found")

    def confirm_rotation(self, key_hash: str, *, expires_at: int) -> None:
        """Note that the rotation whose new key has this hash succeeded (its second revocation queued), until
        ``expires_at``: that revocation then runs though the new key is revoked before it (``rotation_confirmed``)."""
        self._table.call("put_item", Item=to_item({**keys.rotation(key_hash), "expires_at": expires_at}))

    def forget_rotation(self, key_hash: str) -> None:
        """Remove the note of the rotation whose new key has this hash (``confirm_rotation``), if it is there: a
        rotation answered 503 after its note's write failed, which may have been made all the same."""
        self._table.call("delete_item", Key=to_item(keys.rotation(key_hash)))

    def rotation_confirmed(self, key_hash: str) -> bool:
        """Whether the rotation whose new key has this hash succeeded (``confirm_rotation``), as a strong read."""
        return self._table.read(keys.rotation(key_hash)) is not None

    def get_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (strongly consistent: a revoked key stops working at once)."""
        item = self._table.read(keys.api_key(key_hash))
        return ApiKey.model_validate(strip(item)) if item else None
