"""Tenants and their API keys, as the API takes and answers them."""

from __future__ import annotations

import unicodedata

from pydantic import (
    Field,
    field_validator,
)

from herald.records import (
    ApiKey,
    Metadata,
    Tenant,
)
from herald.schemas.common import StrictModel, check_metadata

#: The characters that reorder the text around them when it is shown (bidirectional embeddings, overrides and
#: isolates): in a name shown in the portal, in the CLI's tables or in an operator's terminal, they would make it
#: read as another (CVE-2021-42574). Other format characters stay allowed: joiners are part of many scripts and of
#: emoji sequences.
_REORDERING = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: The categories of characters that show nothing by themselves: spaces, separators, control and format characters,
#: and marks (a combining mark or a variation selector shows only on the character it follows).
_INVISIBLE = ("Z", "Cc", "Cf", "Mn", "Me")
#: Letters and symbols drawn blank: the Hangul fillers and the blank braille pattern.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")


class TenantIn(StrictModel):
    name: str = Field(
        min_length=1,
        max_length=200,
        examples=["Acme Corp"],
        description=(
            "What the operator calls the tenant: 1 to 200 characters, at least one of them visible, with no control "
            "characters and no bidirectional embeddings, overrides or isolates (U+202A to U+202E, U+2066 to U+2069)."
        ),
    )
    metadata: Metadata = Field(default_factory=dict)

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if all(char in _BLANK or unicodedata.category(char).startswith(_INVISIBLE) for char in value):
            raise ValueError("a tenant's name has at least one visible character (not only spaces)")
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("a tenant's name has no control characters (tabs and line breaks included)")
        if any(char in _REORDERING for char in value):
            raise ValueError(
                "a tenant's name has no bidirectional embeddings, overrides or isolates (U+202A to U+202E, "
                "U+2066 to U+2069): they would make it read as another"
            )
        return value


class TenantOut(Tenant):
    pass


class ApiKeyIn(StrictModel):
    revoke_existing: bool = Field(
        False,
        strict=True,
        description=(
            "Revoke every key of the tenant issued before this one once this one exists (of two such requests at "
            "once, the later key stays)."
        ),
    )


class ApiKeyOut(ApiKey):
    pass


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The API key. Shown once: Herald stores only its hash.")


class TenantCreated(TenantOut):
    api_key: ApiKeyCreated
