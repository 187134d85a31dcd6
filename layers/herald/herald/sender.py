"""One HTTP attempt: POST a signed payload to a subscriber URL and describe what came back.

Never raises for a delivery failure: every transport error becomes an ``ErrorKind`` and a message
for the attempt log.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from aws_lambda_powertools import Logger

from herald import __version__
from herald.errors import UrlNotAllowedError
from herald.models import ErrorKind
from herald.retry import parse_retry_after
from herald.urls import check_resolved

logger = Logger(service="herald", child=True)

#: Response bodies are kept up to this many bytes in the attempt log.
RESPONSE_MAX_BYTES = 20_000
USER_AGENT = f"Herald/{__version__}"


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt gave."""

    status_code: int | None
    error_kind: ErrorKind | None
    error_message: str | None
    body: str | None
    retry_after: float | None
    started: datetime
    finished: datetime

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def throttled(self) -> bool:
        return self.error_kind is ErrorKind.TIMEOUT or self.status_code == 429

    @property
    def duration_ms(self) -> int:
        return int((self.finished - self.started).total_seconds() * 1000)


_HTTP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def http_client(timeout: float) -> httpx.AsyncClient:
    """The process's HTTP client (one per event loop; Lambda keeps one loop, so it is reused across warm
    invocations with its connection pool). Redirects are never followed. Responses are asked for
    uncompressed, so the stored body is readable text and no decompression can balloon."""
    loop = asyncio.get_running_loop()
    client = _HTTP_CLIENTS.get(loop)
    if client is None:
        client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30),
            headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
            trust_env=False,
        )
        _HTTP_CLIENTS[loop] = client
    return client


async def close_http_client(loop: asyncio.AbstractEventLoop) -> None:
    """Close the client ``loop`` has, if any (tests and the local stack, when they close a worker)."""
    client = _HTTP_CLIENTS.pop(loop, None)
    if client is not None:
        await client.aclose()


_DNS_FAILURES = (
    "name or service not known",
    "nodename nor servname",
    "getaddrinfo",
    "temporary failure in name resolution",
    "no address associated with hostname",
    "name resolution",
)


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """One error kind per transport failure; see ``ErrorKind``."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return ErrorKind.TIMEOUT, f"no complete answer within the timeout ({type(exc).__name__})"
    if isinstance(exc, UrlNotAllowedError):
        return ErrorKind.REFUSED_BY_POLICY, exc.message
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    if any(isinstance(item, ssl.SSLError) for item in chain) or "SSL" in text or "certificate" in text.lower():
        return ErrorKind.TLS, text
    if any(type(item).__name__ == "gaierror" for item in chain):
        return ErrorKind.DNS, text
    lowered = " ".join(str(item) for item in chain).lower()
    if any(marker in lowered for marker in _DNS_FAILURES):
        return ErrorKind.DNS, text
    return ErrorKind.CONNECTION, text


def cut_body(data: bytes, limit: int = RESPONSE_MAX_BYTES) -> str:
    """A response body as text of at most ``limit`` UTF-8 bytes (a character cut in two is dropped)."""
    text = data[:limit].decode("utf-8", errors="replace")
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def send_attempt(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    allow_private: bool,
    now: Callable[[], datetime] = _utcnow,
) -> Outcome:
    """POST ``body`` to ``url`` once; never raises for a delivery failure. ``now`` dates the attempt; its
    duration is measured on the monotonic clock."""
    started = now()
    began = time.perf_counter()
    status_code: int | None = None
    kind: ErrorKind | None = None
    message: str | None = None
    text: str | None = None
    retry_after: float | None = None
    try:
        async with asyncio.timeout(timeout_seconds):
            await check_resolved(url, allow_private=allow_private)
            client = http_client(timeout_seconds)
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status_code = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"), now())
                chunks = bytearray()
                async for chunk in response.aiter_raw():
                    chunks += chunk
                    if len(chunks) >= RESPONSE_MAX_BYTES:
                        break
                text = cut_body(bytes(chunks))
        if not 200 <= status_code < 300:
            kind = ErrorKind.HTTP_STATUS
            message = f"the endpoint answered {status_code}"
            if 300 <= status_code < 400:
                message += " (redirects are not followed)"
    except (UrlNotAllowedError, OSError, httpx.HTTPError, TimeoutError, ssl.SSLError) as exc:
        status_code = None
        kind, message = classify(exc)
    except Exception as exc:
        # Whatever else a strange endpoint provokes (an unparseable answer, an odd header) is this
        # attempt's failure, logged like any other; raising would re-send without a record.
        logger.exception("unexpected error while delivering", extra={"url": url})
        status_code = None
        kind, message = ErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}"
    return Outcome(
        status_code,
        kind,
        message,
        text,
        retry_after,
        started,
        started + timedelta(seconds=time.perf_counter() - began),
    )
