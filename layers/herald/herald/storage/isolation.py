"""What the delivery worker learns about a subscription's endpoint (``Isolation``): the slow lane and the
circuit breaker, written on the subscription's own item.

On the subscription's item so that the read every delivery makes already carries it (no extra call), but
never through the record: these are UpdateItem calls on a few attributes of their own, conditional on the
subscription still existing, and they do not bump its ``version`` (the API's optimistic writes are not
disturbed, and an API rewrite of the record leaves them as they are: ``subscriptions._rewrite``). Every write here is
rare: on a timeout, on a slow answer, when a breaker opens, closes or lets a probe through; a healthy
endpoint's deliveries write nothing.

What an attempt says of an endpoint is written only while the subscription still sends to the URL the attempt went
to (``url``): a subscription moved to another URL starts afresh (``subscriptions._rewrite`` clears all of this), and
an attempt to the old one still under way then (a hanging endpoint's, the very reason to move) must not put the new
one on the slow lane, count towards its breaker, or close it when it answers.

The two writes that count (a timeout, a breaker's opening) leave a token of their own on the item
(``LAST_WRITE``): botocore sends a call again when its answer was lost, and the resend, refused by the token,
is known for the write it repeats instead of counting one more timeout or opening (unless another counting
write landed between the two sends: then the resend counts again). A probe's take carries
one too (``probe_by``), and a mark of the slow lane knows its own moment: a resend refused by its own first
send answers as that send did.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from herald.records import Isolation
from herald.storage import keys
from herald.storage.table import Table, from_item, refused_item, to_item, values

_EXISTS = "attribute_exists(pk)"
#: The token of the latest counting write on the subscription's item (see the module's docstring).
LAST_WRITE = "isolation_write"
_NOT_MINE = f"(attribute_not_exists({LAST_WRITE}) OR {LAST_WRITE} <> :token)"


def _at_url(request: dict[str, Any], url: str | None) -> dict[str, Any]:
    """``request`` (an UpdateItem's, with a condition) made only while the subscription still sends to ``url``; as it
    is for None (any URL)."""
    if url is None:
        return request
    return {
        **request,
        "ConditionExpression": f"({request['ConditionExpression']}) AND #url = :url",
        "ExpressionAttributeNames": {**request.get("ExpressionAttributeNames", {}), "#url": "url"},
        "ExpressionAttributeValues": {**request["ExpressionAttributeValues"], **values(url=url)},
    }


@dataclass(frozen=True)
class Reopened:
    """What ``take_probe`` found when the breaker had opened again since the caller read it (another delivery's probe
    timed out): open until ``until``."""

    until: float


#: What ``take_probe`` found: the probe taken, the breaker closed meanwhile, the delivery to be held while another
#: holds the probe (or the subscription is gone), or the breaker open again (``Reopened``: held until its end).
type Probe = Literal["taken", "closed", "held"] | Reopened


class IsolationRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def _update(self, tenant_id: str, sub_id: str, *, url: str | None = None, **request: Any) -> dict[str, Any] | None:
        """One UpdateItem on the subscription's item, while it sends to ``url`` (when given); None if its condition
        failed (deleted, moved to another URL, or moved on)."""
        try:
            response = self._table.call(
                "update_item",
                Key=to_item(keys.subscription(tenant_id, sub_id)),
                ReturnValues="ALL_NEW",
                **_at_url(request, url),
            )
        except ClientError:
            return None
        return from_item(response.get("Attributes", {}))

    def _count(
        self,
        tenant_id: str,
        sub_id: str,
        expression: str,
        condition: str,
        placeholders: dict[str, Any],
        *,
        url: str | None,
    ) -> dict[str, Any] | None:
        """A counting UpdateItem (as ``_update``) made once. ``expression`` sets ``LAST_WRITE`` to ``:token``, a
        new one: its resend (botocore's, after a lost answer) is refused by it, and answers the item as the
        first send left it."""
        token = uuid.uuid4().hex[:12]
        request = {
            "UpdateExpression": expression,
            "ConditionExpression": f"{condition} AND {_NOT_MINE}",
            "ExpressionAttributeValues": values(token=token, **placeholders),
        }
        try:
            response = self._table.call(
                "update_item",
                Key=to_item(keys.subscription(tenant_id, sub_id)),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **_at_url(request, url),
            )
        except ClientError as exc:
            found = refused_item(exc)
            return found if found.get(LAST_WRITE) == token else None
        return from_item(response.get("Attributes", {}))

    def mark_slow(self, tenant_id: str, sub_id: str, *, until: float, url: str | None = None) -> bool:
        """Send the subscription's deliveries through the slow lane until ``until`` (never shortened), while it sends
        to ``url`` (when given: the URL of the attempt slow to answer)."""
        request = {
            "UpdateExpression": "SET slow_until = :until",
            "ConditionExpression": f"{_EXISTS} AND (attribute_not_exists(slow_until) OR slow_until < :until)",
            "ExpressionAttributeValues": values(until=until),
        }
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.subscription(tenant_id, sub_id)),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **_at_url(request, url),
            )
        except ClientError as exc:
            # Marked until then already: by this call's first send (botocore sent it again after its answer was
            # lost), or by another to the same moment; else until later, or the subscription is gone or moved.
            found = refused_item(exc)
            return float(found.get("slow_until", 0) or 0) == until and (url is None or found.get("url") == url)
        return True

    def leave_slow_lane(self, tenant_id: str, sub_id: str, *, marked_until: float, url: str | None = None) -> bool:
        """Take the subscription off the slow lane, as long as its mark is still the one read (``marked_until``: a
        mark made since, by a slow attempt, stays) and it sends to ``url`` (when given). True if it left it."""
        return (
            self._update(
                tenant_id,
                sub_id,
                url=url,
                UpdateExpression="REMOVE slow_until",
                ConditionExpression=f"{_EXISTS} AND slow_until = :read",
                ExpressionAttributeValues=values(read=marked_until),
            )
            is not None
        )

    def count_timeout(
        self,
        tenant_id: str,
        sub_id: str,
        *,
        now: float,
        slow_until: float,
        threshold: int,
        open_seconds: float,
        max_open_seconds: float,
        url: str | None = None,
    ) -> tuple[Isolation, bool] | None:
        """Count an attempt that timed out: one more timeout in a row, the slow lane until ``slow_until``, and,
        at ``threshold`` timeouts in a row, the breaker opened (unless it is open already) for ``open_seconds``
        doubled for each opening in a row, at most ``max_open_seconds``; while it sends to ``url`` (when given: the
        URL of the attempt that timed out). Returns the subscription's isolation afterwards and whether this call
        opened the breaker; None if the subscription is gone or moved to another URL."""
        item = self._count(
            tenant_id,
            sub_id,
            f"ADD timeouts :one SET slow_until = :slow, {LAST_WRITE} = :token",
            _EXISTS,
            {"one": 1, "slow": slow_until},
            url=url,
        )
        if item is None:
            return None
        learned = _isolation(item)
        if learned.timeouts < threshold or learned.breaker_until > now:
            return learned, False
        until = now + min(max_open_seconds, open_seconds * 2 ** min(learned.breaker_openings, 32))
        # Once per opening: concurrent timeouts all reach the threshold, only the first opens (and counts) it.
        opened = self._count(
            tenant_id,
            sub_id,
            f"SET breaker_until = :until, {LAST_WRITE} = :token ADD breaker_openings :one REMOVE probe_until",
            f"{_EXISTS} AND timeouts >= :n AND (attribute_not_exists(breaker_until) OR breaker_until <= :now)",
            {"until": until, "one": 1, "n": threshold, "now": now},
            url=url,
        )
        return (_isolation(opened), True) if opened is not None else (learned, False)

    def take_probe(self, tenant_id: str, sub_id: str, *, now: float, until: float) -> Probe:
        """Half-open: let one attempt through once the breaker's time is over. ``taken`` for the one caller that
        takes the probe (until ``until``, when another may take it if this one never reported back); ``closed`` if
        the breaker closed since the caller read it (another delivery's probe was answered): no probe is needed;
        ``Reopened`` if it opened again since (another delivery's probe timed out), with its new end; ``held``
        otherwise (another holds the probe, or the subscription is gone). The probe is taken with a token of this
        call's own (``probe_by``): a take refused by it took the probe."""
        token = uuid.uuid4().hex[:12]
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.subscription(tenant_id, sub_id)),
                UpdateExpression="SET probe_until = :until, probe_by = :token",
                ConditionExpression=(
                    f"{_EXISTS} AND breaker_until <= :now "
                    "AND (attribute_not_exists(probe_until) OR probe_until <= :now)"
                ),
                ExpressionAttributeValues=values(until=until, now=now, token=token),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            current = refused_item(exc)  # {} when the subscription is gone
            if current.get("probe_by") == token:
                return "taken"  # by this call's first send: botocore sent it again after its answer was lost
            breaker_until = float(current.get("breaker_until", 0) or 0)
            if current and not breaker_until:
                return "closed"
            return Reopened(breaker_until) if breaker_until > now else "held"
        return "taken"

    def release_probe(self, tenant_id: str, sub_id: str, *, until: float) -> bool:
        """Give back a probe taken until ``until`` whose attempt made no request (it said nothing of the endpoint):
        the next delivery probes at once instead of waiting for the probe's time to run out. Only that probe: one
        taken since by another delivery, or a breaker opened or closed since, is left as it is."""
        released = self._update(
            tenant_id,
            sub_id,
            UpdateExpression="REMOVE probe_until, probe_by",
            ConditionExpression=f"{_EXISTS} AND probe_until = :until",
            ExpressionAttributeValues=values(until=until),
        )
        return released is not None

    def reset(self, tenant_id: str, sub_id: str, *, url: str | None = None) -> None:
        """The endpoint answered (any answer but a timeout): no timeouts in a row, the breaker closed; while the
        subscription sends to ``url`` (when given: the URL that answered)."""
        self._update(
            tenant_id,
            sub_id,
            url=url,
            UpdateExpression="SET timeouts = :zero, breaker_openings = :zero REMOVE breaker_until, probe_until",
            ConditionExpression=_EXISTS,
            ExpressionAttributeValues=values(zero=0),
        )


def _isolation(item: dict[str, Any]) -> Isolation:
    return Isolation.model_validate({name: item[name] for name in Isolation.ATTRIBUTES if name in item})
