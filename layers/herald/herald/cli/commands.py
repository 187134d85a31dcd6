"""The ``herald`` command's handlers, one per sub-command (the parser is ``herald.cli.parser``, the entry point
``herald.cli.main``), and its exit codes.

Exit codes: 0 done, 1 the API (or the way to it) said no, 2 the command line is wrong, 130 interrupted (Ctrl-C),
141 the output's reader went away (``herald tenants list | head -1``: nothing more is written, as when a
command dies of SIGPIPE). Errors are printed as ``error: <code>: <message>`` on stderr, with the API's own code;
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from herald.cli.admin_key import rotate_admin_key
from herald.cli.answers import COUNT, JOB, OBJECT, OBJECTS, PAGE, STRINGS, TEXT, checked, invalid_response
from herald.cli.client import ApiClient
from herald.cli.config import (
    DEFAULT_STACK_NAME,
    STACK_NAME_ENV,
)
from herald.cli.errors import CliApiError, CliConnectionError, CliError
from herald.cli.output import columns_of, detail_lines, printable, record, table
from herald.ids import (
    EVENT_ID_RULE,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    OPERATIONAL_EVENT_PREFIX,
    STORED_EVENT_ID_PATTERN,
    is_idempotency_key,
)

if TYPE_CHECKING:
    import boto3

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE, what a shell reports for a command that died writing to a closed pipe.
EXIT_BROKEN_PIPE = 141

#: Page size the API allows at most.
MAX_PAGE = 250
#: The recovery job state after which ``--wait`` stops polling (before it: ``queued``, ``running``).
FINISHED_STATE = "done"
DEFAULT_POLL_SECONDS = 2.0

TENANT_COLUMNS = ("id", "name", "created_at")
SUBSCRIPTION_COLUMNS = ("id", "url", "event_types", "enabled", "disabled_reason", "rate_limit", "created_at")
DELIVERY_COLUMNS = (
    "id",
    "event_id",
    "event_type",
    "status",
    "attempts",
    "last_status_code",
    "last_error_kind",
    "next_attempt_at",
    "updated_at",
)
DEAD_LETTER_COLUMNS = (
    "message_id",
    "kind",
    "reason",
    "poison",
    "event_id",
    "subscription_id",
    "receive_count",
    "redrives",
    "sent_at",
)
DEAD_LETTER_SUMMARY = ("count", "in_flight", "oldest_sent_at", "oldest_age_seconds")
#: Most dead-lettered messages the API shows at once.
MAX_DEAD_LETTER_SAMPLE = 50
#: Messages a redrive moves when no ``--limit`` is given (the API's default), and the most it takes.
DEFAULT_REDRIVE_LIMIT = 100
MAX_REDRIVE_LIMIT = 10_000
#: Poison messages a discard of ``--all-poison`` deletes when no ``--limit`` is given (the API's default), and the
#: most it takes; the most message ids one discard names.
DEFAULT_DISCARD_LIMIT = 100
MAX_DISCARD_LIMIT = 1000
MAX_DISCARD_IDS = 100


@dataclass(frozen=True)
class Shown:
    """What a command answers: the API's JSON (``--json``) and its table for people."""

    value: Any
    text: str
    note: str | None = None
    #: On stderr with ``--json`` too: what a script must not miss (events refused, messages left behind).
    warning: str | None = None
    exit_code: int = EXIT_OK


Handler = Callable[[ApiClient, argparse.Namespace], Shown]
#: A command that works on the stack's AWS resources rather than through the API.
AwsHandler = Callable[["boto3.session.Session", argparse.Namespace], Shown]


# ---------------------------------------------------------------------------------------------- helpers


#: Ids that percent-encoding leaves as they are and that a URL resolves: ``..`` would climb out of the path.
NOT_IDS = frozenset({"", ".", ".."})


def path_id(text: str) -> str:
    """An id that goes in an API path: anything but empty, ``.`` or ``..`` (which would change the path)."""
    if text in NOT_IDS:
        raise argparse.ArgumentTypeError(f"not an id: {text!r}")
    return text


def _path(*parts: str) -> str:
    """An API path with each caller-given part percent-encoded (ids never reshape the path)."""
    for part in parts[1:]:
        if part in NOT_IDS:
            raise CliError(f"not an id: {part!r}", code="invalid_id")
    return "/".join(quote(part, safe="") if index else part for index, part in enumerate(parts))


def _page_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"limit": args.limit, "iterator": args.iterator}


def _list(client: ApiClient, path: str, args: argparse.Namespace, params: Mapping[str, Any] | None = None) -> Any:
    """One page, or with ``--all`` every page merged into one (``iterator`` null, ``done`` true)."""
    query = {**(params or {}), **_page_params(args)}
    page = client.get(path, params=query)
    if not args.all:
        return page
    items = _items(page)
    followed: set[str] = set()
    while not page.get("done", True) and page.get("iterator"):
        iterator = str(page["iterator"])
        if iterator in followed:
            # An API that hands an iterator back again would be followed for ever: what it answered so far is no list.
            raise invalid_response(f"the API answered iterator {iterator!r} twice: stopped")
        followed.add(iterator)
        page = client.get(path, params={**query, "iterator": iterator})
        items.extend(_items(page))
    return {"data": items, "iterator": None, "done": True}


def _items(answer: Any) -> list[Mapping[str, Any]]:
    """The ``data`` of a page or of a batch's answer: a list of objects, else ``invalid_response`` (an empty
    answer, another service at the URL), never a traceback."""
    return list(checked(answer, PAGE, required=["data"])["data"])


def _listing(page: Any, columns: Sequence[str], empty: str) -> Shown:
    rows = _items(page)
    note = None
    if not page.get("done", True) and page.get("iterator"):
        note = f"more: add --iterator {printable(str(page['iterator']))} (or --all)"
    text = table(rows, columns_of(rows, columns)) if rows else empty
    return Shown(page, text, note)


def _record(
    value: Mapping[str, Any], fields: Sequence[str] | None = None, note: str | None = None, warning: str | None = None
) -> Shown:
    """An answer ``checked`` (or an object of the command's own) as a FIELD / VALUE table."""
    return Shown(value, record(value, fields), note, warning)


def timestamp(text: str) -> str:
    """``--since`` / ``--until``: an ISO 8601 time as the API wants it; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-01-31T12:00:00Z)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def json_object(text: str) -> dict[str, Any]:
    """``--data``: a JSON object as text, ``@file`` to read it from a file, or ``@-`` from stdin."""
    if text.startswith("@"):
        source = text[1:]
        try:
            # utf-8-sig: a byte order mark (Notepad, PowerShell 5) is no JSON; stdin too is read as UTF-8.
            text = _stdin_text() if source == "-" else Path(source).read_bytes().decode("utf-8-sig")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {source}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{source} is not UTF-8 text (byte {exc.start + 1})") from exc
    try:
        value = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nested deeper than Python's parser goes (nor the API's)
        raise argparse.ArgumentTypeError("nested too deeply to be read") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    bad = _not_unicode(value)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"not valid Unicode text: {bad}")
    return value


#: Half of a UTF-16 surrogate pair, which is no character: text holding one has no UTF-8 (the body the API is sent).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_unicode(value: Any) -> str | None:
    """What in a JSON value is not Unicode text, if anything: a string or key holding a lone surrogate (a JSON
    ``\\ud800`` escape without its pair, or command-line bytes that are not UTF-8), named by its dotted place.
    Iterative: as deep a value as ``json.loads`` reads is walked."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        where, item = pending.pop()
        place = printable(where) if where else "the top level"
        if isinstance(item, str) and (found := _SURROGATE.search(item)):
            return f"the text at {place} holds {_escape(found.group())}"
        if isinstance(item, dict):
            for key in item:
                if found := _SURROGATE.search(key):
                    return f"a key at {place} holds {_escape(found.group())}"
            children = [(f"{where}.{key}" if where else key, child) for key, child in item.items()]
            pending.extend(reversed(children))
        elif isinstance(item, list):
            children = [(f"{where}.{index}" if where else str(index), child) for index, child in enumerate(item)]
            pending.extend(reversed(children))
    return None


def _escape(surrogate: str) -> str:
    return f"\\u{ord(surrogate):04x}, half of a surrogate pair and no character"


def _stdin_text() -> str:
    """Standard input as UTF-8 text, a byte order mark dropped; read as text where it has no bytes beneath (a
    stream put in its place)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin.read().removeprefix("\ufeff")
    return str(buffer.read().decode("utf-8-sig"))


def _not_a_number(name: str) -> float:
    """JSON has no NaN or Infinity (Python's json reads them): the API could never be sent them."""
    raise argparse.ArgumentTypeError(f"not valid JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not valid JSON: {text} is too large for a number")
    return value


def idempotency_key(text: str) -> str:
    """``--idempotency-key``: what the API takes, 1 to 255 printable ASCII characters, no space."""
    if not is_idempotency_key(text):
        raise argparse.ArgumentTypeError(
            f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters without spaces, not {text!a}"
        )
    return text


def event_id(text: str) -> str:
    """``--id``: an id the API may take for a caller's event, 1 to 128 letters, digits and ``_ : -`` (never dropped
    when empty: an id makes a publish safe to send again). One with a ``.`` is left to the API, which takes it only to
    repeat the publish of an event stored under it before dots were refused."""
    if not STORED_EVENT_ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{EVENT_ID_RULE}, not {text!a}")
    if text.startswith(OPERATIONAL_EVENT_PREFIX):
        raise argparse.ArgumentTypeError(f"event ids starting with {OPERATIONAL_EVENT_PREFIX} are Herald's own")
    return text


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, not {text!r}")
    return key, value


# ---------------------------------------------------------------------------------------------- tenants


def tenants_create(client: ApiClient, args: argparse.Namespace) -> Shown:
    body = {"name": args.name, "metadata": dict(args.metadata or ())}
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    # With an Idempotency-Key the API answers a repeat with the tenant the first request made: safe to send again
    # after a 429/503.
    answer = client.post("/v1/tenants", body=body, headers=headers, repeatable=headers is not None)
    created = checked(answer, metadata=OBJECT)
    shown = [f"metadata.{key}" for key in created.get("metadata") or {}]
    if client.last_headers.get("Idempotent-Replayed") == "true":
        # On stderr with --json too: a script told "created" must be able to tell that nothing new was.
        tenant_id = printable(str(created.get("id")))
        warning = (
            "created before with this key (by an earlier try of this command, or another): this is that tenant, not "
            "a new one; its API key was in that request's answer only "
            f"(another: herald tenants issue-key {tenant_id} --revoke-existing)"
        )
        return _record(created, ["id", "name", *shown, "created_at"], warning=warning)
    fields = ["id", "name", *shown, "created_at", "api_key.id", "api_key.prefix", "api_key.key"]
    return _record(created, fields, note="the API key is shown only once: hand it to the tenant now")


def tenants_list(client: ApiClient, args: argparse.Namespace) -> Shown:
    return _listing(_list(client, "/v1/tenants", args), TENANT_COLUMNS, "no tenants")


def tenants_issue_key(client: ApiClient, args: argparse.Namespace) -> Shown:
    body = {"revoke_existing": args.revoke_existing}
    key = checked(client.post(_path("/v1/tenants", args.tenant_id, "api-keys"), body=body))
    note = "the API key is shown only once: hand it to the tenant now"
    if args.revoke_existing:
        note += "; the tenant's other keys are revoked"
    return _record(key, ["id", "tenant_id", "prefix", "created_at", "key"], note=note)


def tenants_portal_link(client: ApiClient, args: argparse.Namespace) -> Shown:
    body = {"capability": args.capability, "expires_in_minutes": args.expires_in}
    link = checked(client.post(_path("/v1/tenants", args.tenant_id, "portal-sessions"), body=body))
    fields = ["url", "tenant_id", "capability", "expires_at", "session_minutes"]
    return _record(link, fields, note="the link works once, until expires_at: send it to the tenant now")


# ---------------------------------------------------------------------------------------------- subscriptions


def _tenant_param(args: argparse.Namespace) -> dict[str, Any]:
    """The tenant the operator acts for (``--tenant``); a tenant key needs none."""
    return {"tenant_id": args.tenant} if getattr(args, "tenant", None) else {}


def subscriptions_list(client: ApiClient, args: argparse.Namespace) -> Shown:
    page = _list(client, "/v1/subscriptions", args, _tenant_param(args))
    return _listing(page, SUBSCRIPTION_COLUMNS, "no subscriptions")


def subscriptions_show(client: ApiClient, args: argparse.Namespace) -> Shown:
    """One subscription, its delivery options included (the API masks sensitive header values)."""
    subscription = client.get(_path("/v1/subscriptions", args.subscription_id), params=_tenant_param(args))
    return _record(checked(subscription))


def _set_enabled(client: ApiClient, args: argparse.Namespace, enabled: bool) -> Shown:
    updated = client.request(
        "PATCH",
        _path("/v1/subscriptions", args.subscription_id),
        params=_tenant_param(args),
        body={"enabled": enabled},
        repeatable=True,  # sets a value: the same again changes nothing
    )
    return _record(checked(updated), ["id", "url", "enabled", "disabled_reason", "updated_at"])


def subscriptions_disable(client: ApiClient, args: argparse.Namespace) -> Shown:
    return _set_enabled(client, args, enabled=False)


def subscriptions_enable(client: ApiClient, args: argparse.Namespace) -> Shown:
    return _set_enabled(client, args, enabled=True)


# ---------------------------------------------------------------------------------------------- events

EVENT_FIELDS = (
    "id",
    "type",
    "tenant_id",
    "broadcast",
    "timestamp",
    "created_at",
    "deliveries.matched",
    "deliveries.pending",
    "deliveries.succeeded",
    "deliveries.failed",
    "deliveries.filtered",
    "deliveries.fanout_complete",
)


def events_publish(client: ApiClient, args: argparse.Namespace) -> Shown:
    body: dict[str, Any] = {"type": args.type, "data": args.data}
    if args.broadcast:
        body["broadcast"] = True
    else:
        body["tenant_id"] = args.tenant
    if args.id is not None:
        body["id"] = args.id
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    # With an id or an Idempotency-Key the API answers a repeat with the first event: safe to send again after a
    # 429/503.
    repeatable = args.id is not None or headers is not None
    event = checked(client.post("/v1/events", body=body, headers=headers, repeatable=repeatable))
    # On stderr with --json too: a script told "published" must be able to tell that nothing new was.
    replayed = client.last_headers.get("Idempotent-Replayed") == "true"
    warning = "published before with this id or key: this is that event, not a new one" if replayed else None
    return _record(event, EVENT_FIELDS, warning=warning)


def events_publish_batch(client: ApiClient, args: argparse.Namespace) -> Shown:
    """Publish a file of events (``{"events": [...]}``, up to 100) in one call; one row per event. Exits 1 when
    any event was refused (the others are published)."""
    # An event with an `id` published before is answered with the original: the batch is safe to send again
    # after a 429/503 only when every event has one.
    events = args.events.get("events")
    repeatable = isinstance(events, list) and all(isinstance(event, Mapping) and event.get("id") for event in events)
    answer = client.post("/v1/events/batch", body=args.events, repeatable=repeatable)
    # One object per event, in order: the event published, or the error that refused it.
    items = [
        checked(item, where=f"data.{index}", status=COUNT, event=OBJECT, error=OBJECT)
        for index, item in enumerate(_items(answer))
    ]
    rows = [
        {
            "index": index,
            "status": item.get("status"),
            "id": (item.get("event") or {}).get("id", "") or (item.get("error") or {}).get("event_id") or "",
            "replayed": item.get("replayed", False),
            "error": (item.get("error") or {}).get("message", ""),
        }
        for index, item in enumerate(items)
    ]
    refused = [index for index, row in enumerate(rows) if not _accepted(row["status"])]
    text = table(rows, ["index", "status", "id", "replayed", "error"])
    if not refused:
        return Shown(answer, text)
    lines = [f"{len(refused)} of {len(rows)} refused:"]
    for index in refused:
        lines += _refusal(index, items[index].get("error"))
    return Shown(answer, text, warning="\n".join(lines), exit_code=EXIT_ERROR)


def _accepted(status: Any) -> bool:
    return isinstance(status, int) and 200 <= status < 300


def _refusal(index: int, error: Any) -> list[str]:
    """What a refused event of a batch is told, as ``events publish`` tells its one: the error's code and message,
    then each detail's field and problem."""
    error = error if isinstance(error, Mapping) else {}
    code, message = printable(str(error.get("code", "error"))), printable(str(error.get("message", "")))
    return [f"  event {index}: {code}: {message}", *detail_lines(error.get("details"), "    ")]


def events_redeliver(client: ApiClient, args: argparse.Namespace) -> Shown:
    job = checked(client.post(_path("/v1/events", args.event_id, "redeliver")))
    return _record(job, note="queued: one more attempt to every subscription the event goes to")


def events_show(client: ApiClient, args: argparse.Namespace) -> Shown:
    event = checked(client.get(_path("/v1/events", args.event_id)), data=OBJECT)
    fields = [*EVENT_FIELDS, *(f"data.{key}" for key in (event.get("data") or {}))]
    return _record(event, fields)


# ---------------------------------------------------------------------------------------------- deliveries


def deliveries_list(client: ApiClient, args: argparse.Namespace) -> Shown:
    params = {**_tenant_param(args), "status": args.status}
    page = _list(client, _path("/v1/subscriptions", args.subscription, "deliveries"), args, params)
    return _listing(page, DELIVERY_COLUMNS, "no deliveries")


def deliveries_resend(client: ApiClient, args: argparse.Namespace) -> Shown:
    path = _path("/v1/subscriptions", args.subscription, "deliveries", args.delivery_id, "retry")
    delivery = checked(client.request("POST", path, params=_tenant_param(args)))
    return _record(delivery, DELIVERY_COLUMNS, note="queued: one more attempt, right away")


def _job(answer: Any, empty: str = "the API's answer is empty") -> Mapping[str, Any]:
    """A recovery job as the API answers it, ``checked`` (``empty``: what an answer with no body is told)."""
    return checked(answer, JOB, required=["id"], empty=empty)


def _job_id(job: Mapping[str, Any]) -> str:
    return str(job["id"])


def _finished(job: Mapping[str, Any]) -> bool:
    return job.get("status") == FINISHED_STATE


def _follow_command(args: argparse.Namespace, job_id: str) -> str:
    """The command that shows a recovery job's progress, as the operator can run it: the same subscription and
    ``--tenant`` (without it, the admin key is refused a tenant's job), each value quoted for a shell."""
    argv = ["herald", "deliveries", "recovery", job_id, "--subscription", args.subscription]
    if getattr(args, "tenant", None):
        argv += ["--tenant", args.tenant]
    return printable(shlex.join(argv))


def _wait_for(client: ApiClient, args: argparse.Namespace, job: Mapping[str, Any]) -> Mapping[str, Any]:
    """Poll the recovery job until it has finished (``--wait``), or give up after ``--wait-timeout``: no pause
    between polls outlasts the time left (a poll interval longer than the timeout polls once more at its end), nor
    does a poll's answer (but ``client.MIN_REQUEST_SECONDS``) or its retries after a 429 or a 503
    (``ApiClient.request``'s ``deadline``). A poll that could not be answered in that time is the wait's timeout,
    not an error of its own."""
    job_id = _job_id(job)
    job_path = _path("/v1/subscriptions", args.subscription, "recoveries", job_id)
    deadline = time.monotonic() + args.wait_timeout

    def timed_out(last_poll: str = "") -> CliError:
        return CliError(
            f"recovery {job_id} still {job.get('status', 'running')} after {args.wait_timeout:.0f} s{last_poll} "
            f"(it carries on: see `{_follow_command(args, job_id)}`)",
            code="wait_timeout",
        )

    while not _finished(job):
        left = deadline - time.monotonic()
        if left <= 0:
            raise timed_out()
        time.sleep(min(args.poll_interval, left))
        try:
            answer = client.request("GET", job_path, params=_tenant_param(args), deadline=deadline)
        except (CliConnectionError, CliApiError) as exc:
            # Unanswered in the time it had left, or answered "later" past the deadline: the wait is over.
            unanswered = isinstance(exc, CliConnectionError) and exc.code == "timeout"
            if (unanswered and time.monotonic() >= deadline - 1) or (isinstance(exc, CliApiError) and exc.out_of_time):
                raise timed_out(f"; its last poll: {exc.message}") from exc
            raise
        job = _job(answer, empty=f"the API answered no progress of recovery {job_id}")
    return job


def deliveries_recover(client: ApiClient, args: argparse.Namespace) -> Shown:
    body: dict[str, Any] = {"since": args.since}
    if args.until:
        body["until"] = args.until
    path = _path("/v1/subscriptions", args.subscription, "recover")
    # The same request while its job runs is answered with that job: safe to send again after a 429/503.
    job = _job(client.request("POST", path, params=_tenant_param(args), body=body, repeatable=True))
    if args.wait:
        return _record(_wait_for(client, args, job))
    note = None
    if not _finished(job):
        note = f"started: follow it with `{_follow_command(args, _job_id(job))}`"
    return _record(job, note=note)


def deliveries_recovery(client: ApiClient, args: argparse.Namespace) -> Shown:
    path = _path("/v1/subscriptions", args.subscription, "recoveries", args.job_id)
    job = _job(client.request("GET", path, params=_tenant_param(args)))
    return _record(_wait_for(client, args, job) if args.wait else job)


# ---------------------------------------------------------------------------------------------- dead letters


def dlq_show(client: ApiClient, args: argparse.Namespace) -> Shown:
    """How many messages are parked, and a sample of them (looking never consumes them)."""
    answer = client.get("/v1/admin/dead-letters", params={"sample": args.sample})
    letters = checked(answer, count=COUNT, in_flight=COUNT, oldest_age_seconds=COUNT, sample=OBJECTS)
    summary = record(letters, [name for name in DEAD_LETTER_SUMMARY if name in letters])
    sample = letters.get("sample") or []
    rows = table(sample, columns_of(sample, DEAD_LETTER_COLUMNS)) if sample else "no messages to show"
    return Shown(letters, f"{summary}\n\n{rows}")


def _messages(count: int) -> str:
    """``count`` messages, as a warning says it."""
    return f"{count} message{'' if count == 1 else 's'}"


def dlq_redrive(client: ApiClient, args: argparse.Namespace) -> Shown:
    """Send the retired messages back to the work queue; poison ones stay parked. One call moves at most
    ``--limit`` (the API's default, 100) for about 15 s: what is left is said on stderr, never redriven in a loop
    here (poison messages never leave, the count is approximate, and a moved message may fail back again). So are
    the messages hidden for now (another look, redrive or discard holds them, or this one left them hidden), those
    whose send back SQS may or may not have made, and why the call stopped when SQS failed it (then it exits 1)."""
    body = {"limit": args.limit} if args.limit is not None else {}
    answer = checked(
        client.post("/v1/admin/dead-letters/redrive", body=body),
        {name: COUNT for name in ("moved", "kept", "uncertain", "remaining", "in_flight")},
        interrupted=TEXT,
    )
    lines = []
    if answer.get("interrupted"):
        lines.append(f"stopped before it was done ({printable(answer['interrupted'])}): run it again for the rest")
    uncertain = answer.get("uncertain")
    if isinstance(uncertain, int) and uncertain > 0:
        lines.append(
            f"{_messages(uncertain)} perhaps sent back (SQS failed the send after it may "
            "have made it): left in the dead-letter queue, hidden for a minute; a redrive after that sends "
            f"{'it' if uncertain == 1 else 'them'} back (a second copy of one that went: the worker finds its work "
            "done)"
        )
    remaining = answer.get("remaining")
    if isinstance(remaining, int) and remaining > 0:
        left = f"{_messages(remaining)} still in the dead-letter queue"
        if not answer.get("moved"):
            lines.append(
                f"{left}, none moved (poison ones stay): see `herald dlq show`, and `herald dlq discard` for poison"
            )
        elif answer.get("kept"):
            # The count is approximate and the call may not have looked at every message (its limit, its time): whether
            # readable ones are left is for `dlq show` to tell, not for a comparison of two counts.
            kept = answer["kept"]
            lines.append(
                f"{left} (approximate); this call kept {_messages(kept)} of poison, which no redrive moves: "
                "`herald dlq show` tells what is left; run `herald dlq redrive` again for readable ones "
                f"(at most --limit a call, default {DEFAULT_REDRIVE_LIMIT}), `herald dlq discard` for poison"
            )
        else:
            lines.append(
                f"{left} (approximate, poison ones included): run "
                f"`herald dlq redrive` again to move more (at most --limit a call, default {DEFAULT_REDRIVE_LIMIT})"
            )
    hidden = answer.get("in_flight")
    if isinstance(hidden, int) and hidden > 0:
        lines.append(
            f"{_messages(hidden)} in the dead-letter queue hidden for now (held by another "
            "look, redrive or discard, or sent back and not deleted there): run `herald dlq redrive` again in a minute"
        )
    if not lines:
        return _record(answer)
    exit_code = EXIT_ERROR if answer.get("interrupted") else EXIT_OK
    return Shown(answer, _record(answer).text, warning="\n".join(lines), exit_code=exit_code)


def dlq_discard(client: ApiClient, args: argparse.Namespace) -> Shown:
    """Delete poison messages for good: those named, or with ``--all-poison`` up to ``--limit`` of them. Only poison
    goes; a message named and left (not poison: a redrive sends it back) is listed on stderr with why, as is one not
    found (gone already, or hidden for a minute by another look, redrive or discard); the command then exits 1, as
    it does when the API stopped before it was done."""
    body: dict[str, Any] = {"message_ids": args.message_ids} if args.message_ids else {"all_poison": True}
    if args.limit is not None:
        body["limit"] = args.limit
    # Naming the messages, a discard sent again finds those already gone "not found": safe to repeat after a 429/503.
    answer = checked(
        client.post("/v1/admin/dead-letters/discard", body=body, repeatable=bool(args.message_ids)),
        discarded=OBJECTS,
        not_discarded=OBJECTS,
        not_found=STRINGS,
        kept=COUNT,
        remaining=COUNT,
        interrupted=TEXT,
    )
    discarded = answer.get("discarded") or []
    rows = table(discarded, columns_of(discarded, DEAD_LETTER_COLUMNS)) if discarded else "no message discarded"
    # The count first, so the rows below read as what went; ``kept``: what the call set aside, not poison to it.
    counts = {**answer, "discarded": len(discarded)}
    text = f"{record(counts, ['discarded', 'kept', 'remaining'])}\n\n{rows}"
    lines = []
    left = answer.get("not_discarded") or []
    if left:
        lines.append("not discarded, still in the dead-letter queue:")
        lines += [f"  {printable(str(item.get('message_id')))}: {printable(str(item.get('reason')))}" for item in left]
    if answer.get("not_found"):
        lines.append("not found (gone already, or hidden for a minute by another look, redrive or discard: try again):")
        lines += [f"  {printable(message_id)}" for message_id in answer["not_found"]]
    if answer.get("interrupted"):
        lines.append(f"stopped before it was done ({printable(answer['interrupted'])}): run it again for the rest")
    if lines:
        return Shown(answer, text, warning="\n".join(lines), exit_code=EXIT_ERROR)
    limit = args.limit or DEFAULT_DISCARD_LIMIT
    if args.all_poison and len(discarded) >= limit:
        return Shown(answer, text, warning=f"{limit} discarded, the most a call takes: more poison may remain")
    kept, remaining = answer.get("kept"), answer.get("remaining")
    if args.all_poison and isinstance(kept, int) and isinstance(remaining, int) and remaining > kept:
        # The call stopped (its time, or the readable messages it sets aside) before it looked at every message.
        warning = (
            f"{remaining} messages still in the dead-letter queue, {kept} of them set aside as readable: the call "
            "stopped before it looked at the others, so poison may remain: move the readable ones back "
            "(`herald dlq redrive`), then discard again"
        )
        return Shown(answer, text, warning=warning, exit_code=EXIT_ERROR)
    return Shown(answer, text)


# ---------------------------------------------------------------------------------------------- admin key


def admin_key_rotate(session: boto3.session.Session, args: argparse.Namespace) -> Shown:
    stack_name = getattr(args, "stack_name", None) or os.environ.get(STACK_NAME_ENV) or DEFAULT_STACK_NAME
    rotation = rotate_admin_key(session, stack_name)
    note = (
        "the API accepts the new key within 30 s of its first use and refuses the old one everywhere within "
        "5 minutes; read it with: aws secretsmanager get-secret-value --secret-id "
        f"{rotation.secret_arn} --query SecretString --output text"
    )
    return _record(rotation.as_dict(), note=note)
