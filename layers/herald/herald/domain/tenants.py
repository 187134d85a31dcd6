"""Tenants and their API keys: creating them, issuing and revoking keys, deleting a tenant."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, NamedTuple

from herald import ids
from herald.domain.idempotency import KeyedCreation
from herald.domain.operational import OPERATOR_TENANT_ID
from herald.errors import NotFoundError, ServiceUnavailableError
from herald.limits import check_tenant, too_many_api_keys
from herald.messages import PurgeTenantMessage, RevokeKeysMessage
from herald.records import ApiKey, Tenant, utcnow

if TYPE_CHECKING:
    from herald.records import Metadata
    from herald.services import Services
    from herald.storage.table import CreationKey

logger = logging.getLogger(__name__)


def find(services: Services, tenant_id: str, *, consistent: bool = True) -> Tenant:
    """A tenant by id (``NotFoundError`` if none; ``consistent``: see ``TenantRepository.get``). The reserved
    tenant holding the operator's own endpoints is not one: it is managed through /v1/operator/webhooks only."""
    usable = ids.is_id(tenant_id, ids.TENANT) and tenant_id != OPERATOR_TENANT_ID
    tenant = services.store.tenants.get(tenant_id, consistent=consistent) if usable else None
    if tenant is None:
        raise NotFoundError(f"tenant {tenant_id} not found")
    return tenant


def _new_key(tenant_id: str) -> tuple[ApiKey, str]:
    """A new key and its value (``hrk_`` + 256 random bits). The record keeps the kind prefix and six
    characters to recognise the key by; only the value's hash is stored."""
    secret = ids.new_api_key()
    key = ApiKey(id=ids.new_id(ids.API_KEY), tenant_id=tenant_id, prefix=secret[:10], created_at=utcnow())
    return key, secret


class NewTenant(NamedTuple):
    """A tenant ``create`` made, with its first API key's record and the key (shown once); or one an earlier request
    with the same ``Idempotency-Key`` made, with neither: the key was that request's to see."""

    tenant: Tenant
    key: ApiKey | None = None
    secret: str | None = None


def create(services: Services, name: str, metadata: Metadata, *, idempotency_key: str | None = None) -> NewTenant:
    """A new tenant with its first API key. With an ``idempotency_key``, once (``KeyedCreation``): a retry
    of the same request within ``CREATION_KEY_HOLDS_SECONDS`` (after a timeout, a lost answer) gets the tenant the
    first made, without a key (Herald keeps only its hash), however many are sent at once; the key with another
    request is a 409, as is a retry after its tenant was deleted."""
    check_tenant(services.settings, metadata=metadata)
    if idempotency_key is None:
        return _create(services, name, metadata)
    store = services.store.tenants
    fingerprint = ids.fingerprint({"name": name, "metadata": metadata})
    keyed = KeyedCreation("tenant", idempotency_key, fingerprint, lambda: store.creation(idempotency_key), store.get)
    return keyed.once(lambda key: _create(services, name, metadata, key), replay=NewTenant)


def _create(services: Services, name: str, metadata: Metadata, creation_key: CreationKey | None = None) -> NewTenant:
    tenant = Tenant(id=ids.new_id(ids.TENANT), name=name, metadata=metadata, created_at=utcnow())
    key, secret = _new_key(tenant.id)
    services.store.tenants.create(tenant, key, ids.hash_api_key(secret), creation_key=creation_key)
    return NewTenant(tenant, key, secret)


#: How long a deleted tenant's purge, and a key rotation's second revocation, wait on the queue before they start:
#: past the longest request (API Gateway's 29 s), and the lag of the index that lists a tenant's keys.
PURGE_DELAY_SECONDS = 60
#: How long a rotation that succeeded is noted (``confirm_rotation``): past its queued revocation's delay and the
#: retries SQS may make of it.
ROTATION_NOTED_SECONDS = 86400


def issue_key(services: Services, tenant_id: str, *, revoke_existing: bool) -> tuple[ApiKey, str]:
    """A new API key for the tenant (its record and the key, shown once); the others stay valid unless
    ``revoke_existing``, in which case those issued before it are revoked once the new one exists (one revoked
    meanwhile by another request is gone already: the new key is still answered). Of two such requests at once,
    the later key stays: each revokes only keys older than its own.

    The keys to revoke are listed through an index, whose read may miss a key issued a moment before (DynamoDB's
    eventual consistency: another rotation's new key, most often). So they are revoked once more a minute later
    (``RevokeKeysMessage``, as a deleted tenant's purge does), when the index lists every key issued before this
    one: no key older than the new one outlives it.

    A tenant holding ``max_api_keys_per_tenant`` keys gets no more but by a rotation (LimitExceededError). The keys
    are counted through the same index: keys issued in the same moment may each pass the count before it shows
    the others, so the cap bounds the keys a tenant gathers (what its listing, its deletion and a rotation go
    through), not each request."""
    find(services, tenant_id)
    cap = services.settings.max_api_keys_per_tenant
    if not revoke_existing and services.store.tenants.count_keys(tenant_id, up_to=cap) >= cap:
        raise too_many_api_keys(cap)
    key, secret = _new_key(tenant_id)
    key_hash = ids.hash_api_key(secret)
    services.store.tenants.add_key(key, key_hash, now=utcnow().timestamp())
    if revoke_existing:
        _revoke_older(services, key, key_hash)
    return key, secret


def _revoke_older(services: Services, key: ApiKey, key_hash: str) -> None:
    """Revoke the tenant's keys issued before ``key``, just written: the second revocation is queued first, then the
    rotation is noted as done (``confirm_rotation``), so that once the older keys begin to go the new key is answered
    whatever fails. The queued revocation runs only for a rotation noted as done, so a 503 is answered only where no
    note surely is: should the queue refuse the message, or the note not be written and its removal succeed, the
    answer is a 503, nothing is revoked, and the new key, never to be shown, is deleted (or left unused, should that
    delete fail too). A note in doubt (its write failed, and so did its removal: it may be there) is a rotation that
    goes on, and answers the new key, since its revocation may run. Should the first revocation fail partway, the
    queued one revokes the rest within a minute, and the new key is answered."""
    revocation = RevokeKeysMessage(tenant_id=key.tenant_id, older_than=key.id, new_key_hash=key_hash)
    try:
        services.queue.send(revocation, delay_seconds=PURGE_DELAY_SECONDS)
    except ServiceUnavailableError:
        _drop_unshown_key(services, key, key_hash)
        raise
    try:
        # Noted for a day: the queued revocation runs then even if the new key is revoked before it (a key the
        # index missed must go all the same).
        expires_at = int(utcnow().timestamp()) + ROTATION_NOTED_SECONDS
        services.store.tenants.confirm_rotation(key_hash, expires_at=expires_at)
    except ServiceUnavailableError:
        try:
            services.store.tenants.forget_rotation(key_hash)
        except ServiceUnavailableError:
            _rotation_warning(key, "rotation note in doubt (written, perhaps, and not removed): the rotation goes on")
        else:
            _drop_unshown_key(services, key, key_hash)
            raise
    try:
        services.store.tenants.delete_keys(key.tenant_id, older_than=key.id)
    except ServiceUnavailableError:
        _rotation_warning(key, "older API keys not all revoked yet: the queued revocation revokes them within a minute")


def _drop_unshown_key(services: Services, key: ApiKey, key_hash: str) -> None:
    """Delete a failed rotation's new key, never to be shown; left unused (and logged) should the delete fail."""
    try:
        services.store.tenants.delete_key_with_hash(key_hash)
    except ServiceUnavailableError:
        _rotation_warning(key, "a failed rotation's new key, never shown, could not be deleted: it stays unused")


def _rotation_warning(key: ApiKey, message: str) -> None:
    """Log ``message`` of the rotation that issued ``key``, with the failure being handled."""
    logger.warning(message, extra={"tenant_id": key.tenant_id, "api_key_id": key.id}, exc_info=True)


def revoke_key(services: Services, tenant_id: str, key_id: str) -> None:
    find(services, tenant_id)
    if not ids.is_id(key_id, ids.API_KEY):
        raise NotFoundError(f"API key {key_id} not found")
    services.store.tenants.delete_key(tenant_id, key_id)


def delete(services: Services, tenant_id: str) -> None:
    """Its API keys and portal sessions stop working at once; its subscriptions are removed in the background (a
    purge message). The tenant's item goes last: should a step fail (a 503), the tenant is still there, and the
    operator's retry of the request does every step again. Deleted first, it would answer that retry with a 404,
    and keys left undeleted would go on working, the subscriptions never purged. Its portal access is revoked first,
    so that a deletion that fails later leaves no session working either."""
    find(services, tenant_id)
    now = utcnow()
    services.store.tenants.revoke_portal(tenant_id, now)
    # Before the keys are listed: a key issued from now on is refused (``add_key``), and one issued before is listed.
    mark = services.store.tenants.mark_deleting(tenant_id, now.timestamp())
    try:
        services.store.tenants.delete_keys(tenant_id)
        # Delayed past the longest request (API Gateway's 29 s): a subscription created by a request already under
        # way until the item goes (a key past its check, the operator's, a portal session) is purged with the rest.
        services.queue.send(PurgeTenantMessage(tenant_id=tenant_id), delay_seconds=PURGE_DELAY_SECONDS)
        services.store.tenants.delete(tenant_id)
    except ServiceUnavailableError:
        # The tenant stays (its retry does every step again): it can be given a key at once, as the operator may.
        with contextlib.suppress(ServiceUnavailableError):
            services.store.tenants.unmark_deleting(tenant_id, mark)
        raise
