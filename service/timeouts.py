"""Every timeout, delay and interval of the ingress, the order store, the queue and the workers.

They live together because they constrain each other; each module imports its own by name.
tests/unit/test_timeouts.py asserts each relation below, and
tests/static/test_deploy_manifests.py checks the ones that involve the deploy manifests.

Relations (the reason each must hold):

- Statement timeout <= job timeout. arq bounds a job on the client: JOB_TIMEOUT_S after the job
  started it cancels it (asyncpg then asks PostgreSQL to cancel the statement in progress).
  PostgreSQL bounds each statement on the server (STATEMENT_TIMEOUT_MS), as SQLite bounds a lock
  wait (SQLITE_BUSY_TIMEOUT_MS); that bound holds even when the cancel request cannot reach the
  server, and it must not let one statement run longer than its whole job may. At equal values
  (as now) arq's timer, started first, ends a statement stuck behind a lock; a lower statement
  timeout would let the server end it first, as an outage the job retries with backoff and
  counts in the inbox, instead of a cancelled job that waits for the sweeper.
- Record timeout < statement timeout and < SQLite busy timeout: the ingress answers 503 by its
  own bound, so WooshPay's retry starts sooner than a server-side timeout would allow.
- Database connect timeout < record timeout: a connection that is slow to open, but opens, does
  so within one batch's bound with time left for the insert; one that cannot open fails before
  the bound, and the next batch tries afresh.
- Pool timeout < job timeout: a job waiting for a pooled connection gives up with an outage
  (retried with backoff, counted) before arq abandons it.
- Body + record + enqueue timeouts <= shutdown timeout: a webhook request in flight at SIGTERM
  can finish its bounded steps before the ingress closes. The deploy manifests' grace periods
  in turn exceed the shutdown timeout (plus the preStop sleep in Kubernetes), so the process is
  not killed while it drains.
- WooshPay publishes no delivery timeout (docs/wooshpay.md#delivery-and-retries). A sender that
  gives up before the answer loses nothing: the event was either committed (its retry is a
  duplicate) or not (its retry records it).
- Enqueue timeout and probe timeout > Redis connect timeout: after a Redis restart, an enqueue
  or a readiness probe that must reconnect first still gets to send its command.
- Probe timeout < the readiness probe's timeoutSeconds in Kubernetes: a Redis that does not
  answer is reported in /readyz (and does not gate readiness) before the kubelet stops waiting.
- Sweeper minimum age > enqueue timeout: an event committed promptly is left to the ingress's
  own enqueue until that has succeeded or given up. A slower commit may be enqueued by both,
  which the stable job id makes harmless.
- Sweeper round timeout > statement timeout and > Redis socket timeout: a single slow statement
  or command is ended, with its own error, by its own timeout; the round's bound only catches
  a store or Redis that stopped answering without closing the connection.
- Stale-after > poll delay + Redis socket timeout, and > Redis retry delay + Redis connect and
  socket timeouts: /healthz on a worker fails only when it really stopped beating, not during a
  slow poll cycle or while it keeps retrying an unreachable Redis (it cannot fix an outage by
  being restarted).
- Job-completion wait <= job timeout: waiting longer on SIGTERM would wait for jobs arq has
  already cancelled. The worker's grace periods exceed job timeout + completion wait.
"""

from __future__ import annotations

from typing import Final

# --- the ingress (service.ingress, service.cli.main) -----------------------------------------

# The whole request body must arrive within this long (408 otherwise): a client trickling its
# body must not hold a handler and a socket for ever.
BODY_TIMEOUT_S: Final = 10.0
# One group commit of the inbox; past it every request of the batch answers 503.
RECORD_TIMEOUT_S: Final = 10.0
# One batch's enqueue; past it the enqueue is deferred to the sweeper (the events are recorded).
ENQUEUE_TIMEOUT_S: Final = 2.0
# Each dependency check of /readyz and each gauge read of /metrics.
PROBE_TIMEOUT_S: Final = 2.0
# In-flight requests get this long to finish after SIGTERM before the ingress closes.
SHUTDOWN_TIMEOUT_S: Final = 30.0

# --- the order store (service.store.engine) ---------------------------------------------------

# The longest a PostgreSQL statement may run, enforced by the server (migrations lift it for
# their own transaction). The server, not asyncpg's command_timeout, bounds statements: a client
# timer would be armed and cancelled around every query of the hot paths.
STATEMENT_TIMEOUT_MS: Final = 30_000
# SQLite waits this long for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# Opening a PostgreSQL connection: an unreachable database fails fast, so the ingress answers
# 503 promptly.
DATABASE_CONNECT_TIMEOUT_S: Final = 5
# Waiting for a free pooled connection when every one is in use.
DATABASE_POOL_TIMEOUT_S: Final = 10
# A pooled PostgreSQL connection unused for longer than this is pinged before it is used: idle
# is when a connection may have died unseen (a database restart, a firewall dropping idle TCP
# connections); a connection in steady use is never pinged.
PING_IDLE_AFTER_S: Final = 5.0

# --- Redis (service.queue) --------------------------------------------------------------------

# Redis calls must fail fast: a slow Redis must not delay a webhook's 2xx, because the event is
# already durable in the inbox and the sweeper will enqueue it.
REDIS_CONNECT_TIMEOUT_S: Final = 1.0
# Any one Redis command, and the wait for a free connection of the pool.
REDIS_SOCKET_TIMEOUT_S: Final = 5.0

# --- the workers (workers.main, workers.sweeper, workers.metrics_server) -----------------------

# arq polls the queue this often: a new job waits half of it on average (docs/arq.md#polling).
POLL_DELAY_S: Final = 0.02
# arq abandons (cancels) a job running longer than this; its transaction rolls back and its
# event stays `pending`. arq's in-progress key lives this long plus 10 s after a killed worker.
JOB_TIMEOUT_S: Final = 30
# On SIGTERM, running jobs get this long to finish before they are handed back to the queue.
JOB_COMPLETION_WAIT_S: Final = 10
# arq refreshes its health key this often, so `arq --check` notices a dead worker.
HEALTH_CHECK_INTERVAL_S: Final = 10
# After losing Redis, the worker waits this long before starting a fresh arq worker.
REDIS_RETRY_DELAY_S: Final = 1.0
# A worker's /healthz fails when no poll cycle (or reconnect attempt) completed for this long.
STALE_AFTER_S: Final = 30.0
# Pending events younger than this are left to the ingress's own enqueue.
SWEEP_MIN_AGE_S: Final = 5.0
# A sweep round that takes longer is abandoned and the next one starts over: a database or Redis
# that stopped answering without closing the connection must not stall the sweeper for good.
SWEEP_ROUND_TIMEOUT_S: Final = 120.0
