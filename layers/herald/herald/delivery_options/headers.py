"""A subscription's custom request headers: validated once when set, masked when shown, merged into every attempt.

Rules (checked by :func:`check_headers`, every problem reported at once as ``invalid_headers``):

- Names are RFC 9110 tokens (``!#$%&'*+-.^_`|~``, digits, letters), at most 256 characters, compared
  case-insensitively and with ``_`` read as ``-`` (as CGI and WSGI servers read them): ``X-Key`` with ``x-key``
  or ``X_Key`` is a duplicate. The name is kept as written.
- Values are visible US-ASCII, with spaces and tabs inside but not at either end: no CR, LF, NUL or other
  control character (header injection), no non-ASCII (RFC 9110 calls it obsolete; httpx would refuse to
  encode it at send time, a failure discovered only on delivery). Empty values are refused: an empty header
  is almost always an unset variable on the subscriber's side.
- At most :data:`MAX_HEADERS` headers and :data:`MAX_HEADERS_BYTES` in all, counted as the bytes the headers
  add to the request (``name: value\\r\\n`` each).
- Herald's own headers are refused, naming the header (``_`` read as ``-`` here too): the signature headers
  (``webhook-*``, and ``svix-*``, their other names, which Svix's libraries read first), those that
  describe the body or the exchange (``content-*``, ``host``, ``user-agent``, ``accept-encoding``, ``expect``)
  and the hop-by-hop ones (``connection``, ``keep-alive``, ``proxy-*``, ``te``, ``trailer``,
  ``transfer-encoding``, ``upgrade``, ``http2-settings``). :func:`request_headers` drops them again at send
  time, so a stored header from before a rule change can never override Herald's.

``Authorization`` is allowed: it is the most asked-for custom header (a receiver's API gateway wants
``Authorization: Bearer ...`` or Basic credentials), Svix, Hook0 and EventBridge connections allow it, and
Herald never sends it itself (its proof is ``webhook-signature``), so nothing of Herald's is overridden.

Sensitive values: a header is sensitive when the subscriber marks it so, and always when its name looks like a
credential (:func:`is_sensitive_name`: ``authorization``, ``cookie``, names containing ``key``, ``token``,
``secret``, ``pass``, ``pwd``, ``auth``, ``session``, ``sig``, ``credential``, ``jwt``, ``bearer``, ``hmac`` or
``private``), or its value one of an HTTP authentication scheme (``Bearer ...``, ``Basic ...``: whatever the name).
Masking a harmless header by mistake costs a re-send; showing a secret cannot be undone. A sensitive value is shown
back as ``{"value": null, "sensitive": true}``. Every value, sensitive or not, is held in a ``pydantic.SecretStr``
from the request model to the send, so no repr, str, log line or error message can carry one; only
:meth:`CustomHeaders.to_stored` and :func:`request_headers` reveal them, for the store and the HTTP request.

Updates (``PATCH``) follow JSON merge patch (RFC 7396) per header: a name mapped to ``null`` removes it, a
name mapped to an object sets it, and an object without ``value`` keeps the stored value (so a client can
send back what ``GET`` showed, masked values included, and change only the ``sensitive`` flag or other
headers). See :func:`apply_patch`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from herald.errors import InvalidInputError

MAX_HEADERS = 20
MAX_HEADERS_BYTES = 4096
MAX_NAME_LENGTH = 256

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Visible ASCII (0x21-0x7E) at both ends, visible ASCII, space or tab inside.
_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")
_RESERVED_NAMES = frozenset(
    {
        "host",
        "user-agent",
        "accept-encoding",
        "expect",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    }
)
_SENSITIVE_NAME = re.compile(
    r"authorization|cookie|key|token|secret|pass|pwd|auth|session|sig|credential|jwt|bearer|hmac|private"
)
#: A value of an HTTP authentication scheme (``Bearer <token>``, ``Basic <credentials>``...) is a credential under
#: any name: IANA's registered schemes, and those of common services (AWS's signatures, Azure's shared keys and
#: signatures, NTLM, Okta). A scheme whose name is also a common word (``Mutual``, ``OAuth``...) counts only before
#: what reads as credentials (parameters, ``k=v``, or a token of 16 characters or more), not before words.
_CREDENTIAL_VALUE = re.compile(
    r"(?:(?:bearer|basic|digest|token|apikey|hmac|negotiate|ntlm|dpop|scram-sha-1|scram-sha-256|vapid|privatetoken"
    r"|aws4-hmac-sha256|aws4-ecdsa-p256-sha256|sharedkey|sharedkeylite|sharedaccesssignature|ssws)\s+\S"
    r"|(?:oauth|mutual|hoba|concealed|gnap|aws)\s+(?:\S*[=:]|\S{16,}))",
    re.IGNORECASE,
)


class InvalidHeadersError(InvalidInputError):
    """Custom headers that cannot be sent: bad names or values, Herald's own headers, or over the limits."""

    code = "invalid_headers"


def _folded(name: str) -> str:
    """A header name as receivers may read it: without case, and ``_`` as ``-`` (CGI and WSGI servers, and
    gateways built on them, give ``X_Key`` and ``X-Key`` the same variable)."""
    return name.lower().replace("_", "-")


def reserved_reason(name: str) -> str | None:
    """Why Herald keeps the header ``name`` for itself, or None if a subscription may set it."""
    lower = _folded(name)
    if lower.startswith("webhook-"):
        return "Herald sets the webhook-* signature headers"
    if lower.startswith("svix-"):
        return "svix-* are the signature headers' other names, which Svix's libraries read before webhook-*"
    if lower.startswith("proxy-"):
        return "proxy-* headers are hop-by-hop"
    if lower.startswith("content-"):
        return "Herald sets the content-* headers that describe the body it signs"
    if lower in _RESERVED_NAMES:
        return f"Herald sets {lower} itself (or it is hop-by-hop)"
    return None


def is_sensitive_name(name: str) -> bool:
    """Whether a header's name suggests a credential, so its value is masked whatever the subscriber said."""
    return _SENSITIVE_NAME.search(name.lower()) is not None


def is_credential_value(value: str) -> bool:
    """Whether a header's value is one of an HTTP authentication scheme (``Bearer ...``), masked under any name."""
    return _CREDENTIAL_VALUE.match(value.strip()) is not None


# --- API models ------------------------------------------------------------------------------------


class HeaderIn(BaseModel):
    """One custom header as set by the subscriber."""

    # No length constraints on the value here: pydantic puts the input in its errors. check_headers bounds it and
    # names only the header; hide_input_in_errors keeps a mistyped value out of the error's str().
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    value: SecretStr = Field(
        description=f"Visible ASCII, spaces inside only; at most {MAX_HEADERS_BYTES} bytes with the other headers. "
        "Never shown back when sensitive.",
        examples=["Bearer 8f14e45fceea167a"],
    )
    sensitive: bool = Field(
        False,
        strict=True,
        description="Never show the value back. Always true for names that look like credentials "
        "(authorization, *key*, *token*, *secret*, *pass*...) and for values of an HTTP authentication scheme "
        "(`Bearer ...`, `Basic ...`).",
    )


class HeaderPatch(BaseModel):
    """One custom header in an update: without ``value``, the stored value is kept."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    value: SecretStr | None = None
    sensitive: bool | None = Field(None, strict=True)


class HeaderOut(BaseModel):
    """One custom header as shown back: the value is ``null`` when it is sensitive."""

    value: str | None = Field(description="The value; `null` for a sensitive header (set, never shown).")
    sensitive: bool


#: ``headers`` of a new subscription: header name -> header.
HeadersIn = Annotated[
    dict[str, HeaderIn],
    Field(
        max_length=MAX_HEADERS,
        description=f"Extra request headers sent with every delivery: at most {MAX_HEADERS}, "
        f"{MAX_HEADERS_BYTES} bytes in all; Herald's own (webhook-*, svix-*, content-*, host, user-agent, "
        "accept-encoding, expect, hop-by-hop) are refused. Values are visible ASCII, with spaces or tabs only inside.",
        examples=[{"X-Api-Key": {"value": "8f14e45fceea167a", "sensitive": True}, "X-Route": {"value": "eu-1"}}],
    ),
]
#: ``headers`` of an update (merge patch): ``null`` removes a header, an object sets or changes it.
HeadersPatch = Annotated[dict[str, HeaderPatch | None], Field(max_length=2 * MAX_HEADERS)]
HeadersOut = dict[str, HeaderOut]


# --- The validated set -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomHeader:
    """One validated custom header; its value never shows in repr or str."""

    name: str
    value: SecretStr
    sensitive: bool

    def out(self) -> HeaderOut:
        return HeaderOut(value=None if self.sensitive else self.value.get_secret_value(), sensitive=self.sensitive)


@dataclass(frozen=True)
class CustomHeaders:
    """A subscription's validated custom headers, in the order they were given."""

    headers: tuple[CustomHeader, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.headers)

    def __len__(self) -> int:
        return len(self.headers)

    def names(self) -> list[str]:
        return [header.name for header in self.headers]

    def out(self) -> HeadersOut:
        """What the API shows: sensitive values masked."""
        return {header.name: header.out() for header in self.headers}

    def to_stored(self) -> list[dict[str, Any]]:
        """The form the store keeps: ``[{"name", "value", "sensitive"}]``. It holds the values in clear (like
        signing secrets): never log it."""
        return [
            {"name": header.name, "value": header.value.get_secret_value(), "sensitive": header.sensitive}
            for header in self.headers
        ]

    @classmethod
    def from_stored(cls, stored: list[dict[str, Any]] | None) -> CustomHeaders:
        """Back from :meth:`to_stored`; trusted (checked when set), not validated again, but masked by today's
        rules too (a header stored before its name or value was taken for a credential is not shown back)."""
        return cls(
            tuple(
                CustomHeader(
                    str(item["name"]),
                    SecretStr(str(item["value"])),
                    bool(item.get("sensitive", False))
                    or is_sensitive_name(str(item["name"]))
                    or is_credential_value(str(item["value"])),
                )
                for item in stored or ()
            )
        )


def _problem(name: str, message: str, kind: str, loc: tuple[str, ...]) -> dict[str, Any]:
    return {"loc": [*loc, name], "msg": message, "type": kind}


def _name_problems(name: str, seen: set[str], loc: tuple[str, ...]) -> list[dict[str, Any]]:
    if not name or len(name) > MAX_NAME_LENGTH or not _TOKEN.fullmatch(name):
        shown = name[:64].encode("unicode_escape").decode("ascii")
        message = f"header name {shown!r} is not an HTTP token (letters, digits, !#$%&'*+-.^_`|~; no spaces)"
        return [_problem(name, message, "invalid_header_name", loc)]
    if _folded(name) in seen:
        message = f"header {name!r} is given twice (names ignore case, and _ is read as -)"
        return [_problem(name, message, "duplicate_header", loc)]
    reason = reserved_reason(name)
    if reason is not None:
        return [_problem(name, f"header {name!r} cannot be set: {reason}", "reserved_header", loc)]
    return []


def _value_problems(name: str, value: str, loc: tuple[str, ...]) -> list[dict[str, Any]]:
    if _VALUE.fullmatch(value):
        return []
    # The message names the header but never repeats the value: it may be a secret.
    message = (
        f"the value of header {name!r} must be visible ASCII, with spaces or tabs only inside "
        "(no CR, LF, NUL or other control characters, no leading or trailing whitespace, not empty)"
    )
    return [_problem(name, message, "invalid_header_value", loc)]


def check_headers(headers: Mapping[str, HeaderIn], *, loc: tuple[str, ...] = ("body", "headers")) -> CustomHeaders:
    """The validated headers, or ``InvalidHeadersError`` listing every problem (``loc`` ends with the header
    name; ``type`` is ``invalid_header_name``, ``invalid_header_value``, ``duplicate_header``,
    ``reserved_header``, ``too_many_headers`` or ``headers_too_large``)."""
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    size = 0
    for name, header in headers.items():
        value = header.value.get_secret_value()
        name_problems = _name_problems(name, seen, loc)
        problems += name_problems or _value_problems(name, value, loc)
        seen.add(_folded(name))
        size += len(name) + len(value.encode()) + 4  # "name: value\r\n"
    if len(headers) > MAX_HEADERS:
        message = f"{len(headers)} headers; at most {MAX_HEADERS}"
        problems.append({"loc": list(loc), "msg": message, "type": "too_many_headers"})
    if size > MAX_HEADERS_BYTES:
        message = f"the headers add {size} bytes to each request; at most {MAX_HEADERS_BYTES}"
        problems.append({"loc": list(loc), "msg": message, "type": "headers_too_large"})
    if problems:
        raise InvalidHeadersError("; ".join(problem["msg"] for problem in problems), details=problems)
    return CustomHeaders(
        tuple(
            CustomHeader(
                name,
                header.value,
                header.sensitive or is_sensitive_name(name) or is_credential_value(header.value.get_secret_value()),
            )
            for name, header in headers.items()
        )
    )


def apply_patch(
    current: CustomHeaders, patch: Mapping[str, HeaderPatch | None], *, loc: tuple[str, ...] = ("body", "headers")
) -> CustomHeaders:
    """``current`` changed by a merge patch (see the module docstring), validated as a whole. A header without a
    value that is not set yet, or that turns a sensitive header non-sensitive (it would show the stored secret),
    is an ``InvalidHeadersError`` (``type`` ``missing_header_value``), as is a patch naming one header twice
    (``duplicate_header``: names ignore case, and which of the two should win is not for Herald to guess)."""
    named: set[str] = set()
    for name in patch:
        if _folded(name) in named:
            message = f"header {name!r} is given twice (names ignore case, and _ is read as -)"
            raise InvalidHeadersError(message, details=[_problem(name, message, "duplicate_header", loc)])
        named.add(_folded(name))
    merged: dict[str, HeaderIn] = {
        header.name: HeaderIn(value=header.value, sensitive=header.sensitive) for header in current.headers
    }
    by_folded = {_folded(name): name for name in merged}
    for name, change in patch.items():
        existing = by_folded.get(_folded(name))
        previous = merged.pop(existing) if existing is not None else None
        if change is None:
            continue
        if change.value is None and previous is None:
            message = f"header {name!r} is not set yet: give its value"
            raise InvalidHeadersError(message, details=[_problem(name, message, "missing_header_value", loc)])
        was_sensitive = previous is not None and previous.sensitive
        sensitive = change.sensitive if change.sensitive is not None else was_sensitive
        if change.value is None and was_sensitive and not sensitive:
            # Unmasking a stored secret would show it back: only a newly given value can be shown.
            message = f"header {name!r} is sensitive: give its value again to make it non-sensitive"
            raise InvalidHeadersError(message, details=[_problem(name, message, "missing_header_value", loc)])
        value = change.value if change.value is not None else previous.value if previous is not None else None
        assert value is not None
        merged[name] = HeaderIn(value=value, sensitive=sensitive)
        by_folded[_folded(name)] = name
    return check_headers(merged, loc=loc)


def request_headers(custom: CustomHeaders, herald: Mapping[str, str]) -> dict[str, str]:
    """The headers of one attempt: the custom ones first, then Herald's (``content-type``, ``webhook-*``...),
    which always win. Reserved names and names Herald sets are dropped even if the store holds them."""
    owned = {name.lower() for name in herald}
    headers = {
        header.name: header.value.get_secret_value()
        for header in custom.headers
        if header.name.lower() not in owned and reserved_reason(header.name) is None
    }
    headers.update(herald)
    return headers
