"""The ``herald`` command: parse, call the API (or AWS for the admin key), print the answer or the error."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from herald.cli.client import ApiClient
from herald.cli.config import (
    aws_session,
    refuse_empty,
    resolve_config,
)
from herald.cli.errors import CliError
from herald.cli.output import detail_lines, printable, write_json, write_whole

if TYPE_CHECKING:
    pass

from herald.cli.commands import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    AwsHandler,
    Shown,
)
from herald.cli.parser import build_parser, check_usage


def report(error: CliError, err: TextIO) -> None:
    err.write(f"error: {printable(error.code)}: {printable(error.message)}\n")
    for line in detail_lines(getattr(error, "details", []), "  "):
        err.write(f"{line}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. Ctrl-C anywhere (reading ``--data @-`` too) and a closed output pipe end
    it quietly, as other commands do."""
    _escape_what_cannot_be_written()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_output()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        check_usage(args)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out, err = sys.stdout, sys.stderr
    try:
        shown = _run(args)
    except CliError as exc:
        report(exc, err)
        if exc.code == "forbidden" and getattr(args, "acts_for_tenant", False) and not args.tenant:
            # The API names its query parameter; the operator's command line names the tenant with a flag.
            err.write("the operator acts for a tenant with --tenant TENANT_ID\n")
        return EXIT_ERROR
    if getattr(args, "json", False):
        write_json(out, shown.value)
    else:
        write_whole(out, shown.text + "\n")
        if shown.note:
            err.write(f"{shown.note}\n")
    if shown.warning:
        err.write(f"{shown.warning}\n")
    out.flush()  # a closed pipe is found here, not at the interpreter's exit
    return shown.exit_code


def _escape_what_cannot_be_written() -> None:
    """A character the terminal's encoding lacks (a tenant named "東京" on a cp1252 or latin-1 console) is written
    as an escape like ``\\u6771`` rather than failing the command with a traceback: stdout and stderr (argparse's
    messages too) are set to ``backslashreplace``, where the stream can change it (``io.TextIOWrapper``)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            with contextlib.suppress(OSError, ValueError):  # closed, or a stream that cannot change it
                reconfigure(errors="backslashreplace")


def _discard_output() -> None:
    """The reader of stdout (or stderr) is gone: what is still buffered goes to /dev/null, so that the
    interpreter's last flush finds no broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # not a real file (a test's capture)
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _run(args: argparse.Namespace) -> Shown:
    """Run the command: through the API, or on the stack's AWS resources (``admin-key``)."""
    # Before either path: an empty --stack-name, --region or --profile would pick another stack, for the API's
    # URL and key or for `admin-key rotate`.
    flags = ("api_url", "key", "stack_name", "region", "profile")
    refuse_empty(**{"--" + name.replace("_", "-"): getattr(args, name, None) for name in flags})
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
