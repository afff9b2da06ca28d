"""The projects page, a project's page and their Publish buttons: the boundary first, then what they show."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from publishing.durations import time_ago
from publishing.models import LogLine, Publishing
from tests.factories import ProjectFactory, PublishingFactory, UserFactory, grant
from tests.support.stub_broker import broker_refuses, queued_messages

pytestmark = pytest.mark.django_db

SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c" * 40


def logged_in(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def publish_url(project) -> str:
    return f"/projects/{project.pk}/publish"


def said(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def published(project, sha: str, *, minutes_ago: int, artifact: str = "", **fields) -> Publishing:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return PublishingFactory.create(
        project=project,
        published=True,
        commit_sha=sha,
        commit_subject=f"Subject of {sha[:4]}",
        commit_author="Ada Lovelace <ada@example.com>",
        artifact_sha256=artifact or sha[:1] * 64,
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(seconds=42),
        **fields,
    )


# --- the boundary -------------------------------------------------------------------------


def test_another_user_posting_publish_to_your_project_gets_404_and_nothing_is_queued(
    project, other_user, stub_broker
) -> None:
    # Given alice's project, and bob signed in
    bob = logged_in(other_user)

    # When bob posts Publish to her project (with a commit, from either page)
    response = bob.post(publish_url(project), {"commit": SHA_A, "from": "projects"})

    # Then it does not exist for him, and nothing was recorded or queued
    assert response.status_code == 404
    assert not Publishing.objects.exists()
    assert queued_messages(stub_broker) == []
    # And a GET does not tell him more
    assert bob.get(publish_url(project)).status_code == 404


def test_another_users_project_page_is_404_and_lists_none_of_it(project, other_user) -> None:
    published(project, SHA_A, minutes_ago=5)
    bob = logged_in(other_user)
    assert bob.get(f"/projects/{project.pk}/").status_code == 404
    page = bob.get("/projects/").content.decode()
    assert project.name not in page
    assert SHA_A[:7] not in page


def test_a_stranger_is_sent_to_log_in_and_nothing_is_queued(project, stub_broker) -> None:
    response = Client().post(publish_url(project))
    assert response.status_code == 302
    assert response["Location"].startswith("/api-auth/login/")
    assert not Publishing.objects.exists()


def test_publish_without_the_csrf_token_is_refused_and_nothing_is_queued(project, stub_broker) -> None:
    # Given the owner's session, in a client that checks CSRF as browsers meet it
    alice = logged_in(project.owner, csrf=True)

    # When a form elsewhere posts Publish with her cookie but no token
    response = alice.post(publish_url(project))

    # Then it is refused
    assert response.status_code == 403
    assert not Publishing.objects.exists()


def test_get_on_publish_leads_to_the_project_page_and_publishes_nothing(project, stub_broker) -> None:
    response = logged_in(project.owner).get(publish_url(project))
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{project.pk}/"
    assert not Publishing.objects.exists()


def test_the_start_throttle_applies_to_the_pages_publish(user, throttled, stub_broker) -> None:
    # Given a start budget of 2 a minute and three projects of alice
    projects = [ProjectFactory.create(owner=user) for _ in range(3)]
    alice = logged_in(user)

    # When she presses Publish on each, from the projects page
    responses = [alice.post(publish_url(p), {"from": "projects"}) for p in projects]

    # Then two are queued and the third is refused, back on the projects page with the reason
    assert [r["Location"].split("/")[1] for r in responses] == ["publishings", "publishings", "projects"]
    assert any("Too many publishings started" in text for text in said(responses[2]))
    assert Publishing.objects.count() == 2
    assert len(queued_messages(stub_broker)) == 2


@pytest.mark.parametrize("commit", ["abc1234", "--upload-pack=touch /tmp/x", "main..evil", "a" * 300])
def test_a_bad_commit_is_said_and_nothing_is_written(project, stub_broker, commit: str) -> None:
    response = logged_in(project.owner).post(publish_url(project), {"commit": commit})
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{project.pk}/"
    assert said(response)
    assert "commit" in said(response)[0].lower()
    assert not Publishing.objects.exists()
    assert not LogLine.objects.exists()
    assert queued_messages(stub_broker) == []


def test_publish_while_another_is_active_goes_back_with_a_link_to_it(project, stub_broker) -> None:
    active = PublishingFactory.create(project=project, building=True)
    response = logged_in(project.owner).post(publish_url(project), {"from": "projects"})
    assert response["Location"] == "/projects/"
    assert f"/publishings/{active.pk}/" in said(response)[0]
    assert Publishing.objects.count() == 1


def test_publish_with_the_broker_down_keeps_nothing(project, stub_broker, monkeypatch) -> None:
    broker_refuses(monkeypatch, stub_broker)
    response = logged_in(project.owner).post(publish_url(project))
    assert response["Location"] == f"/projects/{project.pk}/"
    assert "nothing was changed" in said(response)[0]
    assert not Publishing.objects.exists()


def test_a_viewer_who_may_not_publish_is_told_so(project, stub_broker) -> None:
    viewer = grant(UserFactory.create(username="viewer"), "view_project", "view_publishing")
    response = logged_in(viewer).post(publish_url(project))
    assert response["Location"] == f"/projects/{project.pk}/"
    assert "add_publishing" in said(response)[0]
    assert not Publishing.objects.exists()


# --- publishing from the pages ------------------------------------------------------------


def test_publish_queues_the_head_as_the_user_and_opens_the_new_publishing(project, stub_broker) -> None:
    response = logged_in(project.owner).post(publish_url(project), {"commit": "  "})
    publishing = Publishing.objects.get()
    assert response["Location"] == f"/publishings/{publishing.pk}/"
    assert (publishing.status, publishing.requested_by, publishing.requested_commit) == (
        "queued",
        project.owner,
        "",
    )
    assert f"queued by {project.owner.username} via page" in LogLine.objects.get().text
    assert said(response) == [f"Publishing {project.name} at the head of main: now queued."]


def test_publish_this_commit_again_queues_that_commit(project, stub_broker) -> None:
    # Given A then B published: B is live
    published(project, SHA_A, minutes_ago=10)
    published(project, SHA_B, minutes_ago=5)
    alice = logged_in(project.owner)

    # When the owner presses "Publish this commit again" on A's row
    page = alice.get(f"/projects/{project.pk}/").content.decode()
    assert f'name="commit" value="{SHA_A}"' in page
    response = alice.post(publish_url(project), {"commit": SHA_A})

    # Then a publishing of A is queued
    rollback = Publishing.objects.get(status="queued")
    assert rollback.requested_commit == SHA_A
    assert response["Location"] == f"/publishings/{rollback.pk}/"


# --- what the pages show ------------------------------------------------------------------


def test_the_projects_page_shows_each_projects_last_publishing(user) -> None:
    # Given a project published twice (A, then B, live), and one never published
    site = ProjectFactory.create(owner=user, name="Docs site")
    published(site, SHA_A, minutes_ago=60)
    last = published(site, SHA_B, minutes_ago=3)
    ProjectFactory.create(owner=user, name="New blog")

    page = logged_in(user).get("/projects/").content.decode()

    # Then B's status, short commit and subject, time (exact on hover) and page are shown
    assert 'class="pp-badge pp-published">published<' in page
    assert f">{SHA_B[:7]}<" in page
    assert "Subject of bbbb" in page
    assert "3 min ago" in page
    assert f'title="{last.created_at:%Y-%m-%d %H:%M:%S} UTC"' in page
    assert f'href="/publishings/{last.pk}/"' in page
    assert f'action="/projects/{site.pk}/publish"' in page
    assert "Not published yet" in page


def test_the_projects_page_costs_the_same_queries_for_many_projects(user) -> None:
    def queries() -> int:
        client = logged_in(user)
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/projects/").status_code == 200
        return len(captured)

    project = ProjectFactory.create(owner=user)
    published(project, SHA_A, minutes_ago=5)
    few = queries()
    for n in range(6):
        more = ProjectFactory.create(owner=user)
        published(more, SHA_B, minutes_ago=n + 1)
        PublishingFactory.create(project=more, queued=True)
    assert queries() == few


def test_a_user_without_a_project_is_told_to_create_one_first(user) -> None:
    page = logged_in(user).get("/projects/").content.decode()
    assert "No project yet" in page
    assert "Create a project first" in page
    assert 'href="/api/v1/projects/"' in page
    assert 'href="/api/docs/"' in page


def test_the_project_page_shows_its_facts_with_credentials_hidden(user) -> None:
    project = ProjectFactory.create(
        owner=user,
        repository_url="https://deploy:s3cret-token@git.example.com/acme/site.git",
        target_url="https://uploader:hunter22@store.example.com/upload",
        ref="release",
    )
    page = logged_in(user).get(f"/projects/{project.pk}/").content.decode()
    assert "s3cret-token" not in page
    assert "hunter22" not in page
    assert "https://***@git.example.com/acme/site.git" in page
    assert "https://***@store.example.com/upload" in page
    assert ">release<" in page
    assert f">{user.username}<" in page
    assert "Not published yet" in page


def test_the_history_marks_the_live_row_and_offers_earlier_published_commits_again(project) -> None:
    # Given A published, B failed, C published (live), and a re-run of C failed
    first = published(project, SHA_A, minutes_ago=40)
    PublishingFactory.create(project=project, failed=True, commit_sha=SHA_B, created_at=timezone.now())
    live = published(project, SHA_C, minutes_ago=20)
    again = published(project, SHA_C, minutes_ago=30)

    page = logged_in(project.owner).get(f"/projects/{project.pk}/").content.decode()

    # Then C's row is live, and only A (published, another commit) offers to be published again
    assert page.count('class="pp-is-live"') == 1
    assert f'data-publishing="{live.pk}" data-commit="{SHA_C}" class="pp-is-live"' in page
    assert page.count("Publish this commit again") == 1
    assert f'name="commit" value="{SHA_A}"' in page
    assert f'name="commit" value="{SHA_C}"' not in page
    assert page.count("Same commit as live") == 1
    # And every row links its publishing's page, with its duration and author
    for publishing in (first, live, again):
        assert f'href="/publishings/{publishing.pk}/"' in page
    assert "42 s" in page
    assert "Ada Lovelace" in page
    assert "ada@example.com" in page


def test_the_history_is_paginated_newest_first_and_a_bad_page_is_no_error(project) -> None:
    for n in range(25):
        published(project, f"{n:040x}", minutes_ago=n + 1)
    alice = logged_in(project.owner)

    first = alice.get(f"/projects/{project.pk}/")
    second = alice.get(f"/projects/{project.pk}/?page=2").content.decode()
    assert first.content.decode().count("data-publishing=") == 20
    assert f'data-commit="{0:040x}"' in first.content.decode()
    assert second.count("data-publishing=") == 5
    assert f'data-commit="{24:040x}"' in second
    assert "Page 2 of 2" in second
    for bad in ("abc", "-1", "999"):
        assert alice.get(f"/projects/{project.pk}/?page={bad}").status_code == 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "just now"),
        (42, "42 s ago"),
        (180, "3 min ago"),
        (7300, "2 h ago"),
        (86400, "1 day ago"),
        (3 * 86400, "3 days ago"),
    ],
)
def test_time_ago_reads_as_people_say_it(seconds: int, text: str) -> None:
    assert time_ago(seconds) == text
