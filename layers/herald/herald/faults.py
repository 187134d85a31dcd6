"""Faults on purpose: AWS errors, timeouts and latency injected into Herald's own boto3 clients.

Off unless ``HERALD_FAULTS`` holds a spec (tests, ``make run``; never a deployment). A spec is a list of
rules separated by commas or semicolons, plus an optional ``seed=N`` (default 0)::

    dynamodb:throttle=0.05, sqs.SendMessageBatch:partial=0.02, sqs.Send*:5xx@call=0.02,
    secretsmanager:5xx@call=calls:1-20, dynamodb:latency+30ms=0.1, seed=7

A rule is ``service[.Operation]:fault[@stage]=when``: ``service`` is ``dynamodb``, ``sqs``,
``secretsmanager`` or ``*``; ``Operation`` a botocore operation name (``PutItem``), a trailing ``*``
matching any continuation; ``when`` a probability per call (seeded), ``calls:A-B`` (the rule's A-th
to B-th matching calls, from 1) or ``secs:A-B`` (between A and B seconds after the client was made).

Faults, each answered exactly as AWS answers it (status, ``__type``, headers, body), so that botocore
parses it, retries it and raises it as it would from AWS:

- ``throttle``: DynamoDB ``ProvisionedThroughputExceededException`` or ``ThrottlingException`` (both
  400, what an on-demand table answers), SQS ``RequestThrottled``, Secrets Manager ``ThrottlingException``.
- ``5xx``: DynamoDB ``InternalServerError``, SQS ``InternalFailure``, Secrets Manager
  ``InternalServiceError`` (500).
- ``timeout``: botocore's ``ReadTimeoutError``: the request never reached the service.
- ``conflict``: DynamoDB writes only; ``TransactionCanceledException`` with a ``TransactionConflict``
  reason for TransactWriteItems, ``TransactionConflictException`` for a single-item write. What moto
  never gives, since it runs one request at a time.
- ``invalid``: DynamoDB writes only; the refusal of a write malformed for its items (an item over 400 KB):
  ``TransactionCanceledException`` with a ``ValidationError`` reason for TransactWriteItems, ``ValidationException``
  for a single-item write. Neither is retried, by botocore or by Herald: the same request is refused again.
- ``partial``: SQS batch entries (SendMessageBatch, DeleteMessageBatch, ChangeMessageVisibilityBatch) in
  ``Failed`` / BatchWriteItem requests in ``UnprocessedItems`` /
  BatchExecuteStatement statements answered ``ThrottlingError`` in their place in ``Responses`` (when the
  rule fires, each entry of a batch of two or more fails with probability 1/2, at least one failed and one
  kept): those entries are neither sent nor written nor run.
- ``lost``: the request is carried out, and its answer is lost on the way back. At call level the caller gets
  a ``ReadTimeoutError``; at send level (``lost@send``) botocore, seeing the lost answer, sends the request
  again, as it does after a read timeout, and the caller gets the second answer (a write made twice, unless
  the write tells its own resend from another's).
- ``latency+<N>ms``: the call waits N ms longer.

Stages. ``@send`` (the default for throttle, 5xx, timeout, conflict, invalid and latency) answers one HTTP
attempt: botocore's retry handler sees the fault and retries it under the client's retry mode, so a
call fails only when every attempt drew a fault, as with AWS. ``@call`` answers the call as its caller
sees it, before retries (an error after botocore gave up): what Herald's own code must handle.
``partial`` is always call-level (botocore never retries a partial batch); ``lost`` is call-level unless
``@send`` says otherwise, and then loses one answer per call at most (the resend's answer arrives).

Every injected fault is logged (``fault injected: <service>.<Operation> <fault>@<stage>``, at INFO) and
counted (``FaultInjector.injected``) with the keys it touched and the attribute
names of each item its call wrote whole, so a test can tie what it sees (a duplicate, a 503) to a fault
and tell one kind of write from another. ``suspended()`` turns every injector off for a while (a test's
own reads). Draws come from one seeded generator per client: the same calls in the same order give the
same faults.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import random
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.parsers import create_parser

from herald.fault_responses import error_body, response

logger = logging.getLogger(__name__)

#: The chaos tests' and benchmark's mix: 5 % of DynamoDB attempts throttled (botocore retries them) and 1 %
#: of calls throttled after the retries, conflicts on 0.5 % of writes, 2 % of SQS sends failed whole after
#: the retries and 2 % of SendMessageBatch calls failed in part, 2 % of SQS attempts throttled, and 2 % of
#: DynamoDB's and SQS's answers lost (botocore sends the request again).
CHAOS_MIX = (
    "dynamodb:throttle=0.05, dynamodb:throttle@call=0.01, dynamodb:conflict@call=0.005, "
    "sqs.Send*:5xx@call=0.02, sqs.SendMessageBatch:partial=0.02, sqs:throttle=0.02, "
    "dynamodb:lost@send=0.02, sqs:lost@send=0.02"
)
SERVICES = ("dynamodb", "sqs", "secretsmanager")
FAULTS = ("throttle", "5xx", "timeout", "conflict", "invalid", "partial", "lost", "latency")
CALL_ONLY = frozenset({"partial"})
#: Faults answered at call level unless the rule says ``@send``.
CALL_BY_DEFAULT = frozenset({"partial", "lost"})
#: Where an answered fault points the request, so that an in-process stub of AWS (moto's ``mock_aws``,
#: itself a ``before-send`` handler) does not carry out a request AWS would have refused.
_NOWHERE = "https://faults.herald.invalid/"
_RULE = re.compile(
    r"^(?P<service>[a-z*]+)(?:\.(?P<operation>[A-Za-z*]+))?:(?P<fault>[a-z0-9]+)"
    r"(?:\+(?P<ms>\d+)ms)?(?:@(?P<stage>send|call))?=(?P<when>.+)$"
)
_DDB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")
#: The calls whose entries can fail one by one (``partial``).
#: SQS's batch calls: each answers an entry it did not carry out in ``Failed``.
_SQS_BATCHES = ("SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
_BATCHES = (*_SQS_BATCHES, "BatchWriteItem", "BatchExecuteStatement")
#: What DynamoDB answers in the place of a statement of a batch it throttled.
_THROTTLED_STATEMENT = {
    "Code": "ThrottlingError",
    "Message": "Throughput exceeds the current capacity of your table or index.",
}


class FaultSpecError(ValueError):
    """A ``HERALD_FAULTS`` spec that cannot be read."""


@dataclass(frozen=True)
class Rule:
    """One line of a spec: which calls, which fault, at which stage, and when."""

    service: str
    operation: str
    fault: str
    stage: str
    probability: float = 0.0
    calls: tuple[int, int] | None = None
    seconds: tuple[float, float] | None = None
    latency_ms: int = 0

    def matches(self, service: str, operation: str) -> bool:
        if self.service not in ("*", service):
            return False
        if self.fault in ("conflict", "invalid") and (service != "dynamodb" or operation not in _DDB_WRITES):
            return False
        if self.fault == "partial" and operation not in _BATCHES:
            return False
        return fnmatch.fnmatchcase(operation, self.operation)


@dataclass(frozen=True)
class FaultSpec:
    rules: tuple[Rule, ...] = ()
    seed: int = 0

    def __bool__(self) -> bool:
        return bool(self.rules)


def _span(text: str, kind: type[int] | type[float], part: str) -> tuple[Any, Any]:
    low, _, high = text.partition("-")
    try:
        start, end = kind(low), kind(high or low)
    except ValueError as exc:
        raise FaultSpecError(f"not a range A-B: {part!r}") from exc
    if start < 0 or end < start:
        raise FaultSpecError(f"not a range A-B: {part!r}")
    return start, end


def parse_spec(text: str) -> FaultSpec:
    """Read a ``HERALD_FAULTS`` spec (see the module's docstring); an empty one turns nothing on."""
    rules: list[Rule] = []
    seed = 0
    for part in filter(None, re.split(r"[,;\s]+", text)):
        if part.startswith("seed="):
            try:
                seed = int(part.removeprefix("seed="))
            except ValueError as exc:
                raise FaultSpecError(f"seed must be an integer: {part!r}") from exc
            continue
        found = _RULE.match(part)
        if not found:
            raise FaultSpecError(f"not a fault rule (service[.Operation]:fault[@stage]=when): {part!r}")
        service, fault, when = found["service"], found["fault"], found["when"]
        if service != "*" and service not in SERVICES:
            raise FaultSpecError(f"unknown service {service!r} in {part!r}: one of {', '.join(SERVICES)} or *")
        if fault not in FAULTS:
            raise FaultSpecError(f"unknown fault {fault!r} in {part!r}: one of {', '.join(FAULTS)}")
        if (fault == "latency") != (found["ms"] is not None):
            raise FaultSpecError(f"latency takes its size (latency+30ms), other faults none: {part!r}")
        default = "call" if fault in CALL_BY_DEFAULT else "send"
        stage = "call" if fault in CALL_ONLY else found["stage"] or default
        values: dict[str, Any] = {}
        if when.startswith("calls:"):
            values["calls"] = _span(when.removeprefix("calls:"), int, part)
        elif when.startswith("secs:"):
            values["seconds"] = _span(when.removeprefix("secs:"), float, part)
        else:
            try:
                values["probability"] = float(when)
            except ValueError as exc:
                raise FaultSpecError(f"when must be a probability, calls:A-B or secs:A-B: {part!r}") from exc
            if not 0 <= values["probability"] <= 1:
                raise FaultSpecError(f"a probability is between 0 and 1: {part!r}")
        operation = found["operation"] or "*"
        rules.append(Rule(service, operation, fault, stage, latency_ms=int(found["ms"] or 0), **values))
    return FaultSpec(tuple(rules), seed)


def key_label(pk: str, sk: str) -> str:
    """How an item's key is named in ``Injected.keys``: its ``pk``, but for an item of a partition that many
    deliveries share (a subscription's), ``pk/sk``."""
    return f"{pk}/{sk}" if pk.startswith("DELIVERIES#") else pk  # ``storage.keys.deliveries_partition``


def _keys_of(params: dict[str, Any]) -> list[str]:
    """The keys a call touches (``key_label``; and queue message bodies' first 200 characters), for accounting."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "Statement" in value:
                walk(_statement_item(value))
                return
            pk, sk = value.get("pk"), value.get("sk")
            if isinstance(pk, dict) and isinstance(pk.get("S"), str):
                found.append(key_label(pk["S"], sk.get("S", "") if isinstance(sk, dict) else ""))
            for key, item in value.items():
                if key == "MessageBody" and isinstance(item, str):
                    found.append(item[:200])
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(params)
    return found


def _written_of(params: dict[str, Any]) -> list[frozenset[str]]:
    """The attribute names of each item a call writes whole (an ``Item``: PutItem's, a transaction's ``Put``,
    a batch's ``PutRequest``), for accounting; none for reads, updates and deletes."""
    found: list[frozenset[str]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "Statement" in value:
                inserted = _statement_item(value)
                if inserted:
                    found.append(frozenset(inserted))
                return
            for key, item in value.items():
                if key == "Item" and isinstance(item, dict):
                    found.append(frozenset(item))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(params)
    return found


def _statement_item(statement: dict[str, Any]) -> dict[str, Any]:
    """The item a PartiQL INSERT of Herald's writes (``herald.storage.table.insert_statement``); {} for another."""
    from herald.storage.table import inserted_item

    inserted = inserted_item(statement)
    return inserted[1] if inserted is not None else {}


@dataclass(frozen=True)
class Injected:
    """One fault that was injected: where, what, the keys of the call it hit, and the attribute names of each
    item that call wrote whole (``written``)."""

    service: str
    operation: str
    fault: str
    stage: str
    keys: tuple[str, ...]
    written: tuple[frozenset[str], ...] = ()


_SUSPENDED = threading.Event()
_INJECTORS: weakref.WeakKeyDictionary[Any, FaultInjector] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """No fault anywhere while inside (a test's own reads). Not reentrant across threads: one at a time."""
    _SUSPENDED.set()
    try:
        yield
    finally:
        _SUSPENDED.clear()


def injector_of(client: Any) -> FaultInjector | None:
    """The injector on this client, if it has one."""
    return _INJECTORS.get(client)


@dataclass(eq=False)
class FaultInjector:
    """The hooks on one client's event system. Build with :func:`install`."""

    service: str
    spec: FaultSpec
    sleep: Callable[[float], None] = time.sleep
    started: float = field(default_factory=time.monotonic)
    injected: list[Injected] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.spec.seed}:{self.service}")  # noqa: S311 - reproducible draws
        self._lock = threading.Lock()
        self._calls: Counter[Rule] = Counter()
        self._local = threading.local()

    def count(self, fault: str | None = None, *, stage: str | None = None) -> int:
        with self._lock:
            return sum(1 for hit in self.injected if fault in (None, hit.fault) and stage in (None, hit.stage))

    def _draw(self, operation: str, stage: str, *, answered: bool = False) -> list[Rule]:
        """The rules that fire for this call (or attempt) at ``stage``; each rule counts its calls. At send
        level, ``answered`` draws the rules that lose an answer (``lost@send``), else those that answer in its
        place."""
        if _SUSPENDED.is_set():
            return []
        fired = []
        elapsed = time.monotonic() - self.started
        with self._lock:
            for rule in self.spec.rules:
                if rule.stage != stage or not rule.matches(self.service, operation):
                    continue
                if stage == "send" and (rule.fault == "lost") != answered:
                    continue
                self._calls[rule] += 1
                if rule.calls is not None:
                    hit = rule.calls[0] <= self._calls[rule] <= rule.calls[1]
                elif rule.seconds is not None:
                    hit = rule.seconds[0] <= elapsed < rule.seconds[1]
                else:
                    hit = self._rng.random() < rule.probability
                if hit:
                    fired.append(rule)
        return fired

    def _note(self, operation: str, rule: Rule, keys: list[str], written: list[frozenset[str]]) -> None:
        with self._lock:
            self.injected.append(Injected(self.service, operation, rule.fault, rule.stage, tuple(keys), tuple(written)))
        # One line per fault (at INFO: ``make run`` shows them), so that what a run saw can be tied to a fault.
        logger.info("fault injected: %s.%s %s@%s", self.service, operation, rule.fault, rule.stage)

    def _current_keys(self) -> list[str]:
        call = getattr(self._local, "call", None)
        return list(call[1]) if call else []

    def _current_written(self) -> list[frozenset[str]]:
        call = getattr(self._local, "call", None)
        return list(call[3]) if call else []

    def _actions(self) -> int:
        """How many actions the current call's transaction has (one cancellation reason each)."""
        call = getattr(self._local, "call", None)
        return int(call[2]) if call else 1

    # --- hooks ---------------------------------------------------------------------------------------

    def before_parameter_build(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        """Remember the call (for the send stage, which sees only the request) and drop a partial batch's entries."""
        actions = max(1, len(params.get("TransactItems", [])))
        self._local.call = (model.name, _keys_of(params), actions, _written_of(params))
        for rule in self._draw(model.name, "call"):
            context.setdefault("herald_faults", []).append(rule)
        for rule in [rule for rule in context.get("herald_faults", []) if rule.fault == "partial"]:
            self._drop_entries(model.name, params, rule, context)

    def _drop_entries(self, operation: str, params: dict[str, Any], rule: Rule, context: dict[str, Any]) -> None:
        """Send only some entries of a batch (new lists: the caller's own stay as they are)."""
        if operation in _SQS_BATCHES:
            entries = list(params.get("Entries", []))
        elif operation == "BatchExecuteStatement":
            entries = list(params.get("Statements", []))
        else:
            ((table, requests),) = params.get("RequestItems", {}).items()
            context["herald_table"], entries = table, list(requests)
        if len(entries) < 2:
            return  # a batch of one fails whole or not at all
        with self._lock:
            positions = [index for index in range(len(entries)) if self._rng.random() < 0.5]
            positions = positions or [self._rng.randrange(len(entries))]
        if len(positions) == len(entries):
            positions = positions[1:]  # a partial failure keeps at least one entry
        dropped = [entries[index] for index in positions]
        kept = [entry for index, entry in enumerate(entries) if index not in positions]
        if operation in _SQS_BATCHES:
            params["Entries"] = kept
        elif operation == "BatchExecuteStatement":
            params["Statements"] = kept
            context["herald_positions"] = (len(entries), positions)
        else:
            params["RequestItems"] = {context["herald_table"]: kept}
        context["herald_dropped"] = dropped
        self._note(operation, rule, _keys_of({"x": dropped}), _written_of({"x": dropped}))

    def before_call(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        """Call-level faults: an answer as if botocore had given up retrying."""
        for rule in context.get("herald_faults", []):
            keys, written = self._current_keys(), self._current_written()
            if rule.fault == "latency":
                self._note(model.name, rule, keys, written)
                self.sleep(rule.latency_ms / 1000)
            elif rule.fault == "timeout":
                self._note(model.name, rule, keys, written)
                raise ReadTimeoutError(endpoint_url=_NOWHERE)
            elif rule.fault not in ("partial", "lost"):  # carried out, then answered in part or lost (after_call)
                self._note(model.name, rule, keys, written)
                return self._parsed_error(model, rule.fault)
        return None

    def _parsed_error(self, model: Any, fault: str) -> tuple[AWSResponse, dict[str, Any]]:
        """The error as botocore's endpoint hands it over after parsing (its modeled fields included)."""
        with self._lock:
            status, headers, body = error_body(self.service, model.name, fault, self._rng, self._actions())
        http = response(_NOWHERE, status, headers, body)
        raw = {"status_code": status, "headers": http.headers, "body": body}
        parser = create_parser(model.metadata["protocol"])
        parsed: dict[str, Any] = parser.parse(raw, model.output_shape)
        error_shape = model.service_model.shape_for_error_code(parsed["Error"]["Code"])
        if error_shape is not None:
            parsed.update(parser.parse(raw, error_shape))
        parsed.setdefault("ResponseMetadata", {}).update(
            HTTPStatusCode=status, HTTPHeaders=dict(http.headers), RetryAttempts=0
        )
        return http, parsed

    def before_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        """Send-level faults: one HTTP attempt's answer, seen by botocore's retry handler."""
        operation = event_name.rsplit(".", 1)[-1]
        keys, written = self._current_keys(), self._current_written()
        for rule in self._draw(operation, "send"):
            self._note(operation, rule, keys, written)
            if rule.fault == "latency":
                self.sleep(rule.latency_ms / 1000)
                continue
            request.url = _NOWHERE  # never carried out (see _NOWHERE)
            if rule.fault == "timeout":
                raise ReadTimeoutError(endpoint_url=_NOWHERE)
            with self._lock:
                status, headers, body = error_body(self.service, operation, rule.fault, self._rng, self._actions())
            return response(_NOWHERE, status, headers, body)
        return None

    def needs_retry(
        self, response: Any, operation: Any, caught_exception: Any, request_dict: dict[str, Any], **_: Any
    ) -> float | None:
        """Send-level ``lost``: the attempt was carried out and answered, and the answer is lost. Botocore is told
        to send the request again at once (what its retry handler does after a read timeout), once per call. An
        answer this injector gave in the service's place (``before_send``) was never carried out: not drawn. A
        ``calls:A-B`` window of a ``lost@send`` rule counts only attempts the service answered."""
        context = request_dict.get("context", {})
        if response is None or caught_exception is not None or context.get("herald_lost"):
            return None
        if getattr(response[0], "url", None) == _NOWHERE:
            return None
        fired = self._draw(operation.name, "send", answered=True)
        if not fired:
            return None
        context["herald_lost"] = True
        self._note(operation.name, fired[0], self._current_keys(), self._current_written())
        return 0

    def after_call(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        """Report a partial batch's dropped entries as AWS does, and lose the answer of a ``lost`` call."""
        if http_response is None or http_response.status_code >= 300:
            return
        dropped = context.get("herald_dropped")
        if dropped and model.name in _SQS_BATCHES:
            parsed.setdefault("Failed", []).extend(
                {"Id": entry["Id"], "SenderFault": False, "Code": "InternalError", "Message": "Internal error"}
                for entry in dropped
            )
        elif dropped and model.name == "BatchExecuteStatement":
            # Each statement's answer is in its place: the throttled ones go back where they were.
            total, positions = context["herald_positions"]
            answers = iter(parsed.get("Responses", []))
            parsed["Responses"] = [
                {"Error": dict(_THROTTLED_STATEMENT)} if index in positions else next(answers) for index in range(total)
            ]
        elif dropped:
            parsed.setdefault("UnprocessedItems", {}).setdefault(context["herald_table"], []).extend(dropped)
        for rule in context.get("herald_faults", []):
            if rule.fault == "lost":
                self._note(model.name, rule, self._current_keys(), self._current_written())
                raise ReadTimeoutError(endpoint_url=_NOWHERE)


def install(client: Any, spec: FaultSpec | str, *, sleep: Callable[[float], None] = time.sleep) -> FaultInjector | None:
    """Put the fault hooks on ``client`` (a boto3 client); None, and nothing installed, for an empty spec."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if not spec:
        return None
    model = client.meta.service_model
    service = model.service_name
    injector = FaultInjector(service, spec, sleep=sleep)
    service_id = model.service_id.hyphenize()
    events = client.meta.events
    events.register_first(f"before-parameter-build.{service_id}", injector.before_parameter_build)
    events.register_first(f"before-call.{service_id}", injector.before_call)
    events.register_first(f"before-send.{service_id}", injector.before_send)
    events.register_first(f"after-call.{service_id}", injector.after_call)
    events.register_first(f"needs-retry.{service_id}", injector.needs_retry)
    _INJECTORS[client] = injector
    return injector
