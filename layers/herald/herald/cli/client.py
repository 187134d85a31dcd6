"""A small synchronous client of the Herald API: JSON in, JSON out, its errors as ``CliApiError``.

A 429 or a 503 is asked again, up to ``MAX_RETRIES`` times after the answer's ``Retry-After`` (at most
``MAX_RETRY_AFTER_SECONDS``). A 429 always: it is API Gateway's throttling, answered before the request reaches
Herald (the app never answers 429), so nothing was done and sending it again is safe. A 503 (a service the API
depends on did not answer) only when the request is safe to send twice: a GET, or a request its caller marks
``repeatable`` because the API's contract makes a repeat harmless (an ``Idempotency-Key``, events that all have an
``id``, a recovery of the same window).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Self

import httpx

from herald import __version__
from herald.cli.errors import CliApiError, CliConfigError, CliConnectionError, CliError

#: Seconds to wait for the API; API Gateway itself gives up after 29 s.
DEFAULT_TIMEOUT_SECONDS = 35.0
#: The least time a request bounded by a deadline is given for its answer (seconds): the API's cold start and API
#: Gateway's hop, for a last poll made at the deadline.
MIN_REQUEST_SECONDS = 5.0
#: Answers that say "later": throttled, or unavailable for a moment.
RETRY_STATUSES = frozenset({429, 503})
#: API Gateway's throttling: the request never reached the app, so any request is asked again.
THROTTLED_STATUS = 429
MAX_RETRIES = 3
#: Longest wait for one retry, whatever ``Retry-After`` asks.
MAX_RETRY_AFTER_SECONDS = 20.0
#: Wait before the first retry when the answer has no usable ``Retry-After``; doubled each time.
DEFAULT_RETRY_SECONDS = 1.0


def retry_delay(retry_after: str | None, retries: int, now: datetime | None = None) -> float:
    """Seconds to wait before retry ``retries + 1``: ``Retry-After`` (seconds or an HTTP date), else 1, 2, 4 s;
    never more than ``MAX_RETRY_AFTER_SECONDS``."""
    delay = DEFAULT_RETRY_SECONDS * (1 << retries)
    text = (retry_after or "").strip()
    if text.isascii() and text.isdigit():  # "²" is a digit to str.isdigit, and no number to float
        delay = float(text)
    elif text:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year past what datetime holds
            moment = None
        if moment is not None and moment.tzinfo is not None:
            delay = max((moment - (now or datetime.now(UTC))).total_seconds(), 0.0)
    return min(delay, MAX_RETRY_AFTER_SECONDS)


class ApiClient:
    """Calls one Herald deployment with one key. ``transport`` lets tests or callers swap the HTTP layer."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url
        self._key = key
        self._sleep = sleep
        self._timeout = timeout
        #: The headers of the last answer that succeeded (``Idempotent-Replayed``).
        self.last_headers = httpx.Headers()
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
                # Plain http goes to this machine only (``config.checked_url``), never through a proxy the
                # environment names (HTTP_PROXY...), which would carry the key in the clear over the network.
                trust_env=not base_url.lower().startswith("http://"),
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

    def post(
        self, path: str, *, body: Any = None, headers: dict[str, str] | None = None, repeatable: bool = False
    ) -> Any:
        return self.request("POST", path, body=body, headers=headers, repeatable=repeatable)

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
        repeatable: bool | None = None,
        deadline: float | None = None,
    ) -> Any:
        """The decoded JSON answer (``None`` for an empty one); raises ``CliApiError`` for a non-2xx. A 429 is
        asked again, whatever the request; a 503 when the request is ``repeatable`` (default: only a GET).
        ``deadline`` (a ``time.monotonic()`` instant) bounds it all: no request waits for its answer past it, nor is
        asked again if its wait would end past it."""
        if repeatable is None:
            repeatable = method == "GET"
        retries = 0
        out_of_time = False
        while True:
            response = self._send(method, path, params=params, body=body, headers=headers, deadline=deadline)
            if not self._asked_again(response.status_code, repeatable) or retries >= MAX_RETRIES:
                break
            delay = retry_delay(response.headers.get("Retry-After"), retries)
            if deadline is not None and time.monotonic() + delay >= deadline:
                out_of_time = True
                break
            self._sleep(delay)
            retries += 1
        if response.is_success:
            self.last_headers = response.headers
            if not response.content:
                return None
            try:
                answer = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # not JSON, or not UTF-8 text
                raise CliApiError(response.status_code, "invalid_response", "the API answered with non-JSON") from exc
            if not isinstance(answer, dict):  # every operation answers an object: this is not Herald's API
                raise CliApiError(
                    response.status_code, "invalid_response", "the API answered with JSON that is not an object"
                )
            return answer
        error = api_error(response)
        if response.status_code in RETRY_STATUSES:
            retry_after = response.headers.get("Retry-After")
            asked = f"Retry-After: {retry_after} s" if retry_after else "no Retry-After"
            if out_of_time:
                error.message += f" ({asked}; not asked again: the time given to wait is up before then)"
                error.out_of_time = True
            elif self._asked_again(response.status_code, repeatable):
                error.message += f" (still {response.status_code} after {retries} retries; {asked})"
            else:
                error.message += f" ({asked}; not sent again: this request is not safe to send twice)"
        raise error

    @staticmethod
    def _asked_again(status: int, repeatable: bool) -> bool:
        """Whether an answer is one to ask again: a 429 for any request, a 503 for a ``repeatable`` one."""
        return status == THROTTLED_STATUS or (status in RETRY_STATUSES and repeatable)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None,
        body: Any,
        headers: dict[str, str] | None,
        deadline: float | None = None,
    ) -> httpx.Response:
        query = {name: value for name, value in (params or {}).items() if value is not None}
        timeout = self._timeout
        if deadline is not None:
            # Never wait for an answer past the deadline, but give the request a moment even at its very end.
            timeout = min(timeout, max(deadline - time.monotonic(), MIN_REQUEST_SECONDS))
        try:
            return self._http.request(
                method,
                path.lstrip("/"),
                params=query or None,
                json=body,
                headers=headers,
                timeout=timeout,
            )
        except UnicodeEncodeError as exc:
            if exc.encoding == "ascii":  # httpx encodes header values as ASCII
                raise CliError(
                    "a header holds a non-ASCII character (headers are ASCII)", code="invalid_request"
                ) from exc
            # The body and the query are UTF-8: a lone surrogate (command-line bytes that are not UTF-8) has none.
            raise CliError(
                f"the request holds text that is not valid Unicode ({exc.object[exc.start : exc.end]!a})",
                code="invalid_request",
            ) from exc
        except ValueError as exc:  # a body JSON cannot carry: NaN, Infinity
            raise CliError(f"the request body is not valid JSON: {exc}", code="invalid_request") from exc
        except httpx.TimeoutException as exc:
            raise CliConnectionError(f"{method} {self.base_url}{path.lstrip('/')} timed out", code="timeout") from exc
        except httpx.HTTPError as exc:
            raise CliConnectionError(f"could not reach {self.base_url}: {self._without_key(str(exc))}") from exc

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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
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
