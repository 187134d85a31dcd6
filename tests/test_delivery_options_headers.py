"""Custom headers: what is refused and why (naming the header), masking of sensitive values everywhere they could
leak, merge-patch updates, and the merge into an attempt's request headers."""

from __future__ import annotations

import logging
from typing import Any

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from herald.delivery_options.headers import (
    MAX_HEADERS,
    MAX_HEADERS_BYTES,
    CustomHeaders,
    HeaderIn,
    HeaderPatch,
    HeadersIn,
    InvalidHeadersError,
    apply_patch,
    check_headers,
    request_headers,
)

SECRET = "s3cr3t-Zq8v1N0tInAnyMessage"
HERALD = {"content-type": "application/json", "webhook-id": "msg_1", "webhook-signature": "v1,abc"}


def headers(**pairs: str) -> dict[str, HeaderIn]:
    return {name.replace("_", "-"): HeaderIn(value=value) for name, value in pairs.items()}


def refused(given: dict[str, HeaderIn]) -> list[dict[str, Any]]:
    with pytest.raises(InvalidHeadersError) as caught:
        check_headers(given)
    assert caught.value.code == "invalid_headers"
    assert caught.value.details
    return caught.value.details


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("X Api Key", "v", "invalid_header_name"),
        ("X-Api:Key", "v", "invalid_header_name"),
        ("", "v", "invalid_header_name"),
        ("X-Ümlaut", "v", "invalid_header_name"),
        ("X-Long", "a\r\nX-Injected: 1", "invalid_header_value"),
        ("X-Long", "a\nb", "invalid_header_value"),
        ("X-Long", "a\rb", "invalid_header_value"),
        ("X-Long", "a\x00b", "invalid_header_value"),
        ("X-Long", "a\x7fb", "invalid_header_value"),
        ("X-Long", " leading", "invalid_header_value"),
        ("X-Long", "trailing\t", "invalid_header_value"),
        ("X-Long", "", "invalid_header_value"),
        ("X-Long", "caf\u00e9", "invalid_header_value"),
        ("Webhook-Signature", "v1,forged", "reserved_header"),
        ("webhook-id", "msg_x", "reserved_header"),
        ("Content-Type", "text/plain", "reserved_header"),
        ("Content-Length", "1", "reserved_header"),
        ("Content-Encoding", "gzip", "reserved_header"),
        ("HOST", "evil.example", "reserved_header"),
        ("User-Agent", "x", "reserved_header"),
        ("Connection", "close", "reserved_header"),
        ("Keep-Alive", "timeout=5", "reserved_header"),
        ("Proxy-Authorization", "Basic x", "reserved_header"),
        ("TE", "trailers", "reserved_header"),
        ("Trailer", "x", "reserved_header"),
        ("Transfer-Encoding", "chunked", "reserved_header"),
        ("Upgrade", "h2c", "reserved_header"),
        ("Expect", "100-continue", "reserved_header"),
        ("Accept-Encoding", "gzip", "reserved_header"),
        # the signature headers' other names, which Svix's libraries read before webhook-*
        ("Svix-Id", "msg_other", "reserved_header"),
        ("SVIX-SIGNATURE", "v1,forged", "reserved_header"),
        # _ for -: CGI and WSGI servers read both as the same header
        ("Webhook_Signature", "v1,forged", "reserved_header"),
        ("svix_timestamp", "1", "reserved_header"),
        ("Content_Length", "1", "reserved_header"),
        ("Transfer_Encoding", "chunked", "reserved_header"),
    ],
)
def test_a_bad_or_reserved_header_is_refused_naming_it(name: str, value: str, kind: str) -> None:
    # GIVEN one header that cannot be sent as given
    # WHEN it is checked
    details = refused({name: HeaderIn(value=value)})
    # THEN the single problem names the header and says why, machine-readably
    assert [(detail["loc"], detail["type"]) for detail in details] == [(["body", "headers", name], kind)]


@pytest.mark.parametrize(
    ("given", "kind"),
    [
        ({f"X-H{i}": HeaderIn(value="v") for i in range(MAX_HEADERS + 1)}, "too_many_headers"),
        ({"X-Big": HeaderIn(value="v" * MAX_HEADERS_BYTES)}, "headers_too_large"),
        ({f"X-H{i}": HeaderIn(value="v" * 400) for i in range(11)}, "headers_too_large"),
        ({"X-Key": HeaderIn(value="a"), "x-key": HeaderIn(value="b")}, "duplicate_header"),
        ({"X-Key": HeaderIn(value="a"), "x_key": HeaderIn(value="b")}, "duplicate_header"),
    ],
)
def test_limits_and_duplicates_are_refused(given: dict[str, HeaderIn], kind: str) -> None:
    assert kind in {detail["type"] for detail in refused(given)}


def test_every_problem_is_reported_at_once() -> None:
    details = refused(headers(Host="x", X_Ok="fine", **{"Bad Name": "v"}))
    assert sorted(detail["type"] for detail in details) == ["invalid_header_name", "reserved_header"]


def test_the_largest_allowed_set_is_accepted() -> None:
    # GIVEN 20 headers filling exactly 4 KiB ("name: value\r\n" each)
    names = [f"X-H{i:02d}" for i in range(MAX_HEADERS)]
    per_value = MAX_HEADERS_BYTES // MAX_HEADERS - len(names[0]) - 4
    given = {name: HeaderIn(value="v" * per_value) for name in names}
    # THEN they are accepted, in order
    assert check_headers(given).names() == names


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Authorization", "Bearer abc.def"),
        ("X-Api-Key", "k"),
        ("X-Route", "eu-1 tab\tinside"),
        ("Cookie", "a=b; c=d"),
        ("x!#$%&'*+-.^_`|~9", "~!@#$%^&*()"),
    ],
)
def test_ordinary_headers_are_accepted_and_sent(name: str, value: str) -> None:
    custom = check_headers({name: HeaderIn(value=value)})
    sent = request_headers(custom, HERALD)
    assert sent[name] == value
    # AND h11, the HTTP/1.1 layer httpx writes requests with, accepts the request
    h11.Request(method="POST", target="/", headers=[("Host", "example.com"), *sent.items()])


@pytest.mark.parametrize(
    ("name", "flag", "sensitive"),
    [
        ("X-Route", False, False),
        ("X-Route", True, True),
        ("Authorization", False, True),
        ("X-Api-Key", False, True),
        ("X-Auth-Token", False, True),
        ("Cookie", False, True),
        ("X-Client-Secret", False, True),
        ("X-Pass", False, True),
        ("X-Pwd", False, True),
        ("X-Jwt", False, True),
        ("X-Bearer", False, True),
        ("X-Sig", False, True),
        ("X-Hmac", False, True),
        ("X-Private-Id", False, True),
    ],
)
def test_sensitive_values_are_masked_by_flag_or_by_name(name: str, flag: bool, sensitive: bool) -> None:
    out = check_headers({name: HeaderIn(value=SECRET, sensitive=flag)}).out()[name]
    assert out.sensitive is sensitive
    assert out.value == (None if sensitive else SECRET)


@pytest.mark.parametrize(
    ("value", "sensitive"),
    [
        ("Bearer eyJhbGciOi", True),
        ("basic dXNlcjpwYXNz", True),
        ("Token abc", True),
        ("HMAC k=1,sig=2", True),
        ("Negotiate YIIGhgYGKwYBBQUC", True),
        ("NTLM TlRMTVNTUAABAAAA", True),
        ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/s3/aws4_request", True),
        ("SharedAccessSignature sr=a&sig=b&se=1", True),
        ("DPoP eyJhbGciOiJFUzI1NiJ9", True),
        ('OAuth oauth_token="a"', True),
        ("AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/20260101/s3/aws4_request", True),
        ("AWS AKIDEXAMPLE:qgk2+6Sv9/oM7G3qLEjTH1a1l1g=", True),
        ("SSWS 00QCjAl4MlV-WPXM0ndn", True),
        ("Mutual fund", False),
        ("OAuth flow v2", False),
        ("Concealed value", False),
        ("GNAP v1", False),
        ("eu-1", False),
        ("Bearer", False),
        ("basically fine", False),
    ],
)
def test_a_value_of_an_authentication_scheme_is_masked_under_any_name(value: str, sensitive: bool) -> None:
    out = check_headers({"X-Forward-To": HeaderIn(value=value, sensitive=False)}).out()["X-Forward-To"]
    assert (out.sensitive, out.value) == (sensitive, None if sensitive else value)


def test_headers_stored_before_the_rules_took_them_for_credentials_are_masked_when_read() -> None:
    # GIVEN headers stored not sensitive, before their name or value was taken for a credential
    stored = [
        {"name": "X-Pass", "value": "hunter2", "sensitive": False},
        {"name": "X-Forward", "value": "Bearer abc", "sensitive": False},
        {"name": "X-Route", "value": "eu-1", "sensitive": False},
    ]
    # WHEN read back and shown: THEN the two credentials are masked, the route is not
    out = CustomHeaders.from_stored(stored).out()
    assert {name: (header.sensitive, header.value) for name, header in out.items()} == {
        "X-Pass": (True, None),
        "X-Forward": (True, None),
        "X-Route": (False, "eu-1"),
    }


def test_a_sensitive_value_never_shows_in_reprs_dumps_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a subscription's headers with a sensitive value, as the API receives, stores and shows them
    raw = {"X-Api-Key": {"value": SECRET, "sensitive": True}, "X-Route": {"value": "eu"}}
    model = TypeAdapter(HeadersIn).validate_python(raw)
    custom = check_headers(model)
    patch = TypeAdapter(dict[str, HeaderPatch | None]).validate_python({"X-Api-Key": {"value": SECRET}})
    # AND errors raised about it: a bad header next to it, a bad value given for it
    with pytest.raises(InvalidHeadersError) as bad_name:
        check_headers({**model, "Host": HeaderIn(value="x")})
    with pytest.raises(InvalidHeadersError) as bad_value:
        check_headers({"X-Api-Key": HeaderIn(value=SECRET + "\r\n")})
    with pytest.raises(ValidationError) as bad_shape:
        HeaderIn.model_validate({"value": SECRET, "sensitive": "yes"})
    # WHEN every form of them is printed, dumped and logged
    texts = [
        repr(model),
        str(model),
        repr(custom),
        str(custom),
        repr(patch),
        TypeAdapter(HeadersIn).dump_json(model).decode(),
        TypeAdapter(dict[str, Any]).dump_json(custom.out()).decode(),
        str(bad_name.value),
        repr(bad_name.value.details),
        str(bad_value.value),
        repr(bad_value.value.details),
        str(bad_shape.value),
    ]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("herald.test").info("headers %s %r %s", model, custom, custom.out())
        logging.getLogger("herald.test").exception("failed", exc_info=bad_value.value)
    texts.append(caplog.text)
    # THEN the secret is nowhere
    for text in texts:
        assert SECRET not in text
    # AND only the two ways meant to reveal it do: the stored form and the request
    assert any(item["value"] == SECRET for item in custom.to_stored())
    assert request_headers(custom, HERALD)["X-Api-Key"] == SECRET


def test_stored_form_round_trips() -> None:
    custom = check_headers({"X-Api-Key": HeaderIn(value=SECRET), "X-Route": HeaderIn(value="eu")})
    again = CustomHeaders.from_stored(custom.to_stored())
    assert again.to_stored() == custom.to_stored()
    assert again.out() == custom.out()
    assert CustomHeaders.from_stored(None) == CustomHeaders()


def test_herald_headers_win_even_over_a_stored_reserved_header() -> None:
    # GIVEN headers stored before a rule change: one that Herald now owns, one it sets for this attempt
    stored = [
        {"name": "Content-Type", "value": "text/plain", "sensitive": False},
        {"name": "WEBHOOK-ID", "value": "forged", "sensitive": False},
        {"name": "X-Route", "value": "eu", "sensitive": False},
    ]
    # WHEN merged into an attempt's headers
    sent = request_headers(CustomHeaders.from_stored(stored), HERALD)
    # THEN only Herald's values are sent for its headers, once each
    assert sent == {**HERALD, "X-Route": "eu"}


PatchCase = tuple[dict[str, Any], dict[str, tuple[str, bool]] | str]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"X-Route": None}, {"X-Api-Key": (SECRET, True)}),
        ({"x-route": None}, {"X-Api-Key": (SECRET, True)}),
        ({"X-Route": {"value": "us"}}, {"X-Api-Key": (SECRET, True), "X-Route": ("us", False)}),
        ({"X-ROUTE": {"value": "us"}}, {"X-Api-Key": (SECRET, True), "X-ROUTE": ("us", False)}),
        # _ for -: the same header
        ({"X_Route": None}, {"X-Api-Key": (SECRET, True)}),
        ({"x_route": {"value": "us"}}, {"X-Api-Key": (SECRET, True), "x_route": ("us", False)}),
        ({"X-Route": {"sensitive": True}}, {"X-Api-Key": (SECRET, True), "X-Route": ("eu", True)}),
        # what GET showed, sent back unchanged, keeps every value
        (
            {"X-Api-Key": {"value": None, "sensitive": True}, "X-Route": {"value": "eu", "sensitive": False}},
            {"X-Api-Key": (SECRET, True), "X-Route": ("eu", False)},
        ),
        ({"X-New": {"sensitive": False}}, "missing_header_value"),
        ({"X-Shh": {"value": "a", "sensitive": True}}, "ok-then-unmask"),
        ({"Host": {"value": "evil"}}, "reserved_header"),
        ({"X-Route": {"value": "a\r\nb"}}, "invalid_header_value"),
        # one header named twice, whatever the case and the changes
        ({"X-Route": None, "x-route": None}, "duplicate_header"),
        ({"X-Route": None, "x-route": {}}, "duplicate_header"),
        ({"X-New": {"value": "a"}, "X-NEW": {"value": "b"}}, "duplicate_header"),
        ({"X-New": {"value": "a"}, "X_New": {"value": "b"}}, "duplicate_header"),
    ],
)
def test_updates_are_merge_patches(patch: dict[str, Any], expected: dict[str, tuple[str, bool]] | str) -> None:
    # GIVEN a sensitive and a plain header
    current = check_headers({"X-Api-Key": HeaderIn(value=SECRET), "X-Route": HeaderIn(value="eu")})
    parsed = TypeAdapter(dict[str, HeaderPatch | None]).validate_python(patch)
    if expected == "ok-then-unmask":
        # a sensitive header cannot be unmasked without giving its value again
        updated = apply_patch(current, parsed)
        unmask = TypeAdapter(dict[str, HeaderPatch | None]).validate_python({"X-Shh": {"sensitive": False}})
        with pytest.raises(InvalidHeadersError) as caught:
            apply_patch(updated, unmask)
        assert caught.value.details
        assert caught.value.details[0]["type"] == "missing_header_value"
        return
    if isinstance(expected, str):
        with pytest.raises(InvalidHeadersError) as caught:
            apply_patch(current, parsed)
        assert caught.value.details
        assert expected in {detail["type"] for detail in caught.value.details}
        return
    updated = apply_patch(current, parsed)
    assert {item["name"]: (item["value"], item["sensitive"]) for item in updated.to_stored()} == expected


def test_the_api_model_bounds_the_count_before_checking() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(HeadersIn).validate_python({f"X-{i}": {"value": "v"} for i in range(MAX_HEADERS + 1)})


_ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@given(name=_ANY_TEXT, value=_ANY_TEXT)
def test_whatever_is_accepted_makes_a_valid_http_request(name: str, value: str) -> None:
    # GIVEN any header at all
    try:
        custom = check_headers({name: HeaderIn(value=value)})
    except InvalidHeadersError:
        return
    # THEN if Herald accepts it, it is a header h11 writes as given, with no line break smuggled in
    sent = request_headers(custom, HERALD)
    request = h11.Request(method="POST", target="/", headers=[("Host", "example.com"), *sent.items()])
    assert (name.lower().encode(), value.encode()) in [(k, v) for k, v in request.headers]
    assert "\r" not in value
    assert "\n" not in value
