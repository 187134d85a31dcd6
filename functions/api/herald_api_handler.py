"""ApiFunction entry point: the FastAPI app behind API Gateway (HTTP API, payload v2)."""

from typing import Any

from herald.startup import collector_held_off, models_built_on_first_use

with collector_held_off():
    with models_built_on_first_use():
        import fastapi  # noqa: F401 - its OpenAPI document's models, built on the first /openapi.json
    from mangum import Mangum

    from herald.api import create_app
    from herald.logs import function_logger, logged

    #: The parent of Herald's loggers: structured JSON logs with the invocation's request id.
    logger = function_logger()
    app = create_app()
    _mangum = Mangum(app, lifespan="off")


@logged(logger)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(_mangum(event, context))


__all__ = ["app", "handler"]
