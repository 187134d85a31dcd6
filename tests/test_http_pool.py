"""Herald's connection pool (``herald.sender.LinearPool``) over real HTTP on 127.0.0.1: how many connections it
opens, reuses, keeps and closes, and what its bookkeeping costs.

Each server counts the TCP connections it accepted and saw closed, and the requests it held at once. A server can
hold every request until a given number are in flight together (a barrier): how many connections a batch needs is
then set by the test, not by the timing of a busy machine. Nothing waits for time, only for conditions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socketserver
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest
from httpcore._async.connection_pool import AsyncPoolRequest

from herald.local.loopback import LoopbackServer, QuietHandler
from herald.records import ErrorKind
from herald.sender import (
    LinearPool,
    Outcome,
    PinnedTransport,
    WebhookClient,
    close_http_client,
    pinned_client,
    send_attempt,
)
from herald.urls import LOCAL_NETWORKS, UrlPolicy, parse_networks

pytestmark = pytest.mark.e2e

LOOPBACK_POLICY = UrlPolicy(allowed_networks=parse_networks(LOCAL_NETWORKS))
#: How long a server holds a request, or a test waits for a condition, before giving up (then the test fails).
PATIENCE = 30.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of connections is accepted at once, none dropped by the listen backlog


class PoolServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers every POST 200 with an empty body, and counts what a pool
    does to it: TCP connections accepted (``accepted``), connections that ended (``closed``: the client hung up,
    or the server did), requests held at the same time (``most_in_flight``).

    Each request is held until ``together`` requests are in flight at once (they are then answered together; 503
    if that never happens within ``PATIENCE``); a request to ``/held`` is held further, until ``release`` is set.
    With ``hang_up=True`` the server closes the connection right after each response, while its answer
    advertised keep-alive (HTTP/1.1, no ``Connection: close``)."""

    def __init__(self, *, together: int = 1, hang_up: bool = False) -> None:
        self.accepted = 0
        self.closed = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = threading.Event()
        self._barrier = threading.Barrier(together, timeout=PATIENCE)
        self._lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def setup(self) -> None:
                super().setup()
                with outer._lock:
                    outer.accepted += 1

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with outer._lock:
                        outer.closed += 1

            def do_POST(self) -> None:
                self.read_body()
                with outer._lock:
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                try:
                    outer._barrier.wait()
                    answered = self.path != "/held" or outer.release.wait(PATIENCE)
                except threading.BrokenBarrierError:
                    answered = False
                with outer._lock:
                    outer.in_flight -= 1
                self.answer(200 if answered else 503)
                if hang_up:
                    self.close_connection = True

        self.http = LoopbackServer(Handler, server_class=_Server, poll_interval=0.05)

    @property
    def port(self) -> int:
        return self.http.port

    def url(self, path: str = "/webhook") -> str:
        return self.http.url(path)

    @property
    def origin(self) -> httpcore.Origin:
        return httpcore.Origin(b"http", b"127.0.0.1", self.port)

    def hold_together(self, count: int) -> None:
        """From now on, hold each request until ``count`` are in flight (call it while none is)."""
        self._barrier = threading.Barrier(count, timeout=PATIENCE)

    def close(self) -> None:
        self._barrier.abort()  # whatever is still held is answered (503) and its thread ends
        self.release.set()
        self.http.close()


@pytest.fixture
def servers() -> Iterator[Callable[..., PoolServer]]:
    """Starts ``PoolServer``s; each is shut down at teardown, whatever happened."""
    started: list[PoolServer] = []

    def start(*, together: int = 1, hang_up: bool = False) -> PoolServer:
        started.append(PoolServer(together=together, hang_up=hang_up))
        return started[-1]

    yield start
    for server in started:
        server.close()


def small_client(*, max_connections: int, max_keepalive_connections: int) -> tuple[WebhookClient, LinearPool]:
    """Herald's HTTP client over a ``PinnedTransport`` with small limits, and its pool."""
    transport = PinnedTransport(
        LOOPBACK_POLICY,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_keepalive_connections, keepalive_expiry=60
        ),
    )
    client = WebhookClient(transport, PATIENCE)
    return client, pool_of(client)


def pool_of(client: WebhookClient) -> LinearPool:
    assert isinstance(client.transport._pool, LinearPool)
    return client.transport._pool


def idle(pool: httpcore.AsyncConnectionPool) -> int:
    return sum(connection.is_idle() for connection in pool.connections)


async def post_all(client: WebhookClient, urls: list[str]) -> list[int]:
    """POST to every URL at once; the status codes, in order."""
    responses = await asyncio.gather(*(client.post(url, content=b"{}") for url in urls))
    return [response.status_code for response in responses]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition`` holds (a failure after ``PATIENCE`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"still not the case after {PATIENCE} s: {what}")
        await asyncio.sleep(0.01)


# --- reuse and limits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wave", [50, 80])
def test_a_burst_of_100_all_succeed_and_the_next_wave_reuses_the_idle_connections(
    servers: Callable[..., PoolServer], wave: int
) -> None:
    # GIVEN a client of 256 connections at most, 64 kept idle, and a server that answers only once 100 requests are
    # in flight together
    server = servers(together=100)
    client, pool = small_client(max_connections=256, max_keepalive_connections=64)

    async def run() -> None:
        async with client:
            # WHEN 100 POSTs are sent at once
            first = await post_all(client, [server.url()] * 100)
            # THEN all got 200, over 100 connections (the server held them all at once); once all had finished the
            # pool kept 64 of them, idle, and closed the other 36
            assert first == [200] * 100
            assert server.accepted == 100
            assert server.most_in_flight == 100
            assert len(pool.connections) == 64
            assert idle(pool) == 64
            await eventually(lambda: server.closed == 36, "the server saw the 36 surplus connections closed")

            # WHEN a second wave is sent at once (the server holding each request until the whole wave is in)
            server.hold_together(wave)
            second = await post_all(client, [server.url()] * wave)
            # THEN each request of the wave got one of the 64 idle connections while there were some, and only the
            # requests beyond them opened a connection: none for a wave of 50, exactly 16 for a wave of 80
            assert second == [200] * wave
            assert server.accepted == 100 + max(0, wave - 64)
            # ... and the pool is back to 64 idle connections
            assert len(pool.connections) == 64
            assert idle(pool) == 64
            await eventually(lambda: server.closed == 36 + max(0, wave - 64), "the surplus closed again")

    asyncio.run(run())


def test_herald_s_client_keeps_a_burst_s_connections_for_the_next_batch(servers: Callable[..., PoolServer]) -> None:
    # GIVEN Herald's client, and a server that answers only once 100 requests are in flight together
    server = servers(together=100)

    async def run() -> None:
        async with pinned_client(LOOPBACK_POLICY, PATIENCE) as client:
            pool = pool_of(client)
            # WHEN a batch's 100 POSTs are sent at once, THEN all 100 connections are kept, idle
            assert await post_all(client, [server.url()] * 100) == [200] * 100
            assert server.accepted == 100
            assert idle(pool) == len(pool.connections) == 100
            # AND the next batch of 100 reuses them all: no new connection, none closed
            assert await post_all(client, [server.url()] * 100) == [200] * 100
            assert server.accepted == 100
            assert server.closed == 0
            assert idle(pool) == len(pool.connections) == 100

    asyncio.run(run())


def test_max_connections_caps_the_connections_and_the_requests_the_server_holds(
    servers: Callable[..., PoolServer],
) -> None:
    # GIVEN a client allowed 4 connections, and a server that holds each request until 4 are in flight together
    server = servers(together=4)
    client, pool = small_client(max_connections=4, max_keepalive_connections=4)

    async def run() -> list[int]:
        async with client:
            # WHEN 20 POSTs are sent at once
            return await post_all(client, [server.url()] * 20)

    statuses = asyncio.run(run())
    # THEN all got 200, in five groups of 4 over the same 4 connections: the server never held more than 4 at once
    # (had the pool let a fifth in, it would have arrived while 4 were in flight) and accepted 4 connections only
    assert statuses == [200] * 20
    assert server.most_in_flight == 4
    assert server.accepted == 4
    assert pool.connections == []  # closed with the client


def test_a_full_pool_closes_an_idle_connection_to_make_room_for_another_origin(
    servers: Callable[..., PoolServer],
) -> None:
    # GIVEN a client allowed 2 connections, both idle and kept alive to server A (two requests held together)
    server_a = servers(together=2)
    server_b = servers()
    client, pool = small_client(max_connections=2, max_keepalive_connections=2)

    async def run() -> None:
        async with client:
            assert await post_all(client, [server_a.url()] * 2) == [200, 200]
            assert server_a.accepted == 2
            assert len(pool.connections) == 2
            assert idle(pool) == 2
            # WHEN a request goes to server B
            response = await client.post(server_b.url(), content=b"{}")
            # THEN it succeeds on a new connection to B; the pool closed one of A's idle connections for it (A saw
            # it closed) and holds 2 connections: A's other one and B's
            assert response.status_code == 200
            assert server_b.accepted == 1
            await eventually(lambda: server_a.closed == 1, "server A saw one connection closed")
            assert server_a.accepted == 2
            assert len(pool.connections) == 2
            assert [connection.can_handle_request(server_a.origin) for connection in pool.connections].count(True) == 1
            assert [connection.can_handle_request(server_b.origin) for connection in pool.connections].count(True) == 1

    asyncio.run(run())


def test_a_request_for_another_origin_waits_for_a_connection_of_a_full_busy_pool_then_gets_room(
    servers: Callable[..., PoolServer],
) -> None:
    # GIVEN a client allowed 2 connections, both busy with requests server A holds
    server_a = servers(together=2)
    server_b = servers()
    client, pool = small_client(max_connections=2, max_keepalive_connections=2)

    async def run() -> None:
        async with client:
            held = [asyncio.create_task(client.post(server_a.url("/held"), content=b"{}")) for _ in range(2)]
            await eventually(lambda: server_a.in_flight == 2, "server A holds both requests")
            # WHEN a request to server B is made
            to_b = asyncio.create_task(client.post(server_b.url(), content=b"{}"))
            await eventually(lambda: any(request.is_queued() for request in pool._requests), "B's request queued")
            # THEN it waits: there is no room, and no idle connection to close for it
            assert server_b.accepted == 0
            assert len(pool.connections) == 2
            # WHEN A answers both
            server_a.release.set()
            # THEN all three succeed: B's request got room by the closing of one of A's connections once idle
            assert [response.status_code for response in await asyncio.gather(*held, to_b)] == [200, 200, 200]
            assert server_b.accepted == 1
            await eventually(lambda: server_a.closed == 1, "server A saw one connection closed")
            assert len(pool.connections) == 2

    asyncio.run(run())


@pytest.mark.parametrize(
    "sweep_seconds",
    [
        pytest.param(0.0, id="found-by-a-sweep"),
        pytest.param(3600.0, id="found-when-reused"),
    ],
)
def test_a_kept_alive_connection_the_server_closed_while_idle_is_not_reused(
    servers: Callable[..., PoolServer], monkeypatch: pytest.MonkeyPatch, sweep_seconds: float
) -> None:
    # GIVEN a server that hangs up right after each response, although its answer advertised keep-alive, and a
    # pool that looks for closed idle connections on every pass, or only before reusing one (no sweep after the
    # first pass)
    monkeypatch.setattr(LinearPool, "SWEEP_SECONDS", sweep_seconds)
    server = servers(hang_up=True)
    client, pool = small_client(max_connections=4, max_keepalive_connections=4)

    async def run() -> None:
        async with client:
            first = await client.post(server.url(), content=b"{}")
            assert first.status_code == 200
            assert first.http_version == "HTTP/1.1"
            assert "connection" not in first.headers  # keep-alive, as far as the client can tell
            await eventually(lambda: server.closed == 1, "the server hung up")
            old = pool.connections
            # (a sweep may have dropped the connection already, in the pass run as the first response ended)
            assert len(old) == 1 or sweep_seconds == 0
            for connection in old:
                assert connection.is_idle()
                await eventually(connection.has_expired, "the client's end saw the hang-up")
            # WHEN the next request is sent
            second = await client.post(server.url(), content=b"{}")
            # THEN it succeeds, on a new connection; the closed one left the pool
            assert second.status_code == 200
            assert server.accepted == 2
            assert not [connection for connection in pool.connections if connection in old]
            # (and the new one, hung up on too, was dropped if a sweep ran after the second response)
            assert len(pool.connections) == 1 or sweep_seconds == 0

    asyncio.run(run())


def test_max_keepalive_connections_counts_the_idle_connections(servers: Callable[..., PoolServer]) -> None:
    # (httpcore 1.0.9's own pass compares the count of all connections with max_keepalive_connections. Verified
    # with it swapped in for LinearPool's: at the first THEN it had closed all 7 idle connections (3 busy, 0 idle);
    # at the last it kept 3 idle, as LinearPool does.)
    # GIVEN a client allowed 10 connections and 3 idle ones, and a server that holds each request until 10 are in
    # flight together, then answers, except 3 requests it holds further
    server = servers(together=10)
    client, pool = small_client(max_connections=10, max_keepalive_connections=3)

    async def run() -> None:
        async with client:
            quick = [asyncio.create_task(client.post(server.url(), content=b"{}")) for _ in range(7)]
            held = [asyncio.create_task(client.post(server.url("/held"), content=b"{}")) for _ in range(3)]
            # WHEN the 7 others finish
            assert [response.status_code for response in await asyncio.gather(*quick)] == [200] * 7
            # THEN the pool keeps 3 of their connections idle, besides the 3 busy ones, and closed 4
            assert server.accepted == 10
            assert idle(pool) == 3
            assert len(pool.connections) == 6
            await eventually(lambda: server.closed == 4, "the server saw 4 connections closed")
            # WHEN the 3 held requests finish too
            server.release.set()
            assert [response.status_code for response in await asyncio.gather(*held)] == [200] * 3
            # THEN exactly 3 connections are kept, idle: the 3 surplus were closed
            assert idle(pool) == 3
            assert len(pool.connections) == 3
            await eventually(lambda: server.closed == 7, "the server saw 7 connections closed")

    asyncio.run(run())


# --- the cost of the bookkeeping --------------------------------------------------------------------------------


def count_calls(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> Counter[str]:
    """Counts, from now on, the calls of these methods of every httpcore connection (the methods still run)."""
    calls: Counter[str] = Counter()

    def counting(name: str) -> Callable[..., Any]:
        original = getattr(httpcore.AsyncHTTPConnection, name)

        def method(self: httpcore.AsyncHTTPConnection, *args: Any) -> Any:
            calls[name] += 1
            return original(self, *args)

        return method

    for name in names:
        monkeypatch.setattr(httpcore.AsyncHTTPConnection, name, counting(name))
    return calls


#: The connection methods a pool's pass calls, per connection or per queued request, to decide who gets what.
#: (``is_closed`` is left out: a whole pass calls it once per connection, so over the passes a burst's last requests
#: run as they end (closing the idle surplus) it grows with requests x connections: 2,970 calls with LinearPool for
#: the burst below, 14,320 before its requests started without a whole pass; 12,016 with httpcore's own pool.)
BOOKKEEPING = ("is_idle", "is_available", "can_handle_request", "has_expired")
REQUESTS = 100
#: Measured for this burst with LinearPool: 4,744 calls (is_idle 2,340, is_available 2,304, can_handle_request 100,
#: each from the connection's own check of its request, has_expired 0: no sweep when the burst takes under
#: ``SWEEP_SECONDS``, at most one call per idle connection per sweep otherwise), all from the whole passes of the
#: last 36 requests to end (the first 64 to end run none, nor does any request as it starts: ``_quick_pass``);
#: 8,904 before the first were skipped. With httpcore 1.0.9's own pass
#: in its place (``LinearPool``'s
#: ``_assign_requests_to_connections`` swapped for ``httpcore.AsyncConnectionPool``'s): 175,072 (is_idle 153,056,
#: is_available 4,950, can_handle_request 5,050, has_expired 12,016), 11 times the bound. A pass calls is_idle
#: and is_available at most once per idle connection, of which the client here keeps at most 64 (and none is idle
#: while this burst starts): about 130 calls per request at most however large the burst (measured: 2,600 for a
#: burst of 50, 21,904 for 200). A client that keeps an idle surplus to close is the costly case, and the one
#: measured: Herald's keeps every connection (``sender.MAX_IDLE_CONNECTIONS``), and its burst's requests run quick
#: passes only, as they start and as they end.
CALLS_PER_REQUEST = 150


def test_the_pool_s_bookkeeping_is_linear_in_the_requests(
    servers: Callable[..., PoolServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN every call to a connection's state methods counted, and a server that holds each request until 100 are
    # in flight together (100 connections: the most a pass has to look at)
    calls = count_calls(monkeypatch, BOOKKEEPING)
    server = servers(together=REQUESTS)
    client, _ = small_client(max_connections=256, max_keepalive_connections=64)

    async def run() -> list[int]:
        async with client:
            # WHEN 100 POSTs are sent at once through a client that keeps 64 of their connections
            return await post_all(client, [server.url()] * REQUESTS)

    statuses = asyncio.run(run())
    # THEN all got 200, each over its own connection, for fewer than 150 calls per request
    assert statuses == [200] * REQUESTS
    assert server.accepted == REQUESTS
    assert sum(calls.values()) < CALLS_PER_REQUEST * REQUESTS, calls


def test_a_pass_while_every_connection_is_a_request_s_looks_at_no_connection(
    servers: Callable[..., PoolServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN four requests in flight, each on its own connection, and no sweep due
    server = servers(together=4)
    client, pool = small_client(max_connections=4, max_keepalive_connections=1)

    async def run() -> list[int]:
        async with client:
            held = [asyncio.create_task(client.post(server.url("/held"), content=b"{}")) for _ in range(4)]
            await eventually(lambda: server.in_flight == 4, "four requests in flight")
            pool._next_sweep = float("inf")
            calls = count_calls(monkeypatch, (*BOOKKEEPING, "is_closed", "info"))
            # WHEN the pool runs its pass (as it does whenever a request starts or ends)
            closing = pool._assign_requests_to_connections()
            # THEN it had nothing to do, and asked no connection anything
            assert closing == []
            assert calls == {}
            # AND once the requests are done, the pass runs again: one idle connection kept, the surplus closed
            server.release.set()
            statuses = [response.status_code for response in await asyncio.gather(*held)]
            assert idle(pool) == 1
            assert len(pool.connections) == 1
            return statuses

    assert asyncio.run(run()) == [200] * 4


def test_a_warm_burst_s_requests_start_on_the_idle_connections_without_a_walk_of_the_pool(
    servers: Callable[..., PoolServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a client that keeps 64 idle connections, after a burst of 100 requests, and no sweep due
    server = servers()
    client, pool = small_client(max_connections=256, max_keepalive_connections=64)

    async def wave(client: WebhookClient) -> list[int]:
        held = [asyncio.create_task(client.post(server.url("/held"), content=b"{}")) for _ in range(REQUESTS)]
        await eventually(lambda: server.in_flight == REQUESTS, "the wave's requests all held")
        return [response.status_code for response in await _released(server, held)]

    async def run() -> None:
        async with client:
            assert await wave(client) == [200] * REQUESTS
            assert (idle(pool), server.accepted) == (64, REQUESTS)
            pool._next_sweep = float("inf")
            calls = count_calls(monkeypatch, (*BOOKKEEPING, "is_closed", "info"))
            # WHEN 100 more requests start
            held = [asyncio.create_task(client.post(server.url("/held"), content=b"{}")) for _ in range(REQUESTS)]
            await eventually(lambda: server.in_flight == REQUESTS, "the second wave's requests all held")
            # THEN the first 64 took the idle connections (each looked at once before its reuse: has_expired) and
            # the other 36 new ones, and no pass walked the pool's connections (no is_closed, is_idle, is_available)
            assert server.accepted == REQUESTS + REQUESTS - 64
            assert len(pool.connections) == REQUESTS
            assert calls == {"has_expired": 64, "can_handle_request": 64 + REQUESTS}, calls
            # AND all are answered
            assert [response.status_code for response in await _released(server, held)] == [200] * REQUESTS

    asyncio.run(run())


async def _released(server: PoolServer, held: list[asyncio.Task[httpx.Response]]) -> list[httpx.Response]:
    """Release ``server``'s held requests and wait for their answers; the server holds the next ones again."""
    server.release.set()
    try:
        return await asyncio.gather(*held)
    finally:
        server.release.clear()


def test_a_connection_made_for_a_request_cancelled_before_it_began_is_dropped(
    servers: Callable[..., PoolServer],
) -> None:
    # GIVEN a client allowed one connection, and a request the pool gave a new connection to, then dropped before
    # the request began (what handle_async_request does when a timeout or a cancel reaches a queued request)
    server = servers()
    client, pool = small_client(max_connections=1, max_keepalive_connections=1)

    async def run() -> None:
        async with client:
            waiting = AsyncPoolRequest(httpcore.Request("POST", server.url()))
            pool._requests.append(waiting)
            assert pool._assign_requests_to_connections() == []
            (made,) = pool.connections
            assert waiting.connection is made
            assert made.info() == "CONNECTING"
            pool._requests.remove(waiting)
            # WHEN the pool next assigns requests
            closing = pool._assign_requests_to_connections()
            # THEN that connection, which no request will use, is dropped (httpcore 1.0 kept it for good, and with
            # it the one connection allowed: every later request would have waited forever)
            assert closing == [made]
            assert pool.connections == []
            # AND the next request gets the connection it is allowed
            response = await asyncio.wait_for(client.post(server.url(), content=b"{}"), PATIENCE)
            assert response.status_code == 200
            assert server.accepted == 1

    asyncio.run(run())


class _ExcessServer(socketserver.ThreadingTCPServer):
    """An HTTP/1.1 server on 127.0.0.1 written byte by byte, for answers no well-behaved server sends: each request's
    answer is ``answers[path]``, written in one piece on a connection kept open; any other path is answered 500 with
    its path as the body. Counts the TCP connections it accepted."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.accepted = 0
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer.accepted += 1
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    path = line.split()[1].decode()
                    length = 0
                    while (header := self.rfile.readline()) not in (b"\r\n", b""):
                        name, _, value = header.decode().partition(":")
                        if name.lower() == "content-length":
                            length = int(value)
                    self.rfile.read(length)
                    body = path.encode()
                    default = b"HTTP/1.1 500 X\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    self.wfile.write(outer.answers.get(path, default))
                    self.wfile.flush()

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.parametrize(
    "answer",
    [
        # a body longer than its Content-Length: the rest reads as a second answer
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 410 Gone\r\nContent-Length: 5\r\n\r\nSTALE",
        # a body after a 204, which has none
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHELLO",
    ],
    ids=["past-its-length", "after-a-204"],
)
def test_a_connection_whose_server_sent_more_than_its_answer_is_not_given_to_the_next_request(answer: bytes) -> None:
    # GIVEN a server whose answer to one path carries bytes past its end, in the same write
    server = _ExcessServer({"/excess": answer})
    policy = dataclasses.replace(LOOPBACK_POLICY, allow_http=True)
    try:

        async def two_deliveries() -> tuple[Outcome, Outcome]:
            try:
                first = await send_attempt(
                    f"{server.url}/excess", body=b"{}", headers={}, timeout_seconds=5, policy=policy
                )
                # WHEN the next delivery to the same host (another subscription's, perhaps another tenant's) follows
                second = await send_attempt(
                    f"{server.url}/other", body=b"{}", headers={}, timeout_seconds=5, policy=policy
                )
                return first, second
            finally:
                await close_http_client(asyncio.get_running_loop())

        first, second = asyncio.run(two_deliveries())
    finally:
        server.shutdown()
        server.server_close()
    # THEN it gets its own answer, on a connection of its own: not the bytes the first answer left behind
    assert 200 <= (first.status_code or 0) < 300
    assert (second.status_code, second.body, second.error_kind) == (500, "/other", ErrorKind.HTTP_STATUS)
    assert server.accepted == 2


@pytest.mark.parametrize(("version", "http2"), [("1.1.0", False), ("1.0.9", True)])
def test_the_pool_refuses_what_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch, version: str, http2: bool
) -> None:
    # GIVEN another httpcore than the 1.0 whose private pass it replaces, or HTTP/2
    monkeypatch.setattr(httpcore, "__version__", version)
    # WHEN a pool is made THEN it refuses, rather than run over a pool it was not written for
    with pytest.raises(RuntimeError, match=r"HTTP/1\.1 only, over httpcore 1\.0"):
        LinearPool(http2=http2)
