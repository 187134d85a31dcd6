"""ApiFunction entry point: the FastAPI app behind API Gateway (HTTP API, payload v2)."""

from mangum import Mangum

from herald.api import create_app

app = create_app()
handler = Mangum(app, lifespan="off")

__all__ = ["app", "handler"]
