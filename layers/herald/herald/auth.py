"""Who is calling: the operator (admin key from Secrets Manager) or a tenant (an API key it was issued)."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from herald.aws import secretsmanager_client
from herald.errors import AuthenticationError, ServiceUnavailableError
from herald.ids import hash_api_key

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from herald.settings import Settings
    from herald.store import Store

#: Longest credential looked at; anything longer is refused before any lookup.
MAX_KEY_LENGTH = 512


class Role(StrEnum):
    OPERATOR = "operator"
    TENANT = "tenant"


@dataclass(frozen=True)
class Principal:
    role: Role
    tenant_id: str | None = None
    key_id: str | None = None


class AdminKeyProvider:
    """The operator's key: ``HERALD_ADMIN_KEY`` if set, else the secret, cached for a few minutes
    (so a rotated secret is picked up without a redeploy)."""

    def __init__(self, settings: Settings, *, client: SecretsManagerClient | None = None) -> None:
        self._settings = settings
        self._client = client
        self._cached: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def get(self) -> str:
        if self._settings.admin_key:
            return self._settings.admin_key
        if not self._settings.admin_key_secret_arn:
            raise ServiceUnavailableError(
                "no admin key is configured (HERALD_ADMIN_KEY or HERALD_ADMIN_KEY_SECRET_ARN)"
            )
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[1] < self._settings.admin_key_cache_seconds:
                return self._cached[0]
            if self._client is None:
                self._client = secretsmanager_client()
            try:
                value = self._client.get_secret_value(SecretId=self._settings.admin_key_secret_arn)["SecretString"]
            except (BotoCoreError, ClientError, KeyError) as exc:
                raise ServiceUnavailableError("the admin key secret could not be read") from exc
            self._cached = (value.strip(), now)
            return self._cached[0]


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("missing credentials: send `Authorization: Bearer <api key>`")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LENGTH:
        raise AuthenticationError("malformed credentials: send `Authorization: Bearer <api key>`")
    return token


def authenticate(authorization: str | None, *, admin_keys: AdminKeyProvider, store: Store) -> Principal:
    token = bearer_token(authorization)
    if hmac.compare_digest(token.encode(), admin_keys.get().encode()):
        return Principal(Role.OPERATOR)
    key = store.get_api_key(hash_api_key(token))
    if key is None:
        raise AuthenticationError("invalid API key")
    return Principal(Role.TENANT, tenant_id=key.tenant_id, key_id=key.id)
