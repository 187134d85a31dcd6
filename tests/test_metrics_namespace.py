"""The metrics' CloudWatch namespace is one CloudWatch takes: an EMF line whose namespace it refuses makes no metric,
and nothing says so (the alarms then read nothing). The template's parameter and the setting refuse the same."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from herald.local.template import load_template
from herald.settings import Settings

TAKEN = ["Herald", "My Company/Webhooks", "herald-prod_2.east#1", "x" * 255]
REFUSED = [
    "AWS/Herald",  # AWS's own namespaces
    "Herald:prod",  # a colon
    "Héraut",  # not ASCII
    "Herald\tprod",  # a control character
    "x" * 256,  # too long
    "$Herald",  # a dollar first (the template's rule)
    "   ",  # only spaces
]


def _allowed_pattern() -> re.Pattern[str]:
    return re.compile(load_template()["Parameters"]["MetricsNamespace"]["AllowedPattern"])


@pytest.mark.parametrize("namespace", TAKEN)
def test_a_namespace_cloudwatch_takes_is_taken(namespace: str) -> None:
    # WHEN a deployment names such a namespace THEN both the template's parameter and the setting take it
    assert _allowed_pattern().fullmatch(namespace)
    assert Settings(metrics_namespace=namespace).metrics_namespace == namespace


@pytest.mark.parametrize("namespace", REFUSED)
def test_a_namespace_cloudwatch_refuses_is_refused_where_it_is_set(namespace: str) -> None:
    # WHEN a deployment names such a namespace THEN the template's parameter refuses it, and so does the setting
    assert not _allowed_pattern().fullmatch(namespace)
    with pytest.raises(ValidationError, match="metrics_namespace"):
        Settings(metrics_namespace=namespace)
