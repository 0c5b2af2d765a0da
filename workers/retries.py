"""The retry policy, pure: what a failed job does next, and how long it waits first.

A failure is transient (worth another try: the order may be committed soon, the store may come
back) or permanent (retrying cannot help). The inbox counts each failed attempt
(service.store.inbox.record_failure, applying `parks`); `decide` then turns what was counted
into the job's verdict:

    failure    what the inbox says                  verdict
    transient  counted, under the attempt budget    retry after backoff(attempts)
    transient  counted, budget spent                park (`failed`)
    transient  no longer pending                    duplicate (another job finished it)
    transient  store unreachable, nothing counted   retry after backoff(arq's try); the event
                                                    stays `pending` for the sweeper
    permanent  counted, or no longer pending        park (`failed`)
    permanent  store unreachable, nothing counted   retry after the base delay, to park it then
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final, Literal

MAX_DELAY_S: Final = 300.0


def backoff_s(attempt: int, *, base_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter, capped: base * 2^(attempt-1), scaled by 0.5..1.0.

    Jitter spreads retries of many events that failed together (a database outage) so they do
    not return as one thundering herd.
    """
    exponent = min(max(attempt - 1, 0), 30)
    ceiling = min(base_s * 2**exponent, MAX_DELAY_S)
    jitter = (rng or random.Random()).random()
    return float(ceiling * (0.5 + 0.5 * jitter))


class ErrorKind(enum.StrEnum):
    """How a failure is retried (workers.errors: TransientError, PermanentError)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def parks(kind: ErrorKind, attempts: int, *, max_attempts: int) -> bool:
    """Whether a failure parks its event as `failed`: at once when permanent, else once its
    attempts (this failure included) reach the budget."""
    return kind is ErrorKind.PERMANENT or attempts >= max_attempts


@dataclass(frozen=True, slots=True)
class Counted:
    """The inbox counted the failure: `attempts` includes it."""

    attempts: int


@dataclass(frozen=True, slots=True)
class NoLongerPending:
    """The inbox wrote nothing: another job finished the event meanwhile."""


@dataclass(frozen=True, slots=True)
class StoreUnreachable:
    """The failure could not be written; arq's try counter (`job_try`) stands in for the inbox's."""

    job_try: int


FailureCount = Counted | NoLongerPending | StoreUnreachable

# The reason logged when a permanent failure could not be parked.
STORE_UNAVAILABLE: Final = "store_unavailable"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a failed job does next. `outcome` is the job's outcome (its log line and metric
    label); `reason` and `attempts` go into the log line when set."""

    outcome: Literal["retry", "failed", "duplicate"]
    defer_s: float | None = None
    reason: str | None = None
    attempts: int | None = None

    @classmethod
    def retry(cls, defer_s: float, *, reason: str, attempts: int | None = None) -> Verdict:
        """Raise arq's Retry: run the job again after `defer_s`."""
        return cls("retry", defer_s=defer_s, reason=reason, attempts=attempts)

    @classmethod
    def park(cls, reason: str, *, attempts: int | None = None) -> Verdict:
        """The event is (or stays) `failed`: the job ends, for an operator to replay."""
        return cls("failed", reason=reason, attempts=attempts)

    @classmethod
    def duplicate(cls) -> Verdict:
        """Another job finished the event: this one ends, having changed nothing."""
        return cls("duplicate")

    def log_fields(self) -> dict[str, object]:
        """The fields of the job's log line: `reason`, `attempts` and `defer_s`, when set."""
        fields = {"reason": self.reason, "attempts": self.attempts, "defer_s": self.defer_s}
        return {name: value for name, value in fields.items() if value is not None}


def decide(
    kind: ErrorKind,
    reason: str,
    count: FailureCount,
    *,
    max_attempts: int,
    base_delay_s: float,
    rng: random.Random | None = None,
) -> Verdict:
    """The verdict on a failed job (see the table above); `reason` is the failure's log-safe
    description, `rng` the jitter's source."""
    if isinstance(count, StoreUnreachable):
        if kind is ErrorKind.PERMANENT:
            # Could not park it: retry the whole job later rather than lose the verdict.
            return Verdict.retry(base_delay_s, reason=STORE_UNAVAILABLE)
        # If arq gives up first, the event is still `pending` in the inbox, where the sweeper
        # finds it again.
        delay_s = backoff_s(count.job_try, base_s=base_delay_s, rng=rng)
        return Verdict.retry(delay_s, reason=reason, attempts=count.job_try)
    if kind is ErrorKind.PERMANENT:
        # The failure is the event's own (its body), so a job that finished it meanwhile parked
        # it too.
        return Verdict.park(reason)
    if isinstance(count, NoLongerPending):
        return Verdict.duplicate()
    if parks(kind, count.attempts, max_attempts=max_attempts):
        return Verdict.park(reason, attempts=count.attempts)
    delay_s = backoff_s(count.attempts, base_s=base_delay_s, rng=rng)
    return Verdict.retry(delay_s, reason=reason, attempts=count.attempts)
