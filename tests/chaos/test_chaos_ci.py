"""The chaos soak, short enough for every test run: ~200 orders, every kind of fault.

Real processes (two ingresses, three workers), a private PostgreSQL database behind a cuttable
proxy and a private redis-server; workers are SIGKILLed, Redis restarts empty, PostgreSQL goes
away for seconds and an ingress restarts while the deliveries flow. The seed is random (set
CHAOS_SEED to replay one); a failure prints the run's figures, the seed and where the logs are.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.faults import CI_PROFILE, KINDS, injected
from tests.chaos.harness import ChaosConfig, run_chaos
from tests.chaos.infrastructure import require_infrastructure
from tests.chaos.soak import figures

ORDERS = 200
WINDOW_S = 20.0
CONVERGE_TIMEOUT_S = 60.0


@pytest.mark.postgres
@pytest.mark.slow
# Safety net only: the harness's own deadlines (start-up, delivery, convergence) fire first.
@pytest.mark.timeout(300)
async def test_every_accepted_event_ends_as_the_oracle_says_under_faults(tmp_path: Path) -> None:
    """Under worker SIGKILLs, a Redis restart losing its data, a PostgreSQL outage and an ingress
    restart, no accepted event is lost and every order ends exactly as the oracle expects."""
    await require_infrastructure()
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(2**31))
    config = ChaosConfig(
        orders=ORDERS,
        window_s=WINDOW_S,
        seed=seed,
        workdir=tmp_path,
        profile=CI_PROFILE,
        converge_timeout_s=CONVERGE_TIMEOUT_S,
    )

    report = await run_chaos(config)

    summary = "\n".join([*figures(report), f"logs: {tmp_path / 'logs'}"])
    print(summary)  # shown with -rA / -s, and on failure
    assert set(Counter(fault.kind for fault in injected(report.faults))) == set(KINDS), summary
    assert report.verdict.mismatches == 0, summary
    assert report.verdict.lost == 0, summary
    assert report.ok, summary
