"""A small synchronous client of the Herald API: JSON in, JSON out, its errors as ``CliApiError``."""

from __future__ import annotations

import json
from typing import Any, Self

import httpx

from herald import __version__
from herald.cli.errors import CliApiError, CliConfigError, CliConnectionError, CliError

#: Seconds to wait for the API; API Gateway itself gives up after 29 s.
DEFAULT_TIMEOUT_SECONDS = 35.0


class ApiClient:
    """Calls one Herald deployment with one key. ``transport`` lets tests or callers swap the HTTP layer."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._key = key
        try:
            self._http = httpx.Client(
                base_url=base_url,
                headers={
                    "Authorization": f"Bearer {key}",
                    "Accept": "application/json",
                    "User-Agent": f"herald-cli/{__version__}",
                },
                timeout=timeout,
                transport=transport,
                follow_redirects=False,
            )
        except httpx.InvalidURL as exc:
            raise CliConfigError(f"the API URL {base_url!r} is not a valid URL: {exc}") from exc
        except UnicodeEncodeError as exc:
            raise CliConfigError("the key holds a non-ASCII character; a key is printable ASCII") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, body=body, headers=headers)

    def patch(self, path: str, *, body: Any) -> Any:
        return self.request("PATCH", path, body=body)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer (``None`` for an empty one); raises ``CliApiError`` for a non-2xx."""
        query = {name: value for name, value in (params or {}).items() if value is not None}
        try:
            response = self._http.request(
                method,
                path.lstrip("/"),
                params=query or None,
                json=body,
                headers=headers,
            )
        except UnicodeEncodeError as exc:
            raise CliError("a header holds a non-ASCII character (headers are ASCII)", code="invalid_request") from exc
        except ValueError as exc:  # a body JSON cannot carry: NaN, Infinity
            raise CliError(f"the request body is not valid JSON: {exc}", code="invalid_request") from exc
        except httpx.TimeoutException as exc:
            raise CliConnectionError(f"{method} {self.base_url}{path.lstrip('/')} timed out", code="timeout") from exc
        except httpx.HTTPError as exc:
            raise CliConnectionError(f"could not reach {self.base_url}: {self._without_key(str(exc))}") from exc
        if response.is_success:
            if not response.content:
                return None
            try:
                return response.json()
            except json.JSONDecodeError as exc:
                raise CliApiError(response.status_code, "invalid_response", "the API answered with non-JSON") from exc
        raise api_error(response)

    def _without_key(self, text: str) -> str:
        """An HTTP error's text, unless it shows the key (a header httpx refused to send): then only what failed."""
        shown = {self._key, repr(self._key)[1:-1], repr(self._key.encode("utf-8", "replace"))[2:-1]}
        if "Bearer" in text or any(form and form in text for form in shown):
            return "the Authorization header could not be sent (the key is not a valid header value)"
        return text


def api_error(response: httpx.Response) -> CliApiError:
    """The API's error shape, or a readable stand-in when something else (a proxy, a gateway) answered."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        details = error.get("details")
        return CliApiError(
            response.status_code,
            error["code"],
            str(error.get("message", "")),
            details if isinstance(details, list) else None,
        )
    # API Gateway's own answers look like {"message": "Not Found"}.
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message) if message else (response.text.strip()[:200] or response.reason_phrase)
    return CliApiError(response.status_code, f"http_{response.status_code}", text)
