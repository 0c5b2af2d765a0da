"""Table-driven tests of the retry policy: the verdict on every kind of failed job, the parking
rule the inbox applies, and the backoff's growth, cap and jitter. Pure: no Redis, no database."""

from __future__ import annotations

import random

import pytest

from workers.errors import OrderNotFound, describe
from workers.retries import (
    MAX_DELAY_S,
    STORE_UNAVAILABLE,
    Counted,
    ErrorKind,
    FailureCount,
    NoLongerPending,
    StoreUnreachable,
    Verdict,
    backoff_s,
    decide,
    parks,
)

MAX_ATTEMPTS = 5
BASE_S = 2.0
REASON = "OperationalError: connection refused"
INVALID = "invalid_object: data.object.amount must be an integer"
UNKNOWN_ORDER = describe(OrderNotFound("no order for payment_intent pi_1"))

TRANSIENT = ErrorKind.TRANSIENT
PERMANENT = ErrorKind.PERMANENT


class FixedJitter(random.Random):
    """A jitter source that always draws `value` (0 gives the shortest delay)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def shortest(attempt: int) -> float:
    """The backoff of `attempt` with the least jitter: half its capped ceiling."""
    return min(BASE_S * 2.0 ** (attempt - 1), MAX_DELAY_S) / 2


# (kind, reason, what the inbox says, the verdict)
VERDICTS: dict[str, tuple[ErrorKind, str, FailureCount, Verdict]] = {
    "transient, first failure": (
        TRANSIENT,
        REASON,
        Counted(1),
        Verdict.retry(shortest(1), reason=REASON, attempts=1),
    ),
    "transient, one short of the budget": (
        TRANSIENT,
        REASON,
        Counted(MAX_ATTEMPTS - 1),
        Verdict.retry(shortest(MAX_ATTEMPTS - 1), reason=REASON, attempts=MAX_ATTEMPTS - 1),
    ),
    "transient, at the budget": (
        TRANSIENT,
        REASON,
        Counted(MAX_ATTEMPTS),
        Verdict.park(REASON, attempts=MAX_ATTEMPTS),
    ),
    "transient, past the budget": (
        TRANSIENT,
        REASON,
        Counted(MAX_ATTEMPTS + 2),
        Verdict.park(REASON, attempts=MAX_ATTEMPTS + 2),
    ),
    "transient, finished by another job": (
        TRANSIENT,
        REASON,
        NoLongerPending(),
        Verdict.duplicate(),
    ),
    "transient, store down: arq's try stands in": (
        TRANSIENT,
        REASON,
        StoreUnreachable(job_try=3),
        Verdict.retry(shortest(3), reason=REASON, attempts=3),
    ),
    "transient, store down past the budget: still retried, never parked": (
        TRANSIENT,
        REASON,
        StoreUnreachable(job_try=MAX_ATTEMPTS + 3),
        Verdict.retry(shortest(MAX_ATTEMPTS + 3), reason=REASON, attempts=MAX_ATTEMPTS + 3),
    ),
    "unknown order, first failure": (
        TRANSIENT,
        UNKNOWN_ORDER,
        Counted(1),
        Verdict.retry(shortest(1), reason=UNKNOWN_ORDER, attempts=1),
    ),
    "unknown order, at the budget": (
        TRANSIENT,
        UNKNOWN_ORDER,
        Counted(MAX_ATTEMPTS),
        Verdict.park(UNKNOWN_ORDER, attempts=MAX_ATTEMPTS),
    ),
    "permanent, first failure": (PERMANENT, INVALID, Counted(1), Verdict.park(INVALID)),
    "permanent, parked by another job": (
        PERMANENT,
        INVALID,
        NoLongerPending(),
        Verdict.park(INVALID),
    ),
    "permanent, store down: retried after the base delay to park it then": (
        PERMANENT,
        INVALID,
        StoreUnreachable(job_try=2),
        Verdict.retry(BASE_S, reason=STORE_UNAVAILABLE),
    ),
}


@pytest.mark.parametrize(("kind", "reason", "count", "expected"), VERDICTS.values(), ids=VERDICTS)
def test_verdict(kind: ErrorKind, reason: str, count: FailureCount, expected: Verdict) -> None:
    """Each failure, with what the inbox recorded of it, gets the verdict of the policy's table."""
    verdict = decide(
        kind, reason, count, max_attempts=MAX_ATTEMPTS, base_delay_s=BASE_S, rng=FixedJitter(0.0)
    )
    assert verdict == expected


@pytest.mark.parametrize("kind", list(ErrorKind))
@pytest.mark.parametrize("attempts", range(1, 2 * MAX_ATTEMPTS))
def test_verdict_parks_exactly_when_the_inbox_was_told_to(kind: ErrorKind, attempts: int) -> None:
    """A counted failure's verdict is `failed` exactly when `parks` made the inbox park it."""
    verdict = decide(kind, REASON, Counted(attempts), max_attempts=MAX_ATTEMPTS, base_delay_s=1)
    assert (verdict.outcome == "failed") == parks(kind, attempts, max_attempts=MAX_ATTEMPTS)


PARKING: dict[str, tuple[ErrorKind, int, int, bool]] = {
    "transient, first of five": (TRANSIENT, 1, 5, False),
    "transient, fourth of five": (TRANSIENT, 4, 5, False),
    "transient, fifth of five": (TRANSIENT, 5, 5, True),
    "transient, past the budget": (TRANSIENT, 6, 5, True),
    "transient, budget of one": (TRANSIENT, 1, 1, True),
    "permanent, first attempt": (PERMANENT, 1, 5, True),
}


@pytest.mark.parametrize(
    ("kind", "attempts", "max_attempts", "expected"), PARKING.values(), ids=PARKING
)
def test_parking_rule(kind: ErrorKind, attempts: int, max_attempts: int, expected: bool) -> None:
    """Permanent failures park at once; transient ones once their attempts reach the budget."""
    assert parks(kind, attempts, max_attempts=max_attempts) is expected


LOG_FIELDS: dict[str, tuple[Verdict, dict[str, object]]] = {
    "retry": (
        Verdict.retry(1.5, reason=REASON, attempts=2),
        {"reason": REASON, "attempts": 2, "defer_s": 1.5},
    ),
    "retry without a count": (
        Verdict.retry(BASE_S, reason=STORE_UNAVAILABLE),
        {"reason": STORE_UNAVAILABLE, "defer_s": BASE_S},
    ),
    "park with a count": (
        Verdict.park(REASON, attempts=5),
        {"reason": REASON, "attempts": 5},
    ),
    "park": (Verdict.park(INVALID), {"reason": INVALID}),
    "duplicate": (Verdict.duplicate(), {}),
}


@pytest.mark.parametrize(("verdict", "expected"), LOG_FIELDS.values(), ids=LOG_FIELDS)
def test_log_fields_are_those_set(verdict: Verdict, expected: dict[str, object]) -> None:
    """The job's log line carries the verdict's reason, attempts and delay, only when set."""
    assert verdict.log_fields() == expected


@pytest.mark.parametrize("attempt", range(1, 8))
def test_backoff_doubles_per_attempt(attempt: int) -> None:
    """Without jitter's stretch, attempt n waits half of base * 2^(n-1)."""
    assert backoff_s(attempt, base_s=1.0, rng=FixedJitter(0.0)) == 2 ** (attempt - 1) / 2


@pytest.mark.parametrize("attempt", [0, -3])
def test_backoff_counts_no_attempt_as_the_first(attempt: int) -> None:
    """An attempt number below one waits as the first attempt does."""
    rng = FixedJitter(0.5)
    assert backoff_s(attempt, base_s=BASE_S, rng=rng) == backoff_s(1, base_s=BASE_S, rng=rng)


@pytest.mark.parametrize("attempt", [10, 30, 31, 10_000])
def test_backoff_is_capped(attempt: int) -> None:
    """Past the cap every attempt waits between half the cap and the cap, even a huge one."""
    assert backoff_s(attempt, base_s=BASE_S, rng=FixedJitter(0.0)) == MAX_DELAY_S / 2
    assert backoff_s(attempt, base_s=BASE_S, rng=FixedJitter(0.999_999)) <= MAX_DELAY_S


def test_jitter_spans_half_to_all_of_the_ceiling() -> None:
    """Jittered delays stay in [ceiling/2, ceiling) and spread across that range."""
    ceiling = BASE_S * 2**2
    delays = [backoff_s(3, base_s=BASE_S, rng=random.Random(seed)) for seed in range(200)]
    assert all(ceiling / 2 <= delay < ceiling for delay in delays), delays
    assert min(delays) < ceiling * 0.6
    assert max(delays) > ceiling * 0.9


def test_default_jitter_stays_in_range() -> None:
    """Without an injected source the delay is still within [ceiling/2, ceiling)."""
    ceiling = BASE_S * 2**3
    for _ in range(50):
        assert ceiling / 2 <= backoff_s(4, base_s=BASE_S) < ceiling
