"""Helpers for the delivery engine's tests: misbehaving servers on 127.0.0.1, a recorder of the AWS calls
the worker makes, a worker on a controllable clock, verification with the independent libraries, and
bulk data written straight through the Store.

Nothing here replaces a component: the servers are real sockets, the recorder only reads what botocore
is about to send (or has received), and the worker is Herald's own.
"""

# Over 400 lines on purpose: the delivery harness, its recorders and the servers that misbehave on purpose, which every
# delivery test shares; split, each part would import the others.

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from standardwebhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from herald import ids
from herald.faults import key_label
from herald.local.event_sources import delivery_event_sources
from herald.local.loopback import LoopbackServer, QuietHandler
from herald.local.moto_fixes import release_delays
from herald.local.poller import BatchResult, LambdaContext, SqsPoller, sqs_event
from herald.local.resources import SLOW_QUEUE_ID, WORK_QUEUE_ID
from herald.local.stream_poller import StreamPoller, table_stream_poller
from herald.records import SigningSecret, Subscription
from herald.storage.deliveries import delivery_key
from herald.storage.table import inserted_item
from herald.worker import Worker, settle_all
from tests.support import ADMIN, INVOICE, ORDER, Received

if TYPE_CHECKING:
    import boto3
    from fastapi.testclient import TestClient

    from herald.records import Delivery
    from herald.services import Services
    from herald.storage import DeliveryState, Store
    from tests.support import Clock, TenantInfo


# --- the API, briefly ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sub:
    id: str
    secret: str


def subscribe(
    client: TestClient,
    tenant: TenantInfo,
    url: str,
    event_types: Iterable[str] = ("invoice.paid",),
    *,
    rate_limit: int | None = None,
) -> Sub:
    body: dict[str, Any] = {"url": url, "event_types": list(event_types)}
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    response = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    return Sub(body["id"], body["secret"])


def publish(
    client: TestClient,
    tenant_id: str | None,
    event_type: str = "invoice.paid",
    data: dict[str, Any] | None = None,
) -> str:
    body: dict[str, Any] = {"type": event_type, "data": data or (INVOICE if event_type == "invoice.paid" else ORDER)}
    body |= {"tenant_id": tenant_id} if tenant_id else {"broadcast": True}
    response = client.post("/v1/events", json=body, headers=ADMIN)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def event_counts(client: TestClient, event_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/events/{event_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json()["deliveries"])


def stats(client: TestClient, tenant: TenantInfo, sub_id: str) -> dict[str, Any]:
    """A subscription's stats, as its tenant reads them."""
    response = client.get(f"/v1/subscriptions/{sub_id}/stats", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def fanned_out_counts(matched: int, *, succeeded: int = 0, failed: int = 0) -> dict[str, Any]:
    """An event's delivery counts (``event_counts``) once its fan-out is done and none was filtered: ``matched``
    deliveries, of which ``succeeded`` and ``failed`` settled and the rest pending."""
    return {
        "matched": matched,
        "filtered": 0,
        "pending": matched - succeeded - failed,
        "succeeded": succeeded,
        "failed": failed,
        "fanout_complete": True,
    }


def deliveries(client: TestClient, tenant: TenantInfo, sub_id: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/subscriptions/{sub_id}/deliveries", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def delivery_pages(client: TestClient, tenant: TenantInfo, sub_id: str, **params: Any) -> list[list[str]]:
    """Every page of the subscription's deliveries listing (``params``: its query), as lists of ids."""
    pages: list[list[str]] = []
    while True:
        response = client.get(f"/v1/subscriptions/{sub_id}/deliveries", params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["data"]])
        if body["done"]:
            return pages
        params["iterator"] = body["iterator"]


def only_delivery(client: TestClient, tenant: TenantInfo, sub_id: str) -> dict[str, Any]:
    found = deliveries(client, tenant, sub_id)
    assert len(found) == 1, found
    return found[0]


def attempts(client: TestClient, tenant: TenantInfo, sub_id: str, delivery_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/subscriptions/{sub_id}/deliveries/{delivery_id}/attempts", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


#: Event items whose reading raises (a record that does not decode, a payload that is no envelope): what the
#: worker meets in a table written by a bug, or by hand.
CORRUPT_EVENTS: dict[str, dict[str, Any]] = {
    "fields missing": {},
    "payload not an object": {
        "type": {"S": "invoice.paid"},
        "tenant_id": {"S": "tnt_x"},
        "timestamp": {"S": "2026-01-01T00:00:00Z"},
        "created_at": {"S": "2026-01-01T00:00:00Z"},
        "payload": {"S": "[]"},
        "expires_at": {"N": "9999999999"},
    },
}


def put_corrupt_event(store: Store, event_id: str, corrupt: str) -> None:
    """The event item of ``event_id``, corrupt as ``CORRUPT_EVENTS[corrupt]`` says."""
    store.client.put_item(
        TableName=store.table_name,
        Item={
            "pk": {"S": f"EVENT#{event_id}"},
            "sk": {"S": "#EVENT"},
            "id": {"S": event_id},
            **CORRUPT_EVENTS[corrupt],
        },
    )


def delivery_id_of(store: Store, event_id: str, sub_id: str) -> str:
    """The id of an event's delivery to a subscription, as its stored event names it."""
    stored = store.events.get(event_id)
    assert stored is not None, f"no event {event_id}"
    return stored.delivery_id(sub_id)


def delivery_key_of(store: Store, event_id: str, sub_id: str) -> dict[str, str]:
    """The key of that delivery's item."""
    return delivery_key(sub_id, delivery_id_of(store, event_id, sub_id), event_id)


def delivery_of(store: Store, event_id: str, sub_id: str) -> Delivery | None:
    """That delivery, as stored (None if there is none)."""
    return store.deliveries.get(sub_id, delivery_id_of(store, event_id, sub_id), event_id=event_id)


def delivery_state_of(store: Store, event_id: str, sub_id: str) -> DeliveryState | None:
    """That delivery with its place in the retry schedule and its lease, as the worker reads it."""
    return store.deliveries.get_state(sub_id, delivery_id_of(store, event_id, sub_id), event_id)


def delivery_label_of(store: Store, event_id: str, sub_id: str) -> str:
    """How that delivery's item is named among the keys a fault touched (``faults.Injected.keys``)."""
    key = delivery_key_of(store, event_id, sub_id)
    return key_label(key["pk"], key["sk"])


def when(value: str | None) -> float:
    """An API timestamp as epoch seconds."""
    assert value is not None
    return datetime.fromisoformat(value).timestamp()


# --- verification with the independent libraries ---------------------------------------------------------


def verify(secret: str, received: Received) -> dict[str, Any]:
    """Verify a delivery with both ``standardwebhooks`` and ``svix``; the decoded payload."""
    SvixWebhook(secret).verify(received.body, dict(received.headers))
    payload: dict[str, Any] = StandardWebhook(secret).verify(received.body, dict(received.headers))
    return payload


def signature_of(secret: str, received: Received) -> str:
    """The ``v1`` signature ``secret`` gives this delivery, computed here with hmac (not Herald's code):
    for deliveries whose timestamp a simulated clock moved beyond the libraries' 5-minute tolerance."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode() + received.body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- recording the AWS calls the worker makes ----------------------------------------------------------------


_SEQUENCE = itertools.count()


@dataclass
class Call:
    operation: str
    params: dict[str, Any]
    response: dict[str, Any] | None = None
    #: The order of calls across every recorder.
    seq: int = field(default_factory=lambda: next(_SEQUENCE))


@dataclass(frozen=True)
class Sent:
    """A message sent to a queue, alone or in a batch: its call's place in the order of calls, queue, body and
    delay."""

    seq: int
    queue_url: str
    body: str
    delay: int


class CallRecorder:
    """Records the parameters of API calls a boto3 client makes, and the parsed responses of some, through
    botocore's event system. It records only: it never alters, stubs or blocks a call."""

    def __init__(self, client: Any, operations: Iterable[str], *, responses: Iterable[str] = ()) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._hooks: list[tuple[str, Callable[..., None]]] = []
        service = client.meta.service_model.service_name
        self._events = client.meta.events
        for operation in operations:
            self._register(f"provide-client-params.{service}.{operation}", self._record_params)
        for operation in responses:
            self._register(f"after-call.{service}.{operation}", self._record_response)

    def _register(self, name: str, hook: Callable[..., None]) -> None:
        self._events.register(name, hook)
        self._hooks.append((name, hook))

    def _record_params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        with self._lock:
            self.calls.append(Call(model.name, dict(params)))

    def _record_response(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        with self._lock:
            self.calls.append(Call(model.name, {}, parsed))

    def of(self, operation: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.operation == operation]

    def sent(self) -> list[Sent]:
        """Each message sent, in order: by ``SendMessage``, or as an entry of ``SendMessageBatch`` (their parameters
        recorded)."""
        with self._lock:
            calls = [c for c in self.calls if c.operation in ("SendMessage", "SendMessageBatch") and c.params]
        sent: list[Sent] = []
        for call in calls:
            entries = call.params["Entries"] if call.operation == "SendMessageBatch" else [call.params]
            sent += [
                Sent(call.seq, call.params["QueueUrl"], entry["MessageBody"], int(entry.get("DelaySeconds", 0)))
                for entry in entries
            ]
        return sent

    def items_written(self) -> list[dict[str, Any]]:
        """The items written whole, in order: by PutItem, or by a batch's INSERT (``Table.insert_all``)."""
        items: list[dict[str, Any]] = []
        for call in self.of("PutItem") + self.of("BatchExecuteStatement"):
            if call.operation == "PutItem":
                items.append(call.params["Item"])
            else:
                items += [inserted[1] for s in call.params["Statements"] if (inserted := inserted_item(s)) is not None]
        return items

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def close(self) -> None:
        for name, hook in self._hooks:
            self._events.unregister(name, hook)


# --- a worker on a controllable clock ------------------------------------------------------------------------


@dataclass
class Harness:
    """A worker (with its own clock and seeded jitter) fed by the Lambda poller emulation. ``sqs`` is a
    separate client for the test's own look at the queues; ``queue_calls`` records what the worker asked
    of SQS (visibility changes, sends, batches)."""

    services: Services
    worker: Worker
    poller: SqsPoller
    sqs: Any
    clock: Callable[[], float]
    queue_calls: CallRecorder
    table_calls: CallRecorder
    receives: CallRecorder
    results: list[BatchResult] = field(default_factory=list)
    #: The pollers of the function's other SQS event sources (the slow lane's), from the template like ``poller``.
    others: list[SqsPoller] = field(default_factory=list)
    #: Each batch the pollers ran, with the queue it came from (``poller.queue_url``), in order.
    batches: list[tuple[str, BatchResult]] = field(default_factory=list)
    #: The table's stream, read like the function's stream event source (the stats of first-attempt successes).
    stream: StreamPoller | None = None

    @property
    def pollers(self) -> list[SqsPoller]:
        """Every event source's poller: the work queue's first."""
        return [self.poller, *self.others]

    @property
    def queue_urls(self) -> list[str]:
        return [poller.queue_url for poller in self.pollers]

    @property
    def holds(self) -> list[int]:
        """Every wait the worker scheduled for a delivery message, in order (seconds): the DelaySeconds of a
        copy sent to the queue, or, for a copy scheduled in DynamoDB, the time until it is due."""
        waits: list[tuple[int, int]] = []
        for sent in self.queue_calls.sent():
            if '"resumed":true' in sent.body:
                waits.append((sent.seq, sent.delay))
        for call in self.table_calls.of("PutItem"):
            item = call.params.get("Item", {})
            if item.get("pk", {}).get("S", "").startswith("DUE#"):
                waits.append((call.seq, round(float(item["due"]["N"]) - float(item["scheduled_at"]["N"]))))
        return [wait for _, wait in sorted(waits)]

    def drain(self, max_batches: int = 100) -> list[BatchResult]:
        """Run invocations until the queue shows no message (hidden ones stay hidden), then hand the table's
        stream over until it holds nothing new (without waiting out its batching window)."""
        done: list[BatchResult] = []
        for _ in range(max_batches):
            received = 0
            for poller in self.pollers:  # one invocation per event source in turn, as if side by side
                result = poller.poll_once()
                if result.received:
                    received += result.received
                    done.append(result)
                    self.batches.append((poller.queue_url, result))
            if received == 0:
                self.results += done
                if self.stream is not None:
                    self.stream.drain()
                return done
        raise AssertionError("the queue never drained")

    def reveal(self) -> int:
        """Let the waits the worker scheduled pass on the test's clock: run the sweeper (as the schedule would,
        now that the clock has moved), let every delayed message on the work queue be delivered now (the
        worker holds those not due yet again), and make visible again every message the worker received and
        did not delete (a failed batch, a crash). Returns how many messages were let out early."""
        self.worker.sweep()
        revealed = sum(release_delays(url) for url in self.queue_urls)
        handles = {
            message["ReceiptHandle"]
            for call in self.receives.of("ReceiveMessage")
            for message in (call.response or {}).get("Messages", [])
        }
        for handle in handles:
            for url in self.queue_urls:  # a receipt is valid on the queue it came from only
                try:
                    self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
                except ClientError:
                    continue
                revealed += 1
                break
        return revealed

    def counts(self, queue_url: str | None = None) -> tuple[int, int]:
        """(visible, waiting) messages on a queue (the work queue by default): waiting are those in flight
        (received, not deleted) and those delayed."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url or self.services.settings.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        waiting = int(attributes["ApproximateNumberOfMessagesNotVisible"]) + int(
            attributes["ApproximateNumberOfMessagesDelayed"]
        )
        return int(attributes["ApproximateNumberOfMessages"]), waiting

    def in_flight(self) -> int:
        """Messages of the work queue received and not deleted (SQS's in-flight set, capped at ~120,000)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.services.settings.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def delayed(self) -> int:
        """Messages on the work queue waiting out a DelaySeconds."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.services.settings.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesDelayed"])

    def scheduled(self) -> int:
        """Work messages waiting in the schedule (DynamoDB) for their due time."""
        return len(self.scheduled_items())

    def scheduled_items(self) -> list[dict[str, str]]:
        """The schedule's items: each work message's ``body`` (its JSON) and ``due`` time (epoch seconds, as text)."""
        table = self.services.store.table
        pages = table.client.get_paginator("scan").paginate(
            TableName=table.name,
            FilterExpression="begins_with(pk, :due)",
            ExpressionAttributeValues={":due": {"S": "DUE#"}},
        )
        return [{"body": item["body"]["S"], "due": item["due"]["N"]} for page in pages for item in page["Items"]]

    def received_counts(self) -> list[int]:
        """The ApproximateReceiveCount of every message the poller received, in order."""
        return [
            int(message["Attributes"]["ApproximateReceiveCount"])
            for call in self.receives.of("ReceiveMessage")
            for message in (call.response or {}).get("Messages", [])
            if "ApproximateReceiveCount" in message.get("Attributes", {})
        ]

    def close(self) -> None:
        self.queue_calls.close()
        self.table_calls.close()
        self.receives.close()
        settle_all([self.worker])


def take_the_only_message(harness: Harness) -> str:
    """The one message on the work queue, taken off it (no worker will see it): its body."""
    (message,) = harness.sqs.receive_message(QueueUrl=harness.services.settings.queue_url)["Messages"]
    harness.sqs.delete_message(QueueUrl=harness.services.settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert harness.counts() == (0, 0)
    return str(message["Body"])


def move_back(harness: Harness) -> None:
    """Move the dead-letter queue's one message back to the work queue as SQS's own redrive does (the console's,
    or StartMessageMoveTask): a new message with the same body, and no attribute of Herald's."""
    settings = harness.services.settings
    [message] = harness.sqs.receive_message(QueueUrl=settings.dead_letter_queue_url)["Messages"]
    harness.sqs.send_message(QueueUrl=settings.queue_url, MessageBody=message["Body"])
    harness.sqs.delete_message(QueueUrl=settings.dead_letter_queue_url, ReceiptHandle=message["ReceiptHandle"])


def step(harness: Harness, clock: Clock, seconds: float) -> None:
    """Let ``seconds`` pass: move the clock, bring back what the worker hid, and run the worker."""
    clock.advance(seconds)
    harness.reveal()
    harness.drain()


def make_harness(
    services: Services,
    session: boto3.session.Session,
    *,
    clock: Callable[[], float] = time.time,
    seed: int = 7,
    batch_size: int = 100,
    function_timeout_seconds: float = 60,
) -> Harness:
    # The table's time is the worker's: what the store decides by the time (an item expired, a lease, a lock or a
    # recovery's hold run out, a count's window over) moves with a simulated clock as the worker's own decisions do.
    services.store.table.clock = clock
    worker = Worker(services, clock=clock, rng=random.Random(seed))
    sqs = session.client("sqs")
    # Each SQS event source of the function in template.yaml (the work queue's, the slow lane's), polled by one
    # worker; the harness's batch size, timeout and no batching window apply to every source alike.
    urls = {WORK_QUEUE_ID: services.settings.queue_url, SLOW_QUEUE_ID: services.settings.slow_queue_url}
    poller, *others = [
        SqsPoller(
            sqs,
            urls[source.queue_id],
            worker.handle,
            batch_size=batch_size,
            batching_window_seconds=0,
            function_timeout_seconds=function_timeout_seconds,
        )
        for source in delivery_event_sources()
        if urls.get(source.queue_id)
    ]
    queue_calls = CallRecorder(
        services.queue.client,
        ["ChangeMessageVisibility", "SendMessage", "SendMessageBatch"],
    )
    table_calls = CallRecorder(
        services.store.client,
        ["Scan", "Query", "GetItem", "BatchGetItem", "TransactWriteItems", "PutItem", "BatchExecuteStatement"],
    )
    receives = CallRecorder(sqs, [], responses=["ReceiveMessage"])
    stream = table_stream_poller(
        services.store.client, session.client("dynamodbstreams"), services.store.table_name, worker.invoke
    )
    worker.sweep()  # the schedule runs from the moment the function exists (it sets the sweep's cursor)
    return Harness(
        services, worker, poller, sqs, clock, queue_calls, table_calls, receives, others=others, stream=stream
    )


def invoke_bodies(
    harness: Harness,
    bodies: list[str],
    *,
    timeout_seconds: float = 60,
    receive_count: int = 1,
    message_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Call the worker's handler with records carrying these bodies, as Lambda would after receiving them
    ``receive_count`` times (with these ``message_ids``, new ones by default). For messages taken from what the
    worker sent (the recorder), which never need a receipt."""
    messages: list[Any] = [
        {
            "MessageId": message_ids[index] if message_ids else f"m-{index}-{ids.new_id('msg')}",
            "ReceiptHandle": f"not-received-{index}",
            "Body": body,
            "Attributes": {
                "ApproximateReceiveCount": str(receive_count),
                "SentTimestamp": str(int(time.time() * 1000)),
            },
        }
        for index, body in enumerate(bodies)
    ]
    context: Any = LambdaContext("DeliveryFunction", timeout_seconds, time.time())
    return harness.worker.handle(sqs_event(messages, harness.poller.queue_arn), context)


# --- servers that misbehave on purpose -------------------------------------------------------------------------


class RawServer:
    """A TCP server on 127.0.0.1 that never speaks HTTP whole. ``"silent"`` accepts connections and never
    answers; ``"close"`` closes each connection as soon as it is accepted. With ``answer``, each connection's
    request is read (kept in ``received``) and ``answer`` written (an answer's head and part of its body, say)
    before the connection is held (``"silent"``) or closed (``"close"``)."""

    def __init__(self, mode: str, answer: bytes = b"") -> None:
        assert mode in ("silent", "close")
        self.mode = mode
        self.answer = answer
        self.accepted = 0
        self.received: list[Received] = []
        self._held: list[socket.socket] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/webhook"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.answer:
                self._answer(conn)
            if self.mode == "close":
                conn.close()
            else:
                self._held.append(conn)

    def _answer(self, conn: socket.socket) -> None:
        """Read one request (its head, and its body by its Content-Length), then write ``answer``."""
        conn.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = (line.partition(b":") for line in head.split(b"\r\n")[1:])
            length = next((int(value) for name, _, value in lines if name.strip().lower() == b"content-length"), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            fields = (line.decode().partition(":") for line in head.split(b"\r\n")[1:])
            headers = {name.strip().lower(): value.strip() for name, _, value in fields}
            self.received.append(Received(target, headers, body))
            conn.sendall(self.answer)
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self._sock.close()


def closed_port_url() -> str:
    """A URL on a 127.0.0.1 port nobody listens on (the connection is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/webhook"


class ConcurrencyProbe:
    """An HTTP server on 127.0.0.1 that answers 200 only once ``expected`` requests are in flight at the
    same time (500 if they never are within ``patience`` seconds): proof that a batch is sent
    concurrently, without timing anything."""

    def __init__(self, expected: int, patience: float = 4.0) -> None:
        self.expected = expected
        self.in_flight = 0
        self.most_in_flight = 0
        self.paths: list[str] = []
        self._all_in = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                with outer._lock:
                    outer.paths.append(self.path)
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                    if outer.in_flight >= outer.expected:
                        outer._all_in.set()
                ok = outer._all_in.wait(patience)
                with outer._lock:
                    outer.in_flight -= 1
                self.answer(200 if ok else 500)

        self.http = LoopbackServer(Handler)

    def url(self, name: str) -> str:
        return self.http.url(f"/{name}")

    def close(self) -> None:
        self.http.close()


# --- bulk data straight through the Store ----------------------------------------------------------------------


def bulk_subscriptions(
    store: Store, tenant_id: str, url: str, count: int, event_types: Iterable[str] = ("invoice.paid",)
) -> list[Subscription]:
    now = datetime.now(UTC)
    subs = [
        Subscription(
            id=ids.new_id(ids.SUBSCRIPTION),
            tenant_id=tenant_id,
            url=url,
            event_types=list(event_types),
            secrets=[SigningSecret(secret=ids.new_signing_secret(), created_at=now)],
            created_at=now,
            updated_at=now,
        )
        for _ in range(count)
    ]
    store.subscriptions.import_many(subs)
    return subs


# --- a worker process to kill ------------------------------------------------------------------------------------


def worker_process_main() -> None:
    """Poll the work queue forever, like one Lambda container (run in a child process by the crash test;
    it reads the same HERALD_* and AWS_* environment a deployed function does)."""
    from herald.services import Services

    services = Services.create()
    worker = Worker(services)
    import boto3

    poller = SqsPoller(
        boto3.session.Session().client("sqs"),
        services.settings.queue_url,
        worker.handle,
        batch_size=int(os.environ.get("TEST_BATCH_SIZE", "10")),
        batching_window_seconds=0,
        function_timeout_seconds=float(os.environ.get("TEST_FUNCTION_TIMEOUT", "60")),
    )
    while True:
        poller.poll_once(wait_seconds=1)
