"""The subscriber URL policy: which URLs a subscription may have and which addresses Herald connects to.

The first half checks the policy itself (spellings of addresses, the refusal table, the allow-list, the
settings that build it); the second half goes through the API, where a refused URL is a 422.
"""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from pydantic import ValidationError

from herald import urls
from herald.errors import UrlNotAllowedError
from herald.settings import Settings
from herald.urls import (
    LOCAL_NETWORKS,
    RESOLVER_THREADS,
    RESOLVER_THREADS_PER_TENANT,
    UrlPolicy,
    literal_address,
    parse_networks,
    resolving_for,
    system_resolve,
)
from tests.delivery_support import publish, subscribe
from tests.dns_support import FakeDns, use_dns

DEPLOYMENT = UrlPolicy()
DEPLOYMENT_SETTINGS = {"allowed_target_networks": "none", "allow_http_urls": False}


def _let_go(release: threading.Event, zone: str) -> None:
    """Release the lookups a test left hanging in the resolver's threads, and wait until each has ended: a lookup
    still in progress is shared by the next one of its name, which a later test must not be handed."""
    release.set()
    deadline = time.monotonic() + 60
    while any(host.endswith(zone) for host, _ in urls._lookups):
        assert time.monotonic() < deadline, f"lookups of {zone} names still in progress"
        time.sleep(0.01)


# --- spellings --------------------------------------------------------------------------------------------

SPELLINGS = [
    ("127.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F000001", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0177.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("127.000.000.001", "127.0.0.1"),
    ("0127.0.0.1", "87.0.0.1"),  # octal, as inet_aton and browsers read it
    ("127.0.0.1.", "127.0.0.1"),
    ("%31%32%37.0.0.1", "127.0.0.1"),
    ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),  # full-width digits
    ("127\u30020\u30020\u30021", "127.0.0.1"),  # ideographic full stops
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),
    ("00", "0.0.0.0"),
    ("2852039166", "169.254.169.254"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
    ("10.1", "10.0.0.1"),
    ("012.0.0.1", "10.0.0.1"),
    ("3232235521", "192.168.0.1"),
    ("[::1]", "::1"),
    ("[0:0:0:0:0:0:0:1]", "::1"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("[fe80::1%25eth0]", "fe80::1"),
    ("[FE80::1%eth0]", "fe80::1"),
]


@pytest.mark.parametrize(("host", "address"), SPELLINGS)
def test_every_spelling_of_an_address_is_read_as_that_address(host: str, address: str) -> None:
    # GIVEN a host spelled the way inet_aton, getaddrinfo or a browser would still read as an address
    # WHEN Herald reads it THEN it sees the address those would connect to
    assert literal_address(host) == ip_address(address)


def test_names_and_near_misses_are_not_addresses() -> None:
    for host in ("example.com", "1.2.3.4.5", "0x7g.1", "08.0.0.1", "256.1.1.1", "1.2.3.4294967296", "", "::zz"):
        assert literal_address(host) is None, host


def test_the_same_addresses_as_the_system_resolver() -> None:
    # GIVEN the legacy spellings glibc's resolver still accepts
    for host in ("2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001", "10.1", "0251.0376.0251.0376"):
        # WHEN both read them THEN they agree on the address
        (info, *_) = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
        assert literal_address(host) == ip_address(info[4][0]), host


# --- what a deployment refuses ----------------------------------------------------------------------------

REFUSED_ADDRESSES = [
    # IPv4: loopback, this network, private, CGNAT, link-local / metadata, reserved, benchmarking,
    # documentation, multicast, broadcast
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "169.254.169.254",
    "169.254.170.2",
    "169.254.0.1",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6: loopback, unspecified, link-local, unique-local (with AWS's fd00:ec2::), site-local, multicast,
    # discard, documentation, benchmarking, ORCHID, outside global unicast
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fd00:ec2::254",
    "fec0::1",
    "ff02::1",
    "100::1",
    "2001:db8::1",
    "3fff::1",
    "2001:2::1",
    "2001:10::1",
    "2001:20::1",
    "2001:4:112::1",
    "4000::1",
    # IPv6 forms carrying a refused IPv4 address
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "::8.8.8.8",  # IPv4-compatible is deprecated whatever it carries
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::",
    "2002:a00:1::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (bits inverted)
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
    "2001:0:a00:1:8000:63bf:f7f7:f7f7",  # Teredo, server 10.0.0.1
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::a00:1",
    "64:ff9b:1::a9fe:a9fe",
    # local-use NAT64 with a /48 prefix: 169.254.169.254 in bits 48-87, 8.8.8.8 in the last 32
    "64:ff9b:1:a9fe:a9:fe00:808:808",
]

PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.169.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4007:80e::200e",
    "2002:808:808::1",  # 6to4 carrying 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8 (DNS64 answers in IPv6-only subnets)
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_a_deployment_refuses_every_address_that_is_not_public_unicast(address: str) -> None:
    # GIVEN a deployment's policy WHEN it judges the address THEN it is refused, with a reason
    reason = DEPLOYMENT.refusal(ip_address(address))
    assert reason is not None
    assert str(ip_address(address)) in reason


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_a_deployment_calls_public_unicast_addresses(address: str) -> None:
    assert DEPLOYMENT.refusal(ip_address(address)) is None


@pytest.mark.parametrize("host", [host for host, address in SPELLINGS if address != "87.0.0.1"])
def test_no_spelling_of_a_refused_literal_passes_the_url_check(host: str) -> None:
    # GIVEN a deployment WHEN a URL spells a refused address in any way THEN it is refused before any I/O
    with pytest.raises(UrlNotAllowedError, match="Herald only calls public addresses"):
        DEPLOYMENT.check_url(f"https://{host}/hook")


# --- the URL's form ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/hook", "https"),
        ("ftp://example.com/hook", "https"),
        ("https://user@example.com/hook", "credentials"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://example.com@127.0.0.1/hook", "credentials"),
        ("https://@example.com/hook", "credentials"),
        ("https://example.com\\@127.0.0.1/", "backslash"),
        ("https://example.com/ hook", "whitespace"),
        ("https://example.com/\x00", "control"),
        ("https://localhost/hook", "local host"),
        ("https://LOCALHOST./hook", "local host"),
        ("https://api.localhost/hook", "local host"),
        ("https://intranet/hook", "local name"),
        ("https://metadata.google.internal/computeMetadata/v1/", "local name"),
        ("https://printer.local/hook", "local name"),
        ("https://router.home.arpa/hook", "local name"),
        ("https:///hook", "no host"),
        ("https://example.com/" + "a" * 2100, "longer"),
        # what the HTTP client reads as an IPv4 address and refuses at every send (a public one spelt so too)
        ("https://08.0.0.1/hook", "not a valid IPv4 address"),
        ("https://256.1.1.1/hook", "not a valid IPv4 address"),
        ("https://1.2.3.04/hook", "not a valid IPv4 address"),
        ("https://010.8.8.8/hook", "not a valid IPv4 address"),
        # a host starting with xn-- that does not decode whole, as the HTTP client decodes it at every send
        ("https://xn--.com/hook", "does not decode"),
        ("https://xn--ls8h.la/hook", "does not decode"),
        ("https://xn--bcher-kva.ex_ample.com/hook", "does not decode"),
        ("https://xn--9999999999999999999a.com/hook", "does not decode"),
    ],
)
def test_urls_refused_for_their_form(url: str, why: str) -> None:
    with pytest.raises(UrlNotAllowedError) as refused:
        DEPLOYMENT.check_url(url)
    assert why in refused.value.message


@pytest.mark.parametrize(
    "url",
    [
        # the HTTP client sends a host that does not start with xn-- as it is, whatever its other labels
        "https://hooks.xn--ls8h.la/hook",
        "https://hooks.xn--i-7iq.ws/hook",
        "https://xn--bcher-kva.example.com/hook",
        "https://1.2.3.4.example.com/hook",
        "https://8.8.8.8/hook",
    ],
)
def test_hosts_the_http_client_sends_to_pass_the_form_check(url: str) -> None:
    assert DEPLOYMENT.check_url(url) == url


def test_http_only_when_the_operator_opts_in() -> None:
    assert UrlPolicy(allow_http=True).check_url("http://example.com/hook") == "http://example.com/hook"
    with pytest.raises(UrlNotAllowedError, match="must use https"):
        UrlPolicy(allow_http=False).check_url("http://example.com/hook")


def test_non_default_ports_can_be_forbidden() -> None:
    # GIVEN the default (any port, as Svix) and an operator who forbids other ports than 443 / 80
    strict = UrlPolicy(allow_non_default_ports=False)
    assert DEPLOYMENT.check_url("https://example.com:8443/hook")
    # THEN a strict deployment refuses :8443 but takes the default port, spelled or not
    with pytest.raises(UrlNotAllowedError, match="default port"):
        strict.check_url("https://example.com:8443/hook")
    assert strict.check_url("https://example.com:443/hook")
    assert strict.check_url("https://example.com/hook")
    with pytest.raises(UrlNotAllowedError, match="default port"):
        asyncio.run(strict.connectable("example.com", 8443))


# --- the allow-list ---------------------------------------------------------------------------------------


def test_an_allowed_network_opens_that_network_only() -> None:
    # GIVEN an operator who allows a self-hosted network
    policy = UrlPolicy(allowed_networks=parse_networks("10.0.0.0/8"))
    # THEN addresses in it (in any IPv6 disguise too) are allowed, others stay refused
    assert policy.refusal(ip_address("10.1.2.3")) is None
    assert policy.refusal(ip_address("::ffff:10.1.2.3")) is None
    assert policy.refusal(ip_address("2002:a01:203::1")) is None
    assert policy.check_url("https://10.1.2.3/hook")
    # (an octal spelling of it is read as that address, and refused only because the HTTP client cannot send to it)
    with pytest.raises(UrlNotAllowedError, match="not a valid IPv4 address"):
        policy.check_url("https://012.1.2.3/hook")
    for address in ("192.168.1.1", "127.0.0.1", "169.254.169.254", "::ffff:192.168.1.1"):
        assert policy.refusal(ip_address(address)) is not None, address


@pytest.mark.parametrize("networks", ["0.0.0.0/0,::/0", "128.0.0.0/1,0.0.0.0/1", "169.0.0.0/8", "fc00::/7"])
def test_a_wide_allowed_network_never_opens_loopback_or_the_metadata_service(networks: str) -> None:
    # GIVEN an allow-list with a wide range
    policy = UrlPolicy(allowed_networks=parse_networks(networks))
    # THEN loopback, metadata (IPv4 and AWS's IPv6 endpoint) and the unspecified addresses stay refused
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "127.0.0.1", "0.0.0.0", "::1"):
        reason = policy.refusal(ip_address(address))
        assert reason is not None, (networks, address)


def test_the_metadata_service_only_when_listed_itself() -> None:
    # GIVEN an operator who lists exactly the metadata address (a deliberate, documented choice)
    policy = UrlPolicy(allowed_networks=parse_networks("169.254.169.254/32"))
    # THEN that address is allowed, its neighbours are not
    assert policy.refusal(ip_address("169.254.169.254")) is None
    assert policy.refusal(ip_address("169.254.169.253")) is not None


def test_the_local_stack_networks_allow_loopback_and_private_but_not_link_local() -> None:
    policy = UrlPolicy(allowed_networks=parse_networks(LOCAL_NETWORKS), allow_http=True)
    for address in ("127.0.0.1", "::1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "fd12::1"):
        assert policy.refusal(ip_address(address)) is None, address
    for address in ("169.254.169.254", "fd00:ec2::254", "fe80::1", "100.64.0.1", "0.0.0.0"):
        assert policy.refusal(ip_address(address)) is not None, address


# --- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("none", ()),
        ("NONE", ()),
        ("10.0.0.0/8", ("10.0.0.0/8",)),
        (" 10.0.0.0/8 , fd00::/8,", ("10.0.0.0/8", "fd00::/8")),
        ("192.168.1.7", ("192.168.1.7/32",)),
    ],
)
def test_allowed_target_networks_from_the_environment(monkeypatch, value: str, expected: tuple[str, ...]) -> None:
    monkeypatch.setenv("HERALD_ALLOWED_TARGET_NETWORKS", value)
    assert tuple(str(network) for network in Settings().allowed_target_networks) == expected


@pytest.mark.parametrize(("value", "hint"), [("10.0.0.1/8", "did you mean 10.0.0.0/8"), ("intranet", "'intranet'")])
def test_a_bad_network_is_a_clear_settings_error(monkeypatch, value: str, hint: str) -> None:
    monkeypatch.setenv("HERALD_ALLOWED_TARGET_NETWORKS", value)
    with pytest.raises(ValidationError) as error:
        Settings()
    assert "allowed_target_networks" in str(error.value)
    assert hint in str(error.value)


def test_a_deployment_s_defaults_are_strict(monkeypatch) -> None:
    for name in ("HERALD_ALLOWED_TARGET_NETWORKS", "HERALD_ALLOW_HTTP_URLS", "HERALD_ALLOW_NON_DEFAULT_PORTS"):
        monkeypatch.delenv(name, raising=False)
    policy = UrlPolicy.from_settings(Settings())
    assert policy == UrlPolicy(allowed_networks=(), allow_http=False, allow_non_default_ports=True)


# --- resolution -------------------------------------------------------------------------------------------


def test_connectable_keeps_only_checked_addresses_and_looks_up_once() -> None:
    # GIVEN a name answering a public and a private address
    dns = FakeDns({"mixed.example": [["93.184.215.14", "10.0.0.1", "::ffff:127.0.0.1"]]})
    policy = UrlPolicy(resolver=dns)
    # WHEN a connection asks where it may go THEN only the public address is left, after one lookup
    assert asyncio.run(policy.connectable("mixed.example", 443)) == [IPv4Address("93.184.215.14")]
    assert dns.lookups == ["mixed.example"]


def test_connectable_refuses_a_name_with_only_refused_answers_saying_what_they_are_not_which() -> None:
    # The message reaches the tenant; the answers are the operator's DNS's: what each is, never the address
    dns = FakeDns({"evil.example": [["169.254.169.254", "fd00:ec2::254", "169.254.0.1", "::ffff:10.1.2.3"]]})
    with pytest.raises(UrlNotAllowedError) as refused:
        asyncio.run(UrlPolicy(resolver=dns).connectable("evil.example", 443))
    message = refused.value.message
    assert message == (
        "evil.example resolves only to addresses Herald does not call: a link-local address (the cloud metadata "
        "service lives at 169.254.169.254); an AWS service address (instance metadata, DNS, time: fd00:ec2::/32); "
        "a private address (RFC 1918)"
    )
    # AND an address the caller gave is still named
    assert UrlPolicy().refusal(ip_address("::ffff:10.1.2.3")) == (
        "::ffff:10.1.2.3 is 10.1.2.3 in IPv6 form, and 10.1.2.3 is a private address (RFC 1918)"
    )


def test_an_answer_that_is_not_an_address_is_refused() -> None:
    dns = FakeDns({"odd.example": [["not-an-address"]]})
    with pytest.raises(UrlNotAllowedError, match="not an address"):
        asyncio.run(UrlPolicy(resolver=dns).connectable("odd.example", 443))


def test_a_scoped_ipv6_answer_is_judged_without_its_zone() -> None:
    dns = FakeDns({"scoped.example": [["fe80::1%eth0"]]})
    with pytest.raises(UrlNotAllowedError, match=r"does not call: a link-local address$"):
        asyncio.run(UrlPolicy(resolver=dns).connectable("scoped.example", 443))
    assert asyncio.run(UrlPolicy(resolver=dns).resolve("scoped.example", 443)) == [IPv6Address("fe80::1")]


# --- through the API --------------------------------------------------------------------------------------

HOSTILE_URLS = (
    [f"https://{host}/hook" for host, address in SPELLINGS if address != "87.0.0.1"]
    + [f"https://{address}/hook" for address in REFUSED_ADDRESSES if ":" not in address]
    + [f"https://[{address}]/hook" for address in REFUSED_ADDRESSES if ":" in address]
    + [
        "https://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "https://[0:0:0:0:0:ffff:7f00:1]/hook",
        "https://localhost/hook",
        "https://localhost:8443/hook",
        "https://LocalHost./hook",
        "https://foo.localhost/hook",
        "https://intranet/hook",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://printer.local/hook",
        "https://user@example.com/hook",
        "https://user:pw@example.com/hook",
        "https://example.com@169.254.169.254/hook",
        "https://169.254.169.254#@example.com/hook",
        "http://example.com/hook",
        "http://93.184.215.14/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:11211/stat",
        # names whose DNS answers are all refused (scripted below)
        "https://rebind.example/hook",
        "https://metadata.example/hook",
        "https://mapped.example/hook",
        "https://nat64.example/hook",
        "https://loopback6.example/hook",
    ]
)
HOSTILE_DNS = {
    "rebind.example": [["127.0.0.1"]],
    "metadata.example": [["169.254.169.254", "fd00:ec2::254"]],
    "mapped.example": [["::ffff:10.0.0.1"]],
    "nat64.example": [["64:ff9b::a9fe:a9fe"]],
    "loopback6.example": [["::1", "127.0.0.1"]],
    "mixed.example": [["93.184.215.14", "10.0.0.1"]],
    "public.example": [["93.184.215.14"]],
}


@pytest.mark.parametrize("settings_overrides", [DEPLOYMENT_SETTINGS])
def test_a_deployment_accepts_no_hostile_url_on_create_or_update(client, tenant, services) -> None:
    # GIVEN a deployment's settings, a scripted DNS, and a subscription to a public name
    use_dns(services, FakeDns(HOSTILE_DNS))
    good = client.post(
        "/v1/subscriptions",
        json={"url": "https://public.example/hook", "event_types": ["*"]},
        headers=tenant.headers,
    )
    assert good.status_code == 201, good.text
    sub_id = good.json()["id"]
    accepted: list[tuple[str, str, int]] = []
    codes: set[str] = set()
    # WHEN a tenant tries every hostile URL, as a new subscription and as a changed URL
    for url in HOSTILE_URLS:
        created = client.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers)
        updated = client.patch(f"/v1/subscriptions/{sub_id}", json={"url": url}, headers=tenant.headers)
        for verb, response in (("create", created), ("update", updated)):
            if response.status_code != 422:
                accepted.append((verb, url, response.status_code))
            else:
                codes.add(response.json()["error"]["code"])
    # THEN none is accepted (a 422 each: url_not_allowed, or validation_error for what is no URL at all)
    assert accepted == []
    assert codes <= {"url_not_allowed", "validation_error"}
    listed = client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]
    assert [(s["id"], s["url"]) for s in listed] == [(sub_id, "https://public.example/hook")]


@pytest.mark.parametrize("settings_overrides", [DEPLOYMENT_SETTINGS])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://2130706433/hook", "127.0.0.1 is a loopback address"),
        ("https://[::ffff:169.254.169.254]/hook", "169.254.169.254 is a link-local address"),
        ("https://metadata.example/hook", "metadata.example resolves only to addresses Herald does not call"),
        ("http://example.com/hook", "the URL must use https"),
        ("https://user:pw@example.com/hook", "must not carry credentials"),
    ],
)
def test_a_refused_url_is_a_422_with_a_clear_message(client, tenant, services, url: str, message: str) -> None:
    use_dns(services, FakeDns(HOSTILE_DNS))
    response = client.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "url_not_allowed"
    assert message in error["message"]


@pytest.mark.parametrize("settings_overrides", [DEPLOYMENT_SETTINGS])
@pytest.mark.parametrize(
    "url",
    [
        "https://public.example/hook",
        "https://mixed.example/hook",  # delivery connects to its public address only
        "https://not-yet-created.example/hook",  # does not resolve now: each delivery checks again
        "https://93.184.215.14/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://example.com:8443/hook",
    ],
)
def test_a_deployment_accepts_public_and_not_yet_resolvable_urls(client, tenant, services, url: str) -> None:
    use_dns(services, FakeDns(HOSTILE_DNS))
    response = client.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "settings_overrides", [{**DEPLOYMENT_SETTINGS, "allowed_target_networks": "10.0.0.0/8,fd00::/8"}]
)
def test_an_operator_allow_list_admits_its_networks_through_the_api(client, tenant, services) -> None:
    # GIVEN a deployment that allows a self-hosted network
    use_dns(services, FakeDns({"hooks.corp.example": [["10.20.30.40"]], "meta.corp.example": [["169.254.169.254"]]}))
    # THEN URLs in it are accepted, by address or by name, and everything else is still refused
    for url in ("https://10.1.2.3/hook", "https://[fd00::7]/hook", "https://hooks.corp.example/hook"):
        response = client.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers)
        assert response.status_code == 201, (url, response.text)
    for url in ("https://192.168.1.1/hook", "https://127.0.0.1/hook", "https://meta.corp.example/hook"):
        response = client.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers)
        assert response.status_code == 422, (url, response.text)


@pytest.mark.parametrize("settings_overrides", [{**DEPLOYMENT_SETTINGS, "allow_non_default_ports": False}])
def test_an_operator_can_hold_urls_to_the_default_port(client, tenant) -> None:
    response = client.post(
        "/v1/subscriptions", json={"url": "https://example.com:8443/hook", "event_types": ["*"]}, headers=tenant.headers
    )
    assert response.status_code == 422
    assert "default port" in response.json()["error"]["message"]


MALFORMED_NAMES = [
    "a" * 64 + ".com",  # a label over 63 characters
    ("a" * 60 + ".") * 5 + "com",  # over 253 characters in all
    "a..b.com",  # an empty label
    "a.com..",
    ".a.com",
    "a.b\u3002\u3002c.com",  # ideographic dots make an empty label too
]


@pytest.mark.parametrize("settings_overrides", [DEPLOYMENT_SETTINGS])
@pytest.mark.parametrize("host", MALFORMED_NAMES)
def test_a_name_no_dns_can_spell_is_a_422_not_a_crash(client, tenant, host: str) -> None:
    # GIVEN the system resolver (as in a deployment) and a subscription to change
    body = {"url": "https://hooks.example.com/h", "event_types": ["*"]}
    existing = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    assert existing.status_code == 201, existing.text
    # WHEN a URL whose host is no valid DNS name is subscribed, or set on the subscription
    url = f"https://{host}/hook"
    created = client.post("/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers)
    updated = client.patch(f"/v1/subscriptions/{existing.json()['id']}", json={"url": url}, headers=tenant.headers)
    # THEN each is a 422 saying why (never a 500), or pydantic's validation error if it is no URL at all
    for response in (created, updated):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] in {"url_not_allowed", "validation_error"}, error
        if error["code"] == "url_not_allowed":
            assert "not a valid host name" in error["message"]


@pytest.mark.parametrize("host", ["a" * 64 + ".com", "a..b.com"])
def test_the_system_resolver_refuses_a_name_no_dns_can_spell(host: str) -> None:
    # WHEN the delivery-time resolver is asked for a name the IDNA codec refuses
    # THEN it is a refusal by policy (no retry loop), not an unexpected error
    with pytest.raises(UrlNotAllowedError, match="not a valid host name"):
        asyncio.run(system_resolve(host, 443))


def test_names_whose_lookups_hang_do_not_hold_up_other_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a resolver whose name servers never answer for one zone (getaddrinfo blocks until released), and
    # answers at once for others
    release = threading.Event()
    calls: Counter[str] = Counter()
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        calls[host] += 1
        if host.endswith(".hang.example"):
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    async def scenario() -> list[str]:
        # WHEN a tenant's deliveries look up many such names, and give up on each (their connect timeout), and
        # fifty deliveries to one of them ask at the same time
        async def given_up(host: str) -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await system_resolve(host, 443)

        await asyncio.gather(*(given_up(f"n{i}.hang.example") for i in range(40)))
        await asyncio.gather(*(given_up("same.hang.example") for _ in range(50)))
        # AND another tenant's delivery looks up a name that answers
        async with asyncio.timeout(30):
            return await system_resolve("localhost", 443)

    try:
        answers = asyncio.run(scenario())
    finally:
        _let_go(release, ".hang.example")
    # THEN that lookup was answered while the others still hang (the event loop's default executor has a handful
    # of threads, all of them held), and the fifty lookups of one name made one call
    assert answers
    assert calls["localhost"] == 1
    assert calls["same.hang.example"] == 1
    assert sum(1 for host in calls if host.endswith(".hang.example")) == 41


def test_one_tenants_names_that_hang_hold_only_its_share_of_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN name servers that never answer for one zone (getaddrinfo blocks until released) and answer at once for
    # another
    release = threading.Event()
    calls: Counter[str] = Counter()

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        calls[host] += 1
        if host.endswith(".hang.example"):
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("93.184.215.14", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    async def scenario() -> tuple[list[str], bool, list[str]]:
        # WHEN one tenant's deliveries look up more such names than the resolver has threads, each giving up
        # (its connect timeout)
        mine = resolving_for.set("tnt_hanging")

        async def given_up(host: str) -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await system_resolve(host, 443)

        await asyncio.gather(*(given_up(f"n{i}.hang.example") for i in range(RESOLVER_THREADS + 36)))
        # ... and then one of its names that answers (a task: the tenant's, as the context it copies says)
        own = asyncio.ensure_future(system_resolve("own.ok.example", 443))
        resolving_for.reset(mine)
        # AND another tenant's delivery looks up a name that answers
        resolving_for.set("tnt_other")
        async with asyncio.timeout(30):
            other = await system_resolve("other.ok.example", 443)
        # ... at which moment the first tenant's own lookup still waits for one of its threads
        waited = not own.done()
        release.set()
        async with asyncio.timeout(30):
            return other, waited, await own

    try:
        other, waited, own = asyncio.run(scenario())
    finally:
        _let_go(release, ".hang.example")
    # THEN the other tenant's lookup was answered while the first tenant's hung: those held its share of the
    # threads only, the rest never started
    assert other == ["93.184.215.14"]
    assert sum(1 for host in calls if host.endswith(".hang.example")) == RESOLVER_THREADS_PER_TENANT
    # ... and the first tenant's next lookup waited for its own to end, then was answered
    assert waited
    assert own == ["93.184.215.14"]
    assert calls["own.ok.example"] == 1


def test_a_delivery_looks_up_its_host_as_its_tenant(client, tenant, make_tenant, services, harness, receiver) -> None:
    # GIVEN a resolver that notes whose lookup each is, and subscriptions of two tenants to names it resolves to
    # the receiver's loopback address
    seen: list[tuple[str, str | None]] = []

    class Noting(FakeDns):
        async def __call__(self, host: str, port: int) -> list[str]:
            seen.append((host, resolving_for.get()))
            return await super().__call__(host, port)

    use_dns(services, Noting({"a.tenant.example": [["127.0.0.1"]], "b.tenant.example": [["127.0.0.1"]]}))
    port = receiver.server.server_address[1]
    other = make_tenant("Other")
    subscribe(client, tenant, f"http://a.tenant.example:{port}/webhook")
    subscribe(client, other, f"http://b.tenant.example:{port}/webhook")
    seen.clear()
    # WHEN an event of each is delivered
    publish(client, tenant.id)
    publish(client, other.id)
    harness.drain()
    # THEN both arrived, and each name was looked up by its subscription's tenant's delivery
    assert len(receiver.received) == 2
    assert {host: who for host, who in seen} == {"a.tenant.example": tenant.id, "b.tenant.example": other.id}
