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
