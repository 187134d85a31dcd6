"""The subscriber portal's access: one-time links minted by the operator, exchanged for sessions bound
to one tenant and one capability (``manage`` or ``read``). Only SHA-256 digests of the secrets are stored."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from herald.domain import tenants
from herald.records import PortalCapability, PortalGrant, utcnow

if TYPE_CHECKING:
    from datetime import datetime

    from herald.records import Tenant
    from herald.services import Services

LINK = "link"
SESSION = "session"
#: Where a link's token is exchanged for a session.
LOGIN_PATH = "/portal/login"


def digest(secret: str) -> str:
    """The stored form of a token or session id (256 random bits each: no salt needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_link(
    services: Services, tenant_id: str, capability: PortalCapability, expires_in_minutes: int
) -> tuple[str, datetime]:
    """A one-time link token for a tenant's portal (``NotFoundError`` for an unknown tenant) and its expiry."""
    tenants.find(services, tenant_id)
    token = "hpl_" + secrets.token_urlsafe(32)
    now = utcnow()
    grant = PortalGrant(
        kind=LINK,
        tenant_id=tenant_id,
        capability=capability,
        created_at=now,
        expires_at=now + timedelta(minutes=expires_in_minutes),
        session_minutes=services.settings.portal_session_minutes,
    )
    services.store.portal.put(digest(token), grant)
    return token, grant.expires_at


def _is_link_token(token: str) -> bool:
    return token.startswith("hpl_") and len(token) <= 100


def unused_link(services: Services, token: str) -> tuple[PortalGrant, Tenant] | None:
    """The link a token names and its tenant, without redeeming it, while it works; None when the token is
    unknown, expired, already used or revoked, or its tenant is gone. The link's page shows them and asks to sign
    in; only its form's POST redeems the link (``open_session``): a mail scanner or a chat's preview that fetches
    the link leaves it working, and it cannot sign anyone in."""
    if not _is_link_token(token):
        return None
    link = services.store.portal.get(digest(token))
    if link is None or link.kind != LINK or link.expires_at <= utcnow():
        return None
    found = services.store.tenants.with_portal_revoked_at(link.tenant_id)
    if found is None or not _issued_after(found[1], link.created_at):
        return None
    return link, found[0]


def open_session(services: Services, token: str) -> tuple[str, PortalGrant] | None:
    """Redeem a link token (once) for a new session: its id (the cookie's value) and record. None when
    the token is unknown, expired, already used or revoked, or its tenant is gone.

    The session is written before the link is spent: a write that fails (DynamoDB unavailable: a 503, "try again")
    leaves the link working for that try. Spent the other way round, the try would find it used. A session written
    for a link another request spent meanwhile is ended at once (its id was never given out)."""
    found = unused_link(services, token)
    if found is None:
        return None
    link, _ = found
    session_id = "hps_" + secrets.token_urlsafe(32)
    now = utcnow()
    session = PortalGrant(
        kind=SESSION,
        tenant_id=link.tenant_id,
        capability=link.capability,
        created_at=now,
        expires_at=now + timedelta(minutes=link.session_minutes or services.settings.portal_session_minutes),
        csrf_token=secrets.token_urlsafe(32),
        issued_at=link.created_at,
    )
    services.store.portal.put(digest(session_id), session)
    try:
        spent = services.store.portal.take(digest(token), LINK)
    except Exception:
        _end_unused(services, session_id)
        raise
    if spent is None:
        _end_unused(services, session_id)
        return None
    return session_id, session


def _end_unused(services: Services, session_id: str) -> None:
    """End a session whose id was never given out; one that cannot be ended now expires unseen."""
    with contextlib.suppress(Exception):
        services.store.portal.take(digest(session_id), SESSION)


def find_session(services: Services, session_id: str | None) -> PortalGrant | None:
    """The live session with this id; None if unknown, expired, revoked, or its tenant was deleted."""
    if not session_id or not session_id.startswith("hps_") or len(session_id) > 100:
        return None
    session = services.store.portal.get(digest(session_id))
    if session is None or session.kind != SESSION or session.expires_at <= utcnow():
        return None
    if not _stands(services, session.tenant_id, session.issued_at or session.created_at):
        return None
    return session


def _stands(services: Services, tenant_id: str, issued_at: datetime) -> bool:
    """Whether a grant issued at ``issued_at`` (a link's minting) still works: its tenant exists, and its portal
    access was not revoked since (``revoke_all``)."""
    revoked_at = services.store.tenants.portal_revoked_at(tenant_id)
    return revoked_at is not False and _issued_after(revoked_at, issued_at)


def _issued_after(revoked_at: datetime | None, issued_at: datetime) -> bool:
    """Whether a grant issued at ``issued_at`` was issued after its tenant's portal access was last revoked."""
    return revoked_at is None or issued_at > revoked_at


def end_session(services: Services, session_id: str) -> None:
    """Log out: the session is gone at once."""
    services.store.portal.take(digest(session_id), SESSION)


def revoke_all(services: Services, tenant_id: str) -> int:
    """End every session and unused link of a tenant; how many of them still worked. The tenant's item marks the
    time first: what was minted before it stops working at once, also what the index that lists a tenant's
    links and sessions does not show yet (DynamoDB updates it about a second after a write), and a session
    opened meanwhile from a link minted before. Then what the index shows is deleted (and counted)."""
    tenants.find(services, tenant_id)
    services.store.tenants.revoke_portal(tenant_id, utcnow())
    return services.store.portal.revoke_all(tenant_id)
