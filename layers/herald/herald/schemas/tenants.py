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


class TenantIn(StrictModel):
    name: str = Field(
        min_length=1,
        max_length=200,
        examples=["Acme Corp"],
        description="What the operator calls the tenant: 1 to 200 characters, not only spaces, no control characters.",
    )
    metadata: Metadata = Field(default_factory=dict)

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a tenant's name is not only spaces")
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("a tenant's name has no control characters (tabs and line breaks included)")
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
