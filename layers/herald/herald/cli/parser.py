"""The ``herald`` command line's parser: its areas, commands, options and their help."""

from __future__ import annotations

import argparse
import functools
import math
from typing import TYPE_CHECKING

from herald import __version__
from herald.cli.config import (
    ADMIN_KEY_ENV,
    API_URL_ENV,
    DEFAULT_STACK_NAME,
    STACK_NAME_ENV,
)

if TYPE_CHECKING:
    pass

from herald.cli.commands import (
    DEFAULT_DISCARD_LIMIT,
    DEFAULT_POLL_SECONDS,
    DEFAULT_REDRIVE_LIMIT,
    MAX_DEAD_LETTER_SAMPLE,
    MAX_DISCARD_IDS,
    MAX_DISCARD_LIMIT,
    MAX_PAGE,
    MAX_REDRIVE_LIMIT,
    Handler,
    admin_key_rotate,
    deliveries_list,
    deliveries_recover,
    deliveries_recovery,
    deliveries_resend,
    dlq_discard,
    dlq_redrive,
    dlq_show,
    event_id,
    events_publish,
    events_publish_batch,
    events_redeliver,
    events_show,
    idempotency_key,
    json_object,
    key_value,
    path_id,
    subscriptions_disable,
    subscriptions_enable,
    subscriptions_list,
    subscriptions_show,
    tenants_create,
    tenants_issue_key,
    tenants_list,
    tenants_portal_link,
    timestamp,
)


def _count(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _page_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"at most {MAX_PAGE}")
    return value


def _sample_size(text: str) -> int:
    """``dlq show --sample``: 0 (the counts alone, as the API allows) to ``MAX_DEAD_LETTER_SAMPLE``."""
    value = _count(text)
    if value > MAX_DEAD_LETTER_SAMPLE:
        raise argparse.ArgumentTypeError(f"at most {MAX_DEAD_LETTER_SAMPLE}")
    return value


def _redrive_limit(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_REDRIVE_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_REDRIVE_LIMIT}")
    return value


def _discard_limit(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_DISCARD_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_DISCARD_LIMIT}")
    return value


def _discard_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say of ``dlq discard``: a usage error (exit 2) before anything is sent."""
    if args.message_ids and args.limit is not None:
        parser.error("--limit goes with --all-poison")
    if args.message_ids and len(args.message_ids) > MAX_DISCARD_IDS:
        parser.error(f"at most {MAX_DISCARD_IDS} --id in one call")


def check_usage(args: argparse.Namespace) -> None:
    """The parsed command's own checks between its options (``usage_check``), if it has any: ``parser.error`` on a
    breach, as argparse reports its own usage errors."""
    check = getattr(args, "usage_check", None)
    if check is not None:
        check(args)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not math.isfinite(value) or value <= 0:  # nan would never be reached, inf never ends a sleep
        raise argparse.ArgumentTypeError("must be a finite number more than 0")
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
    # A refusal of such a command (the operator's key, no --tenant) names the flag (``herald.cli.main``).
    parser.set_defaults(acts_for_tenant=True)


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="poll the recovery job until it has finished")
    parser.add_argument("--poll-interval", type=_positive_float, default=DEFAULT_POLL_SECONDS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--wait-timeout", type=_positive_float, default=900.0, metavar="SECONDS", help="give up waiting (default 900)"
    )


CONFIG_HELP = f"""
configuration:
  The API's URL and key come from --api-url / --key, else ${API_URL_ENV} / ${ADMIN_KEY_ENV} (not with
  --stack-name), else the SAM stack's outputs (--stack-name, ${STACK_NAME_ENV}, default
  {DEFAULT_STACK_NAME!r}): ApiUrl, and the admin key read from the secret named by AdminKeySecretArn (AWS
  credentials needed). A flag given empty is refused.

exit codes: 0 done, 1 error (printed as 'error: <code>: <message>'), 2 wrong usage, 130 interrupted,
  141 the reader of the output went away (a closed pipe).
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
        cmd.add_argument("--metadata", action="append", type=key_value, metavar="KEY=VALUE", help="repeatable")
        cmd.add_argument(
            "--idempotency-key",
            type=idempotency_key,
            metavar="KEY",
            help="creating again with it (for a day) shows the first tenant, without its key",
        )
        _paging(self.command(group, "list", tenants_list, "list the tenants"))
        cmd = self.command(group, "issue-key", tenants_issue_key, "issue a new API key to a tenant (shown once)")
        cmd.add_argument("tenant_id", type=path_id)
        cmd.add_argument("--revoke-existing", action="store_true", help="revoke the tenant's other keys")
        cmd = self.command(group, "portal-link", tenants_portal_link, "mint a one-time link to a tenant's portal")
        cmd.add_argument("tenant_id", type=path_id)
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
            cmd.add_argument("subscription_id", type=path_id)
            _tenant_option(cmd)

    def events(self) -> None:
        group = self.area("events", "published events")
        cmd = self.command(group, "publish", events_publish, "publish an event")
        cmd.add_argument("type", help="an event type of the catalog, e.g. invoice.paid")
        cmd.add_argument(
            "--data", required=True, type=json_object, metavar="JSON|@FILE", help="the payload: JSON, @file or @-"
        )
        audience = cmd.add_mutually_exclusive_group(required=True)
        audience.add_argument("--tenant", metavar="TENANT_ID", help="the tenant the event is for")
        audience.add_argument("--broadcast", action="store_true", help="send to every tenant's matching subscriptions")
        cmd.add_argument(
            "--idempotency-key",
            type=idempotency_key,
            metavar="KEY",
            help="publishing again with it returns the first event",
        )
        cmd.add_argument("--id", type=event_id, metavar="EVENT_ID", help="your own id for the event")
        cmd = self.command(group, "publish-batch", events_publish_batch, "publish up to 100 events in one call")
        cmd.add_argument("events", type=json_object, metavar="JSON|@FILE", help='{"events": [...]}: JSON, @file or @-')
        cmd = self.command(group, "show", events_show, "an event and how its deliveries went")
        cmd.add_argument("event_id", type=path_id)
        cmd = self.command(
            group, "redeliver", events_redeliver, "send an event once more to every subscription it goes to"
        )
        cmd.add_argument("event_id", type=path_id)

    def deliveries(self) -> None:
        group = self.area("deliveries", "what was sent to a subscription")
        cmd = self.command(group, "list", deliveries_list, "list a subscription's deliveries, newest first")
        cmd.add_argument("--subscription", required=True, type=path_id, metavar="SUBSCRIPTION_ID")
        cmd.add_argument("--status", choices=["pending", "succeeded", "failed"])
        _tenant_option(cmd)
        _paging(cmd)
        cmd = self.command(group, "resend", deliveries_resend, "send a delivery again now")
        cmd.add_argument("delivery_id", type=path_id)
        cmd.add_argument(
            "--subscription", required=True, type=path_id, metavar="SUBSCRIPTION_ID", help="the delivery's subscription"
        )
        _tenant_option(cmd)
        cmd = self.command(
            group, "recover", deliveries_recover, "re-send a subscription's failed deliveries since a time"
        )
        cmd.add_argument("--subscription", required=True, type=path_id, metavar="SUBSCRIPTION_ID")
        cmd.add_argument(
            "--since",
            required=True,
            type=timestamp,
            metavar="ISO_TIME",
            help="e.g. 2026-01-31T12:00:00Z (UTC if no offset)",
        )
        cmd.add_argument("--until", type=timestamp, metavar="ISO_TIME")
        _wait_options(cmd)
        _tenant_option(cmd)
        cmd = self.command(group, "recovery", deliveries_recovery, "the progress of a recovery job")
        cmd.add_argument("job_id", type=path_id)
        cmd.add_argument("--subscription", required=True, type=path_id, metavar="SUBSCRIPTION_ID")
        _wait_options(cmd)
        _tenant_option(cmd)

    def dlq(self) -> None:
        group = self.area("dlq", "the work queue's dead-letter queue")
        cmd = self.command(group, "show", dlq_show, "how many messages are parked, and a sample of them")
        cmd.add_argument(
            "--sample",
            type=_sample_size,
            default=10,
            help=f"messages to show, 0 (the counts alone) to {MAX_DEAD_LETTER_SAMPLE} (default 10)",
        )
        cmd = self.command(group, "redrive", dlq_redrive, "move dead-lettered messages back to the work queue")
        cmd.add_argument(
            "--limit",
            type=_redrive_limit,
            help=f"at most this many messages, 1 to {MAX_REDRIVE_LIMIT} (default {DEFAULT_REDRIVE_LIMIT}); a call "
            "works for about 15 s: run it again while messages remain",
        )
        text = (
            "delete poison for good (those named, or --all-poison); never a message a redrive sends back to work, and "
            "--all-poison never one of a kind or version, or a notice of a type or fields, newer code may work"
        )
        cmd = self.command(group, "discard", dlq_discard, text)
        which = cmd.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--id",
            dest="message_ids",
            action="append",
            metavar="MESSAGE_ID",
            help=f"a message to discard (its MESSAGE_ID in `herald dlq show`); repeatable, at most {MAX_DISCARD_IDS}",
        )
        which.add_argument("--all-poison", action="store_true", help="discard the poison messages met, up to --limit")
        cmd.add_argument(
            "--limit",
            type=_discard_limit,
            help=f"with --all-poison: at most this many, 1 to {MAX_DISCARD_LIMIT} (default {DEFAULT_DISCARD_LIMIT}); "
            "a call works for about 15 s",
        )
        cmd.set_defaults(usage_check=functools.partial(_discard_usage, cmd))

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
