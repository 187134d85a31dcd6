"""How `make run` starts its embedded AWS (``herald.local.stack``): every AWS call of the process goes to it, whatever
the user's AWS environment says."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from herald.local.moto_fixes import moto_fixes
from herald.local.stack import TerminalFormatter, main, start_aws, use_embedded_aws
from herald.settings import get_settings
from herald.worker import dispatch
from tests.local_stack_support import announced, stack_environment, start_stack
from tests.process_guard import Processes, stop_group
from tests.support import ADMIN_KEY


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """The local stack sets this process's environment: put it back as it was."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


def _closed_port() -> int:
    """A port nothing listens on (bound to find it, then released)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_service_endpoints_of_the_environment_give_way_to_the_embedded_aws(tmp_path: Path) -> None:
    # GIVEN a user's environment that names other endpoints for some services, ignores configured endpoints, and a
    # config file whose profile names its own endpoint for SQS and ignores configured endpoints too
    config = tmp_path / "config"
    config.write_text(
        "[default]\nregion = us-east-1\nignore_configured_endpoint_urls = true\nservices = elsewhere\n\n"
        "[services elsewhere]\nsqs =\n  endpoint_url = http://127.0.0.1:1\n",
        encoding="utf-8",
    )
    environ = {
        "AWS_ENDPOINT_URL_SQS": "https://sqs.us-east-1.amazonaws.com",
        "AWS_ENDPOINT_URL_DYNAMODB": "https://dynamodb.us-east-1.amazonaws.com",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
        "AWS_CONFIG_FILE": str(config),
        "AWS_PROFILE": "default",
        "AWS_SESSION_TOKEN": "a-real-looking-token",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    # WHEN the local stack points the process at its embedded AWS
    use_embedded_aws("http://127.0.0.1:4566", environ)
    # THEN every client the process makes calls the embedded AWS, with the local keys, in the user's region
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(environ)
        session = boto3.session.Session()
        clients = [session.client("sqs"), session.client("dynamodb"), session.client("dynamodbstreams")]
        clients.append(session.client("secretsmanager"))
        for client in clients:
            assert client.meta.endpoint_url == "http://127.0.0.1:4566", client.meta.service_model.service_name
        credentials = session.get_credentials()
        assert credentials is not None
        assert (credentials.access_key, credentials.token) == ("local", None)
        assert session.region_name == "eu-west-1"
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.usefixtures("restored_environment")
def test_the_stacks_sqs_client_calls_the_embedded_aws_when_the_user_set_another_sqs_endpoint() -> None:
    # GIVEN a user's AWS_ENDPOINT_URL_SQS (here a port nothing answers on; one attempt per call)
    os.environ["AWS_ENDPOINT_URL_SQS"] = f"http://127.0.0.1:{_closed_port()}"
    os.environ["AWS_MAX_ATTEMPTS"] = "1"
    # WHEN the local stack starts its embedded AWS
    with moto_fixes():
        server, endpoint, resources = start_aws("127.0.0.1", None, ADMIN_KEY)
        try:
            # THEN its SQS client is the embedded AWS's, where the template's queues are
            sqs = boto3.session.Session().client("sqs")
            assert sqs.meta.endpoint_url == endpoint
            assert resources.queue_url in sqs.list_queues()["QueueUrls"]
        finally:
            server.stop()


# ---------------------------------------------------------------------------------------------- ports

#: A ceiling for a start that must fail at once (a busy machine included), never a pause.
FAIL_FAST_SECONDS = 30


def _outcome(call: Callable[[], object]) -> object:
    """What ``call`` returned or raised, or a failure if it had not within the ceiling (run in a thread, so a start
    that hangs fails the test instead of stopping the suite)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # SystemExit included: what a start that stops says
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(FAIL_FAST_SECONDS)
    assert outcome, f"still starting after {FAIL_FAST_SECONDS} s"
    return outcome[0]


@contextmanager
def _bound_not_listening() -> Iterator[int]:
    """A port another socket has bound without listening: a connection to it is refused, a bind fails."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as taken:
        taken.bind(("127.0.0.1", 0))
        yield int(taken.getsockname()[1])


@pytest.mark.usefixtures("restored_environment")
def test_an_aws_port_another_socket_holds_stops_the_start_at_once() -> None:
    with _bound_not_listening() as port, moto_fixes():
        outcome = _outcome(lambda: start_aws("127.0.0.1", port, ADMIN_KEY))
    assert isinstance(outcome, SystemExit), outcome
    assert f"port {port} of 127.0.0.1" in str(outcome)
    assert "HERALD_LOCAL_AWS_PORT" in str(outcome)


@pytest.mark.usefixtures("restored_environment")
def test_an_api_port_another_socket_holds_stops_make_run_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _bound_not_listening() as port:
        outcome = _outcome(lambda: main(["--port", str(port)]))
    assert outcome == 2
    error = capsys.readouterr().err
    assert f"port {port} of 127.0.0.1" in error
    assert "HERALD_LOCAL_PORT" in error
    assert "AWS_ENDPOINT_URL" not in os.environ  # the embedded AWS was never started


@pytest.mark.usefixtures("restored_environment")
def test_a_host_this_machine_does_not_have_stops_make_run_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = _outcome(lambda: main(["--host", "host.invalid", "--port", "0"]))
    assert outcome == 2
    assert "host.invalid" in capsys.readouterr().err


def _ipv6_loopback() -> bool:
    try:
        with closing(socket.socket(socket.AF_INET6, socket.SOCK_STREAM)) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
@pytest.mark.usefixtures("restored_environment")
def test_the_embedded_aws_runs_on_an_ipv6_host() -> None:
    with moto_fixes():
        server, endpoint, resources = start_aws("::1", None, ADMIN_KEY)
        try:
            assert endpoint.startswith("http://[::1]:")
            assert resources.queue_url in boto3.session.Session().client("sqs").list_queues()["QueueUrls"]
        finally:
            server.stop()


@pytest.mark.usefixtures("restored_environment")
def test_the_embedded_aws_takes_a_free_port_itself_and_lets_it_go_when_stopped() -> None:
    with moto_fixes():
        server, endpoint, _ = start_aws("127.0.0.1", None, ADMIN_KEY)
        try:
            assert endpoint == f"http://127.0.0.1:{server.port}"
        finally:
            server.stop()
    # and once stopped, its port is let go
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", server.port))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HERALD_LOCAL_PORT", "70000"),
        ("HERALD_LOCAL_PORT", "abc"),
        ("HERALD_LOCAL_PORT", "-1"),
        ("HERALD_LOCAL_AWS_PORT", "70000"),
        ("HERALD_LOCAL_AWS_PORT", "abc"),
    ],
)
@pytest.mark.usefixtures("restored_environment")
def test_a_port_setting_that_is_not_a_port_stops_make_run_with_a_usage_message(
    name: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a port setting out of range or not a number
    os.environ[name] = value
    # WHEN make run starts
    outcome = _outcome(lambda: main([]))
    # THEN it stops at once, as for a port in use: exit code 2, a message naming the setting and what it may be
    assert outcome == 2, outcome
    error = capsys.readouterr().err
    assert f"set {name} to a number from 1 to 65535 (or 0: a free port)" in error, error
    assert repr(value) in error
    assert "Traceback" not in error
    assert "AWS_ENDPOINT_URL" not in os.environ  # the embedded AWS was never started


@pytest.mark.parametrize("option", ["--port", "--aws-port"])
@pytest.mark.usefixtures("restored_environment")
def test_a_port_option_that_is_not_a_port_is_a_usage_error(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = _outcome(lambda: main([option, "65536"]))
    assert isinstance(outcome, SystemExit), outcome
    assert outcome.code == 2
    assert f"argument {option}: '65536' is not a port" in capsys.readouterr().err


@pytest.mark.usefixtures("restored_environment")
def test_an_aws_port_out_of_range_stops_the_start_with_a_message() -> None:
    with moto_fixes():
        outcome = _outcome(lambda: start_aws("127.0.0.1", 65536, ADMIN_KEY))
    assert isinstance(outcome, SystemExit), outcome
    assert "port 65536 of 127.0.0.1" in str(outcome)
    assert "set HERALD_LOCAL_AWS_PORT to a number from 1 to 65535" in str(outcome)


# ---------------------------------------------------------------------------------------------- stopping

#: A ceiling for the stack to stop on a signal (stop_group kills its group and fails the test past it).
STOP_SECONDS = 30


def _serving(processes: Processes, log: Path, environment: dict[str, str]) -> subprocess.Popen[Any]:
    """`make run`'s program started by ``processes`` with ``environment``, once its banner is in ``log``."""
    stack = start_stack(processes, log, environment)
    announced(stack, log)
    return stack


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_make_run_stops_cleanly_on_sigterm_as_on_ctrl_c(
    sig: signal.Signals, processes: Processes, tmp_path: Path
) -> None:
    # GIVEN `make run`'s program serving, on a free port of its own choosing (HERALD_LOCAL_PORT=0)
    environment = stack_environment(ADMIN_KEY, HERALD_LOCAL_PORT="0")
    log = tmp_path / "stack.log"
    stack = _serving(processes, log, environment)
    # WHEN the signal arrives (`kill`, a container or service manager stopping it; or Ctrl-C)
    code = stop_group(stack, sig, grace=STOP_SECONDS)
    # THEN the stack stopped its workers and the embedded AWS itself, and exited with 0 (stop_group raises
    # TimeoutError if it had to kill the group)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "stopping the delivery workers and the embedded AWS..." in text
    assert "Traceback" not in text, text
    # AND the banner named the port it listened on, not the 0 asked for
    found = re.search(r"API and docs   http://127\.0\.0\.1:(\d+)/docs", text)
    assert found is not None, text
    assert int(found.group(1)) != 0


# ---------------------------------------------------------------------------------------------- where it listens


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except ConnectionRefusedError:
        return False


def test_the_embedded_aws_stays_on_loopback_when_the_api_listens_on_every_interface(
    processes: Processes, tmp_path: Path
) -> None:
    # GIVEN `make run` told to listen on every interface (to be reached from another device or container)
    environment = stack_environment(
        ADMIN_KEY, HERALD_LOCAL_HOST="0.0.0.0", HERALD_LOCAL_PORT="0", HERALD_LOCAL_AWS_PORT="0"
    )
    log = tmp_path / "stack.log"
    stack = _serving(processes, log, environment)
    text = log.read_text()
    api = re.search(r"API and docs   http://0\.0\.0\.0:(\d+)/docs", text)
    aws = re.search(r"Embedded AWS   http://([^:]+):(\d+)", text)
    assert api is not None, text
    assert aws is not None, text
    api_port, aws_host, aws_port = int(api.group(1)), aws.group(1), int(aws.group(2))
    # WHEN it is called at another of this machine's addresses than 127.0.0.1 (127.0.0.2: every 127/8 address is
    # this machine's, and only a socket on every interface, or on that one, answers there)
    # THEN the API answers there, and the embedded AWS (no credentials asked; the admin key's secret behind it)
    # does not: it listens on 127.0.0.1 alone, and says so
    assert _reachable("127.0.0.2", api_port)
    assert aws_host == "127.0.0.1"
    assert _reachable("127.0.0.1", aws_port)
    assert not _reachable("127.0.0.2", aws_port)
    assert stop_group(stack, signal.SIGTERM, grace=STOP_SECONDS) == 0


def test_make_runs_log_lines_carry_the_ids_a_deployments_json_lines_carry() -> None:
    # GIVEN make run's formatter, and a line of the delivery function's logger with its fields (Powertools' child
    # logger, as the worker writes it) and a tenant's name holding a control character
    formatter = TerminalFormatter("%(levelname)s %(name)s: %(message)s")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Collect()
    underneath = logging.getLogger(dispatch.logger.name)  # the standard logger Powertools' child logger writes to
    underneath.addHandler(handler)
    try:
        extra = {"delivery_id": "dlv_1", "status_code": 200, "tenant_name": "a\x1bb"}
        dispatch.logger.info("attempt made", extra=extra)
    finally:
        underneath.removeHandler(handler)
    # THEN the line says them after the message, the control character escaped
    (line,) = lines
    assert line.endswith(": attempt made delivery_id=dlv_1 status_code=200 tenant_name=a\\x1bb"), line

    # AND a value that cannot be written as text is named by its type: the line is still written
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    record = logging.makeLogRecord({"msg": "attempt made", "levelname": "INFO", "name": "n", "odd": Unprintable()})
    assert formatter.format(record).endswith("attempt made odd=<unprintable Unprintable>")
