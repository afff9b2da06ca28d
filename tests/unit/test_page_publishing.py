"""The publishing page: what it shows, its buttons, and who may press them (the boundary)."""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from publishing.models import Attempt, LogLine, Publishing
from publishing.services.publishings import publishing_initiate
from tests.factories import ProjectFactory, PublishingFactory, UserFactory, grant
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain, queued_messages

pytestmark = pytest.mark.django_db


def logged_in(user, *, enforce_csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(user)
    return client


def page_of(client: Client, publishing: Publishing, query: str = "") -> str:
    response = client.get(f"/publishings/{publishing.pk}/{query}")
    assert response.status_code == 200
    return response.content.decode()


def without_tokens(html: str) -> str:
    """The page without its CSRF tokens (masked anew at each rendering)."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)


def buttons(html: str) -> set[str]:
    return {name for name in ("cancel", "retry", "rerun") if f'/{name}"' in html}


# --- What it shows ------------------------------------------------------------------------------


def test_the_page_says_where_it_stands_with_the_project_commit_and_requester(project) -> None:
    # Given a failed publishing whose build step stopped, with its commit
    publishing = PublishingFactory.create(
        project=project,
        failed=True,
        error_message="The build exited with 2.",
        commit_sha="c0ffee" * 6 + "abcd",
        commit_subject="Fix the theme",
        commit_author="Alice <alice@example.com>",
    )
    now = timezone.now().isoformat()
    Attempt.objects.create(
        publishing=publishing,
        number=1,
        outcome="failed",
        finished_at=timezone.now(),
        error_code="BUILD_FAILED",
        error_message="The build exited with 2.",
        steps=[
            {"name": "checkout", "state": "done", "started_at": now, "finished_at": now},
            {"name": "build", "state": "stopped", "started_at": now, "finished_at": now},
        ],
    )

    # When its owner opens the page
    html = page_of(logged_in(project.owner), publishing)

    # Then the header says it failed at build, and why; the project links to its page
    assert "Failed at build: BUILD_FAILED The build exited with 2." in html
    assert f'href="/projects/{project.pk}/"' in html
    assert "c0ffeec0ffee" in html
    assert "Fix the theme" in html
    assert "Alice &lt;alice@example.com&gt;" in html
    assert project.owner.username in html
    # And the failed step is open with its error beside it, the later ones skipped
    assert 'class="step step-failed" id="a1-build" data-step="build"' in html
    assert 'id="a1-build" data-step="build"' in html
    assert "open>" in html.split('id="a1-build"')[1].split("\n")[0]
    assert '<code class="code">BUILD_FAILED</code> The build exited with 2.' in html
    assert 'class="step step-skipped" id="a1-package"' in html
    # And its script and its own styles are there, from our static files
    assert "publishing/page-publishing.js" in html
    assert "publishing/page-publishing.css" in html


def test_the_summary_fragment_is_the_same_rendering_without_the_page(project) -> None:
    publishing = PublishingFactory.create(project=project, queued=True)
    alice = logged_in(project.owner)
    fragment = page_of(alice, publishing, "?fragment=summary")
    assert "<html" not in fragment
    assert "Waiting for a free worker" in fragment
    page = page_of(alice, publishing)
    assert without_tokens(fragment).strip() in without_tokens(page)


@pytest.mark.django_db(transaction=True)
def test_a_run_records_its_steps_and_the_events_fall_in_their_windows(stub_broker, worker) -> None:
    # Given a publishing whose submit fails for good
    from publishing.exceptions import PermanentJobError

    ScriptedPipeline.reset(PermanentJobError("The store refused it.", code="TARGET_REFUSED"))
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user)
    publishing = publishing_initiate(user=user, project_id=project.pk)

    # When it runs
    drain(stub_broker, worker)

    # Then its attempt records four steps, the last one stopped, in order and without overlap
    (attempt,) = Attempt.objects.filter(publishing=publishing)
    steps = attempt.steps
    assert [(step["name"], step["state"]) for step in steps] == [
        ("checkout", "done"),
        ("build", "done"),
        ("package", "done"),
        ("submit", "stopped"),
    ]
    windows = [
        (datetime.fromisoformat(s["started_at"]), datetime.fromisoformat(s["finished_at"])) for s in steps
    ]
    assert all(start <= end for start, end in windows)
    assert all(earlier[1] < later[0] for earlier, later in itertools.pairwise(windows))
    # And each step's start and end events carry its window's own times
    events = list(LogLine.objects.filter(publishing=publishing, step="event").order_by("id"))
    for step, (start, end) in zip(steps, windows, strict=True):
        inside = [line.text for line in events if start <= line.time <= end]
        assert inside[0].startswith(step["name"]), inside
        assert inside[-1].startswith(f"{step['name']} "), inside
        assert " in " in inside[-1]
    # And the page shows the submit step failed with the error
    html = page_of(logged_in(user), publishing)
    assert 'class="step step-failed" id="a1-submit"' in html
    assert "Failed at submit: TARGET_REFUSED The store refused it." in html


# --- Its buttons -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("pending", {"cancel"}),
        ("queued", {"cancel"}),
        ("building", {"cancel"}),
        ("submitting", set()),
        ("failed", {"retry", "rerun"}),
        ("cancelled", {"retry", "rerun"}),
        ("published", {"rerun"}),
    ],
)
def test_the_buttons_are_what_can_be_done_now(project, status: str, shown: set[str]) -> None:
    publishing = PublishingFactory.with_status(status, project=project)
    assert buttons(page_of(logged_in(project.owner), publishing)) == shown


def test_an_earlier_published_one_offers_to_publish_its_commit_again(project) -> None:
    # Given two publishings that published, the older first
    older = PublishingFactory.create(
        project=project, published=True, finished_at=timezone.now() - timedelta(hours=1)
    )
    latest = PublishingFactory.create(project=project, published=True)
    alice = logged_in(project.owner)
    # Then only the older one is a rollback; the latest is re-run
    assert "Publish this commit again" in page_of(alice, older)
    assert "Publish this commit again" not in page_of(alice, latest)
    assert ">Re-run</button>" in page_of(alice, latest)


def test_a_viewer_who_may_not_act_sees_no_button(project) -> None:
    # Given someone who may see every publishing but act on none
    viewer = grant(UserFactory.create(), "view_publishing")
    publishing = PublishingFactory.create(project=project, failed=True)
    assert buttons(page_of(logged_in(viewer), publishing)) == set()


def test_the_owner_cancels_from_the_page_and_comes_back_to_it(project, stub_broker) -> None:
    publishing = PublishingFactory.create(project=project, queued=True)
    response = logged_in(project.owner).post(f"/publishings/{publishing.pk}/cancel", follow=True)
    assert response.redirect_chain == [(f"/publishings/{publishing.pk}/", 302)]
    publishing.refresh_from_db()
    assert publishing.status == "cancelled"
    html = response.content.decode()
    assert "Cancel requested: now cancelled." in html
    assert f"Cancelled by {project.owner.username}" in html


def test_a_rerun_leads_to_the_new_publishings_page(project, stub_broker) -> None:
    publishing = PublishingFactory.create(project=project, failed=True, commit_sha="a" * 40)
    response = logged_in(project.owner).post(f"/publishings/{publishing.pk}/rerun")
    rerun = Publishing.objects.exclude(pk=publishing.pk).get()
    assert response.status_code == 302
    assert response["Location"] == f"/publishings/{rerun.pk}/"
    assert (rerun.status, rerun.requested_commit) == ("queued", "a" * 40)


def test_a_refused_action_says_why_and_changes_nothing(project, stub_broker) -> None:
    # Given a publishing that has already published
    publishing = PublishingFactory.create(project=project, published=True)
    response = logged_in(project.owner).post(f"/publishings/{publishing.pk}/cancel", follow=True)
    assert "already published; it cannot be cancelled" in response.content.decode()
    publishing.refresh_from_db()
    assert publishing.status == "published"


@pytest.mark.parametrize("action", ["cancel", "retry", "rerun"])
def test_get_on_an_action_leads_to_the_page_and_does_nothing(project, action: str) -> None:
    publishing = PublishingFactory.create(project=project, failed=True)
    response = logged_in(project.owner).get(f"/publishings/{publishing.pk}/{action}")
    assert (response.status_code, response["Location"]) == (302, f"/publishings/{publishing.pk}/")
    assert Publishing.objects.get().status == "failed"


# --- Attacks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["cancel", "retry", "rerun"])
def test_another_user_cannot_act_on_my_publishing(project, other_user, stub_broker, action: str) -> None:
    # Given alice's publishing, active for cancel and failed for the others
    status = "queued" if action == "cancel" else "failed"
    publishing = PublishingFactory.with_status(status, project=project)

    # When bob posts to its button's address, directly
    response = logged_in(other_user).post(f"/publishings/{publishing.pk}/{action}")

    # Then he is told it does not exist, and nothing changed or started
    assert response.status_code == 404
    assert list(Publishing.objects.values_list("pk", "status")) == [(publishing.pk, status)]
    assert queued_messages(stub_broker) == []


def test_the_buttons_need_the_csrf_token(project) -> None:
    publishing = PublishingFactory.create(project=project, queued=True)
    response = logged_in(project.owner, enforce_csrf_checks=True).post(f"/publishings/{publishing.pk}/cancel")
    assert response.status_code == 403
    publishing.refresh_from_db()
    assert publishing.status == "queued"


def test_a_stranger_posting_is_sent_to_log_in(project) -> None:
    publishing = PublishingFactory.create(project=project, queued=True)
    response = Client().post(f"/publishings/{publishing.pk}/cancel")
    assert response.status_code == 302
    assert response["Location"].startswith("/api-auth/login/")
    assert Publishing.objects.get().status == "queued"


def test_the_start_throttle_applies_to_retry_and_rerun_from_the_page(project, stub_broker, throttled) -> None:
    # Given alice's failed publishings, and a start budget of 2 a minute (spent by two retries)
    alice = logged_in(project.owner)
    first, second, third = (PublishingFactory.create(project=project, failed=True) for _ in range(3))
    for publishing in (first, second):
        alice.post(f"/publishings/{publishing.pk}/retry")
        Publishing.objects.filter(pk=publishing.pk).update(status="failed", finished_at=timezone.now())

    # When she retries a third, then re-runs it
    retried = alice.post(f"/publishings/{third.pk}/retry", follow=True).content.decode()
    rerun = alice.post(f"/publishings/{third.pk}/rerun", follow=True).content.decode()

    # Then both are refused with the wait, and nothing more is queued
    assert "Too many publishings started: try again in" in retried
    assert "Too many publishings started: try again in" in rerun
    assert Publishing.objects.get(pk=third.pk).status == "failed"
    assert Publishing.objects.count() == 3
