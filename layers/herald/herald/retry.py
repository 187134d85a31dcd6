"""The retry policy: when the next attempt of a failed delivery happens, if ever.

The schedule is configuration (``HERALD_RETRY_SCHEDULE``); this module only applies it, with
jitter, a floor after timeouts, 429s, 502s and 504s, and ``Retry-After`` clamped to [1x, 2x] the scheduled delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from herald.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """``schedule[i]`` is the wait before attempt ``i + 1``; ``schedule[0]`` is the first attempt's."""

    schedule: tuple[int, ...]
    jitter: float = 0.2
    throttle_min_delay: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.retry_schedule,
            settings.retry_jitter,
            settings.throttle_min_delay_seconds,
        )

    @property
    def max_attempts(self) -> int:
        return len(self.schedule)

    @property
    def longest_span_seconds(self) -> float:
        """The longest a delivery can stay pending: every step at its maximum (jitter, throttle floor,
        ``Retry-After`` at 2x)."""
        return sum(2 * (1 + self.jitter) * max(step, self.throttle_min_delay) for step in self.schedule[1:])

    @property
    def span_seconds(self) -> float:
        """The schedule's whole span, each step at its longest jitter: the latest a delivery retried to the end of
        its schedule makes its last attempt after its first, but for a ``Retry-After`` or a throttle's floor."""
        return (1 + self.jitter) * sum(self.schedule[1:])

    @property
    def shortest_span_seconds(self) -> float:
        """The soonest the last attempt comes after the first: the schedule's whole span, less the jitter of its
        last step alone (``delay_after``: the steps' jitter does not add up). The default schedule's is 25.6 h."""
        return sum(self.schedule[1:]) - self.jitter * (self.schedule[-1] if len(self.schedule) > 1 else 0)

    def delay_after(
        self,
        attempt: int,
        *,
        throttled: bool = False,
        retry_after: float | None = None,
        since_first: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait after attempt number ``attempt`` (1-based) failed, or None when it was the last.

        ``throttled`` is a timeout, a 429, a 502 or a 504 (at least ``throttle_min_delay``, jittered upwards: the
        deliveries a struggling receiver turned away together do not all come back in the same second);
        ``retry_after`` is the receiver's ``Retry-After`` in seconds, honoured within [1x, 2x] the scheduled delay.
        ``since_first``: seconds from the delivery's first attempt to this failure. Before the last attempt the
        wait is then long enough that the last comes ``shortest_span_seconds`` after the first at the soonest:
        each step is jittered by up to 20 %, and eight steps drawn short would otherwise give up on a delivery
        5.5 h early (22 h instead of 27.6).
        """
        if attempt >= self.max_attempts:
            return None
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        delay = self.schedule[attempt] * spread
        if throttled:
            # The same draw, mapped from [1 - jitter, 1 + jitter] onto [1, 1 + jitter].
            delay = max(delay, self.throttle_min_delay * (1 + (spread - 1 + self.jitter) / 2))
        if retry_after is not None:
            delay = min(max(retry_after, delay), 2 * delay)
        if since_first is not None and attempt == self.max_attempts - 1:
            delay = max(delay, self.shortest_span_seconds - since_first)
        return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: it accepts "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year past what datetime holds
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
