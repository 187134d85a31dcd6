"""One HTTP attempt: POST a signed payload to a subscriber URL and describe what came back.

Never raises for a delivery failure: every transport error becomes an ``ErrorKind`` and a message
for the attempt log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from typing import Any, Self
from urllib.parse import urlsplit

import httpcore
import httpx
import idna
from aws_lambda_powertools import Logger

from herald import __version__
from herald.errors import UrlNotAllowedError
from herald.records import ErrorKind
from herald.retry import parse_retry_after
from herald.urls import Address, UrlPolicy

logger = Logger(service="herald", child=True)

#: Connections the HTTP client holds at once. The worker's attempts take one each before their timeout starts
#: (``Worker.connections``): an invocation's deliveries may outnumber them (the template's BatchSize).
MAX_CONNECTIONS = 256
#: Connections kept open while idle: all of them. An invocation sends its batch (up to 100 deliveries) at once,
#: and the next one, warm, reuses the connections to the same endpoints instead of a TCP (and TLS) handshake each:
#: keeping 64, a batch of 100 to one host closed 36 after every burst and opened 36 again in the next. An idle
#: connection is closed after ``KEEPALIVE_SECONDS``, or once its server closes it; each holds one of Lambda's
#: 1,024 file descriptors.
MAX_IDLE_CONNECTIONS = MAX_CONNECTIONS
KEEPALIVE_SECONDS = 30.0
#: Response bodies are kept up to this many bytes in the attempt log: a failure's answer is what a subscriber
#: debugs with.
RESPONSE_MAX_BYTES = 20_000
#: A success's answer is kept up to this many bytes only. It is stored inside its delivery's item, which is ~800
#: bytes without it: every started KB of the item is one more write unit on every delivered webhook (a delivery of
#: the older kind pays it twice, its gsi1 listing copying the item). 128 bytes keeps the item within 1 KB for URLs up
#: to ~130 characters.
SUCCESS_RESPONSE_MAX_BYTES = 128
USER_AGENT = f"Herald/{__version__}"


#: Answers that ask the sender to slow down (Standard Webhooks: "502 and 504 ... usually indicate that the
#: server is under load"): their retry waits at least ``throttle_min_delay_seconds``.
SLOW_DOWN_STATUSES = frozenset({429, 502, 504})


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
    #: Cut short on the work queue, unanswered after ``slow_lane_after_seconds``, and handed to the slow lane.
    handed_over: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def throttled(self) -> bool:
        """The receiver asks to slow down: a timeout, a 429, or a 502 or 504, which Standard Webhooks reads as a
        server under load."""
        return self.error_kind is ErrorKind.TIMEOUT or self.status_code in SLOW_DOWN_STATUSES

    @property
    def duration_ms(self) -> int:
        return int((self.finished - self.started).total_seconds() * 1000)

    def latency_ms(self, published: datetime) -> int:
        """From ``published`` (the event's creation) to this attempt's response, in milliseconds."""
        return max(0, int((self.finished - published).total_seconds() * 1000))


def _interleaved(addresses: Sequence[Address]) -> list[Address]:
    """The addresses with their families taking turns, the first address's family first, each in its order (RFC 8305,
    section 4): a family whose addresses do not answer (IPv6 without a route) holds up the other by one attempt."""
    first = [address for address in addresses if address.version == addresses[0].version]
    other = [address for address in addresses if address.version != addresses[0].version]
    return [address for pair in zip_longest(first, other) for address in pair if address is not None]


#: Closings of streams that connected after their attempt was given up (kept referenced until they are done).
_CLOSING: set[asyncio.Task[None]] = set()


def _given_up(attempt: asyncio.Task[httpcore.AsyncNetworkStream]) -> None:
    """Cancel a connection attempt without waiting for it; should it connect all the same, its stream is closed."""
    attempt.cancel()
    attempt.add_done_callback(_close_if_connected)


def _close_if_connected(attempt: asyncio.Task[httpcore.AsyncNetworkStream]) -> None:
    if not attempt.cancelled() and attempt.exception() is None:
        _close_soon(attempt.result())


def _close_soon(stream: httpcore.AsyncNetworkStream) -> None:
    closing = asyncio.get_running_loop().create_task(stream.aclose())
    _CLOSING.add(closing)
    closing.add_done_callback(_closed)


def _closed(closing: asyncio.Task[None]) -> None:
    _CLOSING.discard(closing)
    if not closing.cancelled() and closing.exception() is not None:  # retrieved: the stream is gone either way
        logger.debug("a given-up connection failed to close", exc_info=closing.exception())


class HostNotResolved(httpcore.ConnectError):
    """The subscriber's host name did not resolve: a DNS failure, whatever words its message holds."""


#: Happy Eyeballs' connection attempt delay (RFC 8305, section 5): the next address is tried this long after the
#: previous attempt started, or as soon as it failed.
CONNECTION_ATTEMPT_DELAY_SECONDS = 0.25
#: Attempts of one connection at once: a connection holds at most this many sockets, whatever the number of addresses
#: (Lambda allows a process 1,024 file descriptors). With this many under way, the next address waits until the
#: oldest has had ``GIVE_UP_AFTER_SECONDS``, then takes its place.
MAX_RACING_ATTEMPTS = 3
#: What an attempt is given before the next address may take its place: past the first SYN's retransmission (1 s on
#: Linux), so one lost packet does not lose a reachable address.
GIVE_UP_AFTER_SECONDS = 1.5


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with Herald's resolver in front: ``connect_tcp`` resolves the host once,
    checks every answer against the URL policy and connects to a checked address only. The addresses are raced
    as Happy Eyeballs does (RFC 8305; anyio's ``connect_tcp`` does it for a name, which Herald does not hand it):
    the next one is tried 250 ms after the previous attempt started, or as soon as it failed, all within the one
    connect timeout, at most ``MAX_RACING_ATTEMPTS`` at once, the two families taking turns (``_interleaved``); the
    first connected wins and the others are cancelled. So an address that never answers (a stale AAAA record, a dead
    node behind several A records) costs a quarter of a second, not the whole timeout, while fewer than three are
    under way; past that, each waits for the oldest's 1.5 s.
    httpcore then starts TLS with the original host name, so SNI and the certificate check use the name, and the
    Host header is untouched."""

    def __init__(self, policy: UrlPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.policy.connectable(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from exc
        except OSError as exc:  # socket.gaierror and friends: the name did not resolve
            raise HostNotResolved(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"no address to connect to for {host}")
        options: dict[str, Any] = {"timeout": timeout, "local_address": local_address, "socket_options": socket_options}
        try:
            async with asyncio.timeout(timeout):
                return await self._first_connected([str(address) for address in _interleaved(addresses)], port, options)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no address of {host} connected within {timeout} s") from exc

    async def _first_connected(
        self, addresses: list[str], port: int, options: dict[str, Any]
    ) -> httpcore.AsyncNetworkStream:
        """The stream of the first address to connect, trying the next one ``CONNECTION_ATTEMPT_DELAY_SECONDS``
        after the previous attempt started or as soon as it failed (with ``MAX_RACING_ATTEMPTS`` under way, in the
        place of the oldest once it has had ``GIVE_UP_AFTER_SECONDS``); the last failure if none connects. Every
        attempt given up, or still running when it returns or is cancelled, is cancelled without being waited for,
        and a stream it opens all the same is closed."""
        loop = asyncio.get_running_loop()
        waiting = list(addresses)
        running: list[asyncio.Task[httpcore.AsyncNetworkStream]] = []  # in the order they started
        started: dict[asyncio.Task[httpcore.AsyncNetworkStream], float] = {}
        failure: BaseException | None = None
        try:
            while waiting or running:
                full = waiting and len(running) == MAX_RACING_ATTEMPTS
                if full and loop.time() - started[running[0]] >= GIVE_UP_AFTER_SECONDS:
                    _given_up(running.pop(0))
                if waiting and len(running) < MAX_RACING_ATTEMPTS:
                    attempt = asyncio.create_task(self.inner.connect_tcp(waiting.pop(0), port, **options))
                    running.append(attempt)
                    started[attempt] = loop.time()
                if not waiting:
                    wait: float | None = None
                elif len(running) < MAX_RACING_ATTEMPTS:
                    wait = CONNECTION_ATTEMPT_DELAY_SECONDS
                else:  # until the oldest may be given up
                    wait = max(0.0, started[running[0]] + GIVE_UP_AFTER_SECONDS - loop.time())
                done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                running = [task for task in running if task not in done]
                connected = [task.result() for task in done if task.exception() is None]
                errors = [error for task in done if (error := task.exception()) is not None]
                unexpected = [e for e in errors if not isinstance(e, httpcore.ConnectError | httpcore.ConnectTimeout)]
                kept = connected[:1] if not unexpected else []  # the winner; any other stream is closed
                for stream in connected[len(kept) :]:
                    _close_soon(stream)
                if unexpected:
                    raise unexpected[0]
                if kept:
                    return kept[0]
                failure = errors[-1] if errors else failure
        finally:
            for task in running:
                _given_up(task)
        assert failure is not None  # every attempt ended, each with a connection failure
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UrlNotAllowedError("Herald does not deliver to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's connection pool (HTTP/1.1 only) with its bookkeeping made linear.

    httpcore 1.0 re-runs ``_assign_requests_to_connections`` on every request that starts or ends, and that
    pass scans every connection once per queued request (and counts idle connections once per connection):
    with a batch of 100 deliveries in flight, the worker spent most of its CPU there (measured: 3.6 million
    ``is_idle`` calls for 300 deliveries). This pass walks the connections once, then the queued requests
    once. It also gives an idle connection to one queued request at a time and never closes or re-assigns a
    connection given to a request that has not started on it yet (both upstream's, fixed the same way in
    encode/httpcore#1035 and pydantic/httpx2#974 and #1075), drops a new connection whose request was cancelled
    before it began (httpcore 1.0 keeps those for good), and keeps up to ``max_keepalive_connections`` idle
    connections (httpcore 1.0 compares the count of every connection against it). Between sweeps, the passes a
    burst runs as its requests start, and as they end while the idle allowance holds, do not walk the connections
    (``_quick_pass``)."""

    def __init__(self, **kwargs: Any) -> None:
        # It replaces a private method of httpcore 1.0 (the layer pins 1.0.9): another version needs review.
        if kwargs.get("http2") or not httpcore.__version__.startswith("1.0."):
            raise RuntimeError(f"LinearPool is HTTP/1.1 only, over httpcore 1.0's pool, not {httpcore.__version__}")
        super().__init__(**kwargs)
        self._next_sweep = 0.0
        #: The idle connections the last whole pass left to no request, oldest first, and by origin as the quick
        #: passes since have looked for one (each connection is in its own origin's deque only).
        self._spare: list[httpcore.AsyncConnectionInterface] = []
        self._spare_by_origin: dict[tuple[bytes, bytes, int], collections.deque[httpcore.AsyncConnectionInterface]] = {}

    #: How often the pass looks for idle connections the server closed (a socket poll each) among those it is
    #: not about to reuse: a connection is always looked at before it is reused.
    SWEEP_SECONDS = 1.0

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        sweep = self._sweep_due()
        closing: list[httpcore.AsyncConnectionInterface] = []
        if not sweep and self._quick_pass(closing):
            return closing
        # A connection given to a request (in flight, or given and not started on yet) is that request's.
        spoken_for = {id(request.connection) for request in self._requests if request.connection is not None}
        kept: list[httpcore.AsyncConnectionInterface] = []
        free: list[httpcore.AsyncConnectionInterface] = []  # idle and no request's, oldest first
        for connection in self._connections:
            if connection.is_closed():
                continue
            # A request's connection was looked at when it was given (or is new): it is the request's to use.
            mine = id(connection) in spoken_for
            is_free = not mine and connection.is_idle()
            # (``info`` formats a string: asked only of the rare connection that is neither a request's nor idle.)
            if not mine and not is_free and connection.info() == "CONNECTING":
                # Made for a request that was cancelled (a timeout, a hand-over) before it began to connect: no
                # request will ever use it, and httpcore 1.0 keeps it for good, one of max_connections lost.
                closing.append(connection)
                continue
            if not mine and (sweep or not is_free) and connection.has_expired():
                closing.append(connection)
                continue
            kept.append(connection)
            if is_free:
                free.append(connection)
        # Surplus idle connections are closed, the oldest first; the others are reused, or closed to make room.
        surplus = {id(connection) for connection in free[: max(0, len(free) - self._max_keepalive_connections)]}
        closing += [connection for connection in free if id(connection) in surplus]
        self._connections[:] = [connection for connection in kept if id(connection) not in surplus]
        free = [connection for connection in free if id(connection) not in surplus and connection.is_available()]

        used: set[int] = set()
        by_origin: dict[tuple[bytes, bytes, int], collections.deque[httpcore.AsyncConnectionInterface]] = {}
        spare = iter(free)  # free connections in age order, to close for room (each at most once)
        for pool_request in (request for request in self._requests if request.is_queued()):
            origin = pool_request.request.url.origin
            key = (origin.scheme, origin.host, origin.port)  # an Origin is not hashable
            reusable = by_origin.get(key)
            if reusable is None:
                reusable = by_origin[key] = collections.deque(c for c in free if c.can_handle_request(origin))
            reused = self._reusable(reusable, used, closing)
            if reused is not None:
                connection = reused
            else:
                if len(self._connections) >= self._max_connections:
                    idle = next((candidate for candidate in spare if id(candidate) not in used), None)
                    if idle is None:
                        continue  # the pool is full and busy: this request waits (another origin's may not)
                    used.add(id(idle))
                    self._connections.remove(idle)
                    closing.append(idle)
                connection = self.create_connection(origin)
                self._connections.append(connection)
            used.add(id(connection))
            pool_request.assign_to_connection(connection)
        self._spare = [connection for connection in free if id(connection) not in used]
        self._spare_by_origin = {}
        return closing

    def _sweep_due(self) -> bool:
        """Whether this pass looks for idle connections the server closed (then the next in ``SWEEP_SECONDS``)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return False
        self._next_sweep = now + self.SWEEP_SECONDS
        return True

    def _quick_pass(self, closing: list[httpcore.AsyncConnectionInterface]) -> bool:
        """The pass between sweeps in the cases a burst of requests runs it in, done without walking the
        connections; False when the whole pass must run (what this one did, if anything, stands).

        * No request waits, and the connections no request holds are too few to exceed the idle allowance:
          nothing to do. A burst's requests end one by one, each running the pass.
        * Requests wait: each gets an idle connection to its origin that the last whole pass left to no request
          (looked at before it is reused, as the whole pass does), else, while every connection is a request's
          (none is idle) and there is room, a new one. A burst's requests start one by one, each running the pass.

        The spare connections are those the last whole pass left: a connection freed since is not among them, so a
        request that finds no spare one while some connection is no request's runs the whole pass, which finds
        it (as does one that finds no room: the whole pass may close an idle connection to make room). A
        connection that closed while a request held it (dropped from the pool by a pass) leaves the count of held
        connections one over until that request ends: a new connection may then be made where an idle one could
        have been reused, and the idle surplus is closed by a later whole pass."""
        if not self._requests:
            return False
        queued = [request for request in self._requests if request.connection is None]
        held = len(self._requests) - len(queued)
        if not queued:
            return len(self._connections) - held <= self._max_keepalive_connections
        for pool_request in queued:
            origin = pool_request.request.url.origin
            key = (origin.scheme, origin.host, origin.port)  # an Origin is not hashable
            spare = self._spare_by_origin.get(key)
            if spare is None:
                spare = self._spare_by_origin[key] = collections.deque(
                    connection for connection in self._spare if connection.can_handle_request(origin)
                )
            connection = self._reusable(spare, set(), closing)
            if connection is None:
                if len(self._connections) != held or held >= self._max_connections:
                    return False
                connection = self.create_connection(origin)
                self._connections.append(connection)
            pool_request.assign_to_connection(connection)
            held += 1
        return True

    async def aclose(self) -> None:
        """Close the pool; its spare connections, closed with it, are given to no later request."""
        self._spare, self._spare_by_origin = [], {}
        await super().aclose()

    def _reusable(
        self,
        candidates: collections.deque[httpcore.AsyncConnectionInterface],
        used: set[int],
        closing: list[httpcore.AsyncConnectionInterface],
    ) -> httpcore.AsyncConnectionInterface | None:
        """The first of ``candidates`` not used in this pass and still open (the server may have closed it)."""
        while candidates:
            connection = candidates.popleft()
            if id(connection) in used:
                continue
            used.add(id(connection))
            if connection.has_expired() or _holds_unread_bytes(connection):
                self._connections.remove(connection)
                closing.append(connection)
                continue
            return connection
        return None


def _holds_unread_bytes(connection: httpcore.AsyncConnectionInterface) -> bool:
    """Whether the server sent bytes past the end of its last answer that h11 read along with it (more than its
    ``Content-Length``, a body after a 204): the next request on this connection would read them as its own answer,
    perhaps one meant for another subscription on the same host. Bytes that came later leave the socket readable,
    which ``has_expired`` sees; these ones are already out of the socket, in h11's buffer (as curl's "excess found",
    the connection is not reused)."""
    http11 = getattr(connection, "_connection", None)  # httpcore's HTTP/1.1 connection, once connected
    state = getattr(http11, "_h11_state", None)
    trailing = getattr(state, "trailing_data", None)
    return bool(trailing and trailing[0])


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP transport over a connection pool whose network backend is a :class:`PinnedBackend`.

    httpx 0.28 takes no network backend itself, so the transport's pool is rebuilt with one: same TLS
    context and limits as httpx would use, HTTP/1.1 only, no proxy, no retries."""

    def __init__(self, policy: UrlPolicy, *, limits: httpx.Limits, verify: ssl.SSLContext | bool = True) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)  # loaded once, shared below
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError(
                "this httpx version lays out AsyncHTTPTransport differently; PinnedTransport needs review"
            )
        self._pool = LinearPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=PinnedBackend(policy),
        )


#: The headers of every request, before the delivery's own: httpx's client defaults, with Herald's user agent and
#: answers asked for uncompressed (the stored body is readable text, and no decompression can balloon).
BASE_HEADERS = (
    ("accept", "*/*"),
    ("accept-encoding", "identity"),
    ("connection", "keep-alive"),
    ("user-agent", USER_AGENT),
)


class WebhookClient:
    """Herald's HTTP client: POSTs over a :class:`PinnedTransport`, which connects only where its policy allows.

    It hands each request to the transport itself, without httpx's client layer: a webhook send uses none of
    what that layer does on every request (merging a base URL, cookies, auth, redirects, event hooks), and it
    was a third of the CPU of a send. So redirects are never followed (a 3xx is the answer), and cookies are
    never kept: an endpoint's ``Set-Cookie`` is never sent back with a later delivery, to it or to another
    subscription (another tenant's, maybe) on the same host."""

    def __init__(self, transport: PinnedTransport, timeout: float) -> None:
        self.transport = transport
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0)).as_dict()

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """POST ``content`` to ``url`` with ``headers`` (each replacing a base header of its name, in any case): the
        response, its body not read yet (closed on leaving)."""
        merged = httpx.Headers(BASE_HEADERS)
        merged.update(headers or {})
        request = httpx.Request("POST", url, headers=merged, content=content, extensions={"timeout": self._timeout})
        if request.url.host.endswith("."):
            # A fully qualified name (``hooks.example.com.``, stored before URLs lost their root dot): TLS names the
            # host without it, as curl and browsers do, or no certificate would match.
            request.extensions["sni_hostname"] = request.url.host.rstrip(".")
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()

    async def post(self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST ``content`` to ``url``: the response, read whole."""
        async with self.stream(url, content=content, headers=headers) as response:
            await response.aread()
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def pinned_client(policy: UrlPolicy, timeout: float, *, verify: ssl.SSLContext | bool = True) -> WebhookClient:
    """A new HTTP client that connects only where ``policy`` allows. ``verify`` is for tests that trust their own
    certificate authority."""
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=MAX_IDLE_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_SECONDS,
    )
    return WebhookClient(PinnedTransport(policy, limits=limits, verify=verify), timeout)


_HTTP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[UrlPolicy, float], WebhookClient]] = (
    weakref.WeakKeyDictionary()
)


def http_client(timeout: float, policy: UrlPolicy) -> WebhookClient:
    """The process's HTTP client for ``policy`` (one per event loop; Lambda keeps one loop, so it is reused
    across warm invocations with its connection pool)."""
    clients = _HTTP_CLIENTS.setdefault(asyncio.get_running_loop(), {})
    client = clients.get((policy, timeout))
    if client is None:
        client = clients[(policy, timeout)] = pinned_client(policy, timeout)
    return client


def http_clients(loop: asyncio.AbstractEventLoop) -> list[WebhookClient]:
    """The clients ``loop`` has (the benchmarks look at their connections)."""
    return list(_HTTP_CLIENTS.get(loop, {}).values())


async def close_http_client(loop: asyncio.AbstractEventLoop) -> None:
    """Close the clients ``loop`` has, if any (tests and the local stack, when they close a worker)."""
    for client in _HTTP_CLIENTS.pop(loop, {}).values():
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
    # What failed, by its type first: a message may hold the host's name, which may hold any word.
    if any(isinstance(item, HostNotResolved) or type(item).__name__ == "gaierror" for item in chain):
        return ErrorKind.DNS, text
    if any(isinstance(item, ssl.SSLError) for item in chain) or "SSL" in text or "certificate" in text.lower():
        return ErrorKind.TLS, text
    lowered = " ".join(str(item) for item in chain).lower()
    if any(marker in lowered for marker in _DNS_FAILURES):
        return ErrorKind.DNS, text
    return ErrorKind.CONNECTION, text


def cut_body(data: bytes, limit: int = RESPONSE_MAX_BYTES) -> str:
    """A response body as text of at most ``limit`` UTF-8 bytes. Each byte that is not UTF-8 becomes U+FFFD, three
    bytes, and so does the character the limit cuts in two (one U+FFFD for its bytes that fit, when it still fits,
    as a decoder reads a body cut short): the text is cut once more, in bytes, and the character that cut splits is
    dropped (the text is valid UTF-8 by then, so only that one is), in one pass whatever the body holds."""
    text = data[:limit].decode("utf-8", errors="replace")
    return text.encode()[:limit].decode("utf-8", errors="ignore")


def _host(url: str) -> str | None:
    """The URL's host, for a log line (never its path or query)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Progress:
    """How far an attempt has come, kept as it goes: its answer's head (status, ``Retry-After``) once it has
    arrived, and its body so far. An attempt cut short after its head (``cut_short``) still has its answer."""

    started: datetime = field(default_factory=_utcnow)
    began: float = 0.0
    status_code: int | None = None
    retry_after: float | None = None
    body: bytearray = field(default_factory=bytearray)

    @property
    def answered(self) -> bool:
        """Whether the answer's head has arrived: its status is the attempt's answer, whatever the body does."""
        return self.status_code is not None


async def send_attempt(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    policy: UrlPolicy,
    now: Callable[[], datetime] = _utcnow,
    progress: Progress | None = None,
) -> Outcome:
    """POST ``body`` to ``url`` once; never raises for a delivery failure. ``policy`` decides where it may
    connect: the URL's form and a literal host are checked before any network I/O, the addresses a name
    resolves to when connecting. ``now`` dates the attempt; its duration is measured on the monotonic clock.
    ``progress``, if given, is kept up to date as the answer arrives (see ``cut_short``).

    The answer is its status, once its head has arrived within the timeout: a body that stalls past the timeout
    or is cut short after it is kept as far as it came (a 2xx is a success: the subscriber took the webhook, and
    sending it again would duplicate it)."""
    progress = progress or Progress()
    progress.started, progress.began = now(), time.perf_counter()
    failure: tuple[ErrorKind, str] | None = None
    try:
        async with asyncio.timeout(timeout_seconds):
            policy.check_url(url)
            client = http_client(timeout_seconds, policy)
            async with client.stream(url, content=body, headers=headers) as response:
                progress.status_code = response.status_code
                progress.retry_after = parse_retry_after(response.headers.get("retry-after"), now())
                # Read on to the failure limit even for a success: an answer read to its end (20,000 bytes
                # at most) keeps its connection for the next request.
                async for chunk in response.aiter_raw():
                    progress.body += chunk
                    if len(progress.body) >= RESPONSE_MAX_BYTES:
                        break
    except (UrlNotAllowedError, OSError, httpx.HTTPError, TimeoutError, ssl.SSLError) as exc:
        failure = classify(exc)
    except (httpx.InvalidURL, idna.IDNAError, OverflowError) as exc:
        # A URL the HTTP client cannot send (stored before its creation refused it): every attempt would fail alike.
        failure = ErrorKind.REFUSED_BY_POLICY, f"the URL cannot be sent: {exc}"
    except Exception as exc:
        # Whatever else a strange endpoint provokes (an unparseable answer, an odd header) is this
        # attempt's failure, logged like any other; raising would re-send without a record.
        # The host only: a subscriber's path or query may carry its own secret (a token in the URL).
        logger.exception("unexpected error while delivering", extra={"host": _host(url)})
        failure = ErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}"
    return _outcome(progress, failure)


def cut_short(progress: Progress, why: str) -> Outcome:
    """The outcome of an attempt whose answer's head has arrived (``progress.answered``) but which was stopped
    before its body ended: its status, with the body as far as it came (a 2xx is a success)."""
    assert progress.answered, "an attempt with no answer yet has no outcome but its failure"
    return _outcome(progress, (ErrorKind.TIMEOUT, why))


def _outcome(progress: Progress, failure: tuple[ErrorKind, str] | None) -> Outcome:
    """What the attempt gave: its status once its head had arrived (the body as far as it came, and what stopped
    it in a failure's message), else its failure."""
    status_code = progress.status_code
    kind: ErrorKind | None = None
    message: str | None = None
    text: str | None = None
    if status_code is None:
        assert failure is not None  # no status: the attempt failed before the answer's head
        kind, message = failure
    else:
        succeeded = 200 <= status_code < 300
        text = cut_body(bytes(progress.body), SUCCESS_RESPONSE_MAX_BYTES if succeeded else RESPONSE_MAX_BYTES)
        if not succeeded:
            kind = ErrorKind.HTTP_STATUS
            message = f"the endpoint answered {status_code}"
            if 300 <= status_code < 400:
                message += " (redirects are not followed)"
            if failure is not None:
                message += f"; its body did not arrive whole ({failure[1]})"
    return Outcome(
        status_code,
        kind,
        message,
        text,
        progress.retry_after,
        progress.started,
        progress.started + timedelta(seconds=time.perf_counter() - progress.began),
    )
