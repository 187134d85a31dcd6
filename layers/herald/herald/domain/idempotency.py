"""Making something once under an ``Idempotency-Key``: a tenant, a subscription, an operator endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from herald.errors import IdempotencyConflictError
from herald.records import utcnow
from herald.storage.table import CreationKey, CreationKeyTaken

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

#: How long an ``Idempotency-Key`` of a creation holds: a retry of the request within it gets what the first made.
CREATION_KEY_HOLDS_SECONDS = 24 * 3600


class KeyedCreation[T](NamedTuple):
    """A creation of a ``what`` under the Idempotency-Key ``key`` by a request of this ``fingerprint``: ``lookup`` reads
    the key's record (what it made, the fingerprint of the request that did; None if none or expired), ``get`` what it
    made (None if gone: a ``gone`` 409). Of requests at once, one makes it; the others (``CreationKeyTaken``) get it."""

    what: str
    key: str
    fingerprint: str
    lookup: Callable[[], tuple[str, str] | None]
    get: Callable[[str], T | None]
    gone: type[IdempotencyConflictError] = IdempotencyConflictError

    def once[R](self, make: Callable[[CreationKey], R], replay: Callable[[T], R]) -> R:
        """What an earlier request with the key made (as ``replay`` answers it), else what ``make`` makes now."""
        earlier = self._earlier()
        if earlier is not None:
            return replay(earlier)
        try:
            return make(self._creation_key())
        except CreationKeyTaken:
            return replay(self._made_meanwhile())

    async def once_async[R](self, make: Callable[[CreationKey], Awaitable[R]], replay: Callable[[T], R]) -> R:
        """``once``, with a ``make`` to await."""
        earlier = self._earlier()
        if earlier is not None:
            return replay(earlier)
        try:
            return await make(self._creation_key())
        except CreationKeyTaken:
            return replay(self._made_meanwhile())

    def _earlier(self) -> T | None:
        if (found := self.lookup()) is None:
            return None
        made_id, made_for = found
        if made_for != self.fingerprint:
            raise IdempotencyConflictError(f"this Idempotency-Key made {self.what} {made_id} with another request")
        if (made := self.get(made_id)) is None:
            raise self.gone(f"this Idempotency-Key made {self.what} {made_id}, deleted since")
        return made

    def _creation_key(self) -> CreationKey:
        return CreationKey(self.key, self.fingerprint, int(utcnow().timestamp()) + CREATION_KEY_HOLDS_SECONDS)

    def _made_meanwhile(self) -> T:
        if (earlier := self._earlier()) is None:  # made, and deleted already
            raise self.gone(f"this Idempotency-Key made a {self.what} deleted since") from None
        return earlier
