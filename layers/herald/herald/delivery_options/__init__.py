"""Per-subscription delivery options: custom headers, payload filters and body transforms.

Pure, typed building blocks with no storage or HTTP of their own. The API validates with ``check_*`` when a
subscription is created or changed (each raises an ``InvalidInputError`` subclass whose ``details`` say where,
for a 422), the store keeps each option's compact stored form, fan-out evaluates filters rebuilt from that
form (:func:`filter_from_stored`, cached by its JSON), and the sender merges headers and applies transforms
per attempt.

- :mod:`.headers`: validation, masking of sensitive values, the merge into an attempt's request headers.
- :mod:`.filters` (with :mod:`.filter_eval` and :mod:`.filter_schema`): a MongoDB-style filter over ``data``
  and the event type, compiled into closures.
- :mod:`.transforms`: a bounded JMESPath expression from the envelope to the body sent.
"""

from __future__ import annotations

from herald.delivery_options.filter_schema import check_filter, event_schemas
from herald.delivery_options.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_FILTER_BYTES,
    MAX_IN,
    CompiledFilter,
    InvalidFilterError,
    compile_filter,
    filter_from_stored,
)
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
from herald.delivery_options.transforms import (
    MAX_BODY_BYTES,
    CompiledTransform,
    InvalidTransformError,
    TransformError,
    check_transform,
    compile_transform,
    dry_run,
    example_envelopes,
    transform_from_stored,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_FILTER_BYTES",
    "MAX_HEADERS",
    "MAX_HEADERS_BYTES",
    "MAX_IN",
    "CompiledFilter",
    "CompiledTransform",
    "CustomHeader",
    "CustomHeaders",
    "HeaderIn",
    "HeaderOut",
    "HeaderPatch",
    "HeadersIn",
    "HeadersOut",
    "HeadersPatch",
    "InvalidFilterError",
    "InvalidHeadersError",
    "InvalidTransformError",
    "TransformError",
    "apply_patch",
    "check_filter",
    "check_headers",
    "check_transform",
    "compile_filter",
    "compile_transform",
    "dry_run",
    "event_schemas",
    "example_envelopes",
    "filter_from_stored",
    "is_sensitive_name",
    "request_headers",
    "reserved_reason",
    "transform_from_stored",
]
