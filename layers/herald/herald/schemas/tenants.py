"""Tenants and their API keys, as the API takes and answers them."""

from __future__ import annotations

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
    name: str = Field(min_length=1, max_length=200, examples=["Acme Corp"])
    metadata: Metadata = Field(default_factory=dict)

    _metadata = field_validator("metadata")(check_metadata)


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
