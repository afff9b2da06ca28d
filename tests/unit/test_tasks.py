from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys

import pytest
from django.utils import timezone

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.models import Publishing
from publishing.selectors import log_text
from publishing.services.publishings import publishing_cancel
from publishing.tasks import build_and_submit
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain, initiate, send_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_valid_job_ends_published_with_its_artifact(stub_broker, worker, settings) -> None:
    # Given a queued publishing
    publishing = initiate()

    # When the worker runs it
    drain(stub_broker, worker)

    # Then it is published after one attempt, with the artifact recorded
    publishing.refresh_from_db()
    assert publishing.status == "published"
    assert publishing.attempts == 1
    assert publishing.progress == 100
    assert len(publishing.artifact_sha256) == 64
    assert publishing.artifact_uri.startswith("memory://")
    assert publishing.started_at
    assert publishing.finished_at
    assert publishing.worker == f"{settings.PUBLISHING_WORKER_NAME}:{os.getpid()}"
    assert "checkout" in log_text(publishing)
    assert "submit" in log_text(publishing)
    assert ScriptedPipeline.submitted == [str(publishing.pk)]


def test_a_transient_error_is_retried_with_backoff_until_it_succeeds(stub_broker, worker, caplog) -> None:
    # Given a target that is unavailable twice
    ScriptedPipeline.reset(
        TransientJobError("HTTP 503", code="TARGET_UNAVAILABLE"),
        TransientJobError("HTTP 503", code="TARGET_UNAVAILABLE"),
    )
    publishing = initiate()

    # When the worker runs it
    with caplog.at_level(logging.INFO):
        drain(stub_broker, worker)

    # Then the third attempt publishes it, and each retry was logged with the ids
    publishing.refresh_from_db()
    assert publishing.status == "published"
    assert publishing.attempts == 3
    assert publishing.error_code == ""
    retry_lines = [r for r in caplog.records if "will retry" in r.getMessage()]
    assert len(retry_lines) == 2
    assert all(r.publishing_id == str(publishing.pk) for r in retry_lines)
    assert all(r.message_id == publishing.message_id for r in retry_lines)
    assert any("Retrying message" in r.getMessage() and "in " in r.getMessage() for r in caplog.records)


def test_a_transient_error_that_never_clears_fails_after_max_retries(stub_broker, worker) -> None:
    # Given a target that is always unavailable
    ScriptedPipeline.reset(*[TransientJobError("HTTP 503", code="TARGET_UNAVAILABLE")] * 10)
    publishing = initiate()

    # When the worker runs it
    drain(stub_broker, worker)

    # Then it failed after 1 run + 3 retries, with the error's code, and was dead-lettered
    publishing.refresh_from_db()
    assert publishing.status == "failed"
    assert publishing.attempts == 4
    assert publishing.error_code == "TARGET_UNAVAILABLE"
    assert len(stub_broker.dead_letters) == 1


def test_a_permanent_error_fails_at_once_without_retry(stub_broker, worker, caplog) -> None:
    # Given a target that rejects the artifact
    ScriptedPipeline.reset(PermanentJobError("HTTP 400: bad artifact", code="TARGET_REJECTED"))
    publishing = initiate()

    # When the worker runs it
    with caplog.at_level(logging.ERROR):
        drain(stub_broker, worker)

    # Then it failed after one attempt with a clear code, logged with the ids
    publishing.refresh_from_db()
    assert publishing.status == "failed"
    assert publishing.attempts == 1
    assert publishing.error_code == "TARGET_REJECTED"
    assert "bad artifact" in publishing.error_message
    failure = next(r for r in caplog.records if "failed at attempt" in r.getMessage())
    assert (failure.publishing_id, failure.user_id) == (str(publishing.pk), str(publishing.requested_by_id))
    assert ScriptedPipeline.runs == 1


def test_an_unexpected_exception_fails_with_internal_error(stub_broker, worker) -> None:
    ScriptedPipeline.reset(ZeroDivisionError("bug"))
    publishing = initiate()
    drain(stub_broker, worker)
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code, publishing.attempts) == ("failed", "INTERNAL_ERROR", 1)


@pytest.mark.parametrize("status", ["published", "failed", "cancelled"])
def test_a_message_for_a_finished_publishing_is_a_logged_no_op(stub_broker, worker, caplog, status) -> None:
    # Given a finished publishing and a late duplicate of its message
    publishing = PublishingFactory.with_status(status, message_id="m-1")
    before = Publishing.objects.values().get(pk=publishing.pk)

    # When the duplicate arrives
    with caplog.at_level(logging.INFO):
        build_and_submit.send_with_options(
            kwargs={"publishing_id": str(publishing.pk), "project_id": "p", "user_id": "u"}
        )
        drain(stub_broker, worker)

    # Then the record is untouched and nothing ran
    assert Publishing.objects.values().get(pk=publishing.pk) == before
    assert ScriptedPipeline.runs == 0
    assert any("already" in r.getMessage() for r in caplog.records)


def test_a_redelivered_message_resumes_a_publishing_whose_attempt_was_lost(stub_broker, worker) -> None:
    # Given a publishing left `building` by a worker that died during attempt 1
    publishing = PublishingFactory.create(building=True, attempts=1)

    # When its message is delivered again
    send_for(publishing)
    drain(stub_broker, worker)

    # Then a new attempt publishes it, once
    publishing.refresh_from_db()
    assert publishing.status == "published"
    assert publishing.attempts == 2
    assert ScriptedPipeline.submitted == [str(publishing.pk)]


def test_a_stale_message_for_a_requeued_publishing_is_skipped(stub_broker, worker, caplog) -> None:
    # Given a queued publishing whose current message is another one
    publishing = PublishingFactory.create(queued=True, message_id="current")

    # When an old message for it arrives
    with caplog.at_level(logging.INFO):
        build_and_submit.send(str(publishing.pk), str(publishing.project_id), "u")
        drain(stub_broker, worker)

    # Then it is skipped
    publishing.refresh_from_db()
    assert publishing.status == "queued"
    assert ScriptedPipeline.runs == 0
    assert any("stale message" in r.getMessage() for r in caplog.records)


def test_a_deleted_project_fails_the_publishing_permanently(stub_broker, worker) -> None:
    # Given a queued publishing whose project was deleted meanwhile
    publishing = PublishingFactory.create(queued=True)
    Publishing.objects.filter(pk=publishing.pk).update(project=None)

    # When its message is processed
    send_for(publishing)
    drain(stub_broker, worker)

    # Then it failed for good, with a clear code
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code, publishing.attempts) == ("failed", "PROJECT_DELETED", 1)


def test_the_actor_is_declared_as_the_spec_says(settings) -> None:
    assert build_and_submit.queue_name == "publishing-builds"
    assert build_and_submit.options["max_retries"] == 3
    assert build_and_submit.options["min_backoff"] == settings.PUBLISHING_MIN_BACKOFF_MS
    assert build_and_submit.options["max_backoff"] == settings.PUBLISHING_MAX_BACKOFF_MS
    assert build_and_submit.options["time_limit"] == settings.PUBLISHING_TIME_LIMIT_MS
    assert PermanentJobError in build_and_submit.options["throws"]


def test_a_duplicate_message_while_the_lease_is_held_is_skipped(stub_broker, worker, caplog) -> None:
    # Given a publishing being built right now elsewhere (its lease is fresh)
    publishing = PublishingFactory.create(building=True, attempts=1, heartbeat_at=timezone.now())

    # When a duplicate of its message arrives
    with caplog.at_level(logging.INFO):
        send_for(publishing)
        drain(stub_broker, worker)

    # Then it does not take the publishing over
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == ("building", 1)
    assert ScriptedPipeline.runs == 0
    assert any("lease held" in r.getMessage() for r in caplog.records)


def test_a_cancelled_queued_publishing_never_runs(stub_broker, worker) -> None:
    # Given a queued publishing that is cancelled before a worker gets to it
    owner = UserFactory.create()
    publishing = PublishingFactory.create(queued=True, project=ProjectFactory.create(owner=owner))
    publishing_cancel(publishing=publishing, by=owner)

    # When its message is processed
    send_for(publishing)
    drain(stub_broker, worker)

    # Then nothing ran and it stays cancelled
    publishing.refresh_from_db()
    assert publishing.status == "cancelled"
    assert ScriptedPipeline.runs == 0


def test_jobs_leave_no_task_row_their_publishings_and_attempts_are_the_record(stub_broker, worker) -> None:
    # Given a job that publishes and one that fails for good, run by a worker with the project's middleware
    from django_dramatiq.models import Task

    ScriptedPipeline.reset(None, PermanentJobError("no", code="TARGET_REJECTED"))
    published, failed = PublishingFactory.create(queued=True), PublishingFactory.create(queued=True)
    for publishing in (published, failed):
        send_for(publishing)
        drain(stub_broker, worker)

    # When the worker stops (where a writer that holds rows back would write them)
    worker.stop()

    # Then each publishing's attempt records its run, and there is no django-dramatiq Task row
    assert [a.outcome for a in published.attempt_history.all()] == ["published"]
    assert [a.outcome for a in failed.attempt_history.all()] == ["failed"]
    assert not Task.tasks.exists()


def test_the_messages_the_services_build_are_the_actors_own() -> None:
    # The services build messages by name (publishing.jobs), never importing the actors: each name, queue
    # and set of arguments must be one the actor takes
    from publishing import jobs
    from publishing.tasks import deliver_webhook

    build = jobs.build_message(publishing_id="p", project_id="q", user_id="1", owner_id="1", retries=2)
    webhook = jobs.webhook_message(delivery_id="d")

    for message, actor in ((build, build_and_submit), (webhook, deliver_webhook)):
        assert (message.actor_name, message.queue_name) == (actor.actor_name, actor.queue_name)
        inspect.signature(actor.fn).bind(*message.args, **message.kwargs)
    assert build.options == {"owner_id": "1", "retries": 2}


def test_every_process_declares_the_actors_when_django_loads() -> None:
    # A process that never imports publishing.tasks itself (a web worker) must still send to known queues
    script = (
        "import django, dramatiq, sys; django.setup(); "
        "print(sorted(dramatiq.get_broker().actors)); print(sorted(dramatiq.get_broker().queues))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "publisher_project.settings.test"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    actors, queues = result.stdout.splitlines()[-2:]
    assert actors == "['build_and_submit', 'deliver_webhook']"
    assert "publishing-builds" in queues
