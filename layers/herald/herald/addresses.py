"""Addresses as Herald reads them: literal hosts normalised the way resolvers and browsers read them
(``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]``, ``[fe80::1%25eth0]``, a
trailing dot, percent-encoding, full-width digits), the ranges Herald refuses and why, and the IPv4 addresses
that IPv6 forms carry (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64). ``herald.urls`` applies them.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from urllib.parse import unquote

type Address = IPv4Address | IPv6Address
type Network = IPv4Network | IPv6Network

#: What ``make run`` and the tests allow: loopback and the private ranges (never link-local / metadata).
LOCAL_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"

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
        # Where an IPv4 address sits in it depends on the prefix length each network picks (/48 to /96, RFC 6052):
        # the last 32 bits may be public while the gateway translates to a private address.
        ("64:ff9b:1::/48", "a local-use NAT64 address (64:ff9b:1::/48), whose IPv4 address cannot be told"),
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
#: The well-known NAT64 prefix (RFC 6052), whose IPv4 address is the last 32 bits: the one AWS's DNS64 uses.
_NAT64 = (IPv6Network("64:ff9b::/96"),)

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
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
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


def special_reason(address: Address) -> str | None:
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


def explicit_range(address: Address) -> Network | None:
    return next((network for network in EXPLICIT_ONLY if address in network), None)


def inside(network: Network, outer: Network) -> bool:
    """Whether ``network`` lies entirely inside ``outer``."""
    return (
        network.version == outer.version
        and int(outer.network_address) <= int(network.network_address)
        and int(network.broadcast_address) <= int(outer.broadcast_address)
    )
