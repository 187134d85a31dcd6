"""Where the API is and which key to use: flags, then environment, then the SAM stack's outputs.

``--api-url`` / ``--key`` win, then ``HERALD_API_URL`` / ``HERALD_ADMIN_KEY`` (not with a stack named by
``--stack-name``); whatever is missing is read from the CloudFormation stack (``--stack-name``, default
``$HERALD_STACK_NAME`` or ``herald``): its ``ApiUrl`` output, and the admin key from the Secrets Manager
secret its ``AdminKeySecretArn`` output names. A flag given empty is refused.
The stack's admin key is only ever sent to the stack's own ``ApiUrl``: a URL given without a key is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald.cli.errors import CliConfigError

if TYPE_CHECKING:
    import boto3

API_URL_ENV = "HERALD_API_URL"
ADMIN_KEY_ENV = "HERALD_ADMIN_KEY"
STACK_NAME_ENV = "HERALD_STACK_NAME"
DEFAULT_STACK_NAME = "herald"
#: Output names in template.yaml.
API_URL_OUTPUT = "ApiUrl"
ADMIN_KEY_SECRET_OUTPUT = "AdminKeySecretArn"  # noqa: S105 - an output name, not a secret


@dataclass(frozen=True)
class CliConfig:
    api_url: str
    key: str


def stack_outputs(session: boto3.session.Session, stack_name: str) -> dict[str, str]:
    """The stack's outputs by key (``describe_stacks``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    cloudformation = aws_client(session, "cloudformation")
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise CliConfigError(f"could not read the outputs of stack {stack_name!r}: {message}") from exc
    except BotoCoreError as exc:
        raise CliConfigError(f"could not read the outputs of stack {stack_name!r}: {exc}") from exc
    if not stacks:
        raise CliConfigError(f"stack {stack_name!r} not found")
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


def read_secret(session: boto3.session.Session, secret_id: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    secretsmanager = aws_client(session, "secretsmanager")
    try:
        value = secretsmanager.get_secret_value(SecretId=secret_id).get("SecretString")
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise CliConfigError(f"could not read the admin key secret: {message}") from exc
    except BotoCoreError as exc:
        raise CliConfigError(f"could not read the admin key secret: {exc}") from exc
    if not value:
        raise CliConfigError("the admin key secret has no string value")
    return checked_key(value, "the stack's admin key secret")


def checked_key(key: str, source: str) -> str:
    """The key as it goes in the ``Authorization`` header: surrounding whitespace (a pasted newline) stripped.
    A key holding a control or non-ASCII character cannot be sent: the error says so and where the key came
    from, and never shows the key."""
    key = key.strip()
    for position, char in enumerate(key, start=1):
        if not " " <= char <= "~":
            kind = "a control character" if char < " " or char == "\x7f" else "a non-ASCII character"
            raise CliConfigError(
                f"the key from {source} holds {kind} (character {position}); a key is printable ASCII: set it again"
            )
    return key


def refuse_empty(**flags: str | None) -> None:
    """A flag given empty (``--key "$KEY"`` with the variable unset) is refused: never read as "not given", which
    would fill it from the environment or a default and send the command to another deployment."""
    for flag, value in flags.items():
        if value is not None and not value.strip():
            raise CliConfigError(f"{flag} is empty: give a value, or leave the flag out to use the default")


def _given(
    api_url: str | None, key: str | None, stack_name: str | None, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The URL and the key given by flag, else by the environment (not with a stack named by flag). Flags given
    empty were refused before (``refuse_empty``, by ``main``)."""
    if stack_name is not None:
        environ = {name: value for name, value in environ.items() if name not in (API_URL_ENV, ADMIN_KEY_ENV)}
    api_url = api_url or environ.get(API_URL_ENV) or None
    if key is not None:
        return api_url, checked_key(key, "--key")
    if (environ.get(ADMIN_KEY_ENV) or "").strip():
        return api_url, checked_key(environ[ADMIN_KEY_ENV], ADMIN_KEY_ENV)
    return api_url, None


def resolve_config(
    *,
    api_url: str | None,
    key: str | None,
    stack_name: str | None,
    region: str | None,
    profile: str | None,
    environ: Mapping[str, str],
    session: boto3.session.Session | None = None,
) -> CliConfig:
    """Flags first, then the environment; the stack is only asked for what is still missing. A stack named by
    flag (``--stack-name``) is where the URL and the key come from, not the environment's ``HERALD_API_URL`` and
    ``HERALD_ADMIN_KEY`` (set for another deployment); ``--api-url`` and ``--key`` still come first. Flags given
    empty are refused before this is asked (``refuse_empty``), never replaced by the environment's value."""
    api_url, key = _given(api_url, key, stack_name, environ)
    if api_url is None or key is None:
        name = stack_name or environ.get(STACK_NAME_ENV) or DEFAULT_STACK_NAME
        try:
            if session is None:
                session = aws_session(region=region, profile=profile)
            outputs = stack_outputs(session, name)
        except CliConfigError as exc:
            if api_url is None and (stack_name or environ.get(STACK_NAME_ENV)):
                raise
            if api_url is None:  # nothing was given: perhaps no stack is meant at all
                missing = API_URL_ENV if key is not None else f"{API_URL_ENV} and {ADMIN_KEY_ENV}"
                raise CliConfigError(f"{exc.message}; for an API of your own (`make run`'s), set {missing}") from exc
            raise CliConfigError(f"no key for {api_url}: set --key or {ADMIN_KEY_ENV} ({exc.message})") from exc
        stack_url = outputs.get(API_URL_OUTPUT)
        if api_url is None:
            if not stack_url:
                raise CliConfigError(f"stack {name!r} has no {API_URL_OUTPUT} output; set {API_URL_ENV}")
            api_url = stack_url
        if key is None and (not stack_url or api_url.rstrip("/") != stack_url.rstrip("/")):
            # The stack's admin key goes to the stack's own API only, never to a URL given beside it.
            raise CliConfigError(
                f"no key for {api_url}: set --key or {ADMIN_KEY_ENV} (the admin key of stack {name!r} is only "
                f"sent to the stack's own {API_URL_OUTPUT}: {stack_url or 'none'})"
            )
        if key is None:
            secret_id = outputs.get(ADMIN_KEY_SECRET_OUTPUT)
            if not secret_id:
                raise CliConfigError(f"stack {name!r} has no {ADMIN_KEY_SECRET_OUTPUT} output; set {ADMIN_KEY_ENV}")
            key = read_secret(session, secret_id)
    return CliConfig(api_url=checked_url(api_url).rstrip("/") + "/", key=key)


def checked_url(url: str) -> str:
    """The API's URL, if it is one: ``https://`` and a host, or ``http://`` to this machine only (``make run``):
    every request carries a key, the admin key most often, which plain HTTP would show to the network."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CliConfigError(f"the API URL {url!r} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliConfigError(f"the API URL {url!r} is not an http:// or https:// URL with a host")
    if parsed.scheme == "http" and not _loopback(parsed.host):
        raise CliConfigError(
            f"the API URL {url!r} is plain http:// to another machine, which would send the key in the clear: "
            "use https:// (http:// is for this machine only: a loopback address, or localhost, as `make run` serves)"
        )
    return url


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine: a loopback address, the unspecified one (``0.0.0.0``, ``::``, which
    connect here; ``make run`` prints it when told to listen on every interface), or ``localhost``, which the
    hosts file names. Not ``localhost.`` nor a name under it: RFC 6761 has them answered here, but a resolver
    without that rule (glibc's, with no systemd module) asks DNS for them, and DNS may answer another machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def aws_session(*, region: str | None, profile: str | None) -> boto3.session.Session:
    """The AWS session the CLI reads the stack with (``--region``, ``--profile``, else AWS's own configuration).
    A configuration botocore cannot use is ``not_configured``, here and in ``aws_client``, never a traceback:
    botocore raises its own errors (a file it cannot parse, an unknown profile) or a plain ``ValueError``
    (``AWS_MAX_ATTEMPTS=abc``)."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError
    except ImportError as exc:  # pragma: no cover - boto3 is a dependency of the project
        raise CliConfigError(f"set {API_URL_ENV} and {ADMIN_KEY_ENV} (boto3 is needed to read the stack)") from exc
    options: dict[str, Any] = {}
    if region:
        options["region_name"] = region
    if profile:
        options["profile_name"] = profile
    try:
        return boto3.session.Session(**options)
    except (BotoCoreError, ValueError) as exc:
        raise CliConfigError(f"no AWS session: {exc}") from exc


def aws_client(session: boto3.session.Session, service: str) -> Any:
    """A client of ``service``: the one place the CLI makes them. botocore reads most of the configuration (the
    retries, the endpoint, whether the region is one) only now: a value it cannot use is ``not_configured``, as in
    ``aws_session``. What a call of the client fails with is for its caller to say."""
    from botocore.exceptions import BotoCoreError

    try:
        return session.client(service)  # type: ignore[call-overload]
    except (BotoCoreError, ValueError) as exc:
        raise CliConfigError(
            f"no AWS {service} client (check the AWS settings: AWS_* variables, ~/.aws/config): {exc}"
        ) from exc
