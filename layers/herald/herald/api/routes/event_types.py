"""The event catalog (any authenticated caller)."""

from __future__ import annotations

from herald.api.deps import CallerDep
from herald.api.routers import api_router
from herald.catalog import catalog
from herald.schemas import EventTypeOut, Page

router = api_router(prefix="/v1/event-types", tags=["event-types"])


@router.get("", summary="List the event types, with their JSON Schema and an example")
async def list_event_types(_: CallerDep) -> Page[EventTypeOut]:
    data = [
        EventTypeOut(
            name=event_type.name,
            summary=event_type.summary,
            description=event_type.description,
            schema_=event_type.json_schema(),
            example=event_type.example,
        )
        for event_type in catalog
    ]
    return Page(data=data, iterator=None, done=True)
