"""moto's server, as the local stack runs it: a request finds its service without listing moto's package folder
(``herald.local.moto_fixes``, fix 8), and the dispatch answers as it did."""

from __future__ import annotations

import os

import pytest
from moto import backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from herald.local.moto_fixes import moto_fixes


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each folder listed while the test runs."""
    listed: list[str] = []
    real = os.listdir

    def listdir(path: str) -> list[str]:
        listed.append(path)
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    return listed


def test_the_server_finds_each_requests_service_without_listing_motos_folder(listings: list[str]) -> None:
    # GIVEN moto's server dispatch, and the hosts it looks up for Herald's calls: a service's name (as inferred from
    # a request's signature) or an AWS host name, which is not a folder's and is matched by moto's URL patterns
    dispatcher = DomainDispatcherApplication(create_backend_app)
    hosts = {"dynamodb": "dynamodb", "dynamodbstreams": "dynamodbstreams", "sqs.us-east-1.amazonaws.com": "sqs"}
    with moto_fixes():
        listed_before = len(listings)  # the fixes read the list once, as they start
        # WHEN the server looks each up, many times
        found = [(host, dispatcher.get_backend_for_host(host)) for host in list(hosts) * 50]
        # THEN each is found, and no folder was listed
        assert set(found) == set(hosts.items())
        assert listings[listed_before:] == []
    # AND once the fixes are undone, moto lists its folder again for each lookup: the same services
    listings.clear()
    assert dispatcher.get_backend_for_host("dynamodb") == "dynamodb"
    assert listings == [os.path.dirname(backends.__file__)]
