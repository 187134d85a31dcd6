"""Portal links and sessions: stored by the SHA-256 of their secret, expiring, revocable per tenant.

A link's token is redeemed by deleting its item (a conditional delete that returns it): of two browsers
presenting the same token, exactly one gets it, and an expired token is never redeemed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from herald.records import PortalGrant
from herald.storage import keys
from herald.storage.table import Table, conditional_failure, from_item, record, strip, to_item


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
        self._table.call("put_item", Item=to_item(item), ConditionExpression="attribute_not_exists(pk)")

    def get(self, grant_hash: str) -> PortalGrant | None:
        """The unexpired grant with this hash (strongly consistent: a revoked session stops at once)."""
        item = self._table.read(keys.portal_grant(grant_hash))
        return _grant(item) if item else None

    def take(self, grant_hash: str, kind: str) -> PortalGrant | None:
        """Delete and return the unexpired grant of ``kind`` with this hash: a single-use token's redemption."""
        try:
            response = self._table.call(
                "delete_item",
                Key=to_item(keys.portal_grant(grant_hash)),
                ConditionExpression="attribute_exists(pk) AND #kind = :kind AND expires_at > :now",
                ExpressionAttributeNames={"#kind": "kind"},
                ExpressionAttributeValues=to_item({":kind": kind, ":now": self._table.now()}),
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if conditional_failure(exc):
                return None
            raise
        return _grant(from_item(response["Attributes"]))

    def revoke_all(self, tenant_id: str) -> int:
        """Delete every link and session of a tenant; how many there were."""
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
        return len(found)
