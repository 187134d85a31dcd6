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

Literal hosts are normalised the way resolvers and browsers read them (``2130706433``, ``0x7f.1``,
``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]``, ``[fe80::1%25eth0]``, a trailing dot, percent-encoding,
full-width digits), so no spelling of a refused address gets through.

An operator lets Herald reach self-hosted targets with ``HERALD_ALLOWED_TARGET_NETWORKS`` (CIDRs). The
allow-list is consulted before the refusal tables, with one safeguard: loopback, "this network",
link-local (169.254.169.254, the metadata service), multicast, broadcast and AWS's ``fd00:ec2::/32``
service addresses are reachable only through an entry that lies inside that range itself. ``0.0.0.0/0``
therefore opens every private network but never the metadata service; ``169.254.169.254/32`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from herald.errors import UrlNotAllowedError

if TYPE_CHECKING:
    from herald.settings import Settings

type Address = IPv4Address | IPv6Address
type Network = IPv4Network | IPv6Network
#: Resolves ``(host, port)`` to addresses as text, like the fifth field of ``getaddrinfo``'s answers.
type Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
#: How long the API waits for a host name's addresses when a subscription is created or updated.
CREATE_RESOLVE_TIMEOUT_SECONDS = 3.0
#: What ``make run`` and the tests allow: loopback and the private ranges (never link-local / metadata).
LOCAL_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
DEFAULT_PORTS = {"https": 443, "http": 80}

_PRIVATE = "a private address (RFC 1918)"
_DOCUMENTATION = "reserved for documentation"

#: IPv4 ranges that are not public unicast, most specific first.
REFUSED_IPV4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(cidr), reason)
    for cidr, reason in (
        ("255.255.255.255/32", "the broadcast address"),
        ("0.0.0.0/8", 'in "this network" (0.0.0.0/8), which reaches the local host'),
        ("10.0.0.0/8", _PRIVATE),
        ("100.64.0.0/10", "a carrier-grade NAT address (100.64.0.0/10)"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (the cloud metadata service lives at 169.254.169.254)"),
        ("172.16.0.0/12", _PRIVATE),
        ("192.0.0.0/24", "reserved for IETF protocol assignments (192.0.0.0/24)"),
        ("192.0.2.0/24", _DOCUMENTATION),
        ("192.88.99.0/24", "the deprecated 6to4 relay anycast range"),
        ("192.168.0.0/16", _PRIVATE),
        ("198.18.0.0/15", "reserved for benchmarking (198.18.0.0/15)"),
        ("198.51.100.0/24", _DOCUMENTATION),
        ("203.0.113.0/24", _DOCUMENTATION),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address (240.0.0.0/4)"),
    )
)

#: IPv6 ranges that are not public unicast, most specific first (besides: anything outside 2000::/3).
REFUSED_IPV6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(cidr), reason)
    for cidr, reason in (
        ("::/128", "the unspecified address, which reaches the local host"),
        ("::1/128", "the IPv6 loopback address"),
        ("::/96", "an IPv4-compatible IPv6 address (deprecated)"),
        ("100::/64", "in the discard-only range (100::/64)"),
        ("fd00:ec2::/32", "an AWS service address (instance metadata, DNS, time: fd00:ec2::/32)"),
        ("fc00::/7", "a unique-local address (fc00::/7)"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address (deprecated)"),
        ("ff00::/8", "a multicast address"),
        ("2001:db8::/32", _DOCUMENTATION),
        ("3fff::/20", _DOCUMENTATION),
        ("2001:2::/48", "reserved for benchmarking (2001:2::/48)"),
        ("2001:10::/28", "an ORCHID address (not routable)"),
        ("2001:20::/28", "an ORCHIDv2 address (not routable)"),
    )
)
#: Inside IETF protocol assignments (2001::/23), only Teredo is judged by the address it carries.
_IETF_PROTOCOLS = IPv6Network("2001::/23")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_GLOBAL_UNICAST = IPv6Network("2000::/3")
_TEREDO = IPv6Network("2001::/32")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))

#: Reachable only through an allow-list entry inside the range itself, never through a wider one.
EXPLICIT_ONLY: tuple[Network, ...] = tuple(
    ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::/32",
    )
)

#: Names that only ever mean a machine on a local network (RFC 6761, 6762, 8375; ICANN's .internal).
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
#: Dots a resolver or a browser reads as a full stop (ideographic, full-width, half-width).
_DOT_VARIANTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


# --- literal addresses -----------------------------------------------------------------------------------


def parse_networks(value: str | Iterable[str | Network]) -> tuple[Network, ...]:
    """Comma-separated CIDRs (``""`` or ``"none"``: none at all); ``ValueError`` names a bad entry."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for item in items:
        if isinstance(item, IPv4Network | IPv6Network):
            networks.append(item)
            continue
        text = item.strip()
        if not text or text.lower() == "none":
            continue
        try:
            networks.append(ip_network(text, strict=True))
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (did you mean {ip_network(text, strict=False)}?)"
            raise ValueError(f"{text!r} is not a network in CIDR notation such as 10.0.0.0/8{hint}: {exc}") from None
    return tuple(dict.fromkeys(networks))


def normalise_host(host: str) -> str:
    """A host as a resolver reads it: percent-decoded, NFKC (full-width digits), lower case, no brackets and
    no trailing dot."""
    text = unicodedata.normalize("NFKC", unquote(host)).translate(_DOT_VARIANTS).strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text.rstrip(".")


def _ipv4_number(part: str) -> int | None:
    """One part of a legacy IPv4 spelling: decimal, ``0x`` hexadecimal or ``0`` octal (inet_aton, WHATWG)."""
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if not digits:
            return 0
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    allowed = {16: "0123456789abcdefABCDEF", 8: "01234567", 10: "0123456789"}[base]
    if not digits or any(char not in allowed for char in digits):
        return None
    return int(digits, base)


def _legacy_ipv4(text: str) -> IPv4Address | None:
    """``127.0.0.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``... as the address inet_aton
    would connect to, or None when ``text`` is not such a spelling."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    values = [number for number in numbers if number is not None]
    *leading, last = values
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(values)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return IPv4Address(value)


def literal_address(host: str) -> Address | None:
    """The address a host spells, whatever the spelling, or None for a host name."""
    text = normalise_host(host)
    if ":" in text:
        try:
            return IPv6Address(text.split("%", 1)[0])  # the zone id names an interface, not an address
        except ValueError:
            return None
    return _legacy_ipv4(text)


def embedded_ipv4(address: IPv6Address) -> list[tuple[str, IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries (and where it carries them)."""
    found: list[tuple[str, IPv4Address]] = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped", address.ipv4_mapped))
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # beyond :: and ::1
        found.append(("IPv4-compatible", IPv4Address(int(address) & 0xFFFFFFFF)))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found.extend((("Teredo client", client), ("Teredo server", server)))
    if any(address in prefix for prefix in _NAT64):
        found.append(("NAT64", IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def _special_reason(address: Address) -> str | None:
    """Why ``address`` is not public unicast, or None when it is (embedded IPv4 aside)."""
    if isinstance(address, IPv4Address):
        return next((reason for network, reason in REFUSED_IPV4 if address in network), None)
    for network, reason in REFUSED_IPV6:
        if address in network:
            return reason
    if any(address in prefix for prefix in _NAT64):
        return None  # judged by the IPv4 address it translates to
    if address not in _GLOBAL_UNICAST:
        return "not a global unicast address (outside 2000::/3)"
    if address in _IETF_PROTOCOLS and address not in _TEREDO:
        return "reserved for IETF protocol assignments (2001::/23)"
    return None


def _explicit_range(address: Address) -> Network | None:
    return next((network for network in EXPLICIT_ONLY if address in network), None)


def _inside(network: Network, outer: Network) -> bool:
    """Whether ``network`` lies entirely inside ``outer``."""
    return (
        network.version == outer.version
        and int(outer.network_address) <= int(network.network_address)
        and int(network.broadcast_address) <= int(outer.broadcast_address)
    )


async def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver (``getaddrinfo``), without blocking the event loop."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
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

    def refusal(self, address: Address) -> str | None:
        """Why Herald must not connect to ``address``, or None when it may."""
        if isinstance(address, IPv6Address):
            if address.scope_id is not None:
                address = IPv6Address(int(address))
            if address.ipv4_mapped is not None:  # a connection to it is a connection to the IPv4 address
                inner = self.refusal(address.ipv4_mapped)
                return None if inner is None else f"{address} is {address.ipv4_mapped} in IPv6 form, and {inner}"
        reason = self._own_refusal(address)
        if reason is not None:
            return reason
        if isinstance(address, IPv6Address):
            for label, ipv4 in embedded_ipv4(address):
                inner = self.refusal(ipv4)
                if inner is not None:
                    return f"{address} carries {ipv4} ({label}), and {inner}"
        return None

    def _own_refusal(self, address: Address) -> str | None:
        explicit = _explicit_range(address)
        listed = [n for n in self.allowed_networks if n.version == address.version and address in n]
        if any(explicit is None or _inside(network, explicit) for network in listed):
            return None
        reason = _special_reason(address)
        if reason is None:
            return None
        text = f"{address} is {reason}"
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
        elif ("." not in name or name.endswith(_LOCAL_SUFFIXES)) and not self.allowed_networks:
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
                raise UrlNotAllowedError(f"{host} resolves to {answer!r}, which is not an address")
            if isinstance(parsed, IPv6Address) and parsed.scope_id is not None:
                parsed = IPv6Address(int(parsed))
            if parsed not in found:
                found.append(parsed)
        return found

    async def connectable(self, host: str, port: int) -> list[Address]:
        """The addresses a connection to ``host`` may use: one lookup, every answer checked, the refused
        ones dropped. ``UrlNotAllowedError`` when none is left (naming the host and the addresses)."""
        self.check_host(host)
        if not self.allow_non_default_ports and port not in DEFAULT_PORTS.values():
            raise UrlNotAllowedError(f"port {port} is not a default port")
        addresses = await self.resolve(host, port)
        allowed = [address for address in addresses if self.allows(address)]
        if not allowed:
            raise UrlNotAllowedError(self._refused_message(host, addresses))
        return allowed

    def _refused_message(self, host: str, addresses: list[Address]) -> str:
        if not addresses:
            return f"{host} resolves to no address"
        reasons = "; ".join(self.refusal(address) or str(address) for address in addresses[:4])
        return f"{host} resolves only to addresses Herald does not call: {reasons}"

    async def check_new_url(self, url: str) -> str:
        """For a new or changed subscription: :meth:`check_url`, then the host name's current addresses.
        A name that resolves only to refused addresses is refused; one that does not resolve (yet) is
        accepted, since each delivery checks again."""
        self.check_url(url)
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
