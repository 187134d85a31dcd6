"""Recovery and redelivery jobs and the dead-letter queue, as the API takes and answers them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    model_validator,
)

from herald.records import (
    RecoveryJob,
    RecoveryStatus,
)
from herald.schemas.common import StrictModel


class RecoveryIn(StrictModel):
    since: AwareDatetime = Field(
        description="Re-send the subscription's failed deliveries created at or after this time (with a time zone).",
        examples=["2026-01-30T08:00:00Z"],
    )
    until: AwareDatetime | None = Field(None, description="... and before this time, not in the future (default: now).")

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.until is not None and self.until <= self.since:
            raise ValueError("`until` must be after `since`")
        return self


class RecoveryJobOut(BaseModel):
    id: str
    subscription_id: str
    since: datetime
    until: datetime
    status: RecoveryStatus = Field(
        description="`queued`, then `running` while deliveries are found and re-sent, `done` once each has settled."
    )
    queued: int = Field(description="Failed deliveries found in the window and queued for one more attempt.")
    sent: int = Field(description="Of those, re-sent with success.")
    failed: int = Field(description="Of those, whose extra attempt failed too (they stay failed).")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: RecoveryJob) -> Self:
        return cls.model_validate(job.model_dump())


class RedeliveryOut(BaseModel):
    id: str = Field(description="The redelivery job.")
    event_id: str
    status: RecoveryStatus


class DeadLetterOut(BaseModel):
    message_id: str
    kind: str | None = Field(
        description="The work message's kind (`delivery`, `deliveries`, `fanout`, ...); for an unreadable body, the "
        "`kind` it names if it is a JSON object that names one, else none."
    )
    reason: str = Field(description="Why it is in the dead-letter queue.")
    poison: bool = Field(
        description="Not to be processed by the running code: unreadable to it, a `notice` its catalog does not take, "
        "or back after the redrive limit. A redrive leaves it where it is."
    )
    event_id: str | None = None
    subscription_id: str | None = None
    delivery_id: str | None = None
    sent_at: datetime | None = Field(None, description="When the message was first sent to the work queue.")
    receive_count: int = Field(description="How often SQS handed it out.")
    redrives: int = Field(0, description="How often it was redriven to the work queue already.")
    body: str = Field(
        description="The message body, cut to 1,000 characters; in the answer of a discard of many messages, each is "
        "cut to the same shorter length when that keeps the answer within its size limit."
    )


class DeadLettersOut(BaseModel):
    count: int = Field(description="Messages in the dead-letter queue (SQS's ApproximateNumberOfMessages).")
    in_flight: int = Field(description="Messages being looked at or redriven right now (not visible).")
    oldest_sent_at: datetime | None = Field(None, description="The oldest `sent_at` among the messages looked at.")
    oldest_age_seconds: int | None = None
    sample: list[DeadLetterOut]


class RedriveIn(StrictModel):
    limit: int = Field(100, strict=True, ge=1, le=10_000, description="Move at most this many messages.")


class RedriveOut(BaseModel):
    moved: int = Field(
        description="Messages sent back to the work queue, where they are processed normally. One whose delete from "
        "the dead-letter queue SQS then refused or failed is counted too, and stays there, hidden for a minute "
        "(`in_flight`): a redrive after that sends it back again, and the worker finds that copy's work done."
    )
    kept: int = Field(description="Poison messages looked at and left in the dead-letter queue.")
    uncertain: int = Field(
        description="Messages whose send back SQS failed after it may have carried it out (its answer lost, or an "
        "error after its retries): each may be on the work queue or not. They stay in the dead-letter queue, hidden "
        "for a minute (`in_flight`), so that a call made again at once does not send them twice; a redrive after "
        "that sends them back (a second copy of one that went: the worker finds that copy's work done)."
    )
    remaining: int | None = Field(
        description="Messages still in the dead-letter queue and visible (approximate); null when SQS did not answer."
    )
    in_flight: int | None = Field(
        description="Messages in the dead-letter queue hidden for now (approximate): held by another look, redrive "
        "or discard, or by this call (`moved` and not deleted, `uncertain`); each is visible again within a minute, "
        "to be redriven then. Null when SQS did not answer."
    )
    interrupted: str | None = Field(
        None,
        description="Why the call stopped before it was done (SQS failed, after it had sent back, or may have, what "
        "`moved` and `uncertain` count): call again for the rest. Null when it was done. A call that fails before "
        "anything was sent back answers 503, every message it held visible again.",
    )


#: An SQS message id (SQS's are UUIDs).
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")]


class DiscardIn(StrictModel):
    message_ids: list[MessageId] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Discard these messages (their `message_id` in the dead-letter queue's sample), those of them "
        "that may be discarded. Give this or `all_poison`.",
    )
    all_poison: bool | None = Field(
        None,
        strict=True,
        description="`true`: discard the poison messages met, up to `limit`, but those of a kind or version this code "
        "does not know, and `notice` messages of a type or with fields its catalog does not declare (newer code may "
        "work them: name them to discard them). Give this or `message_ids`.",
    )
    limit: int | None = Field(
        None, strict=True, ge=1, le=1000, description="With `all_poison`: at most this many (default 100)."
    )

    @model_validator(mode="after")
    def _one_choice(self) -> Self:
        if (self.message_ids is None) == (self.all_poison is None) or self.all_poison is False:
            raise ValueError('give one of `message_ids` (the messages to discard) and `"all_poison": true`')
        if self.limit is not None and self.all_poison is None:
            raise ValueError("`limit` goes with `all_poison`")
        return self


class NotDiscarded(BaseModel):
    message_id: str
    reason: str = Field(description="Why it is still in the dead-letter queue.")


class DiscardOut(BaseModel):
    discarded: list[DeadLetterOut] = Field(description="The poison messages deleted for good, as they were shown.")
    not_discarded: list[NotDiscarded] = Field(
        description="Messages named that were met and left, with why (not poison: a redrive sends it back to work; "
        "unreadable to the API's code yet read by a worker running other code), any message SQS kept refusing "
        "to delete, and any whose deliveries DynamoDB did not let the call mark failed."
    )
    not_found: list[str] = Field(
        description="Messages named and not met: gone already, or hidden for a minute by another look, redrive or "
        "discard. Call again to find them."
    )
    kept: int = Field(description="Messages looked at and left in the dead-letter queue.")
    remaining: int | None = Field(
        description="Messages still in the dead-letter queue (approximate); null when SQS did not answer."
    )
    interrupted: str | None = Field(
        None,
        description="Why the call stopped before it was done (SQS failed, after it had discarded what is listed): "
        "call again for the rest. Null when it was done.",
    )
    maybe_discarded: list[DeadLetterOut] = Field(
        description="Poison messages whose delete SQS failed after it may have carried it out, their deliveries "
        "already marked failed: each may be gone, and is visible again if not (discard it again). A call that fails "
        "so before it discarded anything answers 503, naming them in `details`."
    )
