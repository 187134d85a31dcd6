"""Deployment settings: one documented set of ``HERALD_*`` environment variables.

Settings are read lazily through :func:`get_settings`, so importing any Herald module never fails
for a missing variable. AWS endpoints are not configured here: boto3 reads the standard
``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``), so the same code talks to AWS or moto.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from herald.urls import parse_networks

#: Svix's schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27.6 hours).
DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
#: The longest CloudWatch namespace.
MAX_METRICS_NAMESPACE = 255
#: The largest request body a deployment may take (``max_request_bytes``): a batch publish's answer shows its events'
#: data, as much as the body held, and Lambda's response (6,291,456 bytes) carries it escaped, up to three times its
#: size (``é``, two bytes, is ``\\u00e9``); 1 MiB answers in at most about 3.2 MB. (The portal's pages, which show a
#: refused form again as typed, check their own size: ``herald.lambda_response``.)
MAX_REQUEST_BYTES = 1024 * 1024
#: The longest portal logo (``HERALD_PORTAL_LOGO_URL``): Lambda holds a function's environment variables to 4 KB in
#: all, the template's own take about 1 KB of them, so a longer inline (``data:``) logo could never be deployed; a
#: larger image goes at an ``https://`` URL.
MAX_PORTAL_LOGO_CHARS = 2_048
#: The longest a rotated-out signing secret may keep signing (hours): a week, the deployment's default and a
#: rotation's own.
MAX_GRACE_HOURS = 168


#: An origin a page may be framed by: ``https://`` and a host, or ``*.`` and a domain of two labels or more (not
#: ``*.com``), and an optional port.
_HTTPS_ORIGIN = r"https://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\*\.[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)(:[0-9]{1,5})?"


class Settings(BaseSettings):
    """Everything a deployment can tune. Each field is read from ``HERALD_<FIELD>``."""

    # A refused value is named by its variable and why, never shown: hide_input_in_errors keeps it (the admin key's
    # included) out of the error's str(), which a failed start prints and logs.
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore", frozen=True, hide_input_in_errors=True)

    table_name: str = Field(
        "",
        description="DynamoDB table holding tenants, subscriptions, events and deliveries.",
    )
    queue_url: str = Field("", description="URL of the SQS work queue read by the delivery function.")
    dead_letter_queue_url: str = Field("", description="URL of the work queue's dead-letter queue.")
    slow_queue_url: str = Field(
        "",
        description="URL of the slow lane's queue (its own event source on the delivery function); empty: none.",
    )
    admin_key: str = Field(
        "",
        description="The operator's admin API key, given directly (local runs). Deployments use admin_key_secret_arn.",
    )
    admin_key_secret_arn: str = Field("", description="Secrets Manager secret holding the operator's admin API key.")
    admin_key_cache_seconds: int = Field(
        300,
        ge=0,
        description="How long a fetched admin key is cached in a warm Lambda.",
    )

    event_ttl_days: int = Field(30, ge=1, le=365, description="How long events are kept.")
    attempt_ttl_days: int = Field(
        30,
        ge=1,
        le=365,
        description="How long deliveries and their attempt log are kept (never less long than their event).",
    )
    max_event_data_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=350 * 1024,
        description="Largest accepted event `data`, as serialized JSON (413 above).",
    )
    max_request_bytes: int = Field(
        512 * 1024,
        ge=4096,
        le=MAX_REQUEST_BYTES,
        description="Largest accepted request body of any kind (413 above).",
    )
    allowed_target_networks: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        (),
        description=(
            "Networks Herald may deliver to besides public addresses (self-hosted targets): comma-separated CIDRs, "
            "empty or `none` for none (a deployment's default). Loopback, link-local (the metadata service "
            "169.254.169.254) and multicast open only to an entry inside them, never to a wider one."
        ),
    )
    allow_http_urls: bool = Field(
        False,
        description="Accept plain `http` subscriber URLs (the local stack); a deployment calls `https` only.",
    )
    allow_non_default_ports: bool = Field(
        True,
        description=(
            "Accept subscriber URLs with an explicit port (such as :8443). On by default, as in Svix: only public "
            "addresses are reachable, so a port reaches nothing internal, and receivers often listen on 8443 or "
            "similar. Turn it off to hold every URL to 443 (and 80 when http is allowed)."
        ),
    )

    delivery_timeout_seconds: float = Field(
        15.0, gt=0, le=30, description="Total time allowed for one delivery attempt."
    )
    retry_schedule: Annotated[tuple[int, ...], NoDecode] = Field(
        DEFAULT_RETRY_SCHEDULE,
        description=(
            "Seconds to wait before each attempt, the first one included (0: the first attempt is made at once); "
            "comma-separated. Steps may exceed 12 h."
        ),
    )
    retry_jitter: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Random spread applied to each retry delay (0.2 = +/-20 %).",
    )
    throttle_min_delay_seconds: int = Field(60, ge=0, description="Least wait after a timeout, a 429, a 502 or a 504.")
    max_receive_count: int = Field(
        10,
        ge=5,
        description="The work queue's RedrivePolicy maxReceiveCount (kept in step with template.yaml).",
    )
    fanout_page_size: int = Field(250, ge=10, le=1000, description="Subscriptions read per fan-out query page.")
    direct_fanout_max: int = Field(
        10,
        ge=0,
        le=100,
        description="Publishing queues the deliveries itself (no fan-out message, one queue hop less) when the "
        "event's routes number at most this many; 0 always queues a fan-out message.",
    )
    secret_rotation_grace_hours: int = Field(
        24,
        ge=0,
        le=MAX_GRACE_HOURS,
        description="How long a rotated-out signing secret keeps signing deliveries.",
    )

    # --- endpoint health, throttling and telemetry -------------------------------------------------
    failing_after_failures: int = Field(
        3,
        ge=1,
        description="Consecutive failed attempts after which a subscription counts as failing (its clock starts).",
    )
    recovered_notice_after_seconds: float = Field(
        300,
        ge=0,
        description="How long a failing streak must have lasted (from when it counted as failing to the success that "
        "ended it) for the operator to hear of its end (subscription.recovered): an endpoint that fails a few "
        "attempts in a row now and then is no news each time.",
    )
    disable_after_failing_hours: float = Field(
        120,
        gt=0,
        description="A subscription failing continuously this long is disabled (default 5 days).",
    )
    rate_limit_local_wait_seconds: float = Field(
        5.0,
        ge=0,
        le=30,
        description="How long a delivery over its subscription's rate waits in the worker before it is postponed "
        "through the queue instead (a wait for one of the worker's connections not counted); on the work queue no "
        "longer than slow_lane_after_seconds.",
    )
    slow_lane_after_seconds: float = Field(
        2.0,
        gt=0,
        le=30,
        description="An attempt still unanswered after this long (or timed out) sends its subscription's deliveries "
        "through the slow lane.",
    )
    slow_lane_hand_over: bool = Field(
        True,
        description="A scheduled attempt from the work queue still unanswered after slow_lane_after_seconds is cut "
        "short and tried again at once from the slow lane (with the whole timeout), so that no work-queue "
        "invocation waits longer for an endpoint that starts hanging.",
    )
    slow_lane_seconds: int = Field(
        900,
        ge=0,
        description="How long a subscription stays on the slow lane at least after its latest slow attempt; then until "
        "an attempt answers within slow_lane_after_seconds, or slow_lane_max_seconds are over.",
    )
    slow_lane_max_seconds: int = Field(
        86400,
        ge=0,
        description="How long a subscription stays on the slow lane at most after its latest slow attempt, while "
        "none of its attempts answers within slow_lane_after_seconds (an endpoint with an event a day, slow each "
        "time, is not cut short and sent each webhook again from the slow lane).",
    )
    breaker_timeouts: int = Field(
        5, ge=1, description="Timeouts in a row after which a subscription's circuit breaker opens."
    )
    breaker_open_seconds: float = Field(
        60.0, gt=0, description="How long the breaker stays open the first time; doubled each time it opens again."
    )
    breaker_max_open_seconds: float = Field(3600.0, gt=0, description="The longest the breaker stays open at once.")
    metrics_namespace: str = Field("Herald", min_length=1, description="CloudWatch namespace of Herald's metrics.")
    metrics_service: str = Field(
        "herald",
        min_length=1,
        description="The value of the metrics' one dimension, `service`: the stack's name in a deployment, so that "
        "stacks sharing an account and a namespace (staging beside production) write metrics of their own, and each "
        "stack's alarms read its own.",
    )
    detailed_metrics: bool = Field(
        False,
        description="Write every delivery metric. False writes the core ones only (herald.metrics.CORE: those the "
        "alarms read, successes, failures and the sweep's lag, and failures for good, latency from publication, "
        "duplicate sends); CloudWatch bills each metric $0.30 a month for every hour it is written in.",
    )
    log_successful_attempts: bool = Field(
        True,
        description="Log a line (INFO) for each attempt that succeeds, as for each that fails. False logs it at DEBUG "
        "only: the delivery log (the API, the portal) still records every attempt, and the delivery function's "
        "log ingestion, one line per delivered webhook, falls to its failures.",
    )

    # --- API keys and tenant limits (the ceilings are the OpenAPI schema's; herald.limits enforces these) --
    admin_key_refresh_seconds: int = Field(
        30,
        ge=1,
        description="Least time between two re-reads of the admin key secret prompted by a key that is not the "
        "cached one: a rotated admin key works within this time, and a flood of wrong keys costs one read per period.",
    )
    max_subscriptions_per_tenant: int = Field(1000, ge=1, description="Most subscriptions one tenant may have.")
    max_api_keys_per_tenant: int = Field(
        100,
        ge=1,
        description="Most API keys one tenant may hold: a new key beyond it is refused, but for a rotation "
        "(`revoke_existing`), which leaves one.",
    )
    max_event_types_per_subscription: int = Field(
        50, ge=1, le=50, description="Most event types one subscription may list (`*` counts as one)."
    )
    max_url_length: int = Field(2048, ge=64, le=2048, description="Longest subscriber URL, in characters.")
    max_description_length: int = Field(
        500, ge=0, le=500, description="Longest subscription description, in characters."
    )
    max_metadata_bytes: int = Field(
        8192,
        ge=64,
        le=65536,
        description="Largest tenant or subscription metadata, as compact JSON (besides at most 50 entries, "
        "keys of 1-64 and values of at most 512 characters).",
    )

    @field_validator("allowed_target_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str | list | tuple):
            return parse_networks(value)
        return value

    # --- recovery and the dead-letter queue ----------------------------------------------------------
    recovery_max_days: int = Field(
        14,
        ge=1,
        le=30,
        description="How far back a subscription's recovery may reach (`since` at most this many days ago).",
    )
    recovery_job_ttl_days: int = Field(7, ge=1, le=30, description="How long a recovery job's progress is kept.")
    recovery_progress_seconds: int = Field(
        10,
        ge=0,
        le=300,
        description="How long a running recovery's counts, read from its tickets (one per delivery it sends), are "
        "answered again before they are read anew: however many poll it, a job's tickets are read at most about once "
        "in this time. 0: on every request.",
    )
    max_recoveries_per_subscription: int = Field(
        5,
        ge=1,
        le=100,
        description="Most recoveries of one subscription unfinished at once (a new one over other windows is a 422).",
    )
    dead_letter_max_redrives: int = Field(
        3,
        ge=1,
        description="A message back in the dead-letter queue after this many redrives counts as poison and stays.",
    )

    # --- tests and the local stack ---------------------------------------------------------------------
    faults: str = Field(
        "",
        description="Faults injected into Herald's AWS clients on purpose (tests, `make run`; never a deployment): "
        "a spec such as `dynamodb:throttle=0.05, sqs.SendMessageBatch:partial=0.02, seed=7` (herald.faults). "
        "Empty: none.",
    )

    aws_read_timeout_seconds: float = Field(
        10,
        gt=0,
        le=30,
        description="How long one attempt of an AWS call waits for its answer (botocore's `read_timeout`; 4 attempts "
        "at most). The API function sets 5: an API request makes no AWS call it could not finish within Lambda's "
        "time left, and a shorter wait leaves room for the retries. At most 30: the schedule's sweep, in the "
        "DeliveryFunction's 60 s, starts a page only while one attempt at its longest and 6 s more are left.",
    )
    validate_aws_requests: bool = Field(
        False,
        description="botocore checks every AWS request against the service's model before sending it (tests and "
        "`make run` turn it on: moto accepts some requests AWS refuses). Off in a deployment: the check costs "
        "about a tenth of the delivery worker's CPU, and AWS validates each request itself.",
    )

    @field_validator("faults")
    @classmethod
    def _check_faults(cls, value: str) -> str:
        if not value:
            return value  # none (a deployment): the fault injector is not even imported
        from herald.faults import parse_spec

        parse_spec(value)  # a FaultSpecError (a ValueError) names the part that cannot be read
        return value

    # --- the subscriber portal (/portal) ----------------------------------------------------------------
    portal_session_minutes: int = Field(
        60,
        ge=5,
        le=720,
        description="How long a portal session lasts once its link is opened (the link itself lasts what the "
        "operator asked, at most 60 minutes).",
    )
    portal_frame_ancestors: str = Field(
        "'none'",
        max_length=500,
        pattern=rf"^('none'|{_HTTPS_ORIGIN}( {_HTTPS_ORIGIN})*)$",
        description="The portal's CSP `frame-ancestors`: `'none'` (no embedding) or the origins of the "
        "operator's dashboard allowed to show it in an iframe, space-separated `https://` origins (e.g. "
        "`https://app.example.com`, `https://*.example.com:8443`). Nothing broader (`*`, `https:`, `'self'`): "
        "embedding lets the portal's cookie go cross-site, and any page that may frame it could overlay its buttons.",
    )
    portal_product_name: str = Field(
        "Herald", min_length=1, max_length=60, description="The product name shown in the portal's header and title."
    )
    portal_accent_color: str = Field(
        "#4f46e5",
        pattern=r"^#[0-9a-fA-F]{6}$",
        description="The portal's accent colour (buttons and links), as `#rrggbb`; one too light to read is shown "
        "darkened (``herald.portal.theme``).",
    )
    portal_logo_url: str = Field(
        "",
        max_length=MAX_PORTAL_LOGO_CHARS,
        pattern=r"^$|^https://[A-Za-z0-9.-]+(:[0-9]+)?/[^\s'\"<>]*$|^data:image/(png|jpeg|webp|gif);base64,[A-Za-z0-9+/=]+$",
        description="A logo shown beside the product name in the portal's header: an `https://` URL (its origin is "
        "added to the portal's CSP `img-src`) or a `data:image/...;base64,` URI (no request at all). Empty: none. "
        f"At most {MAX_PORTAL_LOGO_CHARS:,} characters: Lambda holds a function's environment variables to 4 KB.",
    )

    @field_validator("metrics_namespace")
    @classmethod
    def _check_metrics_namespace(cls, value: str) -> str:
        # CloudWatch takes printable ASCII, and refuses what begins with AWS/ (AWS's own); an EMF line it refuses
        # makes no metric, and nothing says so: the alarms would read nothing. A colon is left out, as the template's
        # MetricsNamespace does (CloudWatch refuses one first).
        if len(value) > MAX_METRICS_NAMESPACE or not all(" " <= char <= "~" and char != ":" for char in value):
            raise ValueError(f"at most {MAX_METRICS_NAMESPACE} printable ASCII characters, no colon")
        if value.startswith("AWS/"):
            raise ValueError("a namespace beginning with AWS/ is AWS's own")
        if value.startswith("$") or not value.strip():
            raise ValueError("a namespace neither begins with $ nor is only spaces (the template's rule)")
        return value

    @field_validator("admin_key")
    @classmethod
    def _check_admin_key(cls, value: str) -> str:
        from herald.ids import admin_key_problem

        problem = admin_key_problem(value) if value else None  # empty: none set, the secret is read
        if problem is not None:
            raise ValueError(f"the admin key cannot be used: {problem}")
        return value

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
            return tuple(int(part) for part in parts)
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("the retry schedule needs at least one attempt")
        if any(step < 0 for step in value):
            raise ValueError("retry delays cannot be negative")
        if value[0] != 0:
            raise ValueError("the first attempt is made when the event is published: the schedule starts with 0")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
