"""An AWS stand-in that answers concurrently, for measuring a batch as it runs against AWS.

moto is a faithful DynamoDB and SQS, but one process: it serves a batch's calls one at a time (a few ms
each), so a batch of 100 deliveries measured against it is bound by moto, not by the worker. AWS answers
any number of calls at once, each in single-digit milliseconds. The stand-in emulates that: a batch is
first run against moto with its calls recorded (each request's match and the HTTP answer moto gave), then
the same batch, the same SQS event, is handled again with every AWS call sent to the stand-in instead: an
HTTP/1.1 server in its own process (keep-alive, a thread per connection) that answers each call from the
recording after ``latency`` seconds, any number in flight together. botocore still builds, signs and sends
each request and reads and parses each answer over a kept-alive socket, so the worker's CPU is its own, as
on Lambda, less TLS; the stand-in's own work is in another process. It answers every call in the same
time, without AWS's slower tail.

A call is matched to its recording by its operation, the item keys it names (``Key``, an ``Item``'s
``pk``/``sk``, a batch's or a transaction's keys, a query's key values, a queue's URL) and its update and
condition expressions; calls with the same match are answered in the order they were recorded. A call the
recording has no answer for is answered 500 and counted (``misses``), never with an invented answer: the
benchmark reports a figure only when the second run asked exactly what the first asked (it checks that
every recorded answer was used). A BatchExecuteStatement (the worker's INSERTs of new deliveries) is recorded
and answered statement by statement, each by its item's key: which deliveries share a call depends on when
their sends finish, which differs from one run to the next; each statement's answer does not.

``python -m benchmarks.aws_standin [latency_s]`` prints ``{"port": ...}`` and serves until its stdin closes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import threading
import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks.child import ChildProcess
from herald.local.loopback import LoopbackServer, QuietHandler
from herald.storage.table import inserted_item

#: What one AWS call takes to answer from inside the region: DynamoDB and SQS answer in single-digit
#: milliseconds; the stand-in takes the top of that range.
LATENCY_S = 0.010
_CONTROL = "/_standin/"
#: Headers the stand-in writes itself for each answer.
_FRAMING = {"content-length", "transfer-encoding", "connection", "date", "server"}

type Match = tuple[str, tuple[str, ...]]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _item_key(item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in ("pk", "sk") if name in item}


def _keys(body: dict[str, Any]) -> list[str]:
    """The item keys, key values or queue a request names, whatever the operation."""
    found: list[Any] = []
    if "Key" in body:
        found.append(body["Key"])
    if "Item" in body:
        found.append(_item_key(body["Item"]))
    for requests in body.get("RequestItems", {}).values():
        if isinstance(requests, dict):  # BatchGetItem
            found += requests.get("Keys", [])
        else:  # BatchWriteItem
            for request in requests:
                put, delete = request.get("PutRequest"), request.get("DeleteRequest")
                found.append(_item_key(put["Item"]) if put else delete["Key"])
    for statement in body.get("Statements", []):  # BatchExecuteStatement: Herald's INSERTs
        inserted = inserted_item(statement)
        found.append(_item_key(inserted[1]) if inserted else statement.get("Statement"))
    for action in body.get("TransactItems", []):
        for operation in action.values():
            found.append(operation.get("Key") or _item_key(operation.get("Item", {})))
    if "KeyConditionExpression" in body:
        found.append([body["KeyConditionExpression"], body.get("ExpressionAttributeValues")])
    if "QueueUrl" in body:
        found.append(body["QueueUrl"])
    return sorted(_key(value) for value in found)


#: The operation whose statements are recorded and answered one by one, and how a statement is matched.
_STATEMENTS = "DynamoDB_20120810.BatchExecuteStatement"
_STATEMENT = "statement"
_JSON = {"content-type": "application/x-amz-json-1.0"}


def statement_matches(body: str | bytes | None) -> list[Match]:
    """The match of each statement of a BatchExecuteStatement request, in order."""
    matches: list[Match] = []
    for statement in json.loads(body or b"{}").get("Statements", []):
        inserted = inserted_item(statement)
        key = _item_key(inserted[1]) if inserted else statement.get("Statement")
        matches.append((_STATEMENT, (_key(key),)))
    return matches


#: What tells apart two calls on the same keys: two updates of one item that write different things.
_EXPRESSIONS = ("UpdateExpression", "ConditionExpression", "ReturnValues")


def match_of(target: str | bytes | None, body: str | bytes | None) -> Match:
    """What a request is matched on: its operation (the ``X-Amz-Target`` header of AWS's JSON protocols, which
    DynamoDB and SQS speak), the keys its body names, and its update and condition expressions."""
    operation = target.decode() if isinstance(target, bytes) else str(target or "")
    parsed = json.loads(body or b"{}")
    expressions = [f"{name}={parsed[name]}" for name in _EXPRESSIONS if name in parsed]
    return operation, (*_keys(parsed), *expressions)


# ---------------------------------------------------------------------------------------------- the client side


class AwsStandIn:
    """The client side: records the AWS calls of ``clients`` (boto3 clients of DynamoDB and SQS) against the
    service they talk to, then sends the same calls to the stand-in process, which answers them."""

    def __init__(self, clients: list[Any], *, latency: float = LATENCY_S) -> None:
        self.clients = clients
        self.process = ChildProcess("benchmarks.aws_standin", str(latency))
        self.url = f"http://127.0.0.1:{self.process.hello['port']}"
        self._recorded: list[dict[str, Any]] = []
        self._pending = threading.local()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.process.close()

    @contextlib.contextmanager
    def _hooks(self, **hooks: Any) -> Iterator[None]:
        registered = []
        for client in self.clients:
            service = client.meta.service_model.service_id.hyphenize()
            for event, hook in hooks.items():
                client.meta.events.register(f"{event}.{service}", hook)
                registered.append((client.meta.events, f"{event}.{service}", hook))
        try:
            yield
        finally:
            for events, name, hook in registered:
                events.unregister(name, hook)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Calls go to the real service (moto); each answer is kept under its request's match, and handed to
        the stand-in when the block ends (replacing what it held)."""
        with self._lock:
            self._recorded = []
        with self._hooks(**{"before-send": self._note_request, "response-received": self._record}):
            yield
        self._control("recording", self._recorded)

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Calls are sent to the stand-in instead of the service."""
        with self._hooks(**{"before-send": self._redirect}):
            yield

    def stats(self) -> dict[str, Any]:
        """What the stand-in did since its last recording: ``recorded`` (answers it was given: a call's, or a
        statement's), ``answered`` (calls answered whole), ``unused`` (answers never asked for), ``misses`` (each
        a match) and ``peak_in_flight`` (calls it held at once)."""
        stats: dict[str, Any] = self._control("stats", None)
        return stats

    def _control(self, what: str, payload: Any) -> Any:
        request = urllib.request.Request(self.url + _CONTROL + what, data=json.dumps(payload).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _note_request(self, request: Any, **_: Any) -> None:
        self._pending.match = match_of(request.headers.get("X-Amz-Target"), request.body)
        self._pending.body = request.body

    def _record(self, response_dict: dict[str, Any] | None, exception: Exception | None, **_: Any) -> None:
        match = getattr(self._pending, "match", None)
        self._pending.match = None
        if match is None or response_dict is None or exception is not None:
            return  # nothing answered (a connection error): nothing to answer with later
        if match[0] == _STATEMENTS and int(response_dict["status_code"]) == 200:
            answers = json.loads(response_dict["body"]).get("Responses", [])
            entries = [
                {"match": [kind, list(keys)], "statement": answer}
                for (kind, keys), answer in zip(statement_matches(self._pending.body), answers, strict=True)
            ]
            with self._lock:
                self._recorded += entries
            return
        entry = {
            "match": [match[0], list(match[1])],
            "status": int(response_dict["status_code"]),
            "headers": {k: v for k, v in response_dict["headers"].items() if k.lower() not in _FRAMING},
            "body": base64.b64encode(response_dict["body"]).decode(),
        }
        with self._lock:
            self._recorded.append(entry)

    def _redirect(self, request: Any, **_: Any) -> None:
        parts = urlsplit(request.url)
        request.url = urlunsplit(parts._replace(netloc=urlsplit(self.url).netloc))


# ---------------------------------------------------------------------------------------------- the server side


class _Recording:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: dict[Match, deque[Any]] = defaultdict(deque)
        self.recorded = 0
        self.answered = 0
        self.misses: list[Match] = []
        self.in_flight = 0
        self.peak_in_flight = 0

    def load(self, entries: list[dict[str, Any]]) -> None:
        with self.lock:
            self.answers.clear()
            self.misses.clear()
            self.recorded, self.answered, self.peak_in_flight = len(entries), 0, 0
            for entry in entries:
                match = (entry["match"][0], tuple(entry["match"][1]))
                if "statement" in entry:
                    self.answers[match].append(entry["statement"])
                else:
                    self.answers[match].append((entry["status"], entry["headers"], base64.b64decode(entry["body"])))

    @contextlib.contextmanager
    def call(self, match: Match) -> Iterator[tuple[int, dict[str, str], bytes] | None]:
        """The recorded answer to one call (None: a miss), counted in flight while the block runs."""
        with self.statements([match]) as (answer,):
            yield answer

    @contextlib.contextmanager
    def statements(self, matches: list[Match]) -> Iterator[list[Any]]:
        """The recorded answers to a call (one match) or to its statements, in order (None for a miss), one call
        in flight while the block runs."""
        with self.lock:
            answers = [self._take(match) for match in matches]
            self.answered += None not in answers
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield answers
        finally:
            with self.lock:
                self.in_flight -= 1

    def _take(self, match: Match) -> Any:
        answers = self.answers.get(match)
        answer = answers.popleft() if answers else None
        if answer is None:
            self.misses.append(match)
        return answer

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "recorded": self.recorded,
                "answered": self.answered,
                "unused": sum(len(answers) for answers in self.answers.values()),
                "misses": list(self.misses),
                "peak_in_flight": self.peak_in_flight,
            }


def serve(latency: float) -> LoopbackServer:
    recording = _Recording()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.read_body()
            if self.path.startswith(_CONTROL):
                if self.path == _CONTROL + "recording":
                    recording.load(json.loads(body))
                self.answer(200, json.dumps(recording.stats()).encode(), {"content-type": "application/json"})
                return
            if self.headers.get("X-Amz-Target") == _STATEMENTS:
                with recording.statements(statement_matches(body)) as answers:
                    time.sleep(latency)
                if None not in answers:
                    self.answer(200, json.dumps({"Responses": answers}).encode(), _JSON)
                    return
                answer = None
            else:
                with recording.call(match_of(self.headers.get("X-Amz-Target"), body)) as answer:
                    time.sleep(latency)
            if answer is None:
                miss = {"__type": "StandInMiss", "message": "no recorded answer for this call"}
                self.answer(500, json.dumps(miss).encode(), {"content-type": "application/x-amz-json-1.0"})
                return
            status, headers, payload = answer
            self.answer(status, payload, headers)

    return LoopbackServer(Handler)


def main(latency: float) -> None:
    server = serve(latency)
    print(json.dumps({"port": server.port}), flush=True)
    sys.stdin.read()
    server.close()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else LATENCY_S)
