"""Races on the real database (SQLite in one pass of `make test`, PostgreSQL in the other).

Threads with connections of their own are released together by a barrier;
the constraints and compare-and-set transitions must let exactly one win.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from threading import Barrier
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from publishing.exceptions import InvalidTransition, PublishingConflict
from publishing.models import Publishing
from publishing.services.maintenance import publishing_reconcile
from publishing.services.publishings import publishing_cancel, publishing_initiate
from tests.factories import ProjectFactory, PublishingFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

RACERS = 8


def race(work: Callable[[int], Any], racers: int = RACERS) -> list[Any]:
    """Run work(0..racers-1) in threads released at once; each result, or the exception raised."""
    barrier = Barrier(racers)

    def run(n: int) -> Any:
        try:
            barrier.wait()
            return work(n)
        except Exception as exc:
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=racers) as pool:
        return list(pool.map(run, range(racers)))


def test_one_start_wins_when_workers_race_for_a_queued_publishing(stub_broker) -> None:
    publishing = PublishingFactory.create(queued=True, message_id="m-1")

    results = race(
        lambda n: Publishing.objects.transition(
            publishing.pk, "building", attempt=0, message_id="m-1", attempts=1, worker=f"w{n}"
        )
    )

    # (a move returns the values it wrote)
    assert sum(1 for r in results if isinstance(r, dict)) == 1, results
    assert all(isinstance(r, InvalidTransition) for r in results if not isinstance(r, dict))
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == ("building", 1)


def test_one_publishing_per_project_when_initiates_race(stub_broker) -> None:
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user)

    results = race(lambda n: publishing_initiate(user=user, project_id=project.pk))

    winners = [r for r in results if isinstance(r, Publishing)]
    assert len(winners) == 1, results
    assert all(isinstance(r, PublishingConflict) for r in results if r not in winners), results
    assert Publishing.objects.filter(project=project).count() == 1
    assert len(stub_broker.queues["publishing-builds"].queue) == 1


def test_the_same_idempotency_key_racing_makes_one_publishing(stub_broker) -> None:
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user)

    results = race(lambda n: publishing_initiate(user=user, project_id=project.pk, idempotency_key="k"))

    assert all(isinstance(r, Publishing) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert Publishing.objects.count() == 1


def test_cancel_racing_the_start_leaves_one_consistent_outcome(stub_broker) -> None:
    user = UserFactory.create()
    for _ in range(10):
        publishing = PublishingFactory.create(queued=True, message_id="m", requested_by=user)

        def start_or_cancel(n: int, publishing: Publishing = publishing) -> Any:
            if n == 0:
                return publishing_cancel(publishing=publishing, by=user)
            return Publishing.objects.transition(
                publishing.pk, "building", attempt=0, message_id="m", attempts=1
            )

        results = race(start_or_cancel, racers=2)
        publishing.refresh_from_db()
        # Cancel always wins in the end (building is cancellable); the start may or may not have happened
        assert publishing.status == "cancelled", results
        assert not isinstance(results[0], Exception), results
        assert publishing.attempts in (0, 1)


def test_reconcilers_racing_requeue_a_lost_attempt_once(stub_broker) -> None:
    stale = timezone.now() - timedelta(minutes=5)
    lost = PublishingFactory.create(building=True, attempts=1, heartbeat_at=stale, message_id="old")

    reports = race(lambda n: publishing_reconcile(), racers=4)

    assert sum(r.requeued_lost for r in reports) == 1, reports
    lost.refresh_from_db()
    assert lost.status == "queued"
    assert lost.message_id != "old"
    assert len(stub_broker.queues["publishing-builds"].queue) == 1
