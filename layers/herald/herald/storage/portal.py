"""Portal links and sessions: stored by the SHA-256 of their secret, expiring, revocable per tenant.

A link's token is redeemed, and a session ended, by marking its item taken (a conditional update that returns
it), then deleting it: of two browsers presenting the same token, exactly one gets it, an expired token is never
redeemed, and a marked item is never found again, deleted or not."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from herald.errors import ConflictError, ServiceUnavailableError
from herald.records import PortalGrant
from herald.storage import keys
from herald.storage.table import Table, from_item, record, refused_item, strip, to_item


def _grant(item: dict[str, Any]) -> PortalGrant:
    """The record of an item: its expiry is the item's TTL attribute (epoch seconds)."""
    return PortalGrant.model_validate({**strip(item), "expires_at": datetime.fromtimestamp(item["expires_at"], UTC)})


class PortalRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def put(self, grant_hash: str, grant: PortalGrant) -> None:
        """Store a link token or a session (``grant.kind``) until ``grant.expires_at``."""
        index = {
            "gsi1pk": keys.tenant_portal_partition(grant.tenant_id),
            "gsi1sk": f"{grant.kind}#{grant_hash}",
        }
        item = {
            **keys.portal_grant(grant_hash),
            **index,
            **record(grant),
            "expires_at": int(grant.expires_at.timestamp()),
        }
        if not self._table.put_new(to_item(item)):
            raise ConflictError(f"a portal {grant.kind} with this hash exists")  # a SHA-256 collision: never

    def get(self, grant_hash: str) -> PortalGrant | None:
        """The unexpired grant with this hash, unless taken (strongly consistent: a revoked or ended session stops
        at once)."""
        item = self._table.read(keys.portal_grant(grant_hash))
        return _grant(item) if item and "taken_by" not in item else None

    def take(self, grant_hash: str, kind: str) -> PortalGrant | None:
        """Take the unexpired grant of ``kind`` with this hash, once: a single-use token's redemption, a session's
        end. The mark is the taking: the item is marked taken with a token of this call's own (a mark refused by
        that token is this call's, sent again by botocore after its answer was lost; a conditional delete would
        refuse its own resend, and the link would be spent with no session made), and a marked item is never
        found again (``get``). Its delete is tidying only: one that fails leaves it to TTL. A mark that failed (no
        answer after botocore's last retry) is read back: found with this call's token, it was made."""
        token = uuid.uuid4().hex
        key = to_item(keys.portal_grant(grant_hash))
        try:
            response = self._table.call(
                "update_item",
                Key=key,
                UpdateExpression="SET taken_by = :token",
                ConditionExpression=(
                    "attribute_exists(pk) AND #kind = :kind AND expires_at > :now AND attribute_not_exists(taken_by)"
                ),
                ExpressionAttributeNames={"#kind": "kind"},
                ExpressionAttributeValues=to_item({":kind": kind, ":now": self._table.now(), ":token": token}),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            taken = from_item(response["Attributes"])
        except ClientError as exc:
            found = refused_item(exc)
            if found.get("taken_by") != token:
                return None  # taken by another call, expired, of another kind, or never there
            taken = found
        except ServiceUnavailableError as failure:
            try:
                # Read as it is, expired or not: a mark made in the grant's last moment is this call's all the same.
                found = self._table.read(keys.portal_grant(grant_hash), live=False) or {}
            except ServiceUnavailableError:
                raise failure from None  # the mark's own failure, not the read's
            if found.get("taken_by") != token:
                raise
            taken = found
        with contextlib.suppress(ClientError, ServiceUnavailableError):  # gone already, or left to TTL
            self._table.call(
                "delete_item",
                Key=key,
                ConditionExpression="taken_by = :token",
                ExpressionAttributeValues=to_item({":token": token}),
            )
        taken.pop("taken_by")
        return _grant(taken)

    def revoke_all(self, tenant_id: str) -> int:
        """Delete every link and session of a tenant; how many there were that still worked (a used link or an
        ended session whose delete failed is deleted too, not counted)."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            items, cursor = self._table.query(
                key={"gsi1pk": keys.tenant_portal_partition(tenant_id)}, index="gsi1", limit=100, cursor=cursor
            )
            found += items
            if cursor is None:
                break
        for item in found:
            self._table.call("delete_item", Key=to_item({"pk": item["pk"], "sk": item["sk"]}))
        return sum(1 for item in found if "taken_by" not in item)
