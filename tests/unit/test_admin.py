from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import ProjectFactory, PublishingFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_() -> Client:
    client = Client()
    client.force_login(UserFactory.create(username="admin", is_staff=True, is_superuser=True))
    return client


def test_staff_see_the_project_and_publishing_pages(admin_client_: Client) -> None:
    # Given some records
    publishing = PublishingFactory.create(failed=True, error_code="BUILD_FAILED")

    # When staff open the admin pages
    # Then they render, with the columns and filters that matter
    changelist = admin_client_.get("/admin/publishing/publishing/", {"status__exact": "failed"})
    assert changelist.status_code == 200
    assert b"BUILD_FAILED" in changelist.content
    assert b"/admin/publishing/publishing/overview/" in changelist.content
    assert admin_client_.get(f"/admin/publishing/publishing/{publishing.pk}/change/").status_code == 200
    assert admin_client_.get("/admin/publishing/publishing/", {"q": str(publishing.pk)}).status_code == 200
    assert admin_client_.get("/admin/publishing/project/").status_code == 200
    assert admin_client_.get(f"/admin/publishing/project/{publishing.project_id}/change/").status_code == 200


def test_the_admin_cannot_change_a_publishings_status(admin_client_: Client) -> None:
    publishing = PublishingFactory.create(failed=True)
    response = admin_client_.post(
        f"/admin/publishing/publishing/{publishing.pk}/change/", {"status": "published"}
    )
    publishing.refresh_from_db()
    assert publishing.status == "failed"
    assert response.status_code in {200, 302, 403}
    assert admin_client_.get("/admin/publishing/publishing/add/").status_code == 403


def test_the_project_form_applies_the_service_rules(admin_client_: Client, settings) -> None:
    settings.PUBLISHING_ALLOW_LOCAL_SOURCES = False
    owner = UserFactory.create()
    response = admin_client_.post(
        "/admin/publishing/project/add/",
        {
            "owner": owner.pk,
            "name": "Local",
            "slug": "local",
            "repository_url": "/srv/repo",
            "ref": "main",
            "artifact_path": ".",
            "target_url": "https://store.example.com/u",
        },
    )
    assert response.status_code == 200
    assert b"not allowed" in response.content or b"SOURCE_NOT_ALLOWED" in response.content
    assert not owner.projects.exists()


def test_non_staff_are_sent_to_the_login_page() -> None:
    client = Client()
    client.force_login(UserFactory.create())
    ProjectFactory.create()
    response = client.get("/admin/publishing/publishing/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_queue_overview_shows_counts_and_latest_failures(admin_client_: Client, stub_broker) -> None:
    failed = PublishingFactory.create(failed=True, error_code="TARGET_REJECTED", error_message="HTTP 400")
    PublishingFactory.create(published=True)

    page = admin_client_.get("/admin/publishing/publishing/overview/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Queue overview" in html
    assert "TARGET_REJECTED" in html
    assert f"/admin/publishing/publishing/{failed.pk}/change/" in html
    assert "?status__exact=published" in html


def test_the_queue_overview_is_drawn_when_redis_is_down_and_says_so(
    admin_client_: Client, settings, monkeypatch
) -> None:
    # Given a Redis broker that does not answer (a closed port, nothing listening)
    from publishing import broker

    settings.BROKER_URL = settings.REDIS_URL = "redis://127.0.0.1:1/0"
    dead = broker.redis_client(settings.REDIS_URL, socket_timeout=0.2)
    monkeypatch.setattr(broker, "web_redis", lambda: dead)
    monkeypatch.setattr(broker, "_redis_broker", lambda: type("B", (), {"client": dead, "namespace": "x"})())

    page = admin_client_.get("/admin/publishing/publishing/overview/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "(broker unavailable)" in html
    assert 'class="down">unavailable' in html


def test_only_staff_see_the_queue_overview(client: Client) -> None:
    client.force_login(UserFactory.create(username="user"))
    response = client.get("/admin/publishing/publishing/overview/")
    assert response.status_code == 302  # to the admin login
