"""Every answer an operation can give, added to its OpenAPI description from what the operation is.

Routes declare their success answer; the failures follow from the operation's shape, in one place:

- every operation: 400 (a body that is not JSON or not valid Unicode, a malformed ``Content-Length``), 413
  (a body over the request size limit: the limit is checked before the operation is known to take one),
  422 (parameters or body that do not fit), 429 (API Gateway's throttling, in front of the app), 500 (a fault of
  Herald's own, logged), 503 with ``Retry-After`` (AWS did not answer: retry);
- authenticated (depends on the caller): 401 with ``WWW-Authenticate``;
- for one role (operator only, or a tenant's routes): 403 for the other role;
- with ids in the path, acting for a tenant (``?tenant_id=``), or naming one in its body (an event's
  ``tenant_id``): 404;
- changing state (POST, PUT, PATCH, DELETE): 409 (a conflicting state or a limit of the current state).

A route may describe an answer more precisely (its ``responses=``): that description is kept.

Errors use the one error schema (``ErrorResponse``), except 429, which API Gateway answers itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, get_args

from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from herald.api.deps import get_principal, require_operator, require_tenant

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from fastapi.dependencies.models import Dependant

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
THROTTLED_SCHEMA = {"$ref": "#/components/schemas/GatewayThrottled"}
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
#: On a 415 for a body sent with a coding (``Content-Encoding``): the one the API takes.
ACCEPT_ENCODING = {
    "Accept-Encoding": {
        "description": "`identity`, on a 415 for a body sent with a `Content-Encoding`: the API takes none.",
        "required": False,
        "schema": {"type": "string", "enum": ["identity"]},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with: `Bearer`.",
        "required": True,
        "schema": {"type": "string"},
    }
}

DESCRIPTIONS = {
    400: "The request is malformed: `invalid_json`, a body that is not valid JSON (or holds an unpaired surrogate such "
    "as `\\ud800`, escaped or as bytes, which is not Unicode); `bad_request`, an invalid `Content-Length`.",
    401: "`unauthorized`: missing or invalid credentials.",
    403: "`forbidden`: the key is valid but not for this operation (the operator's key on a tenant route without "
    "`?tenant_id=`, or a tenant's key on an operator route).",
    404: "`not_found`: an id in the path, or the tenant named by `?tenant_id=` or in the body, does not exist for "
    "this caller.",
    409: "`conflict`: conflicts with the current state (already exists, already running, or a limit of the current "
    "state). An operation that takes an `Idempotency-Key` or an event's `id` answers `idempotency_key_reused` when it "
    "was used with another request, and one acting on an event `event_expired` once the event is no longer kept.",
    413: "`payload_too_large`: the request body is larger than the request size limit (`HERALD_MAX_REQUEST_BYTES`), "
    "or an event's data is larger than its limit.",
    415: "`unsupported_media_type`: the request has a body not sent as JSON: send it with `Content-Type: "
    "application/json`; or a body sent with a `Content-Encoding` other than `identity` (compressed): send it as it "
    "is (`Accept-Encoding: identity`).",
    422: "The request does not fit: `validation_error` (its parameters or body do not fit their schema), or the code "
    "of a check beyond the schema, each operation answering those of what it takes: `invalid_input`, "
    "`invalid_cursor` (an `iterator` Herald did not issue for this listing), `unknown_event_type`, "
    "`url_not_allowed`, `limit_exceeded` (a deployment's limit), `invalid_headers`, `invalid_filter`, "
    "`invalid_transform`. `details`, where given, say where (`loc`) and what (`type`).",
    429: "Throttled by API Gateway (the deployment's ApiThrottlingRateLimit / ApiThrottlingBurstLimit): "
    "retry with backoff.",
    500: "`internal_error`: a fault of Herald's own, logged with the request: an unexpected error, or an answer too "
    "large for Lambda's response (none is known to be). A write may have been made: read it back before making it "
    "again (an operation taking an `Idempotency-Key` or an event's `id` may be sent again with the same one).",
    503: "`service_unavailable`: a service Herald depends on did not answer: retry after `Retry-After` seconds.",
}

#: What every operation declares where it is made (``herald.api.routers.api_router``): its 401 and 422, first among
#: its failures, and FastAPI then adds no validation error schema of its own. ``statuses`` gives them their schema
#: and headers, as the others: a model here would cost every route two response adapters when it is declared.
SHARED_ANSWERS: dict[int | str, dict[str, Any]] = {
    status: {"description": DESCRIPTIONS[status]} for status in (401, 422)
}


def creation_answers(what: str) -> dict[int | str, dict[str, Any]]:
    """The answers of an operation that makes a ``what`` once under an ``Idempotency-Key`` (``CreationKeyHeader``):
    its 409 and its success's ``Idempotent-Replayed`` header."""
    return {
        409: {
            "description": f"`idempotency_key_reused`: this `Idempotency-Key` made a {what} with another request, or "
            f"one deleted since; send the request with a new key. Rarely `conflict`: the {what}s changed while this "
            "one was written; send it again.",
        },
        201: {
            "headers": {
                "Idempotent-Replayed": {
                    "description": f"`true` when an earlier request with the same `Idempotency-Key` made the {what}: "
                    f"the answer is that {what}, and no other was made. Absent otherwise.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            }
        },
    }


class GatewayThrottled(BaseModel):
    """API Gateway's own answer when it throttles a request (the app never sees the request)."""

    message: str = Field(examples=["Too Many Requests"])


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _dependency_calls(dependency)


def _body_names_a_tenant(route: APIRoute) -> bool:
    """Whether the operation's body has a ``tenant_id`` (a tenant that may not exist: 404)."""
    annotation = getattr(getattr(route.body_field, "field_info", None), "annotation", None)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and "tenant_id" in annotation.model_fields


def statuses(route: APIRoute) -> dict[int, dict[str, Any]]:
    """The failures ``route`` can answer, with their OpenAPI response objects."""
    calls = set(_dependency_calls(route.dependant))
    has_path_ids = bool(route.dependant.path_params)
    answers = {400, 413, 415, 422, 429, 500, 503}
    if get_principal in calls:
        answers.add(401)
    if calls & {require_operator, require_tenant}:
        answers.add(403)
    if has_path_ids or require_tenant in calls or _body_names_a_tenant(route):
        answers.add(404)
    if {method.lower() for method in route.methods or ()} & WRITE_METHODS:
        answers.add(409)
    documented: dict[int, dict[str, Any]] = {}
    for status in sorted(answers):
        schema = THROTTLED_SCHEMA if status == 429 else ERROR_SCHEMA
        response: dict[str, Any] = {
            "description": _declared(route, status) or DESCRIPTIONS[status],
            "content": {"application/json": {"schema": schema}},
        }
        if status == 401:
            response["headers"] = WWW_AUTHENTICATE
        if status == 503:
            response["headers"] = RETRY_AFTER
        if status == 415:
            response["headers"] = ACCEPT_ENCODING
        documented[status] = response
    return documented


def _declared(route: APIRoute, status: int) -> str | None:
    """The description ``route`` gives ``status`` itself (its ``responses=``), which says more than the general one."""
    declared = route.responses.get(status) or route.responses.get(str(status)) or {}
    description = declared.get("description")
    return description if isinstance(description, str) and description else None


def _examples_as_declared(components: dict[str, Any], routes: Iterable[APIRoute]) -> None:
    """Each request body model's examples as the model declares them. FastAPI writes the document without its null
    values (``exclude_none``), examples' included: the ``PATCH`` example that removes options with ``null``
    (``{"filter": null}``) became an empty body, and a webhook's example lost the fields it gives as null."""
    for route in routes:
        annotation = route.body_field.field_info.annotation if route.body_field is not None else None
        for model in (annotation, *get_args(annotation)):
            if isinstance(model, type) and issubclass(model, BaseModel) and model.__name__ in components:
                examples = model.model_json_schema().get("examples")
                if examples is not None:
                    components[model.__name__]["examples"] = examples


def _routes(routers: Iterable[APIRouter]) -> Iterator[APIRoute]:
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                yield route


def document_responses(app: FastAPI, routers: Callable[[], Iterable[APIRouter]]) -> None:
    """Make ``app.openapi()`` list every failure of every operation of ``routers()`` (the app's routers, which it
    adds to the app)."""
    build = app.openapi  # FastAPI's own, bound before it is replaced below

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            routes = list(_routes(routers()))
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["GatewayThrottled"] = GatewayThrottled.model_json_schema()
            for route in routes:
                operations = schema["paths"].get(route.path_format, {})
                for method in route.methods or ():
                    operation = operations.get(method.lower())
                    if operation is not None:
                        operation.setdefault("responses", {}).update(
                            {str(status): response for status, response in statuses(route).items()}
                        )
            _examples_as_declared(components, [*routes, *_routes([app.webhooks])])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
