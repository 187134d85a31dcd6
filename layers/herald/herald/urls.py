"""Which subscriber URLs Herald may call, and which addresses it may connect to.

A deployment calls ``https`` URLs on globally routable public unicast addresses only. Everything else is
refused (the tables below): loopback, private, link-local (the cloud metadata service), CGNAT, "this
network", reserved, benchmarking and documentation ranges, multicast, broadcast, IPv6 unique-local and
site-local, and IPv6 forms that carry a refused IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, Teredo,
NAT64).

Three moments apply the same :class:`UrlPolicy`:

- when a subscription is created or updated (:meth:`UrlPolicy.check_new_url`): the URL's form, a literal
  address, and what the host name resolves to right now;
- before a delivery does any network I/O (:meth:`UrlPolicy.check_url`);
- when the delivery connects (:meth:`UrlPolicy.connectable`, used by ``herald.sender``): the host is
  resolved once, every answer is checked, and the connection goes to a checked address only, so a DNS
  answer that changes between a check and a connect (rebinding) cannot slip through.

Literal hosts are normalised the way resolvers and browsers read them (``herald.addresses``), so no
spelling of a refused address gets through.

An operator lets Herald reach self-hosted targets with ``HERALD_ALLOWED_TARGET_NETWORKS`` (CIDRs). The
allow-list is consulted before the refusal tables, with one safeguard: loopback, "this network",
link-local (169.254.169.254, the metadata service), multicast, broadcast and AWS's ``fd00:ec2::/32``
service addresses are reachable only through an entry that lies inside that range itself. ``0.0.0.0/0``
therefore opens every private network but never the metadata service; ``169.254.169.254/32`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from herald.addresses import (
    LOCAL_NETWORKS,
    LOCAL_SUFFIXES,
    Address,
    Network,
    embedded_ipv4,
    explicit_range,
    inside,
    literal_address,
    normalise_host,
    parse_networks,
    special_reason,
)
from herald.errors import UrlNotAllowedError

# Read from here by the settings, the local stack and the tests, as before addresses had a module of their own.
__all__ = ["LOCAL_NETWORKS", "Address", "Network", "UrlPolicy", "literal_address", "parse_networks", "system_resolve"]

if TYPE_CHECKING:
    from herald.settings import Settings

#: Resolves ``(host, port)`` to addresses as text, like the fifth field of ``getaddrinfo``'s answers.
type Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
#: How long the API waits for a host name's addresses when a subscription is created or updated.
CREATE_RESOLVE_TIMEOUT_SECONDS = 3.0
DEFAULT_PORTS = {"https": 443, "http": 80}


#: Threads that run ``getaddrinfo`` for Herald alone. A lookup whose name servers never answer holds its thread
#: for the system resolver's whole timeout, whatever the caller's own timeout (it stops waiting, not the call):
#: on the event loop's default executor (a handful of threads on a Lambda vCPU, shared with anything else run in
#: it) a few such names of one tenant's would hold up every other tenant's lookups behind them.
RESOLVER_THREADS = 128
#: Of those, how many one tenant's lookups hold at most at once (``resolving_for``): its names that never answer hold
#: up its own further lookups, not other tenants'; it takes eight tenants whose names all hang to hold every thread.
#: A lookup the resolver's cache answers takes a millisecond, one that asks DNS tens of ms: sixteen at a time resolve
#: about 160 new hosts a second at 100 ms each, so the most a worker connects to at once (256, ``MAX_CONNECTIONS``)
#: resolve within the connect timeout (5 s), which the wait for a thread counts in, up to about 300 ms a lookup.
RESOLVER_THREADS_PER_TENANT = 16

#: The tenant whose delivery is looking up a name (set around an attempt by the worker, ``herald.worker.dispatch``):
#: its lookups take its share of the threads. None (the API's checks, each request alone in its container): no share.
resolving_for: ContextVar[str | None] = ContextVar("resolving_for", default=None)

_resolver_lock = threading.Lock()
_resolver: ThreadPoolExecutor | None = None
#: Lookups in progress, by (host, port): callers asking for the same name at the same time share one thread (a
#: burst of deliveries to one new host opens many connections at once, each resolving its host).
_lookups: dict[tuple[str, int], Future[list[Any]]] = {}
#: Threads each tenant's lookups hold (submitted and not ended), and the callers waiting for one of its lookups to end.
_held: Counter[str] = Counter()
_waiting: dict[str, list[Callable[[], None]]] = {}


def _lookup(host: str, port: int, tenant: str | None, wake: Callable[[], None]) -> Future[list[Any]] | None:
    """The lookup of ``(host, port)``: the one in progress, or a new one. None if it would be ``tenant``'s and the
    tenant's lookups hold their share of the threads (``RESOLVER_THREADS_PER_TENANT``): ``wake`` is then called, from
    any thread, once one of them has ended."""
    key = (host, port)
    with _resolver_lock:
        found = _lookups.get(key)
        if found is not None:
            return found
        if tenant is not None and _held[tenant] >= RESOLVER_THREADS_PER_TENANT:
            _waiting.setdefault(tenant, []).append(wake)
            return None
        global _resolver  # noqa: PLW0603 - one pool for the process, made on first use
        if _resolver is None:
            _resolver = ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="herald-resolve")
        lookup = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        _lookups[key] = lookup
        if tenant is not None:
            _held[tenant] += 1

    def ended(_: Future[list[Any]]) -> None:
        woken: list[Callable[[], None]] = []
        with _resolver_lock:
            if _lookups.get(key) is lookup:
                del _lookups[key]
            if tenant is not None:
                _held[tenant] -= 1
                if _held[tenant] <= 0:
                    del _held[tenant]
                woken = _waiting.pop(tenant, [])
        # Every waiter tries again: one takes the thread freed, the others wait again (one of them may have stopped
        # waiting meanwhile: it must not be the only one told).
        for wake_one in woken:
            wake_one()

    lookup.add_done_callback(ended)
    return lookup


def _take_turn(turn: asyncio.Future[None]) -> None:
    if not turn.done():  # its caller may have stopped waiting
        turn.set_result(None)


async def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver (``getaddrinfo``), without blocking the event loop, on threads of its own
    (``RESOLVER_THREADS``), one lookup at a time per name, a tenant's lookups within its share of the threads
    (``resolving_for``)."""
    loop = asyncio.get_running_loop()
    tenant = resolving_for.get()
    try:
        while True:
            turn: asyncio.Future[None] = loop.create_future()

            def wake(turn: asyncio.Future[None] = turn) -> None:
                # From the thread whose lookup ended; a loop closed since (an invocation over) has no one waiting.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_take_turn, turn)

            lookup = _lookup(host, port, tenant, wake)
            if lookup is not None:
                break
            await turn
        # Shielded: a caller that stops waiting (its timeout) does not cancel the lookup others may share. Its
        # outcome is then taken when it comes, so a failure no one waits for any more is not reported as lost.
        answer = asyncio.wrap_future(lookup)
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())
        infos = await asyncio.shield(answer)
    except UnicodeError:
        # The IDNA codec refuses the name (an empty label, a label over 63 characters): no DNS name
        # can be spelled so, whatever the URL parser accepted.
        raise UrlNotAllowedError(f"{host} is not a valid host name") from None
    return [str(info[4][0]) for info in infos]


# --- the policy ------------------------------------------------------------------------------------------


#: The longest DNS name, in its ASCII form (RFC 1035, without the final dot).
MAX_HOST_NAME_LENGTH = 253


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs and addresses Herald may call. Hashable: the sender keeps one HTTP client per policy."""

    allowed_networks: tuple[Network, ...] = ()
    allow_http: bool = False
    allow_non_default_ports: bool = True
    #: None: the system resolver. Tests give their own to script DNS answers.
    resolver: Resolver | None = None
    create_resolve_timeout_seconds: float = CREATE_RESOLVE_TIMEOUT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        return cls(
            allowed_networks=settings.allowed_target_networks,
            allow_http=settings.allow_http_urls,
            allow_non_default_ports=settings.allow_non_default_ports,
        )

    # --- addresses ---

    def refusal(self, address: Address, *, named: bool = True) -> str | None:
        """Why Herald must not connect to ``address``, or None when it may. ``named=False`` says what the address
        is without writing it (nor any address it carries): what a tenant is told of the answers of a name's
        lookup, which are the operator's network's, not the tenant's."""
        if isinstance(address, IPv6Address):
            if address.scope_id is not None:
                address = IPv6Address(int(address))
            if address.ipv4_mapped is not None:  # a connection to it is a connection to the IPv4 address
                inner = self.refusal(address.ipv4_mapped, named=named)
                if inner is None or not named:
                    return inner
                return f"{address} is {address.ipv4_mapped} in IPv6 form, and {inner}"
        reason = self._own_refusal(address, named=named)
        if reason is not None:
            return reason
        if isinstance(address, IPv6Address):
            for label, ipv4 in embedded_ipv4(address):
                inner = self.refusal(ipv4, named=named)
                if inner is not None:
                    if not named:
                        return f"an IPv6 address carrying an IPv4 address ({label}) that is {inner}"
                    return f"{address} carries {ipv4} ({label}), and {inner}"
        return None

    def _own_refusal(self, address: Address, *, named: bool) -> str | None:
        explicit = explicit_range(address)
        listed = [n for n in self.allowed_networks if n.version == address.version and address in n]
        if any(explicit is None or inside(network, explicit) for network in listed):
            return None
        reason = special_reason(address)
        if reason is None:
            return None
        text = f"{address} is {reason}" if named else reason
        if explicit is not None and listed:
            text += f"; a wider allowed network does not open {explicit}, only an entry inside it does"
        return text

    def allows(self, address: Address) -> bool:
        return self.refusal(address) is None

    # --- URLs ---

    def check_host(self, host: str) -> Address | None:
        """Refuse a host whose spelling alone is enough to refuse it; its address when it is literal."""
        address = literal_address(host)
        if address is not None:
            reason = self.refusal(address)
            if reason is not None:
                raise UrlNotAllowedError(f"{reason}; Herald only calls public addresses")
            return address
        name = normalise_host(host)
        if not name:
            raise UrlNotAllowedError("the URL has no host")
        if ":" in name or "%" in name:
            raise UrlNotAllowedError(f"{host} is neither an address nor a host name")
        try:
            encoded = name.encode("idna")
        except UnicodeError:
            encoded = b""
        if not encoded or len(encoded) > MAX_HOST_NAME_LENGTH:
            raise UrlNotAllowedError(
                f"{host} is not a valid host name (labels of 1 to 63 characters, at most 253 in all)"
            )
        if name == "localhost" or name.endswith(".localhost"):
            reason = self.refusal(IPv4Address("127.0.0.1"))
            if reason is not None:
                raise UrlNotAllowedError(f"{name} is the local host: {reason}")
        elif ("." not in name or name.endswith(LOCAL_SUFFIXES)) and not self.allowed_networks:
            raise UrlNotAllowedError(f"{name} is a local name, not a public host name")
        return None

    def check_url(self, url: str) -> str:
        """The URL if its form and any literal address are acceptable (no network I/O), else
        ``UrlNotAllowedError`` saying why."""
        if len(url) > MAX_URL_LENGTH:
            raise UrlNotAllowedError(f"the URL is longer than {MAX_URL_LENGTH} characters")
        if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F or char == "\\" for char in url):
            raise UrlNotAllowedError("the URL contains whitespace, control characters or a backslash")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlNotAllowedError(f"the URL cannot be parsed: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            raise UrlNotAllowedError("the URL must use http or https" if self.allow_http else "the URL must use https")
        if "@" in parts.netloc:
            raise UrlNotAllowedError("the URL must not carry credentials; use a secret path or the signature instead")
        if port is not None and port != DEFAULT_PORTS[scheme] and not self.allow_non_default_ports:
            raise UrlNotAllowedError(f"the URL must use the default port ({DEFAULT_PORTS[scheme]} for {scheme})")
        self.check_host(parts.hostname or "")
        refusal = _client_refusal(parts.hostname or "")
        if refusal is not None:
            raise UrlNotAllowedError(refusal)
        return url

    # --- resolution ---

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address ``host`` stands for: itself when literal, else one lookup's answers."""
        address = literal_address(host)
        if address is not None:
            return [address]
        answers = await (self.resolver or system_resolve)(host, port)
        found: list[Address] = []
        for answer in answers:
            parsed = literal_address(answer)
            if parsed is None:
                raise UrlNotAllowedError(f"{host} resolves to an answer that is not an address")
            if isinstance(parsed, IPv6Address) and parsed.scope_id is not None:
                parsed = IPv6Address(int(parsed))
            if parsed not in found:
                found.append(parsed)
        return found

    async def connectable(self, host: str, port: int) -> list[Address]:
        """The addresses a connection to ``host`` may use: one lookup, every answer checked, the refused
        ones dropped. ``UrlNotAllowedError`` when none is left (naming the host and what its addresses are)."""
        self.check_host(host)
        if not self.allow_non_default_ports and port not in DEFAULT_PORTS.values():
            raise UrlNotAllowedError(f"port {port} is not a default port")
        addresses = await self.resolve(host, port)
        allowed = [address for address in addresses if self.allows(address)]
        if not allowed:
            raise UrlNotAllowedError(self._refused_message(host, addresses))
        return allowed

    def _refused_message(self, host: str, addresses: list[Address]) -> str:
        """Why no answer of ``host``'s lookup may be called: what each one is, never the address itself (the
        message reaches the tenant, and the answers may be the operator's internal network's)."""
        if not addresses:
            return f"{host} resolves to no address"
        reasons = "; ".join(dict.fromkeys(self.refusal(address, named=False) or "" for address in addresses))
        return f"{host} resolves only to addresses Herald does not call: {reasons}"

    async def check_new_url(self, url: str) -> str:
        """For a new or changed subscription: :meth:`check_url`, then the host name's current addresses.
        A name that resolves only to refused addresses is refused; one that does not resolve (yet) is
        accepted, since each delivery checks again. The URL is returned as it is to be stored: a fully qualified
        host name without its root dot (``hooks.example.com.``), which TLS would otherwise name the host with."""
        self.check_url(url)
        url = without_root_dot(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if literal_address(host) is not None:
            return url
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
        try:
            async with asyncio.timeout(self.create_resolve_timeout_seconds):
                addresses = await self.resolve(host, port)
        except (OSError, TimeoutError):
            return url
        if addresses and not any(self.allows(address) for address in addresses):
            raise UrlNotAllowedError(self._refused_message(host, addresses))
        return url


def without_root_dot(url: str) -> str:
    """``url`` with its host name's root dot left out (``https://hooks.example.com./h`` ->
    ``https://hooks.example.com/h``): the same host to DNS, but a certificate is checked against the name as the URL
    spells it, and none is issued for a name ending in a dot. Two dots are an empty label, no name: left as they are
    (refused). Userinfo, port, path and query are kept as written."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        return url  # an IPv6 literal
    host, colon, port = hostport.partition(":")
    if not host.endswith(".") or host.endswith("..") or host == ".":
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host[:-1]}{colon}{port}"))


#: A host the HTTP client (httpx) reads as an IPv4 address, and refuses unless it is one in the usual spelling.
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


def _client_refusal(host: str) -> str | None:
    """Why the HTTP client would refuse ``host`` (lower case, as ``urlsplit`` gives it) at every send, if it would,
    as httpx 0.28 reads a host: four numbers must be an IPv4 address in the usual spelling (``08.0.0.1``,
    ``256.1.1.1`` and ``1.2.3.04`` are not), and a host that starts with ``xn--`` must decode as IDNA 2008, every
    label of it (httpx decodes such a host whole, and sends any other as it is)."""
    if _IPV4_STYLE.fullmatch(host):
        try:
            IPv4Address(host)
        except ValueError:
            return f"{host} is not a valid IPv4 address (four numbers from 0 to 255, without leading zeros)"
    elif host.startswith("xn--"):
        import idna  # only for such a host: the API's cold start does not pay for it

        try:
            idna.decode(host)
        except (idna.IDNAError, UnicodeError, ValueError, OverflowError):
            return f"{host} is not a valid host name (an xn-- name that does not decode)"
    return None
