"""Which subscriber URLs Herald may call.

In a deployment only public addresses are allowed (no loopback, private, link-local, metadata,
CGNAT, multicast or reserved ranges); ``HERALD_ALLOW_PRIVATE_URLS`` lifts that on a developer's box.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from herald.errors import UrlNotAllowedError

MAX_URL_LENGTH = 2048
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _address_allowed(mapped)
    return address.is_global and not address.is_multicast


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL if Herald may deliver to it, else ``UrlNotAllowedError`` saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlNotAllowedError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlNotAllowedError("the URL must use http or https")
    if parts.username or parts.password:
        raise UrlNotAllowedError("the URL must not carry credentials; use a secret path or the signature instead")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlNotAllowedError("the URL has no host")
    if allow_private:
        return url
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
            raise UrlNotAllowedError(f"{host} is not a public host name") from None
        return url
    if not _address_allowed(address):
        raise UrlNotAllowedError(f"{address} is not a public address")
    return url


async def check_resolved(url: str, *, allow_private: bool) -> None:
    """At delivery time: every address the host resolves to must be public (unless private is allowed)."""
    check_url(url, allow_private=allow_private)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return  # a literal address was checked above
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host,
        parts.port or (443 if parts.scheme == "https" else 80),
        type=socket.SOCK_STREAM,
    )
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not _address_allowed(address):
            raise UrlNotAllowedError(f"{host} resolves to {address}, which is not a public address")
