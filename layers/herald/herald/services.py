"""The objects a request or a delivery needs, built once per process and injectable in tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herald.auth import AdminKeyProvider
from herald.queue import WorkQueue
from herald.retry import RetryPolicy
from herald.settings import Settings, get_settings
from herald.storage import Store
from herald.urls import UrlPolicy

if TYPE_CHECKING:
    import boto3


@dataclass
class Services:
    settings: Settings
    store: Store
    queue: WorkQueue
    admin_keys: AdminKeyProvider
    retry_policy: RetryPolicy = field(init=False)
    url_policy: UrlPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.retry_policy = RetryPolicy.from_settings(self.settings)
        self.url_policy = UrlPolicy.from_settings(self.settings)

    @classmethod
    def create(
        cls,
        settings: Settings | None = None,
        *,
        session: boto3.session.Session | None = None,
    ) -> Services:
        from herald.aws import dynamodb_client, secretsmanager_client, sqs_client

        settings = settings or get_settings()
        faults = settings.faults
        return cls(
            settings=settings,
            store=Store(
                settings.table_name,
                client=dynamodb_client(session, faults=faults) if session or faults else None,
            ),
            queue=WorkQueue(
                settings.queue_url,
                settings.dead_letter_queue_url,
                slow_queue_url=settings.slow_queue_url,
                client=sqs_client(session, faults=faults) if session or faults else None,
            ),
            admin_keys=AdminKeyProvider(
                settings, client=secretsmanager_client(session, faults=faults) if session or faults else None
            ),
        )
