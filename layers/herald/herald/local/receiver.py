"""``make receiver``: a sample subscriber endpoint that verifies every delivery.

It listens on 127.0.0.1, checks each request's Standard Webhooks signature with the independent
``standardwebhooks`` library (bad or stale signatures get a 401), drops duplicates by
``webhook-id``, and prints what it receives. ``--fail-first N`` answers 503 to the first N
deliveries, to watch Herald retry.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

#: Headers every delivery has; the others are the subscription's custom headers, printed as received.
_STANDARD_HEADERS = frozenset(
    {"host", "content-type", "content-length", "user-agent", "accept-encoding", "accept", "connection"}
    | {"webhook-id", "webhook-timestamp", "webhook-signature"}
)


class SampleReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: str, *, fail_first: int = 0, quiet: bool = False) -> None:
        self.address_family = socket.getaddrinfo(address[0], None, type=socket.SOCK_STREAM)[0][0]  # IPv4 or IPv6
        super().__init__(address, _Handler)
        self.webhook = Webhook(secret)
        self.fail_first = fail_first
        self.quiet = quiet
        self.seen: set[str] = set()
        self.verified: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


class _Handler(BaseHTTPRequestHandler):
    server: SampleReceiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        msg_id = headers.get("webhook-id", "?")
        try:
            payload = self.server.webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            self.server.say(f"REJECTED {msg_id}: {exc}")
            self._answer(401, {"error": str(exc)})
            return
        with self.server.lock:
            if self.server.fail_first > 0:
                self.server.fail_first -= 1
                self.server.say(f"verified {msg_id}, answering 503 on purpose ({self.server.fail_first} more to fail)")
                self._answer(503, {"error": "failing on purpose"})
                return
            duplicate = msg_id in self.server.seen
            self.server.seen.add(msg_id)
            if not duplicate:
                self.server.verified.append(payload)
        if duplicate:
            self.server.say(f"duplicate {msg_id} (already processed): acknowledged")
        else:
            custom = {name: value for name, value in headers.items() if name not in _STANDARD_HEADERS}
            self.server.say(
                f"VERIFIED {msg_id} attempt-timestamp={headers.get('webhook-timestamp')}\n"
                + (f"custom headers: {json.dumps(custom, sort_keys=True)}\n" if custom else "")
                + json.dumps(payload, indent=2, sort_keys=True)
            )
        self._answer(200, {"received": msg_id})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m herald.local.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (0: a free one, printed)")
    parser.add_argument("--secret", default=os.environ.get("HERALD_RECEIVER_SECRET"), help="the whsec_ secret")
    parser.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N verified deliveries")
    args = parser.parse_args(argv)
    if not args.secret:
        print("give the subscription's signing secret: make receiver SECRET=whsec_...", file=sys.stderr)
        return 2
    try:
        server = SampleReceiver((args.host, args.port), args.secret, fail_first=args.fail_first)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            f"cannot listen on port {args.port} of {args.host} ({reason}): "
            f"choose another, e.g. make receiver PORT={args.port + 1} (and subscribe that port's URL)",
            file=sys.stderr,
        )
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    port = server.server_address[1]  # the one bound, when any free port was asked for (0)
    print(f"listening on http://{host}:{port}/ (any path); verifying with standardwebhooks", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
