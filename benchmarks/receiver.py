"""A slow webhook receiver in its own process: answers every POST with 200 after ``delay`` seconds.

It runs on asyncio with a listen backlog of 1024, so it holds any number of concurrent requests, and
in its own process, so the measured worker's threads never slow its clock or its answers. Control:
``POST /_reset?delay=<seconds>`` forgets what it saw and sets the delay; ``GET /_stats`` says how many
requests it answered since, how many it held at once, and how long from the first arrival to the
last answer; ``GET /_arrivals`` lists each POST since (path, ``webhook-id``, arrival as epoch
seconds). A POST to a path under ``/hang`` is never answered (a subscriber that hangs past any timeout).
Stdlib only (``python -m benchmarks.receiver`` prints ``{"port": ...}`` and serves until its stdin closes).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlsplit

from benchmarks.child import ChildProcess


class _State:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: list[tuple[float, float]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.arrivals: list[tuple[str, str, float]] = []
        #: Bytes of the webhooks answered (request line, headers and body, as sent over the wire without TLS).
        self.request_bytes = 0

    def reset(self, delay: float) -> None:
        self.delay = delay
        self.requests = []
        self.arrivals = []
        self.request_bytes = 0
        self.peak_in_flight = self.in_flight

    def stats(self) -> dict[str, float]:
        if not self.requests:
            return {
                "count": 0,
                "peak_in_flight": self.peak_in_flight,
                "span_s": 0.0,
                "arrival_spread_s": 0.0,
                "request_bytes": 0,
            }
        first = min(arrived for arrived, _ in self.requests)
        return {
            "count": len(self.requests),
            "peak_in_flight": self.peak_in_flight,
            "span_s": max(done for _, done in self.requests) - first,
            "arrival_spread_s": max(arrived for arrived, _ in self.requests) - first,
            "request_bytes": self.request_bytes,
        }


def _response(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _serve(state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            length = 0
            webhook_id = ""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                elif name.strip().lower() == b"webhook-id":
                    webhook_id = value.strip().decode()
            if length:
                await reader.readexactly(length)
            path = urlsplit(target.decode())
            if path.path == "/_reset":
                state.reset(float(parse_qs(path.query).get("delay", ["0"])[0]))
                writer.write(_response("200 OK", b"{}", "application/json"))
            elif path.path == "/_stats":
                writer.write(_response("200 OK", json.dumps(state.stats()).encode(), "application/json"))
            elif path.path == "/_arrivals":
                writer.write(_response("200 OK", json.dumps(state.arrivals).encode(), "application/json"))
            elif method != b"POST":
                writer.write(_response("405 Method Not Allowed", b""))
            elif path.path.startswith("/hang"):
                state.arrivals.append((path.path, webhook_id, time.time()))
                while await reader.read(1 << 16):  # never answered: until the client's timeout closes it
                    pass
                return
            else:
                state.arrivals.append((path.path, webhook_id, time.time()))
                state.request_bytes += len(head) + length
                arrived = time.monotonic()
                state.in_flight += 1
                state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
                try:
                    if state.delay:
                        await asyncio.sleep(state.delay)
                finally:
                    # Counted before the answer is written: once the client has its answer, /_stats includes it.
                    state.in_flight -= 1
                    state.requests.append((arrived, time.monotonic()))
                writer.write(_response("200 OK", b"ok"))
                await writer.drain()
                continue
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


async def _main(delay: float) -> None:
    state = _State(delay)
    server = await asyncio.start_server(
        lambda reader, writer: _serve(state, reader, writer), "127.0.0.1", 0, backlog=1024, limit=1 << 20
    )
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()

    def wait_for_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(closed.set_result, None)

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    await closed
    server.close()


class ReceiverProcess(ChildProcess):
    """Starts ``python -m benchmarks.receiver`` and talks to its control endpoints."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__("benchmarks.receiver", "--delay", str(delay))
        self.port = int(self.hello["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def reset(self, delay: float) -> None:
        self._call("POST", f"/_reset?delay={delay}")

    def stats(self) -> dict[str, float]:
        result: dict[str, float] = self._call("GET", "/_stats")
        return result

    def arrivals(self) -> list[tuple[str, str, float]]:
        """Each POST since the last reset: (path, webhook-id, arrival as epoch seconds)."""
        return [(str(path), str(webhook_id), float(at)) for path, webhook_id, at in self._call("GET", "/_arrivals")]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0)
    asyncio.run(_main(parser.parse_args().delay))
