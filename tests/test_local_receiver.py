"""The sample receiver (`make receiver`): verifies signatures, refuses bad or stale ones, drops duplicates."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from herald.local.receiver import SampleReceiver
from herald.local.receiver import main as receiver_main
from tests.process_guard import Processes, logged, stop_group

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
BODY = json.dumps({"type": "invoice.paid", "timestamp": "2026-01-01T00:00:00Z", "data": {"invoice_id": "in_1"}})


@pytest.fixture
def sample_receiver() -> Iterator[SampleReceiver]:
    server = SampleReceiver(("127.0.0.1", 0), SECRET, fail_first=1, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def post(server: SampleReceiver, msg_id: str, when: datetime, secret: str = SECRET, body: str = BODY) -> httpx.Response:
    signature = Webhook(secret).sign(msg_id, when, body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}
    return httpx.post(f"http://127.0.0.1:{server.server_address[1]}/webhooks", content=body, headers=headers)


def test_receiver_verifies_refuses_and_deduplicates(sample_receiver: SampleReceiver) -> None:
    now = datetime.now(UTC)
    other_secret = "whsec_" + base64.b64encode(b"x" * 32).decode()
    second_body = BODY.replace("in_1", "in_2")
    # GIVEN a receiver that answers 503 to its first verified delivery, on purpose
    # WHEN deliveries arrive: a wrong signature, a stale timestamp, then a good message three times, then another
    statuses = [
        post(sample_receiver, "msg_a", now, secret=other_secret).status_code,
        post(sample_receiver, "msg_a", now - timedelta(minutes=10)).status_code,
        post(sample_receiver, "msg_a", now).status_code,
        post(sample_receiver, "msg_a", now).status_code,
        post(sample_receiver, "msg_a", now).status_code,
        post(sample_receiver, "msg_b", now, body=second_body).status_code,
    ]
    # THEN bad signatures get 401, the first verified one 503, the retry 200, the duplicate 200 without reprocessing
    assert statuses == [401, 401, 503, 200, 200, 200]
    assert [payload["data"]["invoice_id"] for payload in sample_receiver.verified] == ["in_1", "in_2"]


def test_receiver_rejects_a_tampered_body(sample_receiver: SampleReceiver) -> None:
    now = datetime.now(UTC)
    signature = Webhook(SECRET).sign("msg_9", now, BODY)
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
    tampered = BODY.replace("in_1", "in_666")
    response = httpx.post(f"http://127.0.0.1:{sample_receiver.server_address[1]}/x", content=tampered, headers=headers)
    assert response.status_code == 401
    assert sample_receiver.verified == []


def test_ctrl_c_stops_the_receiver_while_a_client_keeps_its_connection_open(
    processes: Processes, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN `make receiver`'s program serving, and a client (like Herald's delivery pool) that made a
    # request and keeps its keep-alive connection open
    # on a port of its own choosing (0), which it prints: none picked here that another process could take first
    log = tmp_path / "receiver.log"
    receiver = processes.start(
        [sys.executable, "-m", "herald.local.receiver", "--port", "0", "--secret", SECRET],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    listening = logged(receiver, log, r"listening on http://127\.0\.0\.1:(\d+)/", seconds=60)
    connection = http.client.HTTPConnection("127.0.0.1", int(listening[1]), timeout=30)
    try:
        connection.connect()  # it listens before it says so
        now = datetime.now(UTC)
        headers = {
            "webhook-id": "msg_k",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(SECRET).sign("msg_k", now, BODY),
            "content-type": "application/json",
        }
        connection.request("POST", "/webhooks", body=BODY, headers=headers)
        assert connection.getresponse().read() == b'{"received": "msg_k"}'
        # WHEN Ctrl-C arrives (SIGINT to the process group), the connection still open
        code = stop_group(receiver, signal.SIGINT)
    finally:
        connection.close()
    # THEN it stopped on that signal (stop_group raises if it had to kill it) and cleanly
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_receiver_prints_the_custom_headers_it_gets(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a receiver that prints what it receives
    server = SampleReceiver(("127.0.0.1", 0), SECRET)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        now = datetime.now(UTC)
        signature = Webhook(SECRET).sign("msg_h", now, BODY)
        headers = {
            "webhook-id": "msg_h",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
            "X-Route": "eu-1",
        }
        # WHEN a delivery with a custom header arrives
        response = httpx.post(f"http://127.0.0.1:{server.server_address[1]}/", content=BODY, headers=headers)
    finally:
        server.shutdown()
        server.server_close()
    # THEN it is verified and the custom header (only it) is printed with the payload
    assert response.status_code == 200
    out = capsys.readouterr().out
    assert 'custom headers: {"x-route": "eu-1"}' in out
    assert "webhook-signature" not in out.split("custom headers:")[1].splitlines()[0]


def test_a_port_in_use_stops_the_receiver_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the port the receiver is asked for, taken by another server
    taken = SampleReceiver(("127.0.0.1", 0), SECRET, quiet=True)
    port = taken.server_address[1]
    try:
        # WHEN the receiver starts on it THEN it says so and which setting to change, without a traceback
        assert receiver_main(["--port", str(port), "--secret", SECRET]) == 2
    finally:
        taken.server_close()
    error = capsys.readouterr().err
    assert f"port {port} of 127.0.0.1" in error
    assert f"PORT={port + 1}" in error


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_the_receiver_listens_on_an_ipv6_host() -> None:
    server = SampleReceiver(("::1", 0), SECRET, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        response = httpx.post(f"http://[::1]:{server.server_address[1]}/", content=BODY)
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 401  # reached, and refused for its missing signature
