"""What the tests share besides fixtures: the admin key, sample payloads, a controllable clock, the tenant
a test works as, draining the local queue, a scriptable HTTP receiver on 127.0.0.1, and an app served on it.

Fixtures live in ``conftest.py`` only; helpers for one area in ``api_support.py`` (error shapes, queue
reads), ``delivery_support.py`` (the delivery harness) and ``dns_support.py`` (a resolver to script).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from herald.local.loopback import LoopbackServer, QuietHandler

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp

    from herald.local.poller import BatchResult, SqsPoller

ADMIN_KEY = "test-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"

INVOICE = {
    "invoice_id": "in_1001",
    "customer_id": "cus_42",
    "amount_cents": 4900,
    "currency": "EUR",
    "paid_at": "2026-01-31T09:30:00Z",
}

ORDER = {
    "order_id": "ord_7",
    "carrier": "DHL",
    "tracking_number": "JD014600003828",
    "items": [{"sku": "mug-blue", "quantity": 2}],
    "estimated_delivery": "2026-02-03",
}


@dataclass
class TenantInfo:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class Clock:
    """A controllable clock for the worker: starts at real time, moves only when told."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def drain(poller: SqsPoller, *, max_batches: int = 1000) -> list[BatchResult]:
    """Run the poller until the queue shows no message (hidden ones stay hidden)."""
    results: list[BatchResult] = []
    for _ in range(max_batches):
        result = poller.poll_once()
        if result.received == 0:
            return results
        results.append(result)
    raise AssertionError("the queue never drained")


# --- a real HTTP receiver on 127.0.0.1 -----------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on 127.0.0.1 whose answers a test scripts: ``responses`` is consumed in order,
    then ``default`` applies. Each answer is (status, headers, body, delay_seconds)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.responses: list[tuple[int, dict[str, str], bytes, float]] = []
        self.default: tuple[int, dict[str, str], bytes, float] = (200, {}, b"ok", 0.0)
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-body (a worker killed during its POST): a real server never hands an
                    # incomplete request to its application, so it is not recorded as received.
                    self.close_connection = True
                    return
                with outer.lock:
                    outer.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status, headers, payload, delay = outer.responses.pop(0) if outer.responses else outer.default
                if delay:
                    threading.Event().wait(delay)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the sender gave up
                    self.answer(status, payload, headers)

        self.http = LoopbackServer(Handler)
        self.server = self.http.server

    @property
    def url(self) -> str:
        return self.http.url()

    def close(self) -> None:
        self.http.close()


def readme_fault_examples() -> list[str]:
    """The README's examples of ``HERALD_FAULTS`` for `make run` (its Fault injection section), in order."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    section = readme.read_text(encoding="utf-8").split("\n### Fault injection\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^HERALD_FAULTS='([^']+)' make run$", section, flags=re.MULTILINE)


@contextlib.contextmanager
def served(app: ASGIApp, **config: Any) -> Iterator[str]:
    """``app`` on uvicorn in a thread of this process (moto's in-process AWS shared with the test); its base URL.
    Its socket is bound before the server starts, so no other process takes the port in between; on exit the server
    stops, keep-alive connections (a browser's) cut after 2 s, and is checked to have stopped."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    options = {"log_level": "warning", "timeout_graceful_shutdown": 2, **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
        assert not thread.is_alive(), "uvicorn did not stop"
