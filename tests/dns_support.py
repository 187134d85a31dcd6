"""A scripted DNS resolver for the URL policy's tests: what a name resolves to, lookup by lookup.

It replaces only the answers of ``getaddrinfo``; everything Herald does with them (checking every
address, connecting to a checked one) runs for real.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from herald.services import Services


class FakeDns:
    """Each name answers the next list of its script, the last list for good; a name without a script
    does not exist (``socket.gaierror``, as ``getaddrinfo`` raises). Every lookup is recorded."""

    def __init__(self, scripts: Mapping[str, Sequence[Sequence[str]]] | None = None) -> None:
        self.scripts: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()
        for name, script in (scripts or {}).items():
            self.script(name, *script)

    def script(self, name: str, *answers: Sequence[str]) -> None:
        with self._lock:
            self.scripts[name.lower()] = [list(answer) for answer in answers]
            self._used[name.lower()] = 0

    def count(self, name: str) -> int:
        with self._lock:
            return sum(1 for looked_up in self.lookups if looked_up.lower() == name.lower())

    async def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.lookups.append(host)
            script = self.scripts.get(host.lower())
            if script is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            index = self._used[host.lower()]
            self._used[host.lower()] = index + 1
            return list(script[min(index, len(script) - 1)])


def use_dns(services: Services, dns: FakeDns) -> FakeDns:
    """Make the API and the workers built on ``services`` resolve names with ``dns``."""
    services.url_policy = dataclasses.replace(services.url_policy, resolver=dns)
    return dns
