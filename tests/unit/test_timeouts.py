"""The relations between the service's timeouts that service/timeouts.py states, one test each.

The relations that involve the deploy manifests (grace periods, the readiness probe's wait) are
checked against those files by tests/static/test_deploy_manifests.py.
"""

from __future__ import annotations

from service.timeouts import (
    BODY_TIMEOUT_S,
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_POOL_TIMEOUT_S,
    ENQUEUE_TIMEOUT_S,
    JOB_COMPLETION_WAIT_S,
    JOB_TIMEOUT_S,
    POLL_DELAY_S,
    PROBE_TIMEOUT_S,
    RECORD_TIMEOUT_S,
    REDIS_CONNECT_TIMEOUT_S,
    REDIS_RETRY_DELAY_S,
    REDIS_SOCKET_TIMEOUT_S,
    SHUTDOWN_TIMEOUT_S,
    SQLITE_BUSY_TIMEOUT_MS,
    STALE_AFTER_S,
    STATEMENT_TIMEOUT_MS,
    SWEEP_MIN_AGE_S,
    SWEEP_ROUND_TIMEOUT_S,
)

STATEMENT_TIMEOUT_S = STATEMENT_TIMEOUT_MS / 1000
SQLITE_BUSY_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_MS / 1000


def test_a_job_statement_cannot_outlast_the_job_timeout() -> None:
    """The server's bound on one statement (PostgreSQL) or lock wait (SQLite) is no longer than
    arq's bound on the whole job."""
    assert STATEMENT_TIMEOUT_S <= JOB_TIMEOUT_S
    assert SQLITE_BUSY_TIMEOUT_S <= JOB_TIMEOUT_S


def test_the_ingress_answers_503_before_the_store_gives_up() -> None:
    """A group commit is abandoned (503) by the ingress's own bound, before the server's
    statement timeout or SQLite's busy timeout would end it."""
    assert RECORD_TIMEOUT_S < STATEMENT_TIMEOUT_S
    assert RECORD_TIMEOUT_S < SQLITE_BUSY_TIMEOUT_S


def test_an_unreachable_database_fails_the_connect_within_a_batch() -> None:
    """Opening a database connection gives up before the batch waiting on it does."""
    assert DATABASE_CONNECT_TIMEOUT_S < RECORD_TIMEOUT_S


def test_a_job_waiting_for_a_pooled_connection_fails_before_arq_abandons_it() -> None:
    """The pool's wait ends (an outage, retried with backoff) before the job timeout."""
    assert DATABASE_POOL_TIMEOUT_S < JOB_TIMEOUT_S


def test_a_request_in_flight_at_sigterm_can_finish_within_the_shutdown_timeout() -> None:
    """Reading the body, committing and enqueueing, each at its bound, fit in the shutdown
    timeout the ingress grants in-flight requests."""
    assert BODY_TIMEOUT_S + RECORD_TIMEOUT_S + ENQUEUE_TIMEOUT_S <= SHUTDOWN_TIMEOUT_S


def test_redis_calls_that_must_reconnect_still_get_to_send() -> None:
    """An enqueue or a readiness probe that first reconnects to Redis has time left after the
    connect timeout to send its command."""
    assert ENQUEUE_TIMEOUT_S > REDIS_CONNECT_TIMEOUT_S
    assert PROBE_TIMEOUT_S > REDIS_CONNECT_TIMEOUT_S


def test_the_sweeper_leaves_fresh_events_to_the_ingress_enqueue() -> None:
    """The sweeper looks only at events older than the ingress's enqueue bound."""
    assert SWEEP_MIN_AGE_S > ENQUEUE_TIMEOUT_S


def test_a_sweep_round_outlasts_every_single_call() -> None:
    """A slow statement or Redis command ends by its own timeout before the round's bound."""
    assert SWEEP_ROUND_TIMEOUT_S > STATEMENT_TIMEOUT_S
    assert SWEEP_ROUND_TIMEOUT_S > REDIS_SOCKET_TIMEOUT_S


def test_a_slow_poll_cycle_does_not_look_like_a_hang() -> None:
    """A poll cycle whose Redis call takes its whole socket timeout still beats in time."""
    assert STALE_AFTER_S > POLL_DELAY_S + REDIS_SOCKET_TIMEOUT_S


def test_a_worker_retrying_an_unreachable_redis_stays_alive() -> None:
    """Between two reconnect attempts (the retry delay, then a connect and a first command at
    their bounds) the worker beats before /healthz calls it stale."""
    assert STALE_AFTER_S > REDIS_RETRY_DELAY_S + REDIS_CONNECT_TIMEOUT_S + REDIS_SOCKET_TIMEOUT_S


def test_the_completion_wait_does_not_exceed_the_job_timeout() -> None:
    """On SIGTERM the worker never waits for jobs arq has already cancelled."""
    assert JOB_COMPLETION_WAIT_S <= JOB_TIMEOUT_S
