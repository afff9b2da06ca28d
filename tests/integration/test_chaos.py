"""A short chaos round: publishings streaming in while each kind of fault strikes once.

The long run is `make chaos` (tests/chaos/, docs/reliability.md). This one
starts its own PostgreSQL, Redis (without persistence: the restart loses its
data), target, web and worker processes, and needs no database of pytest's.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.chaos.engine import FAULT_KINDS, RoundConfig, run_round
from tests.chaos.postgres import PostgresMissing, postgres_bindir

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture
def postgres_binaries() -> None:
    """initdb and pg_ctl must be there; in CI their absence fails the test rather than hiding it."""
    try:
        postgres_bindir()
    except PostgresMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (.ci/run installs it)")
        pytest.skip(str(exc))


def test_every_publishing_ends_once_through_worker_kills_and_redis_and_postgres_restarts(
    postgres_binaries: None,
) -> None:
    # Given 18 publishings arriving over 20 s, builds of 0-3 s, a target failing a fifth of first tries
    config = RoundConfig(
        name="short",
        seed=int(os.environ.get("CHAOS_SEED") or 20251130),
        publishings=18,
        appendonly=False,
        arrival_s=20,
        first_fault_s=3,
        fault_gap_s=(3.0, 4.5),
        build_max_s=3,
        settle_timeout_s=120,
    )
    started = time.monotonic()

    # When each kind of fault strikes once while they run
    result = run_round(config)

    # Then every fault was injected and recovered from
    print(f"\n{result.summary()}\nchaos short round: {time.monotonic() - started:.0f}s")  # noqa: T201
    assert sorted(f.kind for f in result.faults) == sorted(FAULT_KINDS), result.summary()
    assert result.failed_injections == [], result.summary()
    assert all(f.recovered_after is not None for f in result.faults), result.summary()
    # And nothing was lost, done twice or left hanging, and the web tier answered only as documented
    assert (result.lost, result.duplicated, result.stuck) == ([], [], []), result.summary()
    assert result.violations == [], result.summary()
    assert result.web_errors == [], result.summary()
    # And no process logged a traceback but those of the outages themselves: faults meet retries, not crashes
    assert result.log_tracebacks == [], result.summary()
    assert result.initiated == config.publishings
    assert result.statuses["published"] + result.statuses["failed"] == config.publishings
