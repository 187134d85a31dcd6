"""Per-subscription delivery options: custom headers, payload filters and body transforms.

Pure, typed building blocks with no storage or HTTP of their own. The API validates with ``check_*`` when a
subscription is created or changed (each raises an ``InvalidInputError`` subclass whose ``details`` say where,
for a 422), the store keeps each option's compact stored form, fan-out evaluates filters rebuilt from that
form (:func:`filter_from_stored`, cached by its JSON), and the sender merges headers and applies transforms
per attempt.

- :mod:`.headers`: validation, masking of sensitive values, the merge into an attempt's request headers.
- :mod:`.filters` (with :mod:`.filter_schema`): a MongoDB-style filter over ``data`` and the event type,
  compiled into closures.
- :mod:`.transforms`: a bounded JMESPath expression from the envelope to the body sent.
"""

from __future__ import annotations

from herald.delivery_options.headers import (
    MAX_HEADERS,
    MAX_HEADERS_BYTES,
    CustomHeader,
    CustomHeaders,
    HeaderIn,
    HeaderOut,
    HeaderPatch,
    HeadersIn,
    HeadersOut,
    HeadersPatch,
    InvalidHeadersError,
    apply_patch,
    check_headers,
    is_sensitive_name,
    request_headers,
    reserved_reason,
)

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADERS_BYTES",
    "CustomHeader",
    "CustomHeaders",
    "HeaderIn",
    "HeaderOut",
    "HeaderPatch",
    "HeadersIn",
    "HeadersOut",
    "HeadersPatch",
    "InvalidHeadersError",
    "apply_patch",
    "check_headers",
    "is_sensitive_name",
    "request_headers",
    "reserved_reason",
]
