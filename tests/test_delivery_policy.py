"""Pure unit tests: the retry policy (schedule, jitter, throttle floor, Retry-After), the error kinds of
transport failures, and the cut of response bodies. No AWS, no network."""

from __future__ import annotations

import random
import socket
import ssl
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from herald.errors import UrlNotAllowedError
from herald.records import Delivery, DeliveryStatus, ErrorKind
from herald.retry import RetryPolicy, parse_retry_after
from herald.sender import RESPONSE_MAX_BYTES, Outcome, classify, cut_body
from herald.settings import DEFAULT_RETRY_SCHEDULE, Settings
from herald.worker.schedule import next_step

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
STEADY = RetryPolicy(DEFAULT_RETRY_SCHEDULE, jitter=0.0)


# --- the schedule ------------------------------------------------------------------------------------------------


def test_the_default_schedule_is_immediately_then_5s_5min_30min_2h_5h_10h_10h() -> None:
    assert DEFAULT_RETRY_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert Settings().retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert STEADY.max_attempts == 8


def test_each_failed_attempt_waits_the_next_step_and_the_last_one_ends_the_delivery() -> None:
    # GIVEN no jitter, WHEN attempts 1..8 fail, THEN the waits are the schedule's steps 2..8, then none
    assert [STEADY.delay_after(n) for n in range(1, 9)] == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert STEADY.delay_after(9) is None


def test_the_schedule_is_configuration_and_may_have_steps_longer_than_12h() -> None:
    settings = Settings(retry_schedule="0, 1; 100000")
    assert settings.retry_schedule == (0, 1, 100000)
    policy = RetryPolicy.from_settings(settings.model_copy(update={"retry_jitter": 0.0}))
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [1, 100000, None]


@pytest.mark.parametrize("schedule", ["", "5,-1", "a,b", "60,300"])
def test_a_schedule_that_makes_no_sense_is_refused(schedule: str) -> None:
    with pytest.raises(ValidationError):
        Settings(retry_schedule=schedule)


def test_jitter_stays_within_20_percent_and_is_reproducible_with_a_seed() -> None:
    # GIVEN the default +/-20 % jitter
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE)
    rng = random.Random(1234)
    # WHEN many delays are drawn for the 5-minute step
    delays = [policy.delay_after(2, rng=rng) for _ in range(2000)]
    # THEN all are within [240, 360], they really spread, and the same seed draws the same ones
    assert all(d is not None and 240 <= d <= 360 for d in delays)
    values = [d for d in delays if d is not None]
    assert min(values) < 250
    assert max(values) > 350
    again = random.Random(1234)
    assert [policy.delay_after(2, rng=again) for _ in range(2000)] == delays


class _Drawn(random.Random):
    """Every jitter drawn at one end of its range."""

    def __init__(self, end: str) -> None:
        super().__init__(0)
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return a if self.end == "low" else b


def _give_up_after(draws: random.Random, *, answer: int = 500) -> timedelta:
    """From a delivery's first attempt to its last, each attempt failing with ``answer``, as the worker schedules
    them (``next_step`` over the delivery it has recorded)."""
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE)
    first = now = NOW
    previous: Delivery | None = None
    for scheduled in range(1, policy.max_attempts + 1):
        outcome = Outcome(answer, None, None, None, None, now, now + timedelta(seconds=1))
        first_at = None if previous is None else first
        next_at, status = next_step(
            outcome, scheduled, previous, False, policy=policy, rng=draws, first_attempt_at=first_at
        )
        if next_at is None:
            assert status is DeliveryStatus.FAILED
            return now - first
        previous = Delivery(
            id="dlv_1", event_id="evt_1", subscription_id="sub_1", tenant_id="ten_1", event_type="a.b",
            status=status, attempts=scheduled, next_attempt_at=next_at, created_at=first, updated_at=now,
        )  # fmt: skip
        now = next_at
    raise AssertionError("the schedule never ended")


def test_a_failing_delivery_is_retried_for_more_than_a_day_however_the_jitter_falls() -> None:
    # GIVEN the default schedule (27.6 h), and every step's jitter drawn 20 % short (eight such steps would give up
    # after 22 h), or 20 % long, or anywhere
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE)
    shortest = _give_up_after(_Drawn("low"))
    longest = _give_up_after(_Drawn("high"))
    spread = [_give_up_after(random.Random(seed)) for seed in range(200)]
    # THEN the last attempt comes at least 25.6 h after the first (the whole span, less the last step's jitter)
    assert policy.shortest_span_seconds == sum(DEFAULT_RETRY_SCHEDULE) - 0.2 * 36_000
    assert shortest >= timedelta(seconds=policy.shortest_span_seconds) > timedelta(hours=25.5)
    assert min(spread) >= shortest
    # AND the jitter still spreads it, up to every step 20 % long (the floor moves nothing up)
    assert longest == timedelta(seconds=1.2 * sum(DEFAULT_RETRY_SCHEDULE) + 7)
    assert max(spread) - min(spread) > timedelta(hours=2)


def test_a_zero_step_stays_zero_with_jitter() -> None:
    assert RetryPolicy((0, 0, 10)).delay_after(1, rng=random.Random(5)) == 0


# --- throttling and Retry-After ------------------------------------------------------------------------------------


def test_after_a_throttled_answer_the_wait_is_at_least_60s_spread_above_it() -> None:
    # GIVEN the default schedule, +/-20 % jitter and the 60 s floor after a timeout, a 429, a 502 or a 504
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE)
    rng = random.Random(9)
    # WHEN many throttled first failures are scheduled (the 5 s step)
    raised = [policy.delay_after(1, throttled=True, rng=rng) for _ in range(2000)]
    # THEN each waits at least 60 s and at most 72 s (the floor, jittered upwards), spread over that band: the
    # deliveries a struggling receiver turned away together do not all come back in the same second
    values = [d for d in raised if d is not None]
    assert len(values) == 2000
    assert min(values) >= 60
    assert max(values) <= 72
    assert min(values) < 61
    assert max(values) > 71
    longer = policy.delay_after(2, throttled=True, rng=rng)  # the 5 min step is already longer
    assert longer is not None
    assert 240 <= longer <= 360


def test_the_longest_span_covers_every_step_at_its_longest() -> None:
    # GIVEN the default policy, and each step drawn many times, throttled, with a Retry-After past every bound
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE)
    rng = random.Random(11)
    longest = [
        max(d for _ in range(500) if (d := policy.delay_after(n, throttled=True, retry_after=1e9, rng=rng)) is not None)
        for n in range(1, policy.max_attempts)
    ]
    # THEN the span a delivery can stay pending (what an event's retention is sized on) is never shorter
    assert sum(longest) <= policy.longest_span_seconds


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(100.0, 100.0), (30.0, 60.0), (1000.0, 120.0), (120.0, 120.0), (0.0, 60.0)],
)
def test_retry_after_is_honoured_within_1x_to_2x_the_scheduled_delay(retry_after: float, expected: float) -> None:
    # GIVEN a throttled failure after the first attempt (scheduled 5 s, raised to the 60 s floor)
    # THEN Retry-After is clamped to [60, 120]
    assert STEADY.delay_after(1, throttled=True, retry_after=retry_after) == expected


def test_retry_after_clamps_to_the_jittered_delay_of_a_long_step() -> None:
    # 30 min +/- 20 %: whatever the jitter, a Retry-After of 10 h is cut to twice the drawn delay
    rng = random.Random(3)
    drawn = RetryPolicy(DEFAULT_RETRY_SCHEDULE).delay_after(3, rng=random.Random(3))
    assert drawn is not None
    assert RetryPolicy(DEFAULT_RETRY_SCHEDULE).delay_after(3, retry_after=36000, rng=rng) == pytest.approx(2 * drawn)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Sun, 01 Mar 2026 12:02:00 -0000", 120.0),  # a date without a zone is UTC
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),  # a past date: now
        ("soon", None),
        ("1.5", None),
        ("-3", None),
        ("²", None),  # a digit to str.isdigit, not to float()
        ("Mon, 1 Jan 99999999999 00:00:00 GMT", None),  # a year past what a datetime holds
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


# --- error kinds ---------------------------------------------------------------------------------------------------


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ReadTimeout("timed out"), ErrorKind.TIMEOUT),
        (httpx.ConnectTimeout("timed out"), ErrorKind.TIMEOUT),
        (TimeoutError(), ErrorKind.TIMEOUT),
        (httpx.ConnectError("[Errno 111] Connection refused"), ErrorKind.CONNECTION),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), ErrorKind.CONNECTION),
        (httpx.ReadError("connection reset"), ErrorKind.CONNECTION),
        (_chained(httpx.ConnectError("failed"), socket.gaierror(-2, "Name or service not known")), ErrorKind.DNS),
        (httpx.ConnectError("[Errno -3] Temporary failure in name resolution"), ErrorKind.DNS),
        (_chained(httpx.ConnectError("failed"), ssl.SSLCertVerificationError(1, "bad cert")), ErrorKind.TLS),
        (httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"), ErrorKind.TLS),
        (UrlNotAllowedError("127.0.0.1 is not a public address"), ErrorKind.REFUSED_BY_POLICY),
    ],
)
def test_each_transport_failure_has_one_error_kind(exc: BaseException, kind: ErrorKind) -> None:
    found, message = classify(exc)
    assert found is kind
    assert message


# --- outcomes and response bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "succeeded", "throttled"),
    [
        (200, None, True, False),
        (299, None, True, False),
        (302, ErrorKind.HTTP_STATUS, False, False),
        (429, ErrorKind.HTTP_STATUS, False, True),
        (500, ErrorKind.HTTP_STATUS, False, False),
        (None, ErrorKind.TIMEOUT, False, True),
        (None, ErrorKind.CONNECTION, False, False),
    ],
)
def test_only_a_2xx_succeeds_and_only_timeouts_and_429s_throttle(
    status: int | None, kind: ErrorKind | None, succeeded: bool, throttled: bool
) -> None:
    outcome = Outcome(status, kind, None, None, None, NOW, NOW + timedelta(milliseconds=1500))
    assert (outcome.succeeded, outcome.throttled, outcome.duration_ms) == (succeeded, throttled, 1500)


def test_a_response_body_is_cut_to_20000_bytes_of_whole_characters() -> None:
    assert cut_body(b"short") == "short"
    assert cut_body(b"x" * 50_000) == "x" * RESPONSE_MAX_BYTES
    cut = cut_body("€".encode() * 10_000)  # 3 bytes each: 20,000 is not a multiple of 3
    assert set(cut) == {"€"}
    assert len(cut.encode()) == 19_998
    assert cut_body(b"\xff\xfeok") == "\ufffd\ufffdok"


def test_a_response_body_is_cut_in_one_pass_whatever_it_holds() -> None:
    # GIVEN a binary answer of 30 KB (each byte U+FFFD once decoded: three times the bytes it came in)
    body = b"\xff" * 30_000
    encodes = 0

    def counting(frame: Any, event: str, arg: Any) -> None:
        nonlocal encodes
        if event == "c_call" and getattr(arg, "__name__", "") == "encode":
            encodes += 1

    # WHEN it is cut to what the attempt log keeps, every call to str.encode counted (no clock)
    previous = sys.getprofile()
    sys.setprofile(counting)
    try:
        cut = cut_body(body)
    finally:
        sys.setprofile(previous)
    # THEN the text was encoded once, not once per character dropped (thousands: quadratic in the body)
    assert encodes == 1
    assert len(cut.encode()) == 19_998


def _cut_by_characters(data: bytes, limit: int) -> str:
    """The cut as words say it: the body decoded (U+FFFD for each byte that is not UTF-8), then its last characters
    dropped one by one until its UTF-8 fits ``limit`` bytes."""
    text = data[:limit].decode("utf-8", errors="replace")
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def test_a_response_body_that_is_not_utf8_is_cut_to_whole_characters_too() -> None:
    # A binary answer (a gzip page, an image): each byte is U+FFFD, 3 bytes, so 20,000 bytes of it keep 6,666
    binary = cut_body(b"\xff" * 30_000)
    assert binary == "\ufffd" * 6_666
    assert len(binary.encode()) == 19_998
    # Bodies mixing text, characters of 2 to 4 bytes, bytes that are not UTF-8 and a character cut at the end, cut
    # at every limit around their length: the same text as dropping characters one by one
    rng = random.Random(11)
    pieces = [b"ok", "é".encode(), "€".encode(), "🦀".encode(), b"\xff", b"\xc3", b"\xe2\x82", b"\x00", b" "]
    for _ in range(300):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40)))
        for limit in range(len(body) + 2):
            assert cut_body(body, limit) == _cut_by_characters(body, limit), (body, limit)
