"""Subscriptions: creating, changing, enabling and disabling them, rotating their signing secrets.

Their delivery options are checked here, when they are set and whenever the event types change: custom
``headers`` (validated, kept with sensitive values masked in every answer), a payload ``filter`` (against the
subscribed types' schemas) and a body ``transform`` (run on each subscribed type's catalog example). A problem
is a 422 whose ``details`` say where (``herald.delivery_options``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from herald import ids
from herald.catalog import EVENT_TYPE_PATTERN, catalog, operational_catalog
from herald.delivery_options import (
    CustomHeaders,
    InvalidFilterError,
    InvalidTransformError,
    apply_patch,
    check_filter,
    check_headers,
    check_transform,
    compile_filter,
    compile_transform,
    dry_run,
    event_schemas,
    example_envelopes,
)
from herald.delivery_options.transforms import MAX_ANSWER_DEPTH, MAX_RESULT_DEPTH
from herald.domain.idempotency import KeyedCreation
from herald.domain.operational import OPERATOR_TENANT_ID
from herald.errors import ConflictError, IdempotencyConflictError, InvalidInputError, NotFoundError
from herald.limits import check_subscription
from herald.records import WILDCARD, SigningSecret, Subscription, Tenant, utcnow

if TYPE_CHECKING:
    from herald.records import Metadata
    from herald.schemas import OperatorWebhookIn, SubscriptionIn, SubscriptionUpdate
    from herald.services import Services
    from herald.storage import Store
    from herald.storage.table import CreationKey

logger = logging.getLogger(__name__)

#: Secrets signing at once (each adds a signature to every delivery): the new one and those in their grace.
MAX_SIGNING_SECRETS = 5


def find(services: Services, tenant_id: str, sub_id: str, *, what: str = "subscription") -> Subscription:
    """The tenant's subscription; another tenant's is as absent as a missing one (``NotFoundError``)."""
    sub = services.store.subscriptions.get(tenant_id, sub_id) if ids.is_id(sub_id, ids.SUBSCRIPTION) else None
    if sub is None:
        raise NotFoundError(f"{what} {sub_id} not found")
    return sub


def require_enabled(sub: Subscription, *, note: str = "") -> None:
    """A disabled subscription receives nothing: a retry, a recovery or a test of one is a ``ConflictError``
    (409) until it is enabled. ``note`` follows the message, in parentheses."""
    if not sub.enabled:
        raise ConflictError(f"subscription {sub.id} is disabled: enable it first" + (f" ({note})" if note else ""))


def new_subscription(
    tenant_id: str,
    url: str,
    event_types: list[str],
    *,
    description: str = "",
    metadata: Metadata | None = None,
    rate_limit: int | None = None,
    options: dict[str, Any] | None = None,
) -> Subscription:
    """A new subscription record with a fresh signing secret (not stored yet); ``options`` are its checked
    delivery options in their stored form (``headers``, ``filter``, ``transform``)."""
    now = utcnow()
    return Subscription(
        id=ids.new_id(ids.SUBSCRIPTION),
        tenant_id=tenant_id,
        url=url,
        event_types=event_types,
        description=description,
        metadata=metadata or {},
        rate_limit=rate_limit,
        secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
        created_at=now,
        updated_at=now,
        **(options or {}),
    )


def check_event_types(event_types: list[str]) -> list[str]:
    """A tenant's event types, each ``*`` or in the catalog (``UnknownEventTypeError`` otherwise, ``*`` beside it or
    not), as kept: ``*`` alone when it is one of them."""
    return catalog.check_subscribed(
        event_types, refused="unknown event types", absent="is not in the event catalog", known_also=" (or '*')"
    )


def retired_types(event_types: Iterable[str]) -> list[str]:
    """Those of a subscription's ``event_types`` that the catalog no longer lists (retired by a deploy since it
    subscribed), sorted."""
    return sorted({name for name in event_types if name != WILDCARD and name not in catalog})


def may_have_retired(sub: Subscription, event_type: str) -> bool:
    """Whether ``sub`` may have deliveries of ``event_type``, a type the catalog no longer lists: one it still takes
    (named, or any well-formed name when it takes every type, ``*``)."""
    if event_type in retired_types(sub.event_types):
        return True
    return WILDCARD in sub.event_types and EVENT_TYPE_PATTERN.fullmatch(event_type) is not None


def _kept_or_checked(old: Subscription, event_types: list[str]) -> list[str]:
    """A changed subscription's event types as kept: a type it has that the catalog no longer lists (retired by a
    deploy since) may stay, as the portal's form sends it back; any other must be in the catalog (``*`` alone if it is
    one of them)."""
    retired = set(retired_types(old.event_types))
    checked = check_event_types([name for name in event_types if name not in retired])
    if checked == [WILDCARD]:
        return checked
    return sorted({*checked, *(name for name in event_types if name in retired)})


def check_operational_types(event_types: list[str]) -> list[str]:
    """An operator endpoint's event types, each ``*`` or an operational event type, as kept (``*`` alone)."""
    return operational_catalog.check_subscribed(
        event_types, refused="not operational event types", absent="is not an operational event type"
    )


class KeyedSubscriptionGone(IdempotencyConflictError):
    """The ``Idempotency-Key`` made a subscription, deleted since: a retry does not make it again."""


class Created(NamedTuple):
    """A subscription, and whether it was made before, by an earlier request with the same ``Idempotency-Key``."""

    subscription: Subscription
    replayed: bool = False


async def create(
    services: Services, tenant_id: str, body: SubscriptionIn, *, idempotency_key: str | None = None
) -> Created:
    """Subscribe a URL (checked by the URL policy and the deployment's limits) for a tenant. With an
    ``idempotency_key``, once (``KeyedCreation``): a retry of the same request within ``CREATION_KEY_HOLDS_SECONDS``
    (after a timeout, a lost answer, a double click) gets the subscription the first made (``replayed``), however many
    are sent at once; the key with another request is a 409, as is a retry after its subscription was deleted."""
    if idempotency_key is None:
        return await _create(services, tenant_id, body)
    if body.filter:
        # Its bounds first: the request's digest serialises it, which a filter nested hundreds deep would fail.
        compile_filter(body.filter)
    return await _once(
        services, tenant_id, idempotency_key, _fingerprint(body), lambda key: _create(services, tenant_id, body, key)
    )


async def _once(
    services: Services, tenant_id: str, key: str, fingerprint: str, make: Callable[[CreationKey], Awaitable[Created]]
) -> Created:
    """The subscription the tenant's Idempotency-Key ``key`` made (``KeyedCreation``), else the one ``make`` makes."""
    keyed = KeyedCreation(
        "subscription",
        key,
        fingerprint,
        lookup=lambda: services.store.subscriptions.creation(tenant_id, key),
        get=lambda sub_id: services.store.subscriptions.get(tenant_id, sub_id),
        gone=KeyedSubscriptionGone,
    )
    return await keyed.once_async(make, replay=lambda sub: Created(sub, replayed=True))


def _fingerprint(body: SubscriptionIn) -> str:
    """What a request with an ``Idempotency-Key`` asked, as a digest: its retry asks the same. Its headers' values
    count, which a dump writes as ``**********`` (secrets): a value changed is another request."""
    asked = body.model_dump(mode="json")
    asked["headers"] = {
        name: {**asked["headers"][name], "value": header.value.get_secret_value()}
        for name, header in body.headers.items()
    }
    return ids.fingerprint(asked)


async def _create(
    services: Services, tenant_id: str, body: SubscriptionIn, creation_key: CreationKey | None = None
) -> Created:
    url = await services.url_policy.check_new_url(str(body.url))
    event_types = check_event_types(body.event_types)
    check_subscription(
        services.settings, url=url, event_types=event_types, description=body.description, metadata=body.metadata
    )
    options = {
        "headers": check_headers(body.headers).to_stored(),
        "filter": checked_filter(body.filter, event_types),
        "transform": checked_transform(body.transform, event_types),
    }
    sub = new_subscription(
        tenant_id,
        url,
        event_types,
        description=body.description,
        metadata=body.metadata,
        rate_limit=body.rate_limit,
        options=options,
    )
    services.store.subscriptions.create(
        sub, max_subscriptions=services.settings.max_subscriptions_per_tenant, creation_key=creation_key
    )
    return Created(sub)


async def create_operator_endpoint(
    services: Services, body: OperatorWebhookIn, *, idempotency_key: str | None = None
) -> Created:
    """An operator endpoint: a subscription of the reserved operator tenant to operational event types, checked
    against the deployment's limits as a tenant's is (its URL, its description, how many there are). With an
    ``idempotency_key``, once, as ``create``."""
    if idempotency_key is None:
        return await _create_operator_endpoint(services, body)
    return await _once(
        services,
        OPERATOR_TENANT_ID,
        idempotency_key,
        _operator_fingerprint(body),
        lambda key: _create_operator_endpoint(services, body, key),
    )


def _operator_fingerprint(body: OperatorWebhookIn) -> str:
    """What a request with an ``Idempotency-Key`` asked, as a digest. Without a ``rate_limit``, the digest of the
    fields an endpoint had before it could have one: a retry, after a deploy, of a request whose key was kept before
    it is the same request (another digest would make it a 409)."""
    asked = body.model_dump(mode="json")
    if asked["rate_limit"] is None:
        del asked["rate_limit"]
    return ids.fingerprint(asked)


async def _create_operator_endpoint(
    services: Services, body: OperatorWebhookIn, creation_key: CreationKey | None = None
) -> Created:
    url = await services.url_policy.check_new_url(str(body.url))
    event_types = check_operational_types(body.event_types)
    check_subscription(services.settings, url=url, event_types=event_types, description=body.description)
    services.store.tenants.create_unlisted(Tenant(id=OPERATOR_TENANT_ID, name="operator", created_at=utcnow()))
    sub = new_subscription(
        OPERATOR_TENANT_ID, url, event_types, description=body.description, rate_limit=body.rate_limit
    )
    services.store.subscriptions.create(
        sub, max_subscriptions=services.settings.max_subscriptions_per_tenant, creation_key=creation_key
    )
    return Created(sub)


async def update(
    services: Services, old: Subscription, body: SubscriptionUpdate, *, by: str = "the tenant"
) -> Subscription:
    """Change the fields given in ``body``; ``enabled`` goes through the one enable/disable rule (a disable is
    recorded as ``by``'s: the tenant, or the operator acting for it)."""
    changes = body.model_dump(exclude_unset=True, exclude={"headers", "filter", "transform"})
    if changes.get("url") is not None:
        changes["url"] = await services.url_policy.check_new_url(str(body.url))
    if changes.get("event_types") is not None:
        changes["event_types"] = _kept_or_checked(old, changes["event_types"])
    check_subscription(
        services.settings,
        url=changes.get("url"),
        event_types=changes.get("event_types"),
        description=changes.get("description"),
        metadata=changes.get("metadata"),
    )
    changes = {key: value for key, value in changes.items() if value is not None}
    if "rate_limit" in body.model_fields_set:
        changes["rate_limit"] = body.rate_limit  # null removes the limit
    changes |= _changed_options(old, body, changes.get("event_types", old.event_types))
    now = utcnow()
    enabled = changes.pop("enabled", None)
    base = old if enabled is None else switched(old, enabled=enabled, reason=f"disabled by {by}", now=now)
    new = base.model_copy(update={**changes, "version": old.version + 1, "updated_at": now})
    _replace(services.store, old, new)
    return new


# --- delivery options ----------------------------------------------------------------------------------------


def checked_filter(
    raw: dict[str, Any] | None,
    event_types: list[str],
    *,
    loc: tuple[str, ...] = ("body", "filter"),
    stored: bool = False,
) -> str | None:
    """A filter's stored JSON once it fits the subscribed types (``InvalidFilterError`` otherwise); an empty
    filter matches everything and is kept as none. A subscribed type the catalog no longer lists (retired since) may
    be named by ``$type``; a ``stored`` filter (the subscription's own, checked again for new event types) keeps the
    conditions only its events can meet (``check_filter``)."""
    if not raw:
        return None
    schemas = event_schemas(catalog, event_types)
    if not schemas:
        raise _unchecked(InvalidFilterError, "filter", loc)
    return check_filter(raw, schemas, loc=loc, retired=retired_types(event_types), stored=stored).to_stored()


def _unchecked(error: type[InvalidInputError], option: str, loc: tuple[str, ...]) -> InvalidInputError:
    """A filter or a transform is checked against the subscribed types the catalog lists (their schemas, their
    examples): a subscription whose every type the catalog has dropped gives nothing to check one against, and takes
    none (it could fail every delivery, should the type come back)."""
    message = f"no subscribed event type is in the catalog to check the {option} against: subscribe to one"
    return error(message, details=[{"loc": list(loc), "msg": message, "type": f"{option}_unchecked"}])


def checked_transform(
    expression: str | None,
    event_types: list[str],
    *,
    loc: tuple[str, ...] = ("body", "transform"),
    max_depth: int = MAX_RESULT_DEPTH,
) -> str | None:
    """A transform once it gives a JSON object or array on each subscribed type's example, nested at most
    ``max_depth`` deep (``InvalidTransformError`` otherwise)."""
    if expression is None:
        return None
    envelopes = example_envelopes(catalog, event_types)
    if not envelopes:
        raise _unchecked(InvalidTransformError, "transform", loc)
    return check_transform(expression, envelopes, loc=loc, max_depth=max_depth).to_stored()


def _changed_options(old: Subscription, body: SubscriptionUpdate, event_types: list[str]) -> dict[str, Any]:
    """The stored form of the options an update changes: those given (``null`` removes one), and the filter and
    transform kept when the event types change, checked again against the new ones."""
    given = body.model_fields_set
    changed: dict[str, Any] = {}
    if "headers" in given:
        current = CustomHeaders.from_stored(old.headers)
        changed["headers"] = [] if body.headers is None else apply_patch(current, body.headers).to_stored()
    retyped = event_types != old.event_types
    # An option sent back as it is stored (a client that PATCHes back the whole object it read) is no change: kept,
    # checked again only if the event types change, as one left out is.
    filter_given = "filter" in given and not (
        old.filter and _as_stored(body.filter) == _as_stored(json.loads(old.filter))
    )
    transform_given = "transform" in given and not (old.transform and body.transform == old.transform)
    if filter_given:
        changed["filter"] = checked_filter(body.filter, event_types)
    elif retyped and old.filter:
        kept_filter = functools.partial(checked_filter, stored=True)
        changed["filter"] = _kept(kept_filter, "filter", json.loads(old.filter), event_types)
    if transform_given:
        changed["transform"] = checked_transform(body.transform, event_types)
    elif retyped and old.transform:
        # Stored: bound as a stored transform run again is (one set before a new one's bound kept delivering).
        kept = functools.partial(checked_transform, max_depth=MAX_ANSWER_DEPTH)
        changed["transform"] = _kept(kept, "transform", old.transform, event_types)
    return changed


def _as_stored(raw: dict[str, Any] | None) -> str | None:
    """A filter as canonical JSON, to compare a filter sent with the one stored (``check_filter``'s JSON, read back)
    as JSON values: ``true`` is not ``1`` (Python's ``==`` has them equal), and ``100`` is ``100.0`` (a client that
    reads ``100.0`` back may send it as ``100``: the same number). None when JSON cannot carry it (checking it says
    why)."""

    def numbers_as_json(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {key: numbers_as_json(item) for key, item in value.items()}
        if isinstance(value, list):
            return [numbers_as_json(item) for item in value]
        return value

    try:
        canonical = numbers_as_json(raw)
        return json.dumps(canonical, separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return None


def _kept(check: Callable[..., str | None], name: str, stored: Any, event_types: list[str]) -> str | None:
    """A stored option checked against new event types; its problems point at ``event_types``, since that is
    what the request changed."""
    try:
        return check(stored, event_types, loc=())
    except InvalidInputError as exc:
        details = [
            {
                "loc": ["body", "event_types"],
                "msg": f"the subscription's {name} (at {'.'.join(map(str, d['loc'])) or 'its top'}): {d['msg']}",
                "type": d["type"],
            }
            for d in exc.details or ()
        ]
        message = (
            f"the new event types do not fit the subscription's {name}; change or remove it with them (in the "
            f"same request, or the same form): {exc.message}"
        )
        raise type(exc)(message, details=details) from None


def dry_run_transform(sub: Subscription, expression: str | None) -> tuple[str | None, dict[str, Any]]:
    """The expression run (``expression``, else the subscription's own, else none) and the body each subscribed
    type's catalog example would be delivered as; ``InvalidTransformError`` if it fails on one."""
    envelopes = example_envelopes(catalog, sub.event_types)
    chosen = expression if expression is not None else sub.transform
    if chosen is None:
        return None, dict(envelopes)
    loc: tuple[str, ...] = ("body", "transform") if expression is not None else ("transform",)
    if expression is not None and not envelopes:  # one that could not be set is not shown as working
        raise _unchecked(InvalidTransformError, "transform", loc)
    depth = MAX_RESULT_DEPTH if expression is not None else MAX_ANSWER_DEPTH  # a new one's bound, or a stored one's
    return chosen, dry_run(compile_transform(chosen, loc=loc), envelopes, loc=loc, max_depth=depth)


def switched(sub: Subscription, *, enabled: bool, reason: str, now: datetime) -> Subscription:
    """``sub`` enabled or disabled (the one rule for both): disabling records why and when, enabling clears
    both. Already in that state: unchanged (a disabled subscription keeps its first reason)."""
    if sub.enabled == enabled:
        return sub
    return sub.model_copy(
        update={
            "enabled": enabled,
            "disabled_reason": None if enabled else reason,
            "disabled_at": None if enabled else now,
            "version": sub.version + 1,
            "updated_at": now,
        }
    )


def set_enabled(services: Services, sub: Subscription, *, enabled: bool, reason: str) -> Subscription:
    """Enable or disable ``sub`` now (the operator's and the tenant's switch)."""
    new = switched(sub, enabled=enabled, reason=reason, now=utcnow())
    if new is not sub:
        _replace(services.store, sub, new)
    return new


def update_operator_endpoint(services: Services, old: Subscription, changes: dict[str, Any]) -> Subscription:
    """Change what the operator may change of its endpoint after creating it: ``enabled`` (through the one
    enable/disable rule, a disable recorded as the operator's) and ``rate_limit`` (None removes it), those of
    ``changes`` given. Nothing changed, nothing is written."""
    now = utcnow()
    enabled = changes.get("enabled")
    new = old if enabled is None else switched(old, enabled=enabled, reason="disabled by the operator", now=now)
    if "rate_limit" in changes and changes["rate_limit"] != old.rate_limit:
        update = {"rate_limit": changes["rate_limit"], "version": old.version + 1, "updated_at": now}
        new = new.model_copy(update=update)
    if new is not old:
        _replace(services.store, old, new)
    return new


def disable_for_failing(
    store: Store, sub: Subscription, reason: str, now: datetime, *, notice: str | None = None
) -> Subscription | None:
    """Herald disables a subscription that fails (its routes go: it receives nothing more and costs nothing at
    fan-out), writing the operator's ``notice`` of it on it in the same write (``DISABLED_NOTICE``: the table's
    stream publishes it, should the caller not live to). The disabled subscription if this call disabled it; None if
    it was already disabled or gone, or if it was changed through the API since ``sub`` (the subscription the
    deciding attempts used) was read (its ``version``): those attempts were made to what it was, and decide nothing
    of what it is. Moved to a new URL, the old URL's answers say nothing of the new one's; disabled and re-enabled
    meanwhile (an operator who re-enables on ``subscription.disabled``), a 410 another batch got before the
    re-enable would disable it again, though a re-enable starts a whole new failing window. The worker's own writes
    leave the version alone."""
    current = store.subscriptions.get(sub.tenant_id, sub.id)
    if current is None or not current.enabled or current.version != sub.version:
        return None
    disabled = switched(current, enabled=False, reason=reason, now=now)
    try:
        store.subscriptions.replace(current, disabled, notice=notice)
    except ConflictError:
        return None  # changed through the API meanwhile, as above
    logger.warning(
        "subscription disabled", extra={"subscription_id": sub.id, "tenant_id": sub.tenant_id, "reason": reason}
    )
    return disabled


def _replace(store: Store, old: Subscription, new: Subscription) -> None:
    if (new.enabled and not old.enabled) or new.url != old.url:
        # Re-enabled: a subscription disabled for failing gets a whole failing window again, and so does one moved to
        # a new URL (its old URL's failures say nothing of the new one's). The streak is reset first: if the reset
        # fails, the subscription is still disabled (or at its old URL), and the request asked again does both (the
        # other way round, it would find the subscription changed and reset nothing, and the next failure would
        # disable it at once). A disabled subscription is sent nothing, so no failure counts between the two; the
        # attempts of a batch that read the subscription before the change are counted without moving the new streak
        # (the reset's mark, which holds a few minutes: one whose change is refused after it holds no longer).
        store.health.reset_failing_streak(new.id, version=new.version)
    store.subscriptions.replace(old, new)


#: Reads and deletes of a subscription that keeps changing meanwhile, before a delete gives up (409).
DELETE_ATTEMPTS = 3


def delete(services: Services, sub: Subscription) -> None:
    """Delete ``sub`` (as read) with its routes. Changed since it was read (re-enabled, new event types: other
    routes), it is read again and deleted as it is now; gone, it is not found."""
    store = services.store.subscriptions
    for _ in range(DELETE_ATTEMPTS):
        try:
            store.delete(sub)
            return
        except ConflictError:
            now = store.get(sub.tenant_id, sub.id)
            if now is None or now.version == sub.version:
                # Gone, or refused for another reason: its tenant is (being) deleted.
                raise NotFoundError(f"subscription {sub.id} not found") from None
            sub = now
    raise ConflictError(f"subscription {sub.id} kept changing while it was being deleted; try again")


def rotate_signing_secret(services: Services, old: Subscription, grace_hours: int | None) -> Subscription:
    """A new secret signs from now on; the previous ones keep signing for ``grace_hours`` (the deployment's
    default when None), never longer than they already would. More than ``MAX_SIGNING_SECRETS`` at once
    would mean cutting one short, which breaks receivers still using it: a ``ConflictError`` says when to
    rotate again instead."""
    now = utcnow()
    grace = timedelta(hours=services.settings.secret_rotation_grace_hours if grace_hours is None else grace_hours)
    kept = [
        SigningSecret(
            secret=s.secret, created_at=s.created_at, expires_at=min(s.expires_at or now + grace, now + grace)
        )
        for s in old.secrets
        if s.expires_at is None or s.expires_at > now
    ]
    secrets = [
        SigningSecret(secret=ids.new_signing_secret(), created_at=now),
        *[s for s in kept if s.expires_at and s.expires_at > now],
    ]
    if len(secrets) > MAX_SIGNING_SECRETS:
        oldest = min(s.expires_at for s in kept if s.expires_at is not None)
        raise ConflictError(
            f"{len(kept)} secrets are still signing (at most {MAX_SIGNING_SECRETS} at once, the new one included): "
            f"rotate again after {oldest.isoformat()}, or with grace_hours 0 to retire the previous secrets now"
        )
    new = old.model_copy(update={"secrets": secrets, "version": old.version + 1, "updated_at": now})
    services.store.subscriptions.replace(old, new)
    return new


def previous_valid_until(sub: Subscription, now: datetime) -> datetime | None:
    """Until when the previous secrets (in their grace period) still sign, if any does."""
    previous = [s.expires_at for s in sub.secrets[1:] if s.expires_at and s.expires_at > now]
    return max(previous) if previous else None
