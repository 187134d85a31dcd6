"""Lambda's limit on what a synchronous invocation returns, and how much of it an answer takes.

Behind API Gateway, the API function returns its HTTP answer as JSON, the body a string in it (Mangum writes a text
body, the API's JSON and the portal's HTML, CSS and scripts, as it is, and any other body in base64). Lambda refuses a
response over 6,291,456 bytes, and API Gateway then answers a bare 500 in place of Herald's answer.

Two measures, for two uses:

- what builds an answer bounds it at its worst (``text_bytes``, ``json_bytes``), as any runtime's encoder may write
  it: every non-ASCII character ``\\uXXXX`` (one beyond the BMP twice), a control character six bytes, a ``"`` two.
  A bound kept that way holds whatever the runtime;
- the last check on an answer (``past_limit``), which refuses it, measures it as the runtime the template names
  (``python3.13``) writes it: non-ASCII as UTF-8 (its encoder writes them as they are since ``python3.12``), control
  characters and ``"`` escaped. It refuses only an answer that cannot go out.
"""

from __future__ import annotations

import json
from typing import Any

#: Lambda's limit on a synchronous invocation's response.
LAMBDA_RESPONSE_BYTES = 6_291_456
#: The most an answer's body may take in the response: the rest is room for its status and headers.
ANSWER_MAX_BYTES = 6_200_000
#: The most one byte of a body can take in the response (a control character: ``\\u0001``).
_WORST_BYTES_PER_BYTE = 6


def text_bytes(text: str) -> int:
    """The most ``text`` (a part of an answer) takes in the response, at its worst."""
    return len(json.dumps(text))


def json_bytes(value: Any, *, compact: bool = False) -> int:
    """The most ``value`` (plain values) takes in the response once the API answers it: its JSON as the API writes it
    (UTF-8; ``compact``, with no space after its separators, as a dry run's results are measured), then escaped at its
    worst."""
    separators = (",", ":") if compact else None
    return text_bytes(json.dumps(value, ensure_ascii=False, default=str, separators=separators))


def body_bytes(body: bytes | memoryview, content_type: str) -> int:
    """What an HTTP body of ``content_type`` takes in the response, as Mangum puts it there and the runtime writes it:
    as text when its content type is one Mangum takes for text and it is UTF-8 (non-ASCII as UTF-8), else in
    base64."""
    from mangum.adapter import DEFAULT_TEXT_MIME_TYPES  # the API's handler keeps Mangum's default

    raw = bytes(body)
    if any(kind in content_type for kind in DEFAULT_TEXT_MIME_TYPES):
        try:
            return len(json.dumps(raw.decode(), ensure_ascii=False).encode())
        except UnicodeDecodeError:
            pass
    return 4 * -(-len(raw) // 3) + 2


def past_limit(body: bytes | memoryview, content_type: str) -> bool:
    """Whether an HTTP body of ``content_type`` would take more than ``ANSWER_MAX_BYTES`` of the response. No byte
    takes more than six there, so only a body of over a sixth of that (about a megabyte) is measured."""
    if _WORST_BYTES_PER_BYTE * len(body) <= ANSWER_MAX_BYTES:
        return False
    return body_bytes(body, content_type) > ANSWER_MAX_BYTES
