"""The ``herald`` command: argument parsing, one handler per sub-command, output and exit codes.

Exit codes: 0 done, 1 the API (or the way to it) said no, 2 the command line is wrong. Errors are printed
as ``error: <code>: <message>`` on stderr, with the API's own code; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from herald import __version__
from herald.cli.admin_key import rotate_admin_key
from herald.cli.client import ApiClient
from herald.cli.config import (
    ADMIN_KEY_ENV,
    API_URL_ENV,
    DEFAULT_STACK_NAME,
    STACK_NAME_ENV,
    aws_session,
    resolve_config,
)
from herald.cli.errors import CliApiError, CliError
from herald.cli.output import columns_of, record, table, write_json

if TYPE_CHECKING:
    import boto3

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

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


@dataclass(frozen=True)
class Shown:
    """What a command answers: the API's JSON (``--json``) and its table for people."""

    value: Any
    text: str
    note: str | None = None


Handler = Callable[[ApiClient, argparse.Namespace], Shown]
#: A command that works on the stack's AWS resources rather than through the API.
AwsHandler = Callable[["boto3.session.Session", argparse.Namespace], Shown]


# ---------------------------------------------------------------------------------------------- helpers


def _path(*parts: str) -> str:
    """An API path with each caller-given part percent-encoded (ids never reshape the path)."""
    return "/".join(quote(part, safe="") if index else part for index, part in enumerate(parts))


def _page_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"limit": args.limit, "iterator": args.iterator}


def _list(client: ApiClient, path: str, args: argparse.Namespace, params: Mapping[str, Any] | None = None) -> Any:
    """One page, or with ``--all`` every page merged into one (``iterator`` null, ``done`` true)."""
    query = {**(params or {}), **_page_params(args)}
    page = client.get(path, params=query)
    if not args.all:
        return page
    items = list(page.get("data", []))
    while not page.get("done", True) and page.get("iterator"):
        page = client.get(path, params={**query, "iterator": page["iterator"]})
        items.extend(page.get("data", []))
    return {"data": items, "iterator": None, "done": True}


def _listing(page: Any, columns: Sequence[str], empty: str) -> Shown:
    rows = page.get("data", []) if isinstance(page, Mapping) else []
    note = None
    if isinstance(page, Mapping) and not page.get("done", True) and page.get("iterator"):
        note = f"more: add --iterator {page['iterator']} (or --all)"
    text = table(rows, columns_of(rows, columns)) if rows else empty
    return Shown(page, text, note)


def _record(value: Any, fields: Sequence[str] | None = None, note: str | None = None) -> Shown:
    text = record(value, fields) if isinstance(value, Mapping) else json.dumps(value)
    return Shown(value, text, note)


def _timestamp(text: str) -> str:
    """``--since`` / ``--until``: an ISO 8601 time as the API wants it; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-01-31T12:00:00Z)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _json_object(text: str) -> dict[str, Any]:
    """``--data``: a JSON object as text, ``@file`` to read it from a file, or ``@-`` from stdin."""
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {source}: {exc.strerror or exc}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, not {text!r}")
    return key, value


# ---------------------------------------------------------------------------------------------- tenants


def tenants_create(client: ApiClient, args: argparse.Namespace) -> Shown:
    body = {"name": args.name, "metadata": dict(args.metadata or ())}
    created = client.post("/v1/tenants", body=body)
    fields = ["id", "name", "created_at", "api_key.id", "api_key.prefix", "api_key.key"]
    return _record(created, fields, note="the API key is shown only once: hand it to the tenant now")


def tenants_list(client: ApiClient, args: argparse.Namespace) -> Shown:
    return _listing(_list(client, "/v1/tenants", args), TENANT_COLUMNS, "no tenants")


def tenants_issue_key(client: ApiClient, args: argparse.Namespace) -> Shown:
    body = {"revoke_existing": args.revoke_existing}
    key = client.post(_path("/v1/tenants", args.tenant_id, "api-keys"), body=body)
    note = "the API key is shown only once: hand it to the tenant now"
    if args.revoke_existing:
        note += "; the tenant's other keys are revoked"
    return _record(key, ["id", "tenant_id", "prefix", "created_at", "key"], note=note)


def tenants_portal_link(client: ApiClient, args: argparse.Namespace) -> Shown:
    body = {"capability": args.capability, "expires_in_minutes": args.expires_in}
    link = client.post(_path("/v1/tenants", args.tenant_id, "portal-sessions"), body=body)
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
    return _record(client.get(_path("/v1/subscriptions", args.subscription_id), params=_tenant_param(args)))


def _set_enabled(client: ApiClient, args: argparse.Namespace, enabled: bool) -> Shown:
    updated = client.request(
        "PATCH",
        _path("/v1/subscriptions", args.subscription_id),
        params=_tenant_param(args),
        body={"enabled": enabled},
    )
    return _record(updated, ["id", "url", "enabled", "disabled_reason", "updated_at"])


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
    if args.id:
        body["id"] = args.id
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    event = client.post("/v1/events", body=body, headers=headers)
    return _record(event, EVENT_FIELDS)


def events_publish_batch(client: ApiClient, args: argparse.Namespace) -> Shown:
    """Publish a file of events (``{"events": [...]}``, up to 100) in one call; one row per event."""
    answer = client.post("/v1/events/batch", body=args.events)
    rows = [
        {
            "index": index,
            "status": item.get("status"),
            "id": (item.get("event") or {}).get("id", ""),
            "replayed": item.get("replayed", False),
            "error": (item.get("error") or {}).get("message", ""),
        }
        for index, item in enumerate(answer.get("data", []))
    ]
    refused = sum(1 for row in rows if row["status"] != 202)
    note = f"{refused} of {len(rows)} refused" if refused else None
    return Shown(answer, table(rows, ["index", "status", "id", "replayed", "error"]), note)


def events_redeliver(client: ApiClient, args: argparse.Namespace) -> Shown:
    job = client.post(_path("/v1/events", args.event_id, "redeliver"))
    return _record(job, note="queued: one more attempt to every subscription the event goes to")


def events_show(client: ApiClient, args: argparse.Namespace) -> Shown:
    event = client.get(_path("/v1/events", args.event_id))
    fields = [*EVENT_FIELDS, *(f"data.{key}" for key in (event.get("data") or {}))]
    return _record(event, fields)


# ---------------------------------------------------------------------------------------------- deliveries


def deliveries_list(client: ApiClient, args: argparse.Namespace) -> Shown:
    params = {**_tenant_param(args), "status": args.status}
    page = _list(client, _path("/v1/subscriptions", args.subscription, "deliveries"), args, params)
    return _listing(page, DELIVERY_COLUMNS, "no deliveries")


def deliveries_resend(client: ApiClient, args: argparse.Namespace) -> Shown:
    path = _path("/v1/subscriptions", args.subscription, "deliveries", args.delivery_id, "retry")
    delivery = client.request("POST", path, params=_tenant_param(args))
    return _record(delivery, DELIVERY_COLUMNS, note="queued: one more attempt, right away")


def _job_id(job: Mapping[str, Any]) -> str:
    if not isinstance(job.get("id"), str):
        raise CliApiError(202, "invalid_response", "the recovery job has no id")
    return str(job["id"])


def _finished(job: Mapping[str, Any]) -> bool:
    return job.get("status") == FINISHED_STATE


def _wait_for(client: ApiClient, args: argparse.Namespace, job: Any) -> Any:
    """Poll the recovery job until it has finished (``--wait``), or give up after ``--wait-timeout``."""
    if not isinstance(job, Mapping):
        return job
    job_path = _path("/v1/subscriptions", args.subscription, "recoveries", _job_id(job))
    deadline = time.monotonic() + args.wait_timeout
    while not _finished(job):
        if time.monotonic() >= deadline:
            raise CliError(
                f"recovery {_job_id(job)} still {job.get('status', 'running')} after {args.wait_timeout:.0f} s "
                "(it carries on: see `herald deliveries recovery`)",
                code="wait_timeout",
            )
        time.sleep(args.poll_interval)
        job = client.request("GET", job_path, params=_tenant_param(args))
    return job


def deliveries_recover(client: ApiClient, args: argparse.Namespace) -> Shown:
    body: dict[str, Any] = {"since": args.since}
    if args.until:
        body["until"] = args.until
    path = _path("/v1/subscriptions", args.subscription, "recover")
    job = client.request("POST", path, params=_tenant_param(args), body=body)
    if args.wait:
        return _record(_wait_for(client, args, job))
    note = None
    if isinstance(job, Mapping) and not _finished(job):
        note = f"started: follow it with `herald deliveries recovery {_job_id(job)} --subscription {args.subscription}`"
    return _record(job, note=note)


def deliveries_recovery(client: ApiClient, args: argparse.Namespace) -> Shown:
    path = _path("/v1/subscriptions", args.subscription, "recoveries", args.job_id)
    job = client.request("GET", path, params=_tenant_param(args))
    return _record(_wait_for(client, args, job) if args.wait else job)


# ---------------------------------------------------------------------------------------------- dead letters


def dlq_show(client: ApiClient, args: argparse.Namespace) -> Shown:
    """How many messages are parked, and a sample of them (looking never consumes them)."""
    letters = client.get("/v1/admin/dead-letters", params={"sample": args.sample})
    if not isinstance(letters, Mapping):
        return _record(letters)
    summary = record(letters, [name for name in DEAD_LETTER_SUMMARY if name in letters])
    sample = letters.get("sample") or []
    rows = table(sample, columns_of(sample, DEAD_LETTER_COLUMNS)) if sample else "no messages to show"
    return Shown(letters, f"{summary}\n\n{rows}")


def dlq_redrive(client: ApiClient, args: argparse.Namespace) -> Shown:
    """Send the retired messages back to the work queue; poison ones stay parked."""
    body = {"limit": args.limit} if args.limit is not None else {}
    return _record(client.post("/v1/admin/dead-letters/redrive", body=body))


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


# ---------------------------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _page_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"at most {MAX_PAGE}")
    return value


def _sample_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_DEAD_LETTER_SAMPLE:
        raise argparse.ArgumentTypeError(f"at most {MAX_DEAD_LETTER_SAMPLE}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _common_options() -> argparse.ArgumentParser:
    """Options every level accepts (``herald --json tenants list`` and ``herald tenants list --json``).
    SUPPRESS keeps a sub-command's parser from resetting what an outer level already set."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    group.add_argument(
        "--api-url", metavar="URL", default=argparse.SUPPRESS, help=f"the API's base URL (default: ${API_URL_ENV})"
    )
    group.add_argument(
        "--key",
        metavar="KEY",
        default=argparse.SUPPRESS,
        help=f"the admin key, or a tenant's API key for tenant commands (default: ${ADMIN_KEY_ENV})",
    )
    group.add_argument(
        "--stack-name",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=f"stack to read the URL and admin key from (default: ${STACK_NAME_ENV} or {DEFAULT_STACK_NAME!r})",
    )
    group.add_argument("--region", default=argparse.SUPPRESS, help="AWS region of the stack")
    group.add_argument("--profile", default=argparse.SUPPRESS, help="AWS profile to read the stack with")
    return common


def _paging(parser: argparse.ArgumentParser, default: int = 50) -> None:
    parser.add_argument("--limit", type=_page_size, default=default, help=f"items per page (default {default})")
    parser.add_argument("--iterator", help="the iterator of the previous page")
    parser.add_argument("--all", action="store_true", help="fetch every page")


def _tenant_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tenant",
        metavar="TENANT_ID",
        help="the tenant the operator acts for (not needed with the tenant's own key)",
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="poll the recovery job until it has finished")
    parser.add_argument("--poll-interval", type=_positive_float, default=DEFAULT_POLL_SECONDS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--wait-timeout", type=_positive_float, default=900.0, metavar="SECONDS", help="give up waiting (default 900)"
    )


CONFIG_HELP = f"""
configuration:
  The API's URL and key come from --api-url / --key, else ${API_URL_ENV} / ${ADMIN_KEY_ENV}, else
  the SAM stack's outputs (--stack-name, ${STACK_NAME_ENV}, default {DEFAULT_STACK_NAME!r}): ApiUrl, and the
  admin key read from the secret named by AdminKeySecretArn (AWS credentials needed).

exit codes: 0 done, 1 error (printed as 'error: <code>: <message>'), 2 wrong usage.
"""


_Group = argparse._SubParsersAction  # the object ``add_subparsers`` returns


class _ParserBuilder:
    """Builds ``herald AREA ACTION``: every level shares the connection and output options."""

    def __init__(self) -> None:
        self.common = _common_options()
        self.parser = argparse.ArgumentParser(
            prog="herald",
            description="Operate a Herald deployment through its API.",
            epilog=CONFIG_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[self.common],
        )
        self.parser.add_argument("--version", action="version", version=f"herald {__version__}")
        self.areas = self.parser.add_subparsers(dest="area", metavar="COMMAND", required=True)

    def area(self, name: str, help_text: str) -> _Group[argparse.ArgumentParser]:
        sub = self.areas.add_parser(name, help=help_text, description=help_text, parents=[self.common])
        return sub.add_subparsers(dest="action", metavar="ACTION", required=True)

    def command(
        self, group: _Group[argparse.ArgumentParser], name: str, handler: Handler, help_text: str
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=help_text, parents=[self.common])
        sub.set_defaults(handler=handler)
        return sub

    def tenants(self) -> None:
        group = self.area("tenants", "the operator's customers and their API keys")
        cmd = self.command(group, "create", tenants_create, "create a tenant and its first API key")
        cmd.add_argument("name")
        cmd.add_argument("--metadata", action="append", type=_key_value, metavar="KEY=VALUE", help="repeatable")
        _paging(self.command(group, "list", tenants_list, "list the tenants"))
        cmd = self.command(group, "issue-key", tenants_issue_key, "issue a new API key to a tenant (shown once)")
        cmd.add_argument("tenant_id")
        cmd.add_argument("--revoke-existing", action="store_true", help="revoke the tenant's other keys")
        cmd = self.command(group, "portal-link", tenants_portal_link, "mint a one-time link to a tenant's portal")
        cmd.add_argument("tenant_id")
        cmd.add_argument("--capability", choices=["manage", "read"], default="manage")
        cmd.add_argument("--expires-in", type=int, default=15, metavar="MINUTES", help="1 to 60 (default 15)")

    def subscriptions(self) -> None:
        group = self.area("subscriptions", "where tenants are notified")
        cmd = self.command(group, "list", subscriptions_list, "list a tenant's subscriptions")
        _tenant_option(cmd)
        _paging(cmd)
        for name, handler, text in (
            ("show", subscriptions_show, "show a subscription: its headers (sensitive ones masked), filter, transform"),
            ("disable", subscriptions_disable, "stop deliveries to a subscription"),
            ("enable", subscriptions_enable, "resume deliveries to a subscription"),
        ):
            cmd = self.command(group, name, handler, text)
            cmd.add_argument("subscription_id")
            _tenant_option(cmd)

    def events(self) -> None:
        group = self.area("events", "published events")
        cmd = self.command(group, "publish", events_publish, "publish an event")
        cmd.add_argument("type", help="an event type of the catalog, e.g. invoice.paid")
        cmd.add_argument(
            "--data", required=True, type=_json_object, metavar="JSON|@FILE", help="the payload: JSON, @file or @-"
        )
        audience = cmd.add_mutually_exclusive_group(required=True)
        audience.add_argument("--tenant", metavar="TENANT_ID", help="the tenant the event is for")
        audience.add_argument("--broadcast", action="store_true", help="send to every tenant's matching subscriptions")
        cmd.add_argument("--idempotency-key", metavar="KEY", help="publishing again with it returns the first event")
        cmd.add_argument("--id", metavar="EVENT_ID", help="your own id for the event")
        cmd = self.command(group, "publish-batch", events_publish_batch, "publish up to 100 events in one call")
        cmd.add_argument("events", type=_json_object, metavar="JSON|@FILE", help='{"events": [...]}: JSON, @file or @-')
        cmd = self.command(group, "show", events_show, "an event and how its deliveries went")
        cmd.add_argument("event_id")
        cmd = self.command(
            group, "redeliver", events_redeliver, "send an event once more to every subscription it goes to"
        )
        cmd.add_argument("event_id")

    def deliveries(self) -> None:
        group = self.area("deliveries", "what was sent to a subscription")
        cmd = self.command(group, "list", deliveries_list, "list a subscription's deliveries, newest first")
        cmd.add_argument("--subscription", required=True, metavar="SUBSCRIPTION_ID")
        cmd.add_argument("--status", choices=["pending", "succeeded", "failed"])
        _tenant_option(cmd)
        _paging(cmd)
        cmd = self.command(group, "resend", deliveries_resend, "send a delivery again now")
        cmd.add_argument("delivery_id")
        cmd.add_argument("--subscription", required=True, metavar="SUBSCRIPTION_ID", help="the delivery's subscription")
        _tenant_option(cmd)
        cmd = self.command(
            group, "recover", deliveries_recover, "re-send a subscription's failed deliveries since a time"
        )
        cmd.add_argument("--subscription", required=True, metavar="SUBSCRIPTION_ID")
        cmd.add_argument(
            "--since",
            required=True,
            type=_timestamp,
            metavar="ISO_TIME",
            help="e.g. 2026-01-31T12:00:00Z (UTC if no offset)",
        )
        cmd.add_argument("--until", type=_timestamp, metavar="ISO_TIME")
        _wait_options(cmd)
        _tenant_option(cmd)
        cmd = self.command(group, "recovery", deliveries_recovery, "the progress of a recovery job")
        cmd.add_argument("job_id")
        cmd.add_argument("--subscription", required=True, metavar="SUBSCRIPTION_ID")
        _wait_options(cmd)
        _tenant_option(cmd)

    def dlq(self) -> None:
        group = self.area("dlq", "the work queue's dead-letter queue")
        cmd = self.command(group, "show", dlq_show, "how many messages are parked, and a sample of them")
        cmd.add_argument(
            "--sample",
            type=_sample_size,
            default=10,
            help=f"messages to show, at most {MAX_DEAD_LETTER_SAMPLE} (default 10)",
        )
        cmd = self.command(group, "redrive", dlq_redrive, "move dead-lettered messages back to the work queue")
        cmd.add_argument("--limit", type=_positive_int, help="at most this many messages")

    def admin_key(self) -> None:
        group = self.area("admin-key", "the operator's admin key (AWS credentials for the stack needed)")
        text = "write a new admin key to the stack's secrets; the old one stops working"
        sub = group.add_parser("rotate", help=text, description=text, parents=[self.common])
        sub.set_defaults(aws_handler=admin_key_rotate)


def build_parser() -> argparse.ArgumentParser:
    builder = _ParserBuilder()
    builder.tenants()
    builder.subscriptions()
    builder.events()
    builder.deliveries()
    builder.dlq()
    builder.admin_key()
    return builder.parser


# ---------------------------------------------------------------------------------------------- main


def report(error: CliError, err: TextIO) -> None:
    err.write(f"error: {error.code}: {error.message}\n")
    for detail in getattr(error, "details", []):
        if isinstance(detail, Mapping):
            where = ".".join(str(part) for part in detail.get("loc", []))
            err.write(f"  {where or '-'}: {detail.get('msg', '')}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out, err = sys.stdout, sys.stderr
    try:
        shown = _run(args)
    except CliError as exc:
        report(exc, err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    if getattr(args, "json", False):
        write_json(out, shown.value)
    else:
        out.write(shown.text + "\n")
        if shown.note:
            err.write(f"{shown.note}\n")
    return EXIT_OK


def _run(args: argparse.Namespace) -> Shown:
    """Run the command: through the API, or on the stack's AWS resources (``admin-key``)."""
    region, profile = getattr(args, "region", None), getattr(args, "profile", None)
    aws_handler: AwsHandler | None = getattr(args, "aws_handler", None)
    if aws_handler is not None:
        return aws_handler(aws_session(region=region, profile=profile), args)
    config = resolve_config(
        api_url=getattr(args, "api_url", None),
        key=getattr(args, "key", None),
        stack_name=getattr(args, "stack_name", None),
        region=region,
        profile=profile,
        environ=os.environ,
    )
    with ApiClient(config.api_url, config.key) as client:
        shown: Shown = args.handler(client, args)
    return shown
