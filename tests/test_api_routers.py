"""The API's routers are added to the app on the first request that can reach them (``herald.api.routers``): a
fresh app holds none, a request adds the routers under its path and no other, each route is analysed once (where it
is declared), every operation is reached on a fresh app, and the routes end in the order adding them all at once
gives, whatever the requests' order."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import herald.api.app
import herald.api.routes
import herald.api.routes.subscriptions
from herald.api import create_app
from herald.api.deps import get_principal, get_services, require_tenant
from herald.api.responses import SHARED_ANSWERS
from herald.api.routers import ROUTERS, ServingApp, route_path
from herald.catalog import EventCatalog, EventData, catalog, operational_catalog
from herald.services import Services
from tests.api_support import route_modules_routers, served_routes
from tests.support import ADMIN


def _api_paths(app: FastAPI) -> list[tuple[str, tuple[str, ...]]]:
    """The app's own operations, in the order it matches them."""
    return [
        (path, tuple(sorted(route.methods or ())))
        for route, path in served_routes(app)
        if isinstance(route, APIRoute) and path is not None and path.startswith(("/v1/", "/health"))
    ]


def _printed_by_a_fresh_interpreter(code: str) -> list[str]:
    """The lines ``code`` prints, run by a new Python process (as a cold start: nothing imported before it)."""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()


def _sample(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: f"{match.group(1)}_x", path)


def test_every_router_is_listed_once_and_every_route_lies_under_its_path() -> None:
    listed = [(spec.module, spec.attribute) for spec in ROUTERS]
    assert sorted(listed) == sorted((module, attribute) for module, attribute, _ in route_modules_routers())
    assert len(set(listed)) == len(listed)
    for spec in ROUTERS:
        router = spec.load()
        assert router.routes
        assert router.responses == SHARED_ANSWERS, f"{spec.module}.{spec.attribute} is not made by api_router"
        # the app runs no router's own handlers: a router may have none
        assert (router.on_startup, router.on_shutdown) == ([], [])
        assert type(router.lifespan_context) is type(APIRouter().lifespan_context)
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert spec.reaches.match(route.path), f"{route.path} is not under {spec.under}"
            assert spec.reaches.match(_sample(route.path)), f"{_sample(route.path)} is not under {spec.under}"


def test_a_cold_app_imports_no_route_module_until_a_request_reaches_it() -> None:
    # A fresh interpreter, as a cold start: nothing of the routes is imported by making the app, nor the webhooks
    # documented, and a request imports its router's module alone
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from herald.api import create_app\n"
        "def routes():\n"
        "    return sorted(m for m in sys.modules if m.startswith('herald.api.routes.'))\n"
        "app = create_app()\n"
        "print(routes(), len(app.webhooks.routes))\n"
        "assert TestClient(app).get('/health').status_code == 200\n"
        "print(routes(), len(app.webhooks.routes))\n"
    )
    assert _printed_by_a_fresh_interpreter(code) == ["[] 0", "['herald.api.routes.health'] 0"]


def test_a_route_is_analysed_where_it_is_declared_and_not_again_by_the_app(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = {
        route.endpoint
        for _, _, router in route_modules_routers()  # every route module imported: every route declared
        for route in router.routes
        if isinstance(route, APIRoute)
    }
    analysed = []

    def noting(*args: Any, **kwargs: Any) -> Any:
        analysed.append(kwargs.get("call"))
        return get_dependant(*args, **kwargs)

    monkeypatch.setattr("fastapi.routing.get_dependant", noting)  # what FastAPI's analysis of a route starts with
    app = create_app(services)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/subscriptions", headers=ADMIN).status_code == 403
        assert client.get("/v1/events/evt_x", headers=ADMIN).status_code == 404
        assert client.get("/openapi.json").status_code == 200  # every router
    assert len(_api_paths(app)) >= 35
    assert analysed  # the app's own routes and the webhooks' are analysed when they are made
    assert [call for call in analysed if call in declared] == []


def test_under_lambda_a_router_is_imported_with_the_collector_off_then_frozen() -> None:
    # A fresh interpreter named as Lambda names a function's: the router's objects join the start's, frozen; the
    # garbage of the requests before is collected, not frozen; a module that fails to import freezes nothing
    code = (
        "import gc, os, weakref\n"
        "os.environ['AWS_LAMBDA_FUNCTION_NAME'] = 'ApiFunction'\n"
        "from fastapi import FastAPI\n"
        "from fastapi.testclient import TestClient\n"
        "from herald.api import create_app\n"
        "from herald.api.routers import LazyRouters, RouterSpec\n"
        "load = RouterSpec.load\n"
        "collecting = []\n"
        "def noting(spec):\n"
        "    collecting.append(gc.isenabled())\n"
        "    return load(spec)\n"
        "RouterSpec.load = noting\n"
        "app = create_app()\n"
        "client = TestClient(app)\n"
        "class Cycle:\n"
        "    pass\n"
        "cycle = Cycle()\n"
        "cycle.me = cycle\n"
        "left = weakref.ref(cycle)\n"
        "gc.collect()\n"  # it survives into the oldest generation, which a request's collections leave alone
        "del cycle\n"
        "frozen = gc.get_freeze_count()\n"
        "assert client.get('/health').status_code == 200\n"
        "gc.collect()\n"
        "print(gc.get_freeze_count() > frozen, gc.isenabled(), collecting, left() is None)\n"
        "frozen = gc.get_freeze_count()\n"
        "assert client.get('/health').status_code == 200\n"
        "print(gc.get_freeze_count() == frozen)\n"
        "broken = LazyRouters(FastAPI(), specs=(RouterSpec('does_not_exist', '/v1/broken'),))\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        broken.reach('/v1/broken')\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "print(gc.get_freeze_count() == frozen, gc.isenabled())\n"
    )
    assert _printed_by_a_fresh_interpreter(code) == ["True True [False] True", "True", "True True"]


def _refusing(status: int) -> Callable[[], Awaitable[None]]:
    async def refused() -> None:
        await asyncio.sleep(0)  # lets the other requests run meanwhile
        raise HTTPException(status_code=status)

    return refused


def test_each_request_gets_the_dependency_overrides_of_the_app_serving_it(services: Services) -> None:
    apps = [create_app(services) for _ in range(3)]  # all made before any request: the same routes, shared
    apps[0].dependency_overrides[get_principal] = _refusing(418)
    apps[1].dependency_overrides[get_principal] = _refusing(410)  # apps[2]: none

    async def requests() -> tuple[list[int], int, dict[Any, Any]]:
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://herald") for app in apps]
        try:
            together = await asyncio.gather(*(client.get("/v1/event-types") for _ in range(10) for client in clients))
            alone = await clients[0].get("/v1/event-types")  # served in this task: the app it named is forgotten
            return [answer.status_code for answer in together], alone.status_code, ServingApp().dependency_overrides
        finally:
            for client in clients:
                await client.aclose()

    together, alone, after = asyncio.run(requests())
    assert together == [418, 410, 401] * 10
    assert (alone, after) == (418, {})


def test_a_request_suspended_while_another_app_serves_one_keeps_its_own_overrides(services: Services) -> None:
    suspended, other = create_app(services), create_app(services)
    waiting, gate = asyncio.Event(), asyncio.Event()

    async def services_after_the_gate() -> Services:
        waiting.set()
        await gate.wait()  # the other app serves a whole request meanwhile
        return services

    # GET /v1/subscriptions depends on the services, then on the tenant: its overrides are read before and after
    suspended.dependency_overrides[get_services] = services_after_the_gate
    suspended.dependency_overrides[require_tenant] = _refusing(418)

    async def requests() -> tuple[int, int]:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=suspended), base_url="http://herald") as first,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://herald") as second,
        ):
            pending = asyncio.create_task(first.get("/v1/subscriptions"))
            await asyncio.wait({asyncio.ensure_future(waiting.wait()), pending}, return_when=asyncio.FIRST_COMPLETED)
            assert waiting.is_set(), (await pending).text
            served = await second.get("/v1/event-types", headers=ADMIN)
            gate.set()
            return (await pending).status_code, served.status_code

    assert asyncio.run(requests()) == (418, 200)


def test_the_shared_answers_add_no_schema_nor_adapter_and_come_first(services: Services) -> None:
    document = create_app(services).openapi()
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(document["components"]["schemas"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert list(operation["responses"])[1:3] == ["401", "422"], (method, path)
    for _, _, router in route_modules_routers():
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert 401 not in route.response_fields, route.path  # declared without a model: no adapter for it


def test_a_fresh_app_holds_no_router_and_a_request_adds_only_those_under_its_path(services: Services) -> None:
    app = create_app(services)
    assert _api_paths(app) == []
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/event-types", headers=ADMIN).status_code == 200
        assert {path for path, _ in _api_paths(app)} == {"/v1/event-types"}

        listing = client.get("/v1/subscriptions", headers=ADMIN)
        assert listing.status_code == 403  # the operator's key on a tenant's route without ?tenant_id=
        subscriptions = {getattr(route, "path", "") for route in herald.api.routes.subscriptions.router.routes}
        assert {path for path, _ in _api_paths(app)} == {"/v1/event-types"} | subscriptions  # no deliveries, recovery

        nowhere = client.get("/v1/nowhere", headers=ADMIN)
        assert nowhere.status_code == 404
        assert nowhere.json()["error"]["code"]
        assert {path for path, _ in _api_paths(app)} == {"/v1/event-types"} | subscriptions


def test_every_operation_is_reached_on_a_fresh_app(services: Services) -> None:
    reference = create_app(services)
    operations = [
        (method.upper(), path) for path, methods in reference.openapi()["paths"].items() for method in methods
    ]
    assert len(operations) >= 35
    for method, path in [*operations, ("GET", "/health")]:
        app = create_app(services)
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.request(method, _sample(path))  # no key: every operation but the probe asks for one
        assert response.status_code == (200 if path == "/health" else 401), (method, path, response.text)
        assert any(path == included and method in methods for included, methods in _api_paths(app))


def test_routes_end_in_one_order_whatever_the_order_of_the_requests_that_include_them(services: Services) -> None:
    at_once = create_app(services)
    at_once.openapi()
    expected = _api_paths(at_once)
    assert len(expected) >= 35
    assert expected == [  # ROUTERS' order, each router's routes in its own order
        (route.path, tuple(sorted(route.methods or ())))
        for spec in ROUTERS
        for route in spec.load().routes
        if isinstance(route, APIRoute) and route.path.startswith(("/v1/", "/health"))
    ]

    app = create_app(services)
    with TestClient(app, raise_server_exceptions=False) as client:
        for spec in reversed(ROUTERS):
            client.get(_sample(spec.under))
    assert _api_paths(app) == expected
    assert [getattr(route, "path", None) for route in app.routes][-2:] == ["/portal", "/portal"]  # added after them
    document = app.openapi()
    assert document == at_once.openapi()
    assert _api_paths(app) == expected


def test_the_openapi_document_includes_every_router_and_the_webhooks(services: Services) -> None:
    app = create_app(services)
    with TestClient(app, raise_server_exceptions=False) as client:
        document = client.get("/openapi.json").json()
    assert {path for path, _ in _api_paths(app)} == set(document["paths"]) | {"/health"}  # the probe: undocumented
    assert set(document["webhooks"]) >= {event_type.name for event_type in operational_catalog}
    assert "GatewayThrottled" in document["components"]["schemas"]


def test_a_request_under_a_root_path_reaches_its_router(services: Services) -> None:
    app = create_app(services)
    with TestClient(app, raise_server_exceptions=False, root_path="/prod") as client:
        assert client.get("/prod/v1/event-types", headers=ADMIN).status_code == 200
    assert {path for path, _ in _api_paths(app)} == {"/v1/event-types"}
    assert route_path({"path": "/prod/v1/events", "root_path": "/prod"}) == "/v1/events"
    assert route_path({"path": "/v1/events", "root_path": "/prod"}) == "/v1/events"
    assert route_path({"path": "/production", "root_path": "/prod"}) == "/production"


def test_an_event_type_named_in_two_catalogs_fails_the_app_at_its_start(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    twice = EventCatalog()
    name = next(iter(catalog)).name  # a type of the main catalog, named again in the operational one

    @twice.event(name, example={})
    class Twice(EventData):
        pass

    monkeypatch.setattr(herald.api.app, "operational_catalog", twice)
    with pytest.raises(ValueError, match="two catalogs"):
        create_app(services)
