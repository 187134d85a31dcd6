"""How the sender connects to a name's checked addresses (herald.sender.PinnedBackend): raced as Happy Eyeballs does,
a bounded number at once, and nothing left open of the attempts it gives up. The inner network backend is a stand-in
whose addresses connect, hang or fail as each test says; the real connection is in test_ssrf_delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpcore
import pytest

from herald.sender import MAX_RACING_ATTEMPTS, PinnedBackend
from herald.urls import LOCAL_NETWORKS, UrlPolicy, parse_networks
from tests.dns_support import FakeDns


class Stream(httpcore.AsyncNetworkStream):
    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        return None

    async def aclose(self) -> None:
        self.closed = True


class Backend(httpcore.AsyncNetworkBackend):
    """Each address behaves as ``behaviours`` says; the attempts under way are counted."""

    def __init__(self, behaviours: dict[str, Callable[[str], Awaitable[Stream]]]) -> None:
        self.behaviours = behaviours
        self.started: list[str] = []
        self.under_way = 0
        self.most_at_once = 0
        self.streams: list[Stream] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.started.append(host)
        self.under_way += 1
        self.most_at_once = max(self.most_at_once, self.under_way)
        try:
            stream = await self.behaviours[host](host)
            self.streams.append(stream)
            return stream
        finally:
            self.under_way -= 1


async def hangs(address: str) -> Stream:
    await asyncio.Event().wait()
    raise AssertionError("never")


async def connects(address: str) -> Stream:
    await asyncio.sleep(0.01)
    return Stream(address)


async def connects_after_a_lost_syn(address: str) -> Stream:
    """Connects in 1 s: its first SYN was lost, and the kernel sent it again."""
    await asyncio.sleep(1.0)
    return Stream(address)


async def refuses(address: str) -> Stream:
    await asyncio.sleep(0.01)
    raise httpcore.ConnectError("[Errno 111] Connection refused")


async def connects_when_given_up(address: str) -> Stream:
    """Hangs, and connects all the same once cancelled (a SYN-ACK already on its way)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.sleep(0.01)
    return Stream(address)


async def breaks(address: str) -> Stream:
    await asyncio.sleep(0.01)
    raise RuntimeError("not a connection failure")


def backend_for(
    behaviours: Sequence[Callable[[str], Awaitable[Stream]]], addresses: Sequence[str] = ()
) -> tuple[PinnedBackend, Backend]:
    """The pinned backend over a stand-in network, for a name whose addresses (127.0.0.1, .2, ... unless given, in
    the resolver's order) behave as ``behaviours`` says, in turn."""
    addresses = list(addresses) or [f"127.0.0.{n}" for n in range(1, len(behaviours) + 1)]
    inner = Backend(dict(zip(addresses, behaviours, strict=True)))
    policy = UrlPolicy(
        allowed_networks=parse_networks(LOCAL_NETWORKS), resolver=FakeDns({"hooks.example.test": [addresses]})
    )
    return PinnedBackend(policy, inner=inner), inner


async def connects_long_after_given_up(address: str) -> Stream:
    """Hangs, and once cancelled takes 4 s to connect all the same."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.sleep(4.0)
    return Stream(address)


async def settled(inner: Backend, kept: Stream | None = None) -> None:
    """Wait (up to 10 s) until no attempt is under way and every stream but ``kept`` is closed."""
    for _ in range(1000):
        if inner.under_way == 0 and all(stream.closed for stream in inner.streams if stream is not kept):
            return
        await asyncio.sleep(0.01)


def connected(backend: PinnedBackend, inner: Backend, *, timeout: float = 5.0, within: float | None = None) -> Stream:
    """The stream of a connection to the name (within ``within`` seconds, if given), once every attempt given up is
    over and its stream closed."""

    async def connect() -> Stream:
        async with asyncio.timeout(within):
            stream = await backend.connect_tcp("hooks.example.test", 443, timeout=timeout)
        assert isinstance(stream, Stream)
        await settled(inner, kept=stream)
        return stream

    return asyncio.run(connect())


def test_a_name_s_addresses_are_raced_a_bounded_number_at_once_and_all_tried() -> None:
    # GIVEN a name whose first nine addresses never answer and whose tenth connects
    backend, inner = backend_for([hangs] * 9 + [connects])
    # WHEN a connection is made (the tenth address starts 4.5 s in: three 1.5 s turns of three attempts; 8 s leaves a
    # busy host room)
    stream = connected(backend, inner, timeout=8.0)
    # THEN every address was tried in order, never more than MAX_RACING_ATTEMPTS at once, the tenth connected, and
    # no attempt is left under way
    assert stream.address == "127.0.0.10"
    assert inner.started == [f"127.0.0.{n}" for n in range(1, 11)]
    assert inner.most_at_once == MAX_RACING_ATTEMPTS
    assert inner.under_way == 0


def test_a_connection_an_attempt_makes_after_it_was_given_up_is_closed() -> None:
    # GIVEN a name whose first address connects only once its attempt is cancelled, and whose second connects
    backend, inner = backend_for([connects_when_given_up, connects])
    # WHEN a connection is made
    stream = connected(backend, inner)
    # THEN the second address's is kept, and the first's, made as it was given up, closed
    assert (stream.address, stream.closed) == ("127.0.0.2", False)
    assert [(late.address, late.closed) for late in inner.streams if late is not stream] == [("127.0.0.1", True)]


def test_an_error_other_than_a_connection_failure_is_raised_and_leaves_nothing_open() -> None:
    # GIVEN a name whose first address connects only once given up, and whose second breaks (not a connect error)
    backend, inner = backend_for([connects_when_given_up, breaks])

    async def connect() -> None:
        try:
            await backend.connect_tcp("hooks.example.test", 443, timeout=5.0)
        finally:
            await settled(inner)

    # WHEN a connection is made, THEN the error is raised as it is, and the stream made meanwhile is closed
    with pytest.raises(RuntimeError, match="not a connection failure"):
        asyncio.run(connect())
    assert [(late.address, late.closed) for late in inner.streams] == [("127.0.0.1", True)]


def test_the_winner_is_returned_without_waiting_for_the_attempts_it_gives_up() -> None:
    # GIVEN a name whose first address, once given up, takes 4 s to connect, and whose second connects; and a caller
    # that gives the whole connection 2 s
    backend, inner = backend_for([connects_long_after_given_up, connects])
    # WHEN a connection is made
    stream = connected(backend, inner, within=2.0)
    # THEN the second address's is returned at once (not after the first attempt's end), and the first's closed
    assert (stream.address, stream.closed) == ("127.0.0.2", False)
    assert [(late.address, late.closed) for late in inner.streams if late is not stream] == [("127.0.0.1", True)]


def test_an_address_that_connects_after_a_lost_packet_is_not_given_up_for_the_next() -> None:
    # GIVEN a name whose first address connects in 1 s (a SYN sent again), whose next two never answer, and whose
    # fourth refuses: with three attempts under way, the fourth waits for the oldest's 1.5 s
    backend, inner = backend_for([connects_after_a_lost_syn, hangs, hangs, refuses])
    # WHEN a connection is made, THEN the first address's is it
    assert connected(backend, inner).address == "127.0.0.1"
    assert inner.most_at_once == MAX_RACING_ATTEMPTS


def test_the_two_families_take_turns_so_one_that_does_not_answer_holds_up_the_other_by_one_attempt() -> None:
    # GIVEN a name answering three IPv6 addresses first (no route: they never answer), then two IPv4 ones that connect
    behaviours = [hangs, hangs, hangs, connects, connects]
    addresses = ["fd00::1", "fd00::2", "fd00::3", "10.0.0.1", "10.0.0.2"]
    backend, inner = backend_for(behaviours, addresses)
    # WHEN a connection is made
    stream = connected(backend, inner)
    # THEN the first IPv4 address was tried second, a quarter of a second in, and is the one connected
    assert inner.started[:2] == ["fd00::1", "10.0.0.1"]
    assert stream.address == "10.0.0.1"
