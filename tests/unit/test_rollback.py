"""Publishing a given commit (initiate with `commit`) and re-running a finished publishing at its commit."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from publishing.models import Publishing
from tests.factories import ProjectFactory, PublishingFactory, UserFactory, grant
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import broker_refuses, drain, queued_messages

INITIATE = "/api/v1/publishing/initiate"
COMMIT = "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"


def assert_error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body


def rerun_url(publishing: Publishing) -> str:
    return f"/api/v1/publishing/{publishing.pk}/rerun"


# --- initiate with a commit ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_initiate_with_a_commit_runs_the_pipeline_on_that_commit(api, project, stub_broker, worker) -> None:
    # When the user initiates a publishing of a given commit (in capitals)
    response = api.post(INITIATE, {"project_id": str(project.pk), "commit": COMMIT.upper()}, format="json")

    # Then it is queued asking for that commit, and the pipeline is told to check it out
    assert response.status_code == 202, response.content
    assert response.json()["requested_commit"] == COMMIT
    drain(stub_broker, worker)
    (job,) = ScriptedPipeline.jobs
    assert (job.ref, job.commit) == (project.ref, COMMIT)
    published = Publishing.objects.get()
    assert (published.status, published.commit_sha) == ("published", COMMIT)


def test_initiate_without_a_commit_asks_for_the_head(api, project, stub_broker) -> None:
    body = api.post(INITIATE, {"project_id": str(project.pk), "commit": ""}, format="json").json()
    assert body["requested_commit"] == ""
    assert Publishing.objects.get().requested_commit == ""


@pytest.mark.parametrize(
    "commit",
    [
        "abc1234",
        "a" * 41,
        "--upload-pack=touch /tmp/pwned",
        "-v1",
        "v1..v2",
        " v1",
        "has space",
        "v1\n",
        "v1\x1b",
        "v1\x00",
        "x:y",
        "v1@{1}",
        "t" * 256,
        42,
        None,
        ["v1"],
    ],
)
def test_initiate_with_a_malformed_commit_answers_400_naming_the_field(
    api, project, stub_broker, commit
) -> None:
    # When
    response = api.post(INITIATE, {"project_id": str(project.pk), "commit": commit}, format="json")

    # Then nothing is queued, and the answer names the field
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert list(body["errors"]) == ["commit"]
    assert not Publishing.objects.exists()
    assert queued_messages(stub_broker) == []


def test_an_idempotency_key_used_for_another_commit_is_a_conflict(api, project, stub_broker) -> None:
    # Given a publishing of the head under a key
    first = api.post(INITIATE, {"project_id": str(project.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 202

    # When the same key asks for a commit, then again for the head
    other = api.post(
        INITIATE, {"project_id": str(project.pk), "commit": COMMIT}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    same = api.post(INITIATE, {"project_id": str(project.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    # Then the first is refused, the second is the same publishing
    assert_error(other, 409, "CONFLICT")
    assert same.json()["id"] == first.json()["id"]


# --- re-run ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("status", ["published", "failed", "cancelled"])
def test_rerun_queues_a_new_publishing_of_the_commit_a_finished_one_checked_out(
    api, user, stub_broker, worker, status
) -> None:
    # Given a finished publishing that checked out COMMIT (the project's head has moved on since)
    earlier = PublishingFactory.with_status(
        status, project=ProjectFactory.create(owner=user), commit_sha=COMMIT, requested_commit=""
    )

    # When it is re-run
    response = api.post(rerun_url(earlier))

    # Then a new publishing is queued at that commit, with its Location, and runs on it
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"] != str(earlier.pk)
    assert (body["status"], body["requested_commit"]) == ("queued", COMMIT)
    assert response["Location"] == body["url"]
    drain(stub_broker, worker)
    (job,) = ScriptedPipeline.jobs
    assert job.commit == COMMIT
    assert Publishing.objects.get(pk=body["id"]).status == "published"
    # And the one re-run is left as it was
    earlier_now = Publishing.objects.get(pk=earlier.pk)
    assert (earlier_now.status, earlier_now.commit_sha) == (status, COMMIT)


def test_rerun_of_one_that_never_checked_out_asks_for_what_it_asked_for(api, user, stub_broker) -> None:
    # Given failed publishings that stopped before their checkout: one of a tag, one of the head
    project = ProjectFactory.create(owner=user)
    of_tag = PublishingFactory.create(project=project, failed=True, requested_commit="v1.4.0")
    of_head = PublishingFactory.create(project=project, failed=True)

    # When each is re-run (the first finished before the second starts)
    first = api.post(rerun_url(of_tag)).json()
    Publishing.objects.filter(pk=first["id"]).update(status="cancelled", finished_at=of_tag.finished_at)
    second = api.post(rerun_url(of_head)).json()

    # Then
    assert (first["requested_commit"], second["requested_commit"]) == ("v1.4.0", "")


@pytest.mark.parametrize("status", ["pending", "queued", "building", "submitting"])
def test_rerun_of_an_active_publishing_answers_409(api, user, stub_broker, status) -> None:
    publishing = PublishingFactory.with_status(status, project=ProjectFactory.create(owner=user))
    body = assert_error(api.post(rerun_url(publishing)), 409, "CONFLICT")
    assert body["detail"] == f"Only finished publishings can be re-run, not {status}."
    assert Publishing.objects.count() == 1


def test_rerun_draws_on_the_same_budget_as_initiate(api, user, throttled, stub_broker) -> None:
    # Given a rate of 2 a minute, both spent by initiates
    for project in ProjectFactory.create_batch(2, owner=user):
        assert api.post(INITIATE, {"project_id": str(project.pk)}, format="json").status_code == 202
    done = PublishingFactory.create(project=ProjectFactory.create(owner=user), published=True)

    # When alice re-runs a published publishing
    response = api.post(rerun_url(done))

    # Then she is throttled, and nothing new is queued
    assert_error(response, 429, "THROTTLED")
    assert response["Retry-After"]
    assert Publishing.objects.count() == 3


def test_rerun_while_another_publishing_of_the_project_is_active_answers_409_with_its_id(
    api, user, stub_broker
) -> None:
    # Given a published publishing and a newer one still building
    project = ProjectFactory.create(owner=user)
    done = PublishingFactory.create(project=project, published=True, commit_sha=COMMIT)
    active = PublishingFactory.create(project=project, building=True)

    # When / Then
    body = assert_error(api.post(rerun_url(done)), 409, "CONFLICT")
    assert body["active_id"] == str(active.pk)
    assert Publishing.objects.count() == 2


def test_rerun_of_another_users_publishing_answers_404(api, other_user, stub_broker) -> None:
    theirs = PublishingFactory.create(project=ProjectFactory.create(owner=other_user), published=True)
    assert_error(api.post(rerun_url(theirs)), 404, "NOT_FOUND")
    assert Publishing.objects.count() == 1


@pytest.mark.parametrize("rights", [(), ("add_publishing",)], ids=["viewer", "may publish any project"])
def test_rerun_of_someone_elses_publishing_without_change_publishing_answers_403(
    db, client_for, stub_broker, rights
) -> None:
    # Given someone who sees every publishing (and may even publish any project), but may not act on them
    someone = grant(UserFactory.create(), "view_project", "view_publishing", *rights)
    publishing = PublishingFactory.create(published=True, commit_sha=COMMIT)

    # When / Then re-running is acting on the publishing, as retrying is
    body = assert_error(client_for(someone).post(rerun_url(publishing)), 403, "PERMISSION_DENIED")
    assert "re-run" in body["detail"]
    assert Publishing.objects.count() == 1


def test_rerun_of_a_publishing_whose_project_was_deleted_answers_409(api, user, stub_broker) -> None:
    publishing = PublishingFactory.create(project=None, requested_by=user, published=True)
    assert_error(api.post(rerun_url(publishing)), 409, "CONFLICT")


def test_rerun_with_the_broker_down_answers_503_and_keeps_nothing_new(
    api, user, stub_broker, monkeypatch
) -> None:
    publishing = PublishingFactory.create(project=ProjectFactory.create(owner=user), published=True)
    broker_refuses(monkeypatch, stub_broker)
    assert_error(api.post(rerun_url(publishing)), 503, "SERVICE_UNAVAILABLE")
    assert list(Publishing.objects.all()) == [publishing]


def test_a_publishing_links_its_rerun(api, user) -> None:
    publishing = PublishingFactory.create(project=ProjectFactory.create(owner=user), published=True)
    body = api.get(f"/api/v1/publishing/{publishing.pk}").json()
    assert body["rerun"] == body["url"] + "/rerun"


# --- the admin ------------------------------------------------------------------------------


def test_the_admin_offers_rerun_for_a_finished_publishing_and_it_queues_a_new_one(
    admin_client_, stub_broker
) -> None:
    # Given a published publishing and a building one
    done = PublishingFactory.create(published=True, commit_sha=COMMIT)
    building = PublishingFactory.create(building=True)

    # When staff open both pages, and press Re-run on the finished one
    assert (
        b'id="publishing-rerun"'
        in admin_client_.get(f"/admin/publishing/publishing/{done.pk}/change/").content
    )
    assert (
        b"publishing-rerun"
        not in admin_client_.get(f"/admin/publishing/publishing/{building.pk}/change/").content
    )
    response = admin_client_.post(f"/admin/publishing/publishing/{done.pk}/rerun/")

    # Then a new publishing of its commit is queued, and the message links both
    assert response.status_code == 302
    new = Publishing.objects.exclude(pk__in=[done.pk, building.pk]).get()
    assert (new.status, new.requested_commit, new.project_id) == ("queued", COMMIT, done.project_id)
    (message,) = [str(m) for m in get_messages(response.wsgi_request)]
    assert f"{done.pk}</a>: re-run as <a" in message
    assert f"{new.pk}</a>, now queued." in message


def test_the_admins_rerun_action_reports_row_by_row(admin_client_, stub_broker) -> None:
    # Given a published publishing and a building one, of different projects
    done = PublishingFactory.create(published=True, commit_sha=COMMIT)
    building = PublishingFactory.create(building=True)

    # When both are re-run from the changelist
    response = admin_client_.post(
        "/admin/publishing/publishing/",
        {"action": "rerun_selected", "_selected_action": [str(done.pk), str(building.pk)]},
        follow=True,
    )

    # Then the finished one has a new publishing at its commit, and the running one was refused
    messages = [str(m) for m in response.context["messages"]]
    assert any("not re-run: Only finished publishings can be re-run, not building." in m for m in messages)
    assert any("1 re-run, 1 refused" in m for m in messages)
    assert Publishing.objects.filter(requested_commit=COMMIT, status="queued").count() == 1


def test_the_project_page_publishes_the_commit_written_in_its_form(admin_client_, stub_broker) -> None:
    # Given a project, whose page offers the form
    project = ProjectFactory.create(name="Site")
    page = admin_client_.get(f"/admin/publishing/project/{project.pk}/change/").content.decode()
    assert 'id="project-publish"' in page
    url = f"/admin/publishing/project/{project.pk}/publish/"

    # When staff publish a malformed commit, then a commit id
    refused = admin_client_.post(url, {"commit": "--upload-pack=touch /tmp/pwned"})
    accepted = admin_client_.post(url, {"commit": COMMIT})

    # Then the first is refused saying why, and the second is queued at that commit
    (said,) = [str(m) for m in get_messages(refused.wsgi_request)]
    refused_as = "&#x27;--upload-pack=touch /tmp/pwned&#x27; is neither a full commit id nor a tag name"
    assert said == f"Site: not published: {refused_as}"
    created = Publishing.objects.get()
    assert (created.status, created.requested_commit, created.project_id) == ("queued", COMMIT, project.pk)
    assert accepted.status_code == 302
    assert accepted["Location"] == f"/admin/publishing/project/{project.pk}/change/"


def test_the_project_page_offers_no_publish_form_to_staff_who_may_not_publish(db, client_for) -> None:
    # Given staff who may change projects but not publish them
    project = ProjectFactory.create()
    client = Client()
    client.force_login(grant(UserFactory.create(is_staff=True), "view_project", "change_project"))

    # When / Then
    assert b"project-publish" not in client.get(f"/admin/publishing/project/{project.pk}/change/").content
    assert (
        client.post(f"/admin/publishing/project/{project.pk}/publish/", {"commit": COMMIT}).status_code == 403
    )
    assert not Publishing.objects.exists()
