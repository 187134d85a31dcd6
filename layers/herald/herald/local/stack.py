"""``make run``: the whole Herald stack on this machine.

An embedded AWS (a moto server) with the table, queues and secret created from template.yaml, the
API served by uvicorn, and the delivery worker fed by an emulated SQS event source mapping: the
same code that runs in Lambda.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import boto3
import uvicorn
from botocore.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from herald import ids
from herald.cli.output import printable
from herald.local.event_sources import EventSourceSettings, delivery_event_sources, delivery_schedule, run_schedule
from herald.local.moto_fixes import moto_fixes
from herald.local.poller import SqsPoller
from herald.local.resources import LocalResources, create_local_resources, load_template
from herald.local.stream_poller import table_stream_poller

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, MutableMapping
    from types import FrameType

    from mypy_boto3_sqs import SQSClient

    from herald.services import Services
    from herald.worker import Worker

logger = logging.getLogger("herald.local")

#: Emulated concurrent invocations of the DeliveryFunction per SQS event source, at most the source's
#: MaximumConcurrency (Lambda scales out to it: 20 on the work queue, 5 on the slow lane by default). More than
#: one or two: as on AWS, a few invocations waiting on a hanging endpoint must not stop the others.
DEFAULT_WORKERS = 8


class PortError(SystemExit):
    """A port the local stack cannot listen on: its message says which, and which setting to change."""


#: What a port setting may be: 0 asks for a free port (``listen_on``).
PORT_RANGE = "a number from 1 to 65535 (or 0: a free port)"


def _as_port(value: str) -> int | None:
    """``value`` as a port (0 to 65535), None if it is none."""
    try:
        port = int(value)
    except ValueError:
        return None
    return port if 0 <= port <= 65535 else None


def port_setting(name: str, default: str, environ: Mapping[str, str] | None = None) -> int:
    """The port the environment variable ``name`` gives (``default`` if it is unset or blank); a value that is not
    a port stops the local stack with a message naming ``name`` and what it may be."""
    environ = os.environ if environ is None else environ
    value = environ.get(name, "").strip() or default
    port = _as_port(value)
    if port is None:
        raise PortError(f"{name}={value!r} is not a port: set {name} to {PORT_RANGE}")
    return port


class AdminKeyError(SystemExit):
    """A ``HERALD_ADMIN_KEY`` no caller could present: its message says why, never the value."""


def admin_key_setting(environ: Mapping[str, str] | None = None) -> str:
    """The admin key ``HERALD_ADMIN_KEY`` gives, or a new one if it is unset or empty. One refused by the rule a
    deployment's settings apply (``ids.admin_key_problem``: shaped like a tenant key, spaces at an end or only
    spaces, too long, not printable ASCII) stops the local stack with a message saying why: written to the secret,
    it would be shown in the banner and then answered 401 or 503 on every call."""
    environ = os.environ if environ is None else environ
    value = environ.get("HERALD_ADMIN_KEY", "")
    if not value:
        return ids.new_admin_key()
    problem = ids.admin_key_problem(value)
    if problem is not None:
        raise AdminKeyError(
            f"HERALD_ADMIN_KEY is refused: {problem} (set another, or unset it for a new key at each start)"
        )
    return value


def _port_argument(value: str) -> int:
    """A command-line port (argparse's ``type``: what it raises is a usage error, exit code 2)."""
    port = _as_port(value)
    if port is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port: give {PORT_RANGE}")
    return port


def _workers_argument(value: str) -> int:
    """``--workers`` (argparse's ``type``): a whole number of 1 or more. With none, no queue would be polled and
    nothing delivered."""
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers: give a whole number of 1 or more")
    return workers


def _family(host: str) -> socket.AddressFamily:
    """The address family of ``host`` (an IPv4 or IPv6 address, or a name)."""
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise PortError(f"cannot listen on {host}: {error.strerror} (HERALD_LOCAL_HOST)") from None


def loopback_of(host: str) -> str:
    """The loopback address of ``host``'s family: where the embedded AWS listens unless told otherwise. moto asks
    for no credentials, and the table, the queues and the admin key's secret are behind it: the API may listen on
    every interface (``HERALD_LOCAL_HOST=0.0.0.0``), the AWS it calls stays on this machine."""
    return "::1" if _family(host) == socket.AF_INET6 else "127.0.0.1"


def url_host(host: str) -> str:
    """``host`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def free_port(host: str) -> int:
    """A port free on ``host`` now. Another process may take it before it is bound: the local stack binds its own
    ports itself (``listen_on``, port 0 for any)."""
    with closing(socket.socket(_family(host), socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listen_on(host: str, port: int, setting: str) -> socket.socket:
    """A socket listening on ``host``:``port`` (0: a free port, with no race for it), ready to hand to a server; a
    port taken (listened on, or only bound, by another process) or a host this machine does not have stops the
    local stack at once with a message naming ``setting``."""
    if not 0 <= port <= 65535:  # bind raises OverflowError, not OSError, for these
        raise PortError(f"cannot listen on port {port} of {host}: set {setting} to {PORT_RANGE}")
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and werkzeug do
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as error:
        sock.close()
        raise PortError(
            f"cannot listen on port {port} of {host} ({error.strerror}): set {setting} to a free port"
        ) from None
    return sock


class EmbeddedAws:
    """moto's server in a thread, on a socket bound and listening before the thread starts: it answers as soon as
    ``start()`` returns, and a port it cannot have fails ``start()`` at once (moto's ``ThreadedMotoServer`` binds in
    its thread, and waits forever for a bind that failed there)."""

    def __init__(self, host: str, port: int | None) -> None:
        self.host = host
        self._socket = listen_on(host, port or 0, "HERALD_LOCAL_AWS_PORT")
        self.port = int(self._socket.getsockname()[1])
        self.endpoint = f"http://{url_host(host)}:{self.port}"
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler, fd=self._socket.fileno()
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedded-aws", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._socket.close()


@dataclass
class EmbeddedStack:
    """A running local stack; ``stop()`` ends the worker threads and the moto server."""

    moto: EmbeddedAws
    endpoint: str
    resources: LocalResources
    admin_key: str
    stop_event: threading.Event
    threads: list[threading.Thread]

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)
        self.moto.stop()


def start_aws(host: str, port: int | None, admin_key: str) -> tuple[EmbeddedAws, str, LocalResources]:
    """Start the moto server (``port`` None: on a free port), point this process's AWS SDK at it and create the
    template's resources."""
    server = EmbeddedAws(host, port)
    server.start()
    endpoint = server.endpoint
    use_embedded_aws(endpoint)
    resources = create_local_resources(admin_key=admin_key, session=boto3.session.Session())
    print(apply_function_environment(resources), flush=True)
    if os.environ.get("HERALD_FAULTS", "").strip():
        print(faults_notice(os.environ["HERALD_FAULTS"]), flush=True)
    return server, endpoint, resources


#: What in the environment could send this process's AWS calls elsewhere than the embedded AWS, or with other
#: credentials: a profile, a session token, and the shared files (whose ``services`` sections name endpoints that
#: botocore prefers to ``AWS_ENDPOINT_URL``).
_AWS_ELSEWHERE = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def use_embedded_aws(endpoint: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Point every AWS call of this process at ``endpoint`` with fake keys, whatever the user's environment says.

    botocore takes ``AWS_ENDPOINT_URL_<SERVICE>`` (and a config file's ``services`` section) over
    ``AWS_ENDPOINT_URL``, and ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` (or the config file's
    ``ignore_configured_endpoint_urls``) ignores both: real AWS, called with fake keys. So the service-specific
    variables go, endpoints from the environment are used, and the shared config and credentials files are
    replaced with empty ones."""
    environ = os.environ if environ is None else environ
    for name in [name for name in environ if name.startswith("AWS_ENDPOINT_URL_")] + list(_AWS_ELSEWHERE):
        environ.pop(name, None)
    environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        }
    )


def faults_notice(spec: str) -> str:
    """What ``HERALD_FAULTS`` turns on (read here, so a spec that cannot be read stops ``make run`` at once)."""
    from herald.faults import parse_spec

    rules = parse_spec(spec).rules
    listed = "; ".join(f"{rule.service}.{rule.operation} {rule.fault}@{rule.stage}" for rule in rules)
    return f"FAULT INJECTION ON (HERALD_FAULTS): {len(rules)} rules: {listed}"


def apply_function_environment(resources: LocalResources, environ: MutableMapping[str, str] | None = None) -> str:
    """Give this process the environment the template gives the functions (``Globals.Function`` and each
    function's ``Environment.Variables``, parameters at their defaults), pointing at the local resources, so
    that a default changed in template.yaml changes ``make run`` as it changes a deployment. What is set already
    (the user's environment) wins over the local stack's own choices (``allow_local_targets``), which win over
    the template's. Returns what subscribers may be called (``allow_local_targets``)."""
    environ = os.environ if environ is None else environ
    # Where the resources are is the local stack's to say, whatever the environment holds.
    environ.update(resources.environment())
    # moto accepts some requests AWS refuses: botocore checks each against the service's model here.
    environ.setdefault("HERALD_VALIDATE_AWS_REQUESTS", "true")
    targets = allow_local_targets(environ)
    for name, value in resources.function_environment.items():
        environ.setdefault(name, value)
    return targets


def allow_local_targets(environ: MutableMapping[str, str] | None = None) -> str:
    """Let subscribers on this machine and its private networks be called over http, unless
    ``HERALD_ALLOWED_TARGET_NETWORKS`` is already set (``none``: exactly a deployment's networks)."""
    from herald.urls import LOCAL_NETWORKS

    environ = os.environ if environ is None else environ
    environ.setdefault("HERALD_ALLOW_HTTP_URLS", "true")
    scheme = "http and https" if environ["HERALD_ALLOW_HTTP_URLS"].lower() in ("1", "true", "yes", "on") else "https"
    if "HERALD_ALLOWED_TARGET_NETWORKS" in environ:
        networks = environ["HERALD_ALLOWED_TARGET_NETWORKS"].strip() or "none"
        return f"subscriber URLs: {scheme}; networks allowed besides public addresses: {networks} (as set)"
    environ["HERALD_ALLOWED_TARGET_NETWORKS"] = LOCAL_NETWORKS
    return (
        f"subscriber URLs: {scheme}; loopback and private networks are allowed ({LOCAL_NETWORKS}). "
        "HERALD_ALLOWED_TARGET_NETWORKS=none make run gives a deployment's address protection."
    )


def start_workers(count: int, stop: threading.Event, resources: LocalResources) -> list[threading.Thread]:
    """Poll each queue the DeliveryFunction reads (the work queue, the slow lane's) like Lambda's event source
    mappings do, each with its own batch settings from the template and at most ``count`` concurrent
    invocations (or its ``MaximumConcurrency``, if lower), read the table's stream as its mapping does, and
    invoke the sweep on the template's schedule."""
    from herald.services import Services
    from herald.worker import Worker

    if count < 1:
        raise ValueError(f"{count} workers would poll no queue: at least 1 is needed")
    services = Services.create()
    threads: list[threading.Thread] = []
    for source, _, poller in event_source_pollers(resources, services, count):
        name = f"delivery-{source.queue_id}-{len(threads)}"
        thread = threading.Thread(target=poller.run, args=(stop,), name=name, daemon=True)
        thread.start()
        threads.append(thread)
    # The table's stream, read as its event source mapping does (one invocation at a time).
    counter = Worker(services)
    streams = boto3.session.Session().client("dynamodbstreams")
    stream = table_stream_poller(services.store.client, streams, resources.table_name, counter.invoke)
    threads.append(threading.Thread(target=stream.run, args=(stop,), name="delivery-stream", daemon=True))
    threads[-1].start()
    # The schedule that sweeps scheduled work onto the queue, as EventBridge Scheduler runs it (a sweep that runs
    # past the next time overlaps the next one, in a worker of its own, up to ``count`` at once).
    sweeper = Worker(services)
    args = (stop, delivery_schedule(), sweeper.invoke)
    overlaps = {"concurrency": count, "new_handler": lambda: Worker(services).invoke}
    threads.append(
        threading.Thread(target=run_schedule, args=args, kwargs=overlaps, name="delivery-schedule", daemon=True)
    )
    threads[-1].start()
    return threads


def demo_portal_link(base_url: str) -> str:
    """Create the demo tenant and a one-time link (60 minutes, ``manage``) to its subscriber portal."""
    from herald.domain import portal, tenants
    from herald.records import PortalCapability
    from herald.services import Services

    services = Services.create()
    tenant = tenants.create(services, "Demo", {}).tenant
    token, _ = portal.mint_link(services, tenant.id, PortalCapability.MANAGE, 60)
    return f"{base_url}{portal.LOGIN_PATH}?token={token}   (demo tenant {tenant.id}; works once, for 60 min)"


def event_source_pollers(
    resources: LocalResources,
    services: Services,
    count: int,
    *,
    client: SQSClient | None = None,
    template: dict[str, Any] | None = None,
) -> list[tuple[EventSourceSettings, Worker, SqsPoller]]:
    """One poller per concurrent invocation of each of the DeliveryFunction's SQS event sources (template.yaml,
    or ``template``): ``min(count, MaximumConcurrency)`` per source, each with its own worker, as separate Lambda
    containers."""
    from herald.worker import Worker

    sources = [
        (source, min(count, source.maximum_concurrency or count))
        for source in delivery_event_sources(template if template is not None else load_template())
    ]
    # One connection for each poller at once: botocore's pool keeps 10, and more pollers sharing it open connections
    # it then discards, with a warning each.
    pool = Config(max_pool_connections=max(10, sum(instances for _, instances in sources)))
    sqs = client or boto3.session.Session().client("sqs", config=pool)
    pollers: list[tuple[EventSourceSettings, Worker, SqsPoller]] = []
    for source, instances in sources:
        for _ in range(instances):
            worker = Worker(services)
            poller = SqsPoller(
                sqs,
                resources.queue_url_of(source.queue_id),
                worker.handle,
                batch_size=source.batch_size,
                batching_window_seconds=source.maximum_batching_window_seconds,
                function_timeout_seconds=source.function_timeout_seconds,
                report_batch_item_failures=source.report_batch_item_failures,
            )
            pollers.append((source, worker, poller))
    return pollers


def banner(base_url: str, admin_key: str, aws_endpoint: str, portal_link: str = "") -> str:
    return f"""
Herald is running locally.

  API and docs   {base_url}/docs   (ReDoc: {base_url}/redoc, spec: {base_url}/openapi.json)
  Admin key      {admin_key}
  Portal link    {portal_link}
  Embedded AWS   {aws_endpoint}   (moto: table, queues and secret from template.yaml)
  Delivery       workers polling the work queue and the slow lane's like Lambda's SQS triggers,
                 and the table's stream (subscription stats) like its DynamoDB trigger

Try it (in another terminal):

  export HERALD={base_url} ADMIN_KEY={admin_key}
  json() {{ python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }}
  # 1. the operator creates a tenant; its API key is shown once: keep it
  TENANT=$(curl -s -X POST $HERALD/v1/tenants -H "Authorization: Bearer $ADMIN_KEY" \\
       -H 'content-type: application/json' -d '{{"name": "Acme"}}')
  TENANT_ID=$(echo "$TENANT" | json '["id"]') TENANT_KEY=$(echo "$TENANT" | json '["api_key"]["key"]')
  # 2. the tenant subscribes a URL (here: the sample receiver, `make receiver`)
  curl -s -X POST $HERALD/v1/subscriptions -H "Authorization: Bearer $TENANT_KEY" \\
       -H 'content-type: application/json' \\
       -d '{{"url": "http://127.0.0.1:9000/webhooks", "event_types": ["subscription.created"]}}'
  # 3. the operator publishes an event to the tenant
  curl -s -X POST $HERALD/v1/events -H "Authorization: Bearer $ADMIN_KEY" \\
       -H 'content-type: application/json' \\
       -d '{{"type": "subscription.created", "tenant_id": "'$TENANT_ID'",
            "data": {{"username": "ada", "monthly_fee": 9.99, "start_date": "2026-01-01T00:00:00Z"}}}}'

The README walks through it step by step. Ctrl-C stops everything.
"""


#: What every log record carries: anything else on one is what its logger call gave as ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class TerminalFormatter(logging.Formatter):
    """``make run``'s log lines: the message, then what the call gave as ``extra`` (the ids of the event, delivery,
    subscription and tenant, a status code), ``key=value``, as a deployment's JSON lines carry them as fields."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}
        line = super().formatMessage(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={_printable(value)}" for key, value in fields.items())


def _printable(value: object) -> str:
    """A field's value on a terminal line: as ``str`` gives it, control characters (a tenant's name) escaped as the
    CLI escapes them (``herald.cli.output.printable``); one ``str`` cannot give is named by its type, so that the
    line is still written."""
    try:
        text = str(value)
    except Exception:  # any error of a value's __str__: the line matters more than the value
        return f"<unprintable {type(value).__name__}>"
    return printable(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m herald.local", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HERALD_LOCAL_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=_port_argument, help="port of the API (default: HERALD_LOCAL_PORT, or 8000; 0: a free one)"
    )
    parser.add_argument(
        "--aws-host",
        default=os.environ.get("HERALD_LOCAL_AWS_HOST") or None,
        help=(
            "address the embedded AWS listens on (default: HERALD_LOCAL_AWS_HOST, or the loopback address of "
            "--host's family): it asks for no credentials, and holds the admin key"
        ),
    )
    parser.add_argument(
        "--aws-port",
        type=_port_argument,
        help="port of the embedded AWS (default: HERALD_LOCAL_AWS_PORT, or a free one)",
    )
    parser.add_argument(
        "--workers",
        type=_workers_argument,
        default=DEFAULT_WORKERS,
        help=f"concurrent delivery pollers per queue, 1 or more (default: {DEFAULT_WORKERS})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(TerminalFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the embedded AWS logs every call otherwise
    try:
        # The environment's ports and admin key are read here, so that one that cannot be used is a usage error
        # (exit code 2), before anything starts.
        if args.port is None:
            args.port = port_setting("HERALD_LOCAL_PORT", "8000")
        if args.aws_port is None:
            args.aws_port = port_setting("HERALD_LOCAL_AWS_PORT", "0")
        args.aws_port = args.aws_port or None  # 0: a free port
        admin_key = admin_key_setting()
        # The API's port first, held from now on: nothing is started if it cannot be had.
        api_socket = listen_on(args.host, args.port, "HERALD_LOCAL_PORT (e.g. HERALD_LOCAL_PORT=8001 make run)")
        with closing(api_socket), moto_fixes():
            return _serve(args, api_socket, admin_key)
    except (PortError, AdminKeyError) as error:
        print(error, file=sys.stderr, flush=True)
        return 2


class Terminated(Exception):
    """SIGTERM (``kill``, a container or service manager stopping ``make run``), raised as Ctrl-C raises
    KeyboardInterrupt, so that the local stack stops the same way on either."""


def _raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


@contextmanager
def _sigterm_raises_terminated() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` in the main thread while inside. uvicorn handles SIGTERM as it handles SIGINT
    while it serves, shuts down, puts back the handler it found and raises the signal again: with SIGTERM's
    default handler, that killed the process before the workers were stopped (exit code 143)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace, api_socket: socket.socket, admin_key: str) -> int:
    os.environ.pop("HERALD_ADMIN_KEY", None)  # the app reads it from the secret, as in a deployment
    moto, endpoint, resources = start_aws(args.aws_host or loopback_of(args.host), args.aws_port, admin_key)
    stop = threading.Event()
    stack = EmbeddedStack(moto, endpoint, resources, admin_key, stop, start_workers(args.workers, stop, resources))

    from herald.api import create_app

    port = int(api_socket.getsockname()[1])  # the one listened on, when any free port was asked for (0)
    base_url = f"http://{url_host(args.host)}:{port}"
    config = uvicorn.Config(create_app(), host=args.host, port=port, log_level="info", lifespan="off")
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets)
        print(banner(base_url, admin_key, endpoint, demo_portal_link(base_url)), flush=True)

    server.startup = startup  # type: ignore[method-assign]
    try:
        with _sigterm_raises_terminated():
            server.run(sockets=[api_socket])
    except (KeyboardInterrupt, Terminated):
        pass  # uvicorn shut down gracefully, then re-raised Ctrl-C or SIGTERM: that is the normal way out
    finally:
        print("stopping the delivery workers and the embedded AWS...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
