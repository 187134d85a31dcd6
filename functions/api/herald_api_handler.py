"""ApiFunction entry point: the FastAPI app behind API Gateway (HTTP API, payload v2)."""

from typing import Any

from aws_lambda_powertools import Logger
from mangum import Mangum

from herald.api import create_app

#: The parent of Herald's loggers: structured JSON logs with the invocation's request id.
logger = Logger(service="herald")
app = create_app()
_mangum = Mangum(app, lifespan="off")


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(_mangum(event, context))


__all__ = ["app", "handler"]
