"""The local stack gives its process the environment template.yaml gives the functions (Globals and each
function's variables, parameters at their defaults), so a default changed in the template changes `make run` as it
changes a deployment; what the user set, then the local stack's own choices (local networks over http), win."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from herald.local.resources import (
    LocalResources,
    TemplateTranslationError,
    create_local_resources,
    load_template,
)
from herald.local.stack import apply_function_environment
from herald.settings import Settings
from herald.urls import LOCAL_NETWORKS
from tests.support import ADMIN_KEY

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def changed_template() -> dict[str, Any]:
    """template.yaml with other parameter defaults than the application's own defaults."""
    template = copy.deepcopy(load_template())
    defaults = {"RetrySchedule": "0,7,70", "DeliveryTimeoutSeconds": 11, "RetentionDays": 9, "MetricsNamespace": "Hx"}
    for name, value in defaults.items():
        template["Parameters"][name]["Default"] = value
    return template


def test_the_functions_environment_is_the_templates_resolved(changed_template: dict[str, Any]) -> None:
    resources = create_local_resources(admin_key=ADMIN_KEY, template=changed_template)
    environment = resources.function_environment
    # parameters at their defaults, literals as strings, resources as the local ones
    assert environment["HERALD_RETRY_SCHEDULE"] == "0,7,70"
    assert environment["HERALD_DELIVERY_TIMEOUT_SECONDS"] == "11"
    assert environment["HERALD_EVENT_TTL_DAYS"] == environment["HERALD_ATTEMPT_TTL_DAYS"] == "9"
    assert environment["HERALD_METRICS_NAMESPACE"] == "Hx"
    assert environment["HERALD_ALLOW_HTTP_URLS"] == "false"
    assert environment["POWERTOOLS_SERVICE_NAME"] == "herald"
    assert {name: environment[name] for name in resources.environment()} == resources.environment()


def test_the_local_stack_applies_it_under_what_is_set_and_its_own_choices(
    changed_template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the local resources of a template whose defaults differ from the application's, and a user's setting
    resources = create_local_resources(admin_key=ADMIN_KEY, template=changed_template)
    environ = {"HERALD_EVENT_TTL_DAYS": "3", "HERALD_TABLE_NAME": "elsewhere"}

    # WHEN the local stack sets up its process's environment
    apply_function_environment(resources, environ)

    # THEN the template's variables are there, at the template's values
    assert environ["HERALD_RETRY_SCHEDULE"] == "0,7,70"
    assert environ["HERALD_DELIVERY_TIMEOUT_SECONDS"] == "11"
    assert environ["HERALD_ATTEMPT_TTL_DAYS"] == "9"
    assert environ["POWERTOOLS_SERVICE_NAME"] == "herald"
    # ... but what the user set wins, and the local stack still calls local receivers over http
    assert environ["HERALD_EVENT_TTL_DAYS"] == "3"
    assert environ["HERALD_ALLOWED_TARGET_NETWORKS"] == LOCAL_NETWORKS
    assert environ["HERALD_ALLOW_HTTP_URLS"] == "true"
    # ... and the resources are the local ones whatever was set
    assert environ["HERALD_TABLE_NAME"] == resources.table_name
    # AND the application reads them as its settings
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.retry_schedule == (0, 7, 70)
    assert settings.delivery_timeout_seconds == 11
    assert (settings.event_ttl_days, settings.attempt_ttl_days) == (3, 9)
    assert settings.allow_http_urls is True


def test_a_users_networks_and_scheme_win_over_the_local_stacks(resources: LocalResources) -> None:
    environ = {"HERALD_ALLOWED_TARGET_NETWORKS": "none", "HERALD_ALLOW_HTTP_URLS": "false"}
    notice = apply_function_environment(resources, environ)
    assert (environ["HERALD_ALLOWED_TARGET_NETWORKS"], environ["HERALD_ALLOW_HTTP_URLS"]) == ("none", "false")
    assert "(as set)" in notice


def test_a_variable_two_functions_set_differently_is_refused(changed_template: dict[str, Any]) -> None:
    # GIVEN the delivery function given another value of a variable the API function has
    variables = {"HERALD_ADMIN_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:other"}
    changed_template["Resources"]["DeliveryFunction"]["Properties"]["Environment"] = {"Variables": variables}
    # THEN the local stack, one process for both, says it cannot run them
    with pytest.raises(TemplateTranslationError, match="one process"):
        create_local_resources(admin_key=ADMIN_KEY, template=changed_template)
