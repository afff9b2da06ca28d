"""Each pipeline run is an Attempt row: who ran it, when, and how it ended."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.models import Attempt, Publishing
from publishing.selectors import log_text
from publishing.services.maintenance import publishing_reconcile, publishing_requeue
from publishing.services.publishings import publishing_cancel
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain, initiate, send_for

pytestmark = pytest.mark.django_db(transaction=True)


def history(publishing: Publishing) -> list[tuple[int, str, str]]:
    return [(a.number, a.outcome, a.error_code) for a in Attempt.objects.filter(publishing=publishing)]


def test_a_published_run_is_one_finished_attempt_with_its_log(stub_broker, worker, settings) -> None:
    # Given a queued publishing
    publishing = initiate()

    # When the worker runs it
    drain(stub_broker, worker)

    # Then one attempt records who ran it, when, and its own log
    (attempt,) = Attempt.objects.filter(publishing=publishing)
    publishing.refresh_from_db()
    assert (attempt.number, attempt.outcome, attempt.error_code) == (1, "published", "")
    assert attempt.worker == f"{settings.PUBLISHING_WORKER_NAME}:{os.getpid()}"
    assert attempt.message_id == publishing.message_id
    assert attempt.finished_at is not None
    assert attempt.finished_at >= attempt.started_at
    assert attempt.duration_seconds is not None
    assert attempt.duration_seconds >= 0
    assert "event    checkout " in attempt.log_excerpt
    assert "event    submit done in " in attempt.log_excerpt


def test_retries_leave_one_attempt_each_with_its_error(stub_broker, worker) -> None:
    # Given a target that fails transiently twice, then accepts
    ScriptedPipeline.reset(
        TransientJobError("store busy", code="TARGET_UNAVAILABLE"),
        TransientJobError("store busy", code="TARGET_UNAVAILABLE"),
    )
    publishing = initiate()

    # When the worker runs it to the end
    drain(stub_broker, worker)

    # Then the history tells the whole story, and each excerpt holds only its own attempt
    assert history(publishing) == [
        (1, "retrying", "TARGET_UNAVAILABLE"),
        (2, "retrying", "TARGET_UNAVAILABLE"),
        (3, "published", ""),
    ]
    first, second, _ = Attempt.objects.filter(publishing=publishing)
    assert first.error_message == "store busy"
    # (an attempt's excerpt ends with its last step; the next attempt's start is not in it)
    assert "event    submit stopped in " in first.log_excerpt
    assert first.log_excerpt.count("event    checkout https://") == 1
    assert second.log_excerpt.count("event    checkout https://") == 1
    assert first.log_excerpt != second.log_excerpt


def test_a_permanent_failure_is_the_last_attempt(stub_broker, worker) -> None:
    ScriptedPipeline.reset(PermanentJobError("rejected by the store", code="TARGET_REJECTED"))
    publishing = initiate()
    drain(stub_broker, worker)
    assert history(publishing) == [(1, "failed", "TARGET_REJECTED")]


def test_an_attempt_whose_worker_died_is_lost_when_the_message_comes_back(stub_broker, worker) -> None:
    # Given attempt 1 running on a worker that died (its row still says running)
    publishing = PublishingFactory.create(building=True, attempts=1)
    Attempt.objects.create(publishing=publishing, number=1, message_id="dead")

    # When its message is delivered again
    send_for(publishing)
    drain(stub_broker, worker)

    # Then attempt 1 is recorded as lost and attempt 2 published
    assert history(publishing) == [(1, "lost", ""), (2, "published", "")]


def test_the_reconciler_marks_the_attempt_of_a_dead_worker_lost(stub_broker) -> None:
    publishing = PublishingFactory.create(
        building=True, attempts=1, heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    Attempt.objects.create(publishing=publishing, number=1)

    assert publishing_reconcile().requeued_lost == 1

    (attempt,) = Attempt.objects.filter(publishing=publishing)
    assert attempt.outcome == "lost"
    assert "stopped answering" in attempt.error_message
    assert attempt.finished_at is not None


def test_cancelling_closes_the_running_attempt_even_if_its_worker_is_gone() -> None:
    owner = UserFactory.create()
    publishing = PublishingFactory.create(
        building=True, attempts=1, project=ProjectFactory.create(owner=owner)
    )
    Attempt.objects.create(publishing=publishing, number=1)

    publishing_cancel(publishing=publishing, by=owner)

    (attempt,) = Attempt.objects.filter(publishing=publishing)
    assert (attempt.outcome, attempt.finished_at is not None) == ("cancelled", True)
    assert owner.get_username() in attempt.error_message


def test_the_first_to_close_an_attempt_decides_its_outcome(stub_broker) -> None:
    # Given attempt 1 running on a worker the reconciler gave up on
    owner = UserFactory.create()
    publishing = PublishingFactory.create(
        building=True, attempts=1, project=ProjectFactory.create(owner=owner)
    )
    Attempt.objects.create(publishing=publishing, number=1)
    assert publishing_requeue(publishing_id=str(publishing.pk), reason="looked dead", retries=0)

    # When someone else closes the run later (here the owner cancels it)
    publishing_cancel(publishing=Publishing.objects.get(pk=publishing.pk), by=owner)

    # Then attempt 1 keeps the outcome of whoever closed it first
    (attempt,) = Attempt.objects.filter(publishing=publishing)
    assert (attempt.outcome, attempt.error_message) == ("lost", "looked dead")


def test_an_attempt_number_is_recorded_once() -> None:
    publishing = PublishingFactory.create()
    Attempt.objects.create(publishing=publishing, number=1)
    with pytest.raises(IntegrityError):
        Attempt.objects.create(publishing=publishing, number=1)


def test_a_running_attempt_has_no_end_and_a_finished_one_has_one() -> None:
    publishing = PublishingFactory.create()
    with pytest.raises(IntegrityError):
        Attempt.objects.create(publishing=publishing, number=1, outcome="failed")


def test_a_build_that_prints_nul_bytes_is_published_with_them_replaced(
    stub_broker, worker, monkeypatch
) -> None:
    # Given a build printing NUL bytes, as `cat /proc/self/environ` does (PostgreSQL's text refuses them)
    def build(self: ScriptedPipeline, job, source) -> None:
        job.log("PATH=/usr/bin\x00HOME=/build/home\x00\n")

    monkeypatch.setattr(ScriptedPipeline, "build", build)
    publishing = initiate()

    # When the worker runs it
    drain(stub_broker, worker)

    # Then it is published, and its logs keep the text with each NUL shown as U+FFFD
    publishing.refresh_from_db()
    (attempt,) = Attempt.objects.filter(publishing=publishing)
    assert publishing.status == "published"
    for log in (log_text(publishing), attempt.log_excerpt):
        assert "PATH=/usr/bin\ufffdHOME=/build/home\ufffd\n" in log
        assert "\x00" not in log
