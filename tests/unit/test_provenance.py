"""Provenance: the commit each attempt checked out, on the attempt, the publishing, the API and the admin."""

from __future__ import annotations

import pytest
from django.test import Client

from publishing.exceptions import StaleAttempt, TransientJobError
from publishing.models import Attempt, Publishing
from publishing.pipeline import Commit
from publishing.pipeline.base import short_sha
from publishing.selectors import log_text
from publishing.services.attempts import AttemptLog
from publishing.services.provenance import record_commit
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline, scripted_commit
from tests.support.stub_broker import drain, initiate

COMMIT = Commit(
    sha="3b18e512dba79e4c8300dd08aeb37f8e728b8dad",
    subject="Add the pricing page",
    author="Alice Example <alice@example.com>",
)


@pytest.mark.django_db(transaction=True)
def test_a_run_records_the_commit_it_checked_out_on_the_publishing_and_each_attempt(
    stub_broker, worker
) -> None:
    # Given a target that fails once, then accepts
    ScriptedPipeline.reset(TransientJobError("store busy", code="TARGET_UNAVAILABLE"))
    publishing = initiate()

    # When the worker runs it to the end
    drain(stub_broker, worker)

    # Then the publishing and both attempts name the commit the checkout said it holds
    publishing.refresh_from_db()
    commit = scripted_commit(ScriptedPipeline.jobs[0])
    assert publishing.status == "published"
    assert (publishing.commit_sha, publishing.commit_subject, publishing.commit_author) == (
        commit.sha,
        commit.subject,
        commit.author,
    )
    assert [a.commit_sha for a in Attempt.objects.filter(publishing=publishing)] == [commit.sha] * 2
    # And the log says it after each checkout, by its short id and subject
    assert log_text(publishing).count(f" event    checkout -> {commit.short} {commit.subject}\n") == 2


@pytest.mark.django_db
def test_a_commit_recorded_by_an_attempt_that_lost_its_publishing_changes_nothing_there() -> None:
    # Given a publishing cancelled while its first attempt was checking out
    publishing = PublishingFactory.create(cancelled=True, attempts=1, message_id="m-1")
    Attempt.objects.create(publishing=publishing, number=1, message_id="m-1")
    log = AttemptLog(publishing, 1, "m-1")

    # When that attempt records its commit
    with pytest.raises(StaleAttempt):
        record_commit(publishing, log, COMMIT)

    # Then the publishing keeps no commit, and the attempt (its own record) names it
    publishing.refresh_from_db()
    assert publishing.commit_sha == ""
    assert Attempt.objects.get(publishing=publishing).commit_sha == COMMIT.sha


def _published_with_commit(**fields: object) -> Publishing:
    publishing = PublishingFactory.create(
        published=True,
        commit_sha=COMMIT.sha,
        commit_subject=COMMIT.subject,
        commit_author=COMMIT.author,
        **fields,
    )
    Attempt.objects.create(
        publishing=publishing,
        number=1,
        outcome="published",
        finished_at=publishing.finished_at,
        commit_sha=COMMIT.sha,
    )
    return publishing


@pytest.mark.django_db
def test_the_api_shows_the_commit_in_the_list_the_detail_and_each_attempt(api, user) -> None:
    # Given a published publishing and its attempt, both with their commit
    publishing = _published_with_commit(project=ProjectFactory.create(owner=user))

    # When the list and the detail are read
    (item,) = api.get("/api/v1/publishing/").json()["results"]
    detail = api.get(f"/api/v1/publishing/{publishing.pk}").json()

    # Then both name the commit, and the attempt its id
    for body in (item, detail):
        assert (body["commit_sha"], body["commit_subject"], body["commit_author"]) == (
            COMMIT.sha,
            COMMIT.subject,
            COMMIT.author,
        )
    assert detail["attempt_history"][0]["commit_sha"] == COMMIT.sha


@pytest.mark.django_db
def test_the_admin_shows_the_commit_in_the_list_on_the_page_and_for_each_attempt() -> None:
    # Given staff and a published publishing with its commit
    client = Client()
    client.force_login(UserFactory.create(username="admin", is_staff=True, is_superuser=True))
    publishing = _published_with_commit()

    # When they open the changelist, search it by the commit's id, and open the publishing's page
    changelist = client.get("/admin/publishing/publishing/").content.decode()
    found = client.get("/admin/publishing/publishing/", {"q": COMMIT.sha[:10]}).content.decode()
    page = client.get(f"/admin/publishing/publishing/{publishing.pk}/change/").content.decode()

    # Then the list shows its short id with the whole commit a hover away, and finds it by its id
    assert f'<code title="{COMMIT.sha} {COMMIT.subject}">{short_sha(COMMIT.sha)}</code>' in changelist
    assert str(publishing.pk) in found
    # And the page shows the whole commit, and the attempt's
    assert COMMIT.sha in page
    assert COMMIT.subject in page
    assert "Alice Example &lt;alice@example.com&gt;" in page
    assert page.count(f">{short_sha(COMMIT.sha)}</code>") == 1


@pytest.mark.django_db(transaction=True)
def test_a_retry_builds_the_commit_its_first_attempt_checked_out(stub_broker, worker) -> None:
    # Given a publishing of the ref's head whose first attempt fails transiently after its checkout
    ScriptedPipeline.reset(TransientJobError("store busy", code="TARGET_UNAVAILABLE"))
    publishing = initiate()

    # When it is retried until published
    drain(stub_broker, worker)

    # Then the first attempt asked for the head, and the retry for the commit the first checked out
    first, retry = ScriptedPipeline.jobs
    publishing.refresh_from_db()
    assert first.commit == ""
    assert retry.commit == publishing.commit_sha != ""
    # and each knows which run it is (its build sees it as PUBLISHER_ATTEMPT)
    assert (first.attempt, retry.attempt) == (1, 2)
