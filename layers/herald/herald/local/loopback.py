"""An HTTP server on 127.0.0.1 for local subscribers (the tests' and the benchmarks' receivers): a free port,
served on a daemon thread, shut down by ``close`` (or at the end of a ``with`` block).

``QuietHandler`` is the handler they start from: HTTP/1.1 (keep-alive, as a real endpoint), no access log, and
TCP_NODELAY: an answer's headers and body are two writes, and with Nagle's algorithm the body waits for the
client to acknowledge the headers, which Linux delays up to 40 ms; a server that means to be fast does not.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, no access log, no Nagle delay; helpers to read a request's body and answer one."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def answer(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class BackloggedServer(ThreadingHTTPServer):
    """A threading HTTP server whose listen backlog holds a batch's connections made at once (the standard
    library's is 5: the sixth connection of a burst is reset; servers in front of webhooks listen with
    hundreds, nginx 511)."""

    request_queue_size = 512


class LoopbackServer:
    """``handler`` served on 127.0.0.1 at a free port, on a daemon thread (one more per connection)."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        server_class: type[ThreadingHTTPServer] = BackloggedServer,
        poll_interval: float = 0.5,
    ) -> None:
        self.server = server_class(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(poll_interval,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/webhook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
