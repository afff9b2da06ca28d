"""The user pages: who may open which page (the boundary), and what each shows."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import PublishingFactory

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", ["/projects/", "/projects/{project}/", "/publishings/{publishing}/"])
def test_every_page_sends_a_stranger_to_the_login_page_and_back(project, path: str) -> None:
    publishing = PublishingFactory.create(project=project)
    url = path.format(project=project.pk, publishing=publishing.pk)
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/api-auth/login/?next={url}"


def test_a_user_cannot_open_the_pages_of_another_users_project_or_publishing(project, other_user) -> None:
    # Given alice's project and publishing
    publishing = PublishingFactory.create(project=project, requested_by=project.owner)
    bob = logged_in(other_user)

    # When bob asks for their pages, he is told they do not exist, and where to go instead
    assert bob.get(f"/projects/{project.pk}/").status_code == 404
    missing = bob.get(f"/publishings/{publishing.pk}/")
    assert missing.status_code == 404
    assert 'href="/projects/">Back to your projects' in missing.content.decode()
    assert project.name not in missing.content.decode()
    # And his projects page does not list hers
    assert project.name not in bob.get("/projects/").content.decode()


def test_the_owner_opens_their_pages(project) -> None:
    publishing = PublishingFactory.create(project=project, requested_by=project.owner)
    alice = logged_in(project.owner)
    assert project.name in alice.get("/projects/").content.decode()
    assert alice.get(f"/projects/{project.pk}/").status_code == 200
    assert alice.get(f"/publishings/{publishing.pk}/").status_code == 200


def test_a_browser_asking_for_the_favicon_gets_publishers() -> None:
    response = Client().get("/favicon.ico")
    assert (response.status_code, response["Location"]) == (301, "/static/publishing/favicon.svg")
