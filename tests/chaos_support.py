"""Helpers for the chaos tests: the app over real HTTP, a publisher that retries as a client must, and
the check of what receivers got. The fault mix is ``herald.faults.CHAOS_MIX``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from standardwebhooks import Webhook as StandardWebhook

from herald.api import create_app
from tests.support import served

if TYPE_CHECKING:
    from herald.services import Services
    from tests.support import Received


@contextmanager
def serve(services: Services) -> Iterator[str]:
    """The app on uvicorn in a thread (moto's in-process AWS is shared with the test); its base URL."""
    with served(create_app(services), lifespan="off") as url:
        yield url


@dataclass
class Answers:
    """Every answer a caller got, by status; a 503 must carry Retry-After and the service_unavailable code."""

    statuses: Counter[int]

    def note(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        assert response.status_code < 500 or response.status_code == 503, f"{response.status_code}: {response.text}"
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "service_unavailable"


def call_until_done(
    http: httpx.Client, answers: Answers, method: str, url: str, *, ok: int, tries: int = 20, **kwargs: Any
) -> httpx.Response:
    """Call until the answer is ``ok``, as a well-behaved client does with 503 + Retry-After (it would
    wait Retry-After seconds; the faults here are drawn per call, so it calls again at once)."""
    for _ in range(tries):
        response = http.request(method, url, **kwargs)
        answers.note(response)
        if response.status_code == ok:
            return response
        assert response.status_code == 503, f"{method} {url}: {response.status_code} {response.text}"
    raise AssertionError(f"{method} {url} never answered {ok}")


def verify_signature(secret: str, received: Received) -> dict[str, Any]:
    """The ``standardwebhooks`` library's signature of the delivery must be among the header's signatures.
    (Its ``verify`` also checks the timestamp against the real time, which a simulated clock leaves behind.)"""
    headers = received.headers
    moment = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = StandardWebhook(secret).sign(headers["webhook-id"], moment, received.body.decode())
    assert expected in headers["webhook-signature"].split(" "), "signature does not verify"
    payload: dict[str, Any] = received.json()
    return payload
