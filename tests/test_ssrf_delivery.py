"""Where a delivery may connect: the URL policy at delivery time, over real sockets on the loopback.

DNS answers are scripted (``tests.dns_support.FakeDns``); everything after them is Herald's own code: the
pre-check, the one lookup per connection, the check of every answer, the connection to a checked address,
TLS with the original name. A "target" that must not be reached is a real server that counts what reaches it.
"""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from herald.addresses import embedded_ipv4
from herald.local.loopback import LoopbackServer, QuietHandler
from herald.records import ErrorKind
from herald.sender import pinned_client, send_attempt
from herald.urls import LOCAL_NETWORKS, Address, UrlPolicy, literal_address, parse_networks
from tests.delivery_support import Harness, attempts, bulk_subscriptions, only_delivery, publish, subscribe, verify
from tests.dns_support import FakeDns, use_dns
from tests.support import Receiver, TenantInfo

pytestmark = pytest.mark.e2e

NO_NETWORKS_HTTP = {"allowed_target_networks": "none", "allow_http_urls": True}
PUBLIC = ["93.184.215.14"]  # what a name answers when the subscription is created (never connected to)


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


class Listener:
    """A TCP server that only counts the connections it accepts (the internal service nobody may reach)."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.accepted = 0
        self.socket = socket.create_server((host, port))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.socket.close()


def _failed_attempt(client: Any, tenant: TenantInfo, sub_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    delivery = only_delivery(client, tenant, sub_id)
    (attempt,) = attempts(client, tenant, sub_id, delivery["id"])
    assert attempt["succeeded"] is False
    return delivery, attempt


def _forms(address: Address) -> list[str]:
    """The other ways a message could write ``address``: without its scope, and the IPv4 addresses it carries."""
    if not isinstance(address, IPv6Address):
        return []
    return [str(IPv6Address(int(address))), *(str(ipv4) for _, ipv4 in embedded_ipv4(address))]


def _port(receiver: Receiver) -> int:
    return int(receiver.server.server_address[1])


# --- DNS answers at delivery time -------------------------------------------------------------------------

HOSTILE_ANSWERS = [
    ["127.0.0.1"],
    ["127.0.0.1", "::1"],
    ["0.0.0.0"],  # on Linux a connection to 0.0.0.0 reaches the local host
    ["::"],
    ["::1"],
    ["::ffff:127.0.0.1"],
    ["::ffff:7f00:1"],
    ["::127.0.0.1"],
    ["64:ff9b::7f00:1"],
    ["2002:7f00:1::1"],
    ["2001:0:4136:e378:8000:63bf:80ff:fffe"],
    ["169.254.169.254"],
    ["::ffff:169.254.169.254"],
    ["fd00:ec2::254"],
    ["10.0.0.1"],
    ["172.16.0.1"],
    ["192.168.0.1"],
    ["100.64.0.1"],
    ["fe80::1%eth0"],
    ["fc00::1"],
    ["224.0.0.1"],
    ["255.255.255.255"],
    ["198.18.0.1"],
    ["203.0.113.1"],
]


@pytest.mark.parametrize("settings_overrides", [NO_NETWORKS_HTTP])
def test_a_name_that_now_resolves_to_a_refused_address_is_never_called(
    client, tenant, services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a deployment's networks, and subscriptions to names that resolved to a public address when they
    # were created but now answer a refused address (the receiver listens on the port of every URL)
    dns = use_dns(services, FakeDns())
    port = _port(receiver)
    subs = {}
    for index, answer in enumerate(HOSTILE_ANSWERS):
        name = f"h{index}.evil.example"
        dns.script(name, PUBLIC, answer)
        subs[name] = (subscribe(client, tenant, f"http://{name}:{port}/webhook"), answer)
    # WHEN an event is delivered to all of them
    publish(client, tenant.id)
    harness.drain()
    # THEN every attempt was refused by policy, naming the host and what its address is, but never the address
    # nor one it carries (the tenant reads the message; the answer is the operator's DNS's); nothing reached
    # the receiver
    for name, (sub, answer) in subs.items():
        delivery, attempt = _failed_attempt(client, tenant, sub.id)
        assert attempt["error_kind"] == "refused_by_policy", (answer, attempt)
        assert attempt["status_code"] is None
        assert name in attempt["error_message"]
        address = literal_address(answer[0])
        assert address is not None
        reason = UrlPolicy(allowed_networks=()).refusal(address, named=False)
        assert reason is not None
        assert reason in attempt["error_message"], (answer, attempt)
        written = {answer[0], str(address), *_forms(address)}
        beside_reason = attempt["error_message"].replace(reason, "")  # a reason may name its range: 0.0.0.0/8
        assert not [text for text in written if text in beside_reason], (answer, attempt)
        # AND the delivery failed for good, after exactly one lookup at delivery time
        assert delivery["status"] == "failed"
        assert dns.count(name) == 2  # one when the subscription was created, one when delivering
    assert receiver.received == []


@pytest.mark.parametrize("settings_overrides", [NO_NETWORKS_HTTP])
def test_no_spelling_of_loopback_is_called_and_none_needs_a_lookup(
    client, tenant, services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN subscriptions written around the API (as an older version might have stored them) whose hosts
    # spell the receiver's loopback address in ways the system resolver would still connect to
    dns = use_dns(services, FakeDns())
    port = _port(receiver)
    hosts = [
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "127.0.0.1.",
        "%31%32%37.0.0.1",
        "0",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::1]",
        "[::]",
        "localhost",
        "LOCALHOST.",
        "api.localhost",
    ]
    subs = {
        host: bulk_subscriptions(services.store, tenant.id, f"http://{host}:{port}/webhook", 1)[0] for host in hosts
    }
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN each attempt is refused before any network I/O: no lookup, nothing reaches the receiver
    for host, sub in subs.items():
        delivery, attempt = _failed_attempt(client, tenant, sub.id)
        assert attempt["error_kind"] == "refused_by_policy", (host, attempt)
        assert delivery["status"] == "failed"
    assert dns.lookups == []
    assert receiver.received == []


# --- the name is kept, the checked address is used --------------------------------------------------------


def test_a_name_reaches_the_checked_address_with_its_own_host_header(
    client, tenant, services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN the local stack's networks and a name that resolves to the receiver's loopback address
    dns = use_dns(services, FakeDns({"hooks.example.test": [["127.0.0.1"]]}))
    port = _port(receiver)
    sub = subscribe(client, tenant, f"http://hooks.example.test:{port}/webhook")
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the receiver got it, addressed to the name (Host header), verified with the subscription's secret
    (got,) = receiver.received
    assert got.headers["host"] == f"hooks.example.test:{port}"
    assert verify(sub.secret, got)["type"] == "invoice.paid"
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    assert dns.count("hooks.example.test") == 2  # created, delivered


def test_a_fully_qualified_name_is_stored_without_its_root_dot(
    client, tenant, services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a name that resolves to the receiver's loopback address
    use_dns(services, FakeDns({"hooks.example.test": [["127.0.0.1"]]}))
    port = _port(receiver)
    # WHEN a subscription is made with the name fully qualified (the root's dot at its end)
    sub = subscribe(client, tenant, f"http://hooks.example.test.:{port}/webhook?a=1")
    # THEN it is stored without the dot (the same host; TLS and virtual hosts name it without), the rest as written
    shown = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert shown["url"] == f"http://hooks.example.test:{port}/webhook?a=1"
    # AND a delivery reaches it, addressed to the name
    publish(client, tenant.id)
    harness.drain()
    (got,) = receiver.received
    assert got.headers["host"] == f"hooks.example.test:{port}"
    # AND a URL changed to such a name is stored so too
    changed = client.patch(
        f"/v1/subscriptions/{sub.id}", json={"url": f"http://hooks.example.test.:{port}/other"}, headers=tenant.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == f"http://hooks.example.test:{port}/other"


def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(
    client, tenant, services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a name whose first address has nothing listening and whose second is the receiver
    use_dns(services, FakeDns({"two.example.test": [["127.0.0.2", "127.0.0.1"]]}))
    sub = subscribe(client, tenant, f"http://two.example.test:{_port(receiver)}/webhook")
    # WHEN an event is delivered THEN it arrives through the second address
    publish(client, tenant.id)
    harness.drain()
    assert len(receiver.received) == 1
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


@pytest.mark.parametrize("settings_overrides", [{"allowed_target_networks": "127.0.0.1/32", "allow_http_urls": True}])
def test_dns_rebinding_cannot_swap_the_address_between_check_and_connect(
    client, tenant, services, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN only 127.0.0.1 allowed (it stands for a public address), an internal service on 127.0.0.2 at the
    # receiver's port, and a name that answers 127.0.0.1 twice and then the internal address: a sender that
    # checked with one lookup and connected with another would reach the internal service
    internal = Listener("127.0.0.2", _port(receiver))
    try:
        dns = use_dns(services, FakeDns({"rebind.example.test": [["127.0.0.1"], ["127.0.0.1"], ["127.0.0.2"]]}))
        sub = subscribe(client, tenant, f"http://rebind.example.test:{_port(receiver)}/webhook")
        # WHEN an event is delivered
        publish(client, tenant.id)
        harness.drain()
        # THEN one lookup served both the check and the connection, to the checked address
        assert dns.count("rebind.example.test") == 2  # created, delivered
        assert len(receiver.received) == 1
        assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
        assert internal.accepted == 0
    finally:
        internal.close()


# --- redirects --------------------------------------------------------------------------------------------


def test_a_redirect_towards_an_internal_address_is_never_followed(
    client, tenant, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN an internal target (reachable under the local stack's networks, so only the no-redirect rule
    # protects it), and subscribers answering each redirect status towards it or the metadata service
    internal = make_receiver()
    cases = []
    for status, location in [
        (301, internal.url),
        (302, "http://169.254.169.254/latest/meta-data/"),
        (303, internal.url),
        (307, internal.url),
        (308, f"http://[::ffff:127.0.0.1]:{_port(internal)}/webhook"),
    ]:
        redirecting = make_receiver()
        redirecting.default = (status, {"location": location}, b"", 0.0)
        cases.append((status, redirecting, subscribe(client, tenant, redirecting.url)))
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN each attempt is the redirect status, recorded as a failure, and nothing reached the target
    for status, redirecting, sub in cases:
        _, attempt = _failed_attempt(client, tenant, sub.id)
        assert attempt["status_code"] == status
        assert attempt["error_kind"] == "http_status"
        assert "redirects are not followed" in attempt["error_message"]
        assert len(redirecting.received) == 1
    assert internal.received == []


# --- TLS keeps the name -----------------------------------------------------------------------------------


def _certificate_authority(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for ``name`` (only), signed by it: (CA, certificate, key) files."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


class TlsReceiver:
    """An HTTPS server on 127.0.0.1 recording the SNI of every ClientHello and the Host of every request."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.server_names: list[str | None] = []
        self.hosts: list[str] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                outer.hosts.append(self.headers.get("host", ""))
                self.answer(200, b"ok")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                connection, address = self.socket.accept()
                return context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False), address

            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # a refused handshake is the point of some tests

        self.http = LoopbackServer(Handler, server_class=Server)
        self.port = self.http.port

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[TlsReceiver, ssl.SSLContext]]:
    ca_file, cert_file, key_file = _certificate_authority(tmp_path, "hooks.example.test")
    server = TlsReceiver(cert_file, key_file)
    yield server, ssl.create_default_context(cafile=str(ca_file))
    server.close()


LOOPBACK_POLICY = UrlPolicy(allowed_networks=parse_networks(LOCAL_NETWORKS))


def _loopback_name(name: str) -> tuple[FakeDns, UrlPolicy]:
    """A lookup answering ``name`` with 127.0.0.1, and the loopback policy resolving with it."""
    dns = FakeDns({name: [["127.0.0.1"]]})
    return dns, UrlPolicy(allowed_networks=LOOPBACK_POLICY.allowed_networks, resolver=dns)


async def _post(policy: UrlPolicy, url: str, verify: ssl.SSLContext) -> int:
    async with pinned_client(policy, 5.0, verify=verify) as http:
        response = await http.post(url, content=b"{}")
        return response.status_code


def test_tls_uses_the_name_for_sni_and_the_certificate_while_connecting_to_the_checked_address(tls) -> None:
    # GIVEN an HTTPS server on 127.0.0.1 whose certificate names hooks.example.test only, a client trusting
    # its CA, and a name resolving to 127.0.0.1
    server, trusting = tls
    dns, policy = _loopback_name("hooks.example.test")
    # WHEN Herald's client posts to the name
    status = asyncio.run(_post(policy, f"https://hooks.example.test:{server.port}/webhook", trusting))
    # THEN the ClientHello named the host (SNI), the certificate was accepted for that name, and the Host
    # header kept it, although the connection went to the address checked after one lookup
    assert status == 200
    assert server.server_names == ["hooks.example.test"]
    assert server.hosts == [f"hooks.example.test:{server.port}"]
    assert dns.lookups == ["hooks.example.test"]


def test_a_url_stored_with_a_fully_qualified_name_names_the_host_without_its_root_dot_to_tls(tls) -> None:
    # GIVEN the same server and trust, and a URL whose host ends in the root's dot (stored before such URLs lost it)
    server, trusting = tls
    _, policy = _loopback_name("hooks.example.test.")
    # WHEN Herald's client posts to it
    status = asyncio.run(_post(policy, f"https://hooks.example.test.:{server.port}/webhook", trusting))
    # THEN the ClientHello named the host without the dot, and its certificate was accepted for that name, as curl
    # and browsers do (no certificate names a host with the dot)
    assert status == 200
    assert server.server_names == ["hooks.example.test"]


def test_the_certificate_is_checked_against_the_url_s_host(tls) -> None:
    # GIVEN the same server and trust, reached by its address instead of the name on its certificate
    server, trusting = tls
    # WHEN Herald's client posts to the address THEN the certificate is refused (it names another host)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(_post(LOOPBACK_POLICY, f"https://127.0.0.1:{server.port}/webhook", trusting))
    assert server.hosts == []


def test_a_delivery_to_an_untrusted_certificate_is_a_tls_failure_with_the_name_as_sni(tls) -> None:
    # GIVEN the server (its CA unknown to the system trust store) behind a name
    server, _ = tls
    dns = FakeDns({"hooks.example.test": [["127.0.0.1"]]})
    policy = UrlPolicy(allowed_networks=parse_networks(LOCAL_NETWORKS), resolver=dns)
    # WHEN one attempt is made
    outcome = asyncio.run(
        send_attempt(
            f"https://hooks.example.test:{server.port}/webhook",
            body=b"{}",
            headers={"content-type": "application/json"},
            timeout_seconds=5,
            policy=policy,
        )
    )
    # THEN it is a TLS failure, and the handshake carried the name
    assert outcome.error_kind is ErrorKind.TLS
    assert server.server_names == ["hooks.example.test"]
    assert server.hosts == []


# --- one attempt, directly --------------------------------------------------------------------------------


def _attempt(url: str, policy: UrlPolicy) -> Any:
    return asyncio.run(send_attempt(url, body=b"{}", headers={}, timeout_seconds=5, policy=policy))


@pytest.mark.parametrize("url", ["https://08.0.0.1/hook", "https://xn--.com/hook"])
def test_a_stored_url_the_http_client_cannot_send_is_refused_not_retried(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a URL stored before creation refused it, which the HTTP client refuses to parse at every send (the
    # checks of its form skipped, as they were for an item written before them)
    monkeypatch.setattr(UrlPolicy, "check_url", lambda self, url: url)
    # WHEN one attempt is made
    outcome = _attempt(url, UrlPolicy())
    # THEN it is refused, which the schedule does not retry, saying why
    assert outcome.error_kind is ErrorKind.REFUSED_BY_POLICY
    assert (outcome.error_message or "").startswith("the URL cannot be sent: ")


def test_an_unexpected_error_is_the_attempt_s_failure_logged_without_the_url_s_path_or_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a subscriber URL that carries its own secret in its path and query, and a resolver that fails in a way
    # nothing expects (not a DNS error)
    class BrokenResolver:
        async def __call__(self, host: str, port: int) -> list[str]:
            raise RuntimeError("resolver state corrupted")

    caplog.set_level(logging.DEBUG, logger="herald")
    # WHEN one attempt is made
    outcome = _attempt(
        "https://hooks.example.test/in/s3cr3t-path?token=s3cr3t-query", UrlPolicy(resolver=BrokenResolver())
    )
    # THEN it is this attempt's failure, logged with the host but neither the path nor the query
    assert outcome.error_kind is ErrorKind.CONNECTION
    assert outcome.error_message == "RuntimeError: resolver state corrupted"
    logged = [record for record in caplog.records if record.getMessage() == "unexpected error while delivering"]
    assert len(logged) == 1
    assert logged[0].__dict__.get("host") == "hooks.example.test"
    assert not [name for name, value in vars(logged[0]).items() if "s3cr3t" in str(value)]
    assert "s3cr3t" not in caplog.text


def test_a_literal_refused_address_is_refused_before_any_lookup_or_connection() -> None:
    dns = FakeDns()
    outcome = _attempt("https://0xa9fea9fe/latest/meta-data/", UrlPolicy(resolver=dns))
    assert outcome.error_kind is ErrorKind.REFUSED_BY_POLICY
    assert "169.254.169.254" in (outcome.error_message or "")
    assert dns.lookups == []


def test_a_name_resolving_only_to_refused_addresses_is_refused_naming_host_and_address() -> None:
    dns = FakeDns({"evil.example": [["169.254.169.254"]]})
    outcome = _attempt("https://evil.example/hook", UrlPolicy(resolver=dns))
    assert outcome.error_kind is ErrorKind.REFUSED_BY_POLICY
    assert "evil.example" in (outcome.error_message or "")
    assert "169.254.169.254" in (outcome.error_message or "")
    assert dns.lookups == ["evil.example"]


class _Accepting(QuietHandler):
    def do_POST(self) -> None:
        self.read_body()
        self.answer(200)


@pytest.fixture
def unanswering_first_address() -> Iterator[tuple[int, list[str]]]:
    """A port where 127.0.0.2 takes no connection (a listener whose backlog is full: the kernel drops each new
    SYN, as for an address that does not answer) and 127.0.0.1 answers 200; the two addresses in that order."""
    with LoopbackServer(_Accepting) as good:
        hole = socket.socket()
        fillers: list[socket.socket] = []
        try:
            hole.bind(("127.0.0.2", good.port))
            hole.listen(0)
            for _ in range(3):  # the backlog's connections, never accepted
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.2", good.port))
                fillers.append(filler)
            yield good.port, ["127.0.0.2", "127.0.0.1"]
        finally:
            for filler in fillers:
                filler.close()
            hole.close()


def test_an_address_that_does_not_answer_leaves_the_connect_timeout_to_the_next(unanswering_first_address) -> None:
    # GIVEN a name whose first address takes no connection and whose second answers, and an attempt whose whole
    # time is the connect timeout (5 s)
    port, addresses = unanswering_first_address
    policy = UrlPolicy(
        allowed_networks=parse_networks(LOCAL_NETWORKS),
        allow_http=True,
        resolver=FakeDns({"hooks.example.test": [addresses]}),
    )
    # WHEN one attempt is made
    outcome = asyncio.run(
        send_attempt(
            f"http://hooks.example.test:{port}/webhook", body=b"{}", headers={}, timeout_seconds=5, policy=policy
        )
    )
    # THEN the second address was tried while the first still hung (Happy Eyeballs), and answered
    assert (outcome.status_code, outcome.error_kind) == (200, None), outcome.error_message


@pytest.mark.parametrize("host", ["nowhere.example", "certificates.example", "ssl.example", "tls-certificate.example"])
def test_a_name_that_does_not_resolve_is_a_dns_failure(host: str) -> None:
    # A name the failure's message holds is not read as what failed (a TLS word in it)
    outcome = _attempt(f"https://{host}/hook", UrlPolicy(resolver=FakeDns()))
    assert outcome.error_kind is ErrorKind.DNS


def test_http_and_non_default_ports_are_refused_at_delivery_when_the_policy_says_so() -> None:
    dns = FakeDns({"example.test": [["93.184.215.14"]]})
    assert _attempt("http://example.test/hook", UrlPolicy(resolver=dns)).error_kind is ErrorKind.REFUSED_BY_POLICY
    strict = UrlPolicy(resolver=dns, allow_non_default_ports=False)
    assert _attempt("https://example.test:8443/hook", strict).error_kind is ErrorKind.REFUSED_BY_POLICY
    assert dns.lookups == []
