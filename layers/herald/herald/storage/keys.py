"""Every key of Herald's one DynamoDB table, in one place: the layout, and a function per item kind.

Layout (``pk`` / ``sk``; ``gsi1`` and ``gsi2`` are sparse indexes)::

    tenant        TENANT#<tnt>        #TENANT           gsi1: TENANTS / <tnt>
    api key       APIKEY#<sha256>     #APIKEY           gsi1: TENANT#<tnt>#KEYS / <key id>
    rotation      ROTATION#<sha256>   #ROTATION         a rotation that succeeded, by its new key's hash: its queued
                                                        second revocation runs though the new key is revoked since
    subscription  TENANT#<tnt>        SUB#<sub>
    route         ROUTE#<tnt>#<type>  SUB#<sub>         one per enabled subscription and event type ("*" too)
    event         EVENT#<evt>         #EVENT            written once; its counters' starting values (all of its
                                                        direct fan-out's when ``counted_when_stored``: no mark then)
    event counts  EVENT#<evt>         #COUNTS           what the counters gained since, and ``enqueued`` (which also
                                                        marks publishing's direct fan-out as counted)
    idempotency   IDEMPOTENCY#<key>   #IDEMPOTENCY
    sub idempotency SUBKEY#<tnt>#<sha256> #SUBKEY      ``subscription_id``, ``fingerprint``: a create's Idempotency-Key
    delivery      DELIVERIES#<sub>    <dlv>             its id sorts by its event's time: the partition lists them
                                                        gsi2: SUB#<sub>#<status> / <created>#<dlv> (not once succeeded)
                                                        (from its first recorded attempt or release)
    older kind    DELIVERY#<dlv>      #DELIVERY         a delivery of an event stored before deliveries were kept
                                                        under their subscription (its id the pair's digest alone):
                                                        gsi1: SUB#<sub> / <created>#<dlv> lists it; gsi2 as above
    fan-out page  EVENT#<evt>         FANOUT#<digest>   marks a fan-out message's page as counted
    fan-out claim EVENT#<evt>         CLAIM#<digest>    ``holder``: the message working the fan-out from a position
    attempt       DELIVERY#<dlv>      ATTEMPT#<nnnnn>   its attempt number, zero-padded (one item per number)
    recovery lock DELIVERY#<dlv>      RECOVERY          ``job_id``: the job whose extra attempt of it is queued
    recovery job  RECOVERY#<rcv>      #RECOVERY         a subscription's recovery (``status``, ``listed``)
    job ticket    RECOVERY#<job>      DLV#<dlv>         ``state``: open, sent or failed; ``takes``; a job's counts
    window lock   RECOVERYWINDOW#<sub>#<digest> #LOCK   the job recovering that window, found by a repeat
    sub stats     STATS#<sub>         #STATS            counters and failure streak of a subscription
    rate slot     RATE#<sub>          #RATE             ``tat``: when the subscription's next delivery may start
    scheduled     DUE#<hour>#<shard>  <due ms>#<name>   a work message due later than SQS can delay one (15 min)
    sweep cursor  SWEEP               #CURSOR           ``until`` (epoch s): the scheduled work due before it is queued
    portal grant  PORTAL#<sha256>     #PORTAL           gsi1: TENANT#<tnt>#PORTAL / <kind>#<sha256>; a portal link's
                                                        token (single use) or a portal session, by its SHA-256

Items that expire carry ``expires_at`` (epoch seconds, the table's TTL attribute). TTL deletion is
lazy, so expired items are also filtered out on every read.

Each function returns the plain ``{"pk": ..., "sk": ...}`` of one item (``table.key`` serializes it);
index attributes are built here too, so no other module spells a key.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Attributes that are the storage's own, never part of a record.
STORAGE_ATTRIBUTES = frozenset(
    {
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
        # When a worker last held a delivery back without an attempt, its message carried on by a copy, and until when.
        "held_at",
        "held_until",
        # A delivery's first attempt, kept inside its item (``storage.deliveries``): read as an attempt.
        "first_attempt",
        # A new delivery whose first attempt its stats count from the table's stream (``storage.deliveries``).
        "stats_from_stream",
        # When a tenant's portal access was last revoked, and when its deletion began (``storage.tenants``).
        "portal_revoked_at",
        "deleting_at",
        "deletion_tokens",
    }
)
#: The tenant listing's partition in gsi1.
TENANTS_PARTITION = "TENANTS"

type Key = dict[str, str]


def tenant(tenant_id: str) -> Key:
    return {"pk": f"TENANT#{tenant_id}", "sk": "#TENANT"}


def api_key(key_hash: str) -> Key:
    return {"pk": f"APIKEY#{key_hash}", "sk": "#APIKEY"}


def tenant_keys_partition(tenant_id: str) -> str:
    """gsi1 partition listing a tenant's API keys."""
    return f"TENANT#{tenant_id}#KEYS"


def tenant_partition(tenant_id: str) -> str:
    """The partition holding a tenant's record and its subscriptions (``SUB#`` sort keys)."""
    return f"TENANT#{tenant_id}"


SUBSCRIPTION_PREFIX = "SUB#"


def subscription(tenant_id: str, sub_id: str) -> Key:
    return {"pk": tenant_partition(tenant_id), "sk": f"{SUBSCRIPTION_PREFIX}{sub_id}"}


def route_partition(tenant_id: str, event_type: str) -> str:
    """The partition listing the subscriptions routed for an event type (or ``*``) of a tenant."""
    return f"ROUTE#{tenant_id}#{event_type}"


def route(tenant_id: str, event_type: str, sub_id: str) -> Key:
    return {"pk": route_partition(tenant_id, event_type), "sk": f"{SUBSCRIPTION_PREFIX}{sub_id}"}


def event_partition(event_id: str) -> str:
    return f"EVENT#{event_id}"


EVENT_SORT = "#EVENT"


def event(event_id: str) -> Key:
    return {"pk": event_partition(event_id), "sk": EVENT_SORT}


def event_counts(event_id: str) -> Key:
    return {"pk": event_partition(event_id), "sk": "#COUNTS"}


#: The sort keys of an event's record and counts start with this (and no other item of its partition's).
EVENT_ITEMS_PREFIX = "#"


def _short_digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:12]).decode()


#: The sort keys of an event's fan-out page markers start with this.
FANOUT_PAGE_PREFIX = "FANOUT#"


def fanout_page(event_id: str, marker: str) -> Key:
    return {"pk": event_partition(event_id), "sk": f"{FANOUT_PAGE_PREFIX}{_short_digest(marker)}"}


def fanout_claim(event_id: str, position: str) -> Key:
    return {"pk": event_partition(event_id), "sk": f"CLAIM#{_short_digest(position)}"}


def idempotency(idempotency_key: str) -> Key:
    return {"pk": f"IDEMPOTENCY#{idempotency_key}", "sk": "#IDEMPOTENCY"}


def subscription_idempotency(tenant_id: str, idempotency_key: str) -> Key:
    """A tenant's ``Idempotency-Key`` of a subscription's creation, by its SHA-256 (any key, any length, one size)."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return {"pk": f"SUBKEY#{tenant_id}#{digest}", "sk": "#SUBKEY"}


def tenant_idempotency(idempotency_key: str) -> Key:
    """The operator's ``Idempotency-Key`` of a tenant's creation, by its SHA-256 (any key, any length, one size)."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return {"pk": f"TENANTKEY#{digest}", "sk": "#TENANTKEY"}


def delivery_partition(delivery_id: str) -> str:
    """The partition of a delivery's attempts and recovery lock (and of a delivery item of the older kind)."""
    return f"DELIVERY#{delivery_id}"


DELIVERIES_PREFIX = "DELIVERIES#"


def deliveries_partition(sub_id: str) -> str:
    """The partition holding a subscription's deliveries, sorted by their ids (their events' time)."""
    return f"{DELIVERIES_PREFIX}{sub_id}"


def delivery(sub_id: str, delivery_id: str) -> Key:
    return {"pk": deliveries_partition(sub_id), "sk": delivery_id}


#: The sort key of a delivery item of the older kind.
DELIVERY_SORT = "#DELIVERY"


def digest_delivery(delivery_id: str) -> Key:
    """A delivery item of the older kind: in a partition of its own, listed by gsi1."""
    return {"pk": delivery_partition(delivery_id), "sk": DELIVERY_SORT}


def is_delivery(item_key: Mapping[str, Any]) -> bool:
    """Whether an item (by its ``pk`` and ``sk``) is a delivery, of either kind."""
    return item_key["sk"] == DELIVERY_SORT or str(item_key["pk"]).startswith(DELIVERIES_PREFIX)


ATTEMPT_PREFIX = "ATTEMPT#"


def attempt(delivery_id: str, number: int) -> Key:
    return {"pk": delivery_partition(delivery_id), "sk": f"{ATTEMPT_PREFIX}{number:05d}"}


def delivery_index(
    sub_id: str, created_at: str, delivery_id: str, status: str | None, *, listed: bool
) -> dict[str, str]:
    """A delivery's index entries: gsi2 lists a subscription's deliveries in ``status`` (None: no entry, for
    succeeded deliveries), and, with ``listed`` (a delivery of the older kind), gsi1 lists all of them. Both
    sort by creation time, newest last."""
    sort = f"{created_at}#{delivery_id}"
    entries = {"gsi1pk": digest_deliveries_listing(sub_id), "gsi1sk": sort} if listed else {}
    if status is not None:
        entries |= {"gsi2pk": delivery_status_partition(sub_id, status), "gsi2sk": sort}
    return entries


def digest_deliveries_listing(sub_id: str) -> str:
    """gsi1 partition listing a subscription's deliveries of the older kind."""
    return f"SUB#{sub_id}"


def delivery_status_partition(sub_id: str, status: str) -> str:
    """gsi2 partition listing a subscription's deliveries in one status."""
    return f"SUB#{sub_id}#{status}"


def recovery_lock(delivery_id: str) -> Key:
    return {"pk": delivery_partition(delivery_id), "sk": "RECOVERY"}


def recovery_job(job_id: str) -> Key:
    return {"pk": f"RECOVERY#{job_id}", "sk": "#RECOVERY"}


TICKET_PREFIX = "DLV#"


def job_ticket(job_id: str, delivery_id: str) -> Key:
    return {"pk": f"RECOVERY#{job_id}", "sk": f"{TICKET_PREFIX}{delivery_id}"}


def job_tickets_partition(job_id: str) -> str:
    return f"RECOVERY#{job_id}"


def recovery_window(window: str) -> Key:
    return {"pk": f"RECOVERYWINDOW#{window}", "sk": "#LOCK"}


def recovery_slots_partition(subscription_id: str) -> str:
    return f"RECOVERYSLOTS#{subscription_id}"


RECOVERY_SLOT_PREFIX = "SLOT#"


def recovery_slot(subscription_id: str, number: int) -> Key:
    return {"pk": recovery_slots_partition(subscription_id), "sk": f"{RECOVERY_SLOT_PREFIX}{number:03d}"}


STATS_PREFIX = "STATS#"
STATS_SORT = "#STATS"


def subscription_stats(sub_id: str) -> Key:
    return {"pk": f"{STATS_PREFIX}{sub_id}", "sk": STATS_SORT}


def rate_slot(sub_id: str) -> Key:
    return {"pk": f"RATE#{sub_id}", "sk": "#RATE"}


def due_partition(hour: int, shard: int) -> str:
    """The partition of the scheduled work due in one hour (epoch hours), one of several shards."""
    return f"DUE#{hour}#{shard}"


def due(hour: int, shard: int, due_ms: int, name: str) -> Key:
    """A scheduled work message, sorted by when it is due (epoch milliseconds, zero-padded)."""
    return {"pk": due_partition(hour, shard), "sk": f"{due_ms:013d}#{name}"}


def sweep_cursor() -> Key:
    """Until when the scheduled work has been moved to the queue."""
    return {"pk": "SWEEP", "sk": "#CURSOR"}


def rotation(key_hash: str) -> Key:
    """A key rotation that succeeded, by the SHA-256 of its new key."""
    return {"pk": f"ROTATION#{key_hash}", "sk": "#ROTATION"}


def portal_grant(grant_hash: str) -> Key:
    """A portal link token or session, found by the SHA-256 of the secret the browser holds."""
    return {"pk": f"PORTAL#{grant_hash}", "sk": "#PORTAL"}


def tenant_portal_partition(tenant_id: str) -> str:
    """gsi1 partition listing a tenant's portal links and sessions (to revoke them all)."""
    return f"TENANT#{tenant_id}#PORTAL"
