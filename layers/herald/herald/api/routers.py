"""The API's routers, each imported and added to the app on the first request that can reach it.

FastAPI analyses a route when it is declared: its signature, its dependencies and a pydantic adapter for every
parameter, body and answer. For Herald's 39 routes that is the largest part of the API's cold start beyond its
libraries, and a request needs the routes of one resource. So a cold start pays for the routers under its first
request's path only (``POST /v1/events`` for the events' router), and ``app.openapi()`` adds them all before it
describes them.

A route is analysed once. ``include_router`` would analyse every route again in the app's context (a copy of
each route, or, on a newer FastAPI, an effective route built on the first request through it: about 30 ms of the
subscriptions router's first request). So the API's routers are made by ``api_router``, their routes already as
the app serves them, and the app takes those routes as they are. What ``include_router`` would have taken from the
app is declared by ``api_router`` instead: the answers every operation shares, and, for ``app.dependency_overrides``,
the app serving the request (a route is shared by every app made in the process, where an included one had its
app's). The app has no prefix, tag or dependency of its own for them.

A router's module is imported as the function's own code is at its start (``herald.startup``): with the cyclic
garbage collector held off and, under Lambda, what exists then frozen (the garbage of earlier requests collected
first). Its routes live as long as the process, and the first request does not pay for collections that scan
them (measured: a collection of the older generation, 40 ms, in a first ``POST /v1/events``). What the request
holds at that moment is frozen with them: once for each router the function's app adds, and not for a module that
fails to import (each request under its path then tries again, a full collection included).

The routes end up where adding every router up front puts them, in ``ROUTERS``' order, whatever the order of the
requests that add them: the app matches paths as it always did. A router here has no startup or shutdown handler,
nor a lifespan of its own: the app does not run a router's. A module that fails to import fails the requests under
its path (and the document) rather than the function's start: the tests import every router.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from herald.api.responses import SHARED_ANSWERS
from herald.startup import collector_held_off

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

_PARAMETER = re.compile(r"\{[^}]+\}")


#: The app serving the current request (set by ``AddReachedRouters``).
_SERVING: ContextVar[FastAPI | None] = ContextVar("herald_serving_app", default=None)


class ServingApp:
    """A route's ``dependency_overrides_provider``: FastAPI reads the overrides from it on every request, and it
    gives those of the app serving the request."""

    @property
    def dependency_overrides(self) -> dict[Callable[..., Any], Callable[..., Any]]:
        app = _SERVING.get()
        return app.dependency_overrides if app is not None else {}


def api_router(prefix: str = "", tags: list[str | Enum] | None = None) -> APIRouter:
    """A router of the API's: its routes lie under ``prefix``, carry ``tags``, declare the answers every operation
    shares (``herald.api.responses.SHARED_ANSWERS``) and take the serving app's dependency overrides, as the app
    serves them."""
    return APIRouter(prefix=prefix, tags=tags, responses=SHARED_ANSWERS, dependency_overrides_provider=ServingApp())


@dataclass(frozen=True)
class RouterSpec:
    """One router: ``herald.api.routes.<module>.<attribute>``, whose every path lies under ``under`` (a path
    template: ``{name}`` stands for one path segment)."""

    module: str
    under: str
    attribute: str = "router"

    @cached_property
    def reaches(self) -> re.Pattern[str]:
        """Matches a request path that one of the router's routes may answer: ``under`` itself, or below it."""
        pieces = _PARAMETER.split(self.under)
        return re.compile("^" + "[^/]+".join(re.escape(piece) for piece in pieces) + "(?:/|$)")

    def load(self) -> APIRouter:
        router: APIRouter = getattr(importlib.import_module(f"herald.api.routes.{self.module}"), self.attribute)
        return router


#: Every router of the API, in the order the app matches them.
ROUTERS = (
    RouterSpec("health", "/health"),
    RouterSpec("tenants", "/v1/tenants"),
    RouterSpec("portal_sessions", "/v1/tenants/{tenant_id}/portal-sessions"),
    RouterSpec("subscriptions", "/v1/subscriptions"),
    RouterSpec("deliveries", "/v1/subscriptions/{subscription_id}/deliveries"),
    RouterSpec("events", "/v1/events"),
    RouterSpec("event_types", "/v1/event-types"),
    RouterSpec("operator", "/v1/operator/webhooks"),
    RouterSpec("recovery", "/v1/subscriptions/{subscription_id}"),
    RouterSpec("admin", "/v1/admin"),
    RouterSpec("recovery", "/v1/events/{event_id}/redeliver", attribute="events_router"),
)


class LazyRouters:
    """``specs``' routers, added to ``app`` on demand, their routes at the place of the app's routes where
    ``LazyRouters`` was made (after the routes the app had then, before any added later)."""

    def __init__(self, app: FastAPI, specs: tuple[RouterSpec, ...] = ROUTERS) -> None:
        self._app = app
        self._specs = specs
        self._start = len(app.router.routes)
        self._routers: dict[int, APIRouter] = {}
        self._lock = threading.Lock()  # TestClient and uvicorn's thread pool may reach the app from two threads

    @property
    def app(self) -> FastAPI:
        return self._app

    def reach(self, path: str) -> None:
        """Add every router with a route that may answer ``path``."""
        for index, spec in enumerate(self._specs):
            if index not in self._routers and spec.reaches.match(path):
                self._add(index)

    def all(self) -> list[APIRouter]:
        """Every router, added."""
        for index in range(len(self._specs)):
            if index not in self._routers:
                self._add(index)
        return [self._routers[index] for index in range(len(self._specs))]

    def _add(self, index: int) -> None:
        with self._lock:
            if index in self._routers:
                return
            with collector_held_off(after_start=True):  # its routes live as long as the process, as the start's
                router = self._specs[index].load()
            place = self._start + sum(len(added.routes) for other, added in self._routers.items() if other < index)
            self._app.router.routes[place:place] = router.routes  # as declared: not analysed again
            self._routers[index] = router


class AddReachedRouters:
    """ASGI middleware: adds the routers a request's path can reach before the app routes it, and names the app
    serving the request to its routes (``ServingApp``)."""

    def __init__(self, app: ASGIApp, routers: LazyRouters) -> None:
        self.app = app
        self.routers = routers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            self.routers.reach(route_path(scope))
        serving = _SERVING.set(self.routers.app)
        try:
            await self.app(scope, receive, send)
        finally:
            _SERVING.reset(serving)


def route_path(scope: Scope) -> str:
    """The path the app routes: the request's, less the ``root_path`` it is mounted under (as Starlette's router)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
