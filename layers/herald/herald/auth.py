"""Who is calling: the operator (admin key from Secrets Manager) or a tenant (an API key it was issued)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from herald.aws import secretsmanager_client
from herald.deadline import OutOfTime
from herald.errors import AuthenticationError, ServiceUnavailableError
from herald.ids import MAX_KEY_LENGTH, admin_key_problem, hash_api_key, looks_like_tenant_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_secretsmanager import SecretsManagerClient

    from herald.settings import Settings
    from herald.storage import Store

logger = logging.getLogger(__name__)

#: The only version of the admin key secret the API reads (and its role allows: template.yaml).
CURRENT_VERSION_STAGE = "AWSCURRENT"


class Role(StrEnum):
    OPERATOR = "operator"
    TENANT = "tenant"


@dataclass(frozen=True)
class Principal:
    role: Role
    tenant_id: str | None = None
    key_id: str | None = None


#: While the secret cannot be read and no cached key holds, a container tries it at most once in this time (from the
#: end of the read that failed); the calls between tries are a 503 at once, so an outage of Secrets Manager (or a
#: flood of wrong keys during one) is not a read, with botocore's retries, per request. A read the request's own
#: deadline stopped (``herald.deadline.OutOfTime``) before any attempt of it reached Secrets Manager is no failure of
#: Secrets Manager: it holds nothing back.
UNREADABLE_RETRY_SECONDS = 1.0


class AdminKeyProvider:
    """The operator's key: ``HERALD_ADMIN_KEY`` if set, else the Secrets Manager secret's value, cached per
    container for ``admin_key_cache_seconds``.

    A rotated secret is picked up without waiting for the cache to expire: a presented key that is not the
    cached admin key (nor shaped like a tenant key) makes the provider read the secret again, at most once
    per ``admin_key_refresh_seconds``, so a flood of wrong keys costs at most one Secrets Manager call in
    that time. A failed re-read keeps the cached key (the caller gets a 401, not a 503) until it expires, as
    the time of its own read says: an operator who cuts the function off from a leaked key's secret sees it
    refused within ``admin_key_cache_seconds`` however many wrong keys arrive. So after a rotation
    the old key is refused at once by a container that has seen the new one, and by every container within
    ``admin_key_cache_seconds``.

    The secret is always read as its ``AWSCURRENT`` version, named in the request: the function's role may
    read that version only (an IAM condition on ``secretsmanager:VersionStage``, which is only set when the
    request names a stage), so a rotated-out key is never readable by the function.

    While no cached key holds (a cold container, or its key expired), a secret that cannot be read is tried at most
    once a second (``UNREADABLE_RETRY_SECONDS``), every call between tries a 503 at once.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: SecretsManagerClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._client = client
        self._clock = clock
        #: The key and when it was read: it expires ``admin_key_cache_seconds`` after that read, whatever followed.
        self._cached: tuple[str, float] | None = None
        #: When the secret was last read or tried: a wrong key makes the next read only past
        #: ``admin_key_refresh_seconds`` from it.
        self._tried_at: float | None = None
        #: When the latest read of the secret failed, if it did (``UNREADABLE_RETRY_SECONDS``).
        self._failed_at: float | None = None
        #: Attempts of reads that reached Secrets Manager, or failed on their way there (botocore's ``needs-retry``,
        #: not counting an attempt the request's deadline refused): whether a read cut short by the deadline had been
        #: failed by Secrets Manager first.
        self._attempts = 0
        self._lock = threading.Lock()

    def get(self) -> str:
        if self._settings.admin_key:
            return self._settings.admin_key
        self._check_configured()
        with self._lock:
            now = self._clock()
            if self._cached and now - self._cached[1] < self._settings.admin_key_cache_seconds:
                return self._cached[0]
            if self._failed_at is not None and now - self._failed_at < UNREADABLE_RETRY_SECONDS:
                raise ServiceUnavailableError("the admin key secret could not be read a moment ago: try again")
            return self._fetch(now)

    def is_admin_key(self, token: str) -> bool:
        """Whether ``token`` is the admin key (constant-time compare), re-reading a rotated secret if due."""
        if _same(token, self.get()):
            return True
        if self._settings.admin_key or looks_like_tenant_key(token):
            return False
        with self._lock:
            now = self._clock()
            if self._tried_at is not None and now - self._tried_at < self._settings.admin_key_refresh_seconds:
                return False
            try:
                current = self._fetch(now)
            except ServiceUnavailableError:
                # The cached key keeps the time of its own read: it still expires then (a 503 until the secret can
                # be read), however many wrong keys prompt re-reads that fail meanwhile.
                logger.warning("the admin key secret could not be re-read; keeping the cached key until it expires")
                return False
        return _same(token, current)

    def _check_configured(self) -> None:
        if not self._settings.admin_key_secret_arn:
            raise ServiceUnavailableError(
                "no admin key is configured (HERALD_ADMIN_KEY or HERALD_ADMIN_KEY_SECRET_ARN)"
            )

    def _fetch(self, now: float) -> str:
        """Read the secret (the caller holds the lock)."""
        if self._client is None:
            self._client = secretsmanager_client()
        if hasattr(self._client, "meta"):  # botocore's (a test's stand-in has none); registered once by its id
            self._client.meta.events.register(
                "needs-retry.secrets-manager", self._attempted, unique_id=f"herald.auth.attempts.{id(self)}"
            )
        self._tried_at = now
        attempts = self._attempts
        try:
            value = self._client.get_secret_value(
                SecretId=self._settings.admin_key_secret_arn, VersionStage=CURRENT_VERSION_STAGE
            )["SecretString"]
        except OutOfTime as exc:
            if self._attempts > attempts:  # Secrets Manager failed an attempt before the deadline refused the next
                self._failed_at = self._clock()
            raise ServiceUnavailableError("the admin key secret could not be read in the request's time") from exc
        except (BotoCoreError, ClientError, KeyError) as exc:
            self._failed_at = self._clock()  # from its end: a read that timed out took seconds
            raise ServiceUnavailableError("the admin key secret could not be read") from exc
        self._failed_at = None
        key = value.strip()
        problem = admin_key_problem(key)
        if problem is not None:
            # Written by hand (``herald admin-key rotate`` writes a usable one): no caller could ever present it.
            logger.error("the admin key secret holds no usable admin key: %s", problem)
            raise ServiceUnavailableError("the admin key secret holds no usable admin key (see the API's log)")
        self._cached = (key, now)
        return key

    def _attempted(self, caught_exception: BaseException | None = None, **_: Any) -> None:
        """botocore's ``needs-retry`` hook, after each attempt: count it (``_attempts``) unless the request's deadline
        refused to make it."""
        if not isinstance(caught_exception, OutOfTime):
            self._attempts += 1


def _same(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("missing credentials: send `Authorization: Bearer <api key>`")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LENGTH:
        raise AuthenticationError("malformed credentials: send `Authorization: Bearer <api key>`")
    return token


def authenticate(authorization: str | None, *, admin_keys: AdminKeyProvider, store: Store) -> Principal:
    """The caller behind an ``Authorization`` header. Keys are compared in constant time (the admin key) or
    looked up by their SHA-256 (tenant keys); a token that has not the shape of a tenant key is refused
    without a lookup. A token shaped like a tenant key is only ever a tenant key, so tenant calls never
    wait for the admin key (whose first read in a container is a Secrets Manager call)."""
    token = bearer_token(authorization)
    if looks_like_tenant_key(token):
        key = store.tenants.get_key(hash_api_key(token))
        if key is None:
            raise AuthenticationError("invalid API key")
        return Principal(Role.TENANT, tenant_id=key.tenant_id, key_id=key.id)
    if admin_keys.is_admin_key(token):
        return Principal(Role.OPERATOR)
    raise AuthenticationError("invalid API key")
