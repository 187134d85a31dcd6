"""Replay after an outage: recover a subscription's failed deliveries (tenant keys), redeliver an event
to every subscription it goes to (operator)."""

from __future__ import annotations

from fastapi import status

from herald import ids
from herald.api.deps import OperatorDep, ServicesDep, TenantDep
from herald.api.routers import api_router
from herald.domain import jobs, subscriptions
from herald.errors import NotFoundError
from herald.ids import STORED_EVENT_ID_PATTERN
from herald.schemas import RecoveryIn, RecoveryJobOut, RedeliveryOut

router = api_router(prefix="/v1/subscriptions/{subscription_id}", tags=["deliveries"])
events_router = api_router(prefix="/v1/events", tags=["events"])


@router.post(
    "/recover",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-send the failed deliveries of a time window",
)
async def recover(
    subscription_id: str, body: RecoveryIn, services: ServicesDep, tenant_id: TenantDep
) -> RecoveryJobOut:
    """Every delivery of this subscription that failed (its retries exhausted) and was created in
    [`since`, `until`) is sent once more, as a background job; read its progress with the returned id.
    `since` may be at most 14 days ago (the deployment's setting, and never before its oldest events
    kept). Each delivery is re-sent once per job, and a repeat of the same request while the job runs
    returns the same job. A delivery whose extra attempt fails stays failed. A subscription has at most
    5 recoveries unfinished at once (the deployment's setting): another window is a 422
    `limit_exceeded` until one is done."""
    sub = subscriptions.find(services, tenant_id, subscription_id)
    return RecoveryJobOut.of(jobs.start_recovery(services, sub, body))


@router.get("/recoveries/{job_id}", summary="Get the progress of a recovery")
async def get_recovery(
    subscription_id: str, job_id: str, services: ServicesDep, tenant_id: TenantDep
) -> RecoveryJobOut:
    """The job's status and counts. While it runs, its counts are as they were up to 10 seconds ago (the
    deployment's setting), however often it is asked for; once `done`, they are final."""
    subscriptions.find(services, tenant_id, subscription_id)
    job = None
    if ids.is_id(job_id, jobs.RECOVERY):
        job = jobs.read_recovery(services, job_id, tenant_id=tenant_id, subscription_id=subscription_id)
    if job is None:
        raise NotFoundError(f"recovery {job_id} not found")
    return RecoveryJobOut.of(job)


@events_router.post(
    "/{event_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send an event once more to every subscription it goes to",
)
async def redeliver(event_id: str, services: ServicesDep, _: OperatorDep) -> RedeliveryOut:
    """One more attempt to each subscription the event matches now, whatever its delivery's state (a
    manual attempt in its log; the retry schedule is left alone). A subscription created after the
    event gets it as a regular first delivery, with retries. A test event (`herald.ping`, sent to one
    subscription) is a 409: ask the subscription for a new test."""
    if not STORED_EVENT_ID_PATTERN.fullmatch(event_id):
        raise NotFoundError(f"event {event_id} not found")
    return jobs.start_redelivery(services, event_id)
