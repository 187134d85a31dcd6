"""Prefixed, time-ordered identifiers (``tnt_``, ``sub_``, ``evt_``, ...) and random secrets.

Ids are ULIDs (48 bits of milliseconds, 80 random bits) in lower-case Crockford base32 behind a
prefix that names the kind, so they sort by creation time and read well in logs and tickets.

Credentials carry a prefix that names their kind too, so a leaked one is recognisable (by a person, or a
secret scanner matching ``\\b(hrk|hra)_[A-Za-z0-9_-]{43,}``): ``hrk_`` for a tenant's API key, ``hra_`` for
the operator's admin key, ``whsec_`` for a subscription's signing secret (the Standard Webhooks format).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"

TENANT = "tnt"
SUBSCRIPTION = "sub"
EVENT = "evt"
DELIVERY = "dlv"
ATTEMPT = "atm"
API_KEY = "key"

#: Prefixes of the two kinds of API key.
TENANT_KEY_PREFIX = "hrk_"
ADMIN_KEY_PREFIX = "hra_"
#: Random bytes behind every generated API key.
API_KEY_BYTES = 32
_TENANT_KEY_PATTERN = re.compile(r"^hrk_[A-Za-z0-9_-]{43}$")

#: What a caller may use as a new event's id: it doubles as the idempotency key, and is its deliveries'
#: ``webhook-id``. No ``.``: the signature covers ``{webhook-id}.{webhook-timestamp}.{body}``, and Standard Webhooks
#: asks that an id a caller chooses hold none, lest the signed content be split at another dot into another id and
#: timestamp.
EVENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:\-]{0,127}$")
#: Any id an event may be stored under: a caller's could hold a ``.`` before the rule above. Such an event is still
#: looked up, redelivered, and answered as a repeat when published again with its id.
STORED_EVENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
#: What ``EVENT_ID_PATTERN`` allows, as its refusals say.
EVENT_ID_RULE = (
    "event ids are 1-128 characters: a letter or a digit, then letters, digits and _ : - (no ., as Standard Webhooks "
    "asks of an id it signs)"
)
#: An ``Idempotency-Key``'s bounds (the API's header, the CLI's ``--idempotency-key``, the portal's creation key):
#: 1 to 255 printable ASCII characters, no space.
IDEMPOTENCY_KEY_MAX_LENGTH = 255
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"
#: The ids of Herald's operational events (``domain.operational``) start with this, which no caller's id may.
OPERATIONAL_EVENT_PREFIX = "evt_op_"
_ID_PATTERN = re.compile(r"^[a-z]{3}_[0-9a-hjkmnp-tv-z]{26}$")


def is_idempotency_key(text: str) -> bool:
    """Whether ``text`` is within an ``Idempotency-Key``'s bounds."""
    return len(text) <= IDEMPOTENCY_KEY_MAX_LENGTH and re.fullmatch(IDEMPOTENCY_KEY_PATTERN, text) is not None


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_CROCKFORD[index])
    return "".join(reversed(chars))


#: The last id's value made on this process's clock (``new_id`` without ``now_ms``), and the lock that orders them.
_last_value = 0
_last_lock = threading.Lock()
#: Bits of the random step from one id to the next made in the same millisecond.
_STEP_BITS = 40


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """A new ``<prefix>_<ulid>`` id; ids made later sort after ids made earlier. Ids this process makes in one
    millisecond (or while its clock steps back) sort in the order they were made, as monotonic ULIDs do: each is
    the one before plus a random step, not fresh random bits (an API key issued with ``revoke_existing`` revokes
    every key whose id sorts before its own). ``now_ms`` makes an id of that millisecond, with fresh bits."""
    global _last_value  # noqa: PLW0603 - the process's one sequence of ids
    if now_ms is not None:
        return f"{prefix}_{_encode((now_ms << 80) | secrets.randbits(80), 26)}"
    millis = int(time.time() * 1000)
    with _last_lock:
        value = (millis << 80) | secrets.randbits(80)
        if value <= _last_value:
            value = _last_value + 1 + secrets.randbits(_STEP_BITS)
        _last_value = value
    return f"{prefix}_{_encode(value, 26)}"


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` looks like an id of the given kind (cheap check before any lookup)."""
    return value.startswith(prefix + "_") and _ID_PATTERN.fullmatch(value) is not None


def delivery_id(event_id: str, subscription_id: str, event_ms: int | None = None) -> str:
    """The one delivery id of an (event, subscription) pair: deterministic, so a fan-out page that
    runs twice names the same deliveries and they are not sent twice.

    With ``event_ms`` (the event's creation time, epoch milliseconds) the id is shaped as every other id:
    those milliseconds, then 80 bits of the pair's digest, so a subscription's deliveries sort by their
    events' time (they are stored under their subscription in that order: ``storage.deliveries``). Without
    it, the id of a delivery made before deliveries were kept that way: the pair's digest alone."""
    digest = hashlib.sha256(f"{event_id}\x1f{subscription_id}".encode()).digest()
    if event_ms is None:
        return f"{DELIVERY}_{_encode(int.from_bytes(digest[:17]) >> 6, 26)}"
    return f"{DELIVERY}_{_encode((event_ms << 80) | int.from_bytes(digest[:10]), 26)}"


@functools.lru_cache(maxsize=4096)  # asked of each delivery several times as it is read and written
def is_digest_delivery_id(candidate: str, event_id: str, subscription_id: str) -> bool:
    """Whether ``candidate`` is the pair's delivery id of the older kind (its digest alone, no time)."""
    return candidate == delivery_id(event_id, subscription_id)


def id_bounds(prefix: str, millis: int) -> tuple[str, str]:
    """The lowest and the highest id of a kind made in millisecond ``millis``."""
    return f"{prefix}_{_encode(millis << 80, 26)}", f"{prefix}_{_encode((millis << 80) | ((1 << 80) - 1), 26)}"


def epoch_ms(moment: datetime) -> int:
    """A datetime as epoch milliseconds (what an id's time part holds)."""
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def new_signing_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_api_key() -> str:
    """A tenant API key: ``hrk_`` + 43 url-safe characters (256 random bits)."""
    return TENANT_KEY_PREFIX + secrets.token_urlsafe(API_KEY_BYTES)


def new_admin_key() -> str:
    """An operator admin key: ``hra_`` + 43 url-safe characters (256 random bits). The deployed stack
    generates its own (see ``AdminKeySecret`` in template.yaml); this one is for local runs and rotations."""
    return ADMIN_KEY_PREFIX + secrets.token_urlsafe(API_KEY_BYTES)


def looks_like_tenant_key(token: str) -> bool:
    """Whether ``token`` has the shape of a tenant API key (checked before any lookup)."""
    return _TENANT_KEY_PATTERN.fullmatch(token) is not None


#: Longest credential looked at; anything longer is refused before any lookup (``herald.auth.bearer_token``).
MAX_KEY_LENGTH = 512


def admin_key_problem(key: str) -> str | None:
    """Why ``key`` could never be presented as the admin key, or None if it could: an empty key, one shaped like a
    tenant key (such a token is only ever looked up as one), one longer than any credential looked at, or one
    holding a character an ``Authorization`` header cannot carry."""
    if not key.strip():
        return "it is empty"
    if key != key.strip():
        return "it has spaces at an end, which a presented key never has"
    if looks_like_tenant_key(key):
        return "it has the shape of a tenant key (hrk_...); an admin key is hra_..."
    if len(key) > MAX_KEY_LENGTH:
        return f"it is {len(key)} characters long; credentials over {MAX_KEY_LENGTH} are refused"
    if not (key.isascii() and key.isprintable()):
        return "it holds a character other than printable ASCII"
    return None


def fingerprint(request: Any) -> str:
    """A request's digest, to tell its retry (the same) from another request under the same idempotency key: the
    SHA-256 of its canonical JSON (keys sorted, no spaces)."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def hash_api_key(key: str) -> str:
    """API keys are stored only as this SHA-256 digest (they have 256 bits of entropy; no salt needed)."""
    return hashlib.sha256(key.encode()).hexdigest()
