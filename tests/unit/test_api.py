from __future__ import annotations

import uuid

import pytest
import redis
from rest_framework.authtoken.models import Token

from publishing.models import Project, Publishing
from tests.factories import ProjectFactory, PublishingFactory, UserFactory

pytestmark = pytest.mark.django_db

INITIATE = "/api/v1/publishing/initiate"


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert body["detail"]


# --- initiate ---------------------------------------------------------------------


def test_initiate_answers_202_with_the_queued_publishing_and_its_location(api, project, stub_broker) -> None:
    # When
    response = api.post(INITIATE, {"project_id": str(project.pk)}, format="json")

    # Then
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["project_id"] == str(project.pk)
    assert response["Location"] == body["url"]
    # A plain str: wsgiref (runserver) refuses DRF's Hyperlink subclass with a 500.
    assert type(response.headers["Location"]) is str
    assert response["Location"].endswith(f"/api/v1/publishing/{body['id']}")
    assert len(stub_broker.queues["publishing-builds"].queue) == 1


def test_initiate_with_an_idempotency_key_twice_returns_the_same_publishing(
    api, project, stub_broker
) -> None:
    first = api.post(INITIATE, {"project_id": str(project.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    again = api.post(INITIATE, {"project_id": str(project.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Publishing.objects.count() == 1


def test_initiate_while_active_answers_409_with_the_active_id(api, project, stub_broker) -> None:
    first = api.post(INITIATE, {"project_id": str(project.pk)}, format="json")
    second = api.post(INITIATE, {"project_id": str(project.pk)}, format="json")
    assert_error(second, 409, "CONFLICT")
    assert second.json()["active_id"] == first.json()["id"]


@pytest.mark.parametrize(
    "payload",
    [{}, {"project_id": "not-a-uuid"}, {"project_id": None}, {"project_id": 42}, ["a", "list"]],
)
def test_initiate_with_bad_input_answers_400_validation_error(api, payload, stub_broker) -> None:
    assert_error(api.post(INITIATE, payload, format="json"), 400, "VALIDATION_ERROR")


def test_an_oversized_body_answers_400_in_the_envelope(api, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api.post(INITIATE, {"project_id": "x" * 5000}, format="json")
    assert_error(response, 400, "VALIDATION_ERROR")


def test_initiate_with_malformed_json_answers_400(api) -> None:
    response = api.generic("POST", INITIATE, "{not json", content_type="application/json")
    assert_error(response, 400, "VALIDATION_ERROR")


def test_initiate_with_an_overlong_idempotency_key_answers_400(api, project) -> None:
    response = api.post(
        INITIATE, {"project_id": str(project.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256
    )
    assert_error(response, 400, "VALIDATION_ERROR")


def test_initiate_for_another_users_or_an_unknown_project_answers_404(api, other_user) -> None:
    theirs = ProjectFactory.create(owner=other_user)
    assert_error(api.post(INITIATE, {"project_id": str(theirs.pk)}, format="json"), 404, "NOT_FOUND")
    assert_error(api.post(INITIATE, {"project_id": str(uuid.uuid4())}, format="json"), 404, "NOT_FOUND")


def test_initiate_anonymous_answers_401(client_for, project) -> None:
    response = client_for(None).post(INITIATE, {"project_id": str(project.pk)}, format="json")
    assert_error(response, 401, "NOT_AUTHENTICATED")
    assert "Token" in response["WWW-Authenticate"]


def test_initiate_with_a_bad_token_answers_401(client_for, project) -> None:
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert_error(
        client.post(INITIATE, {"project_id": str(project.pk)}, format="json"), 401, "NOT_AUTHENTICATED"
    )


def test_initiate_with_the_broker_down_answers_503_and_keeps_nothing(
    api, project, stub_broker, monkeypatch
) -> None:
    def refuse(message, *, delay=None):
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(stub_broker, "enqueue", refuse)
    response = api.post(INITIATE, {"project_id": str(project.pk)}, format="json")
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert response.json()["detail"] == "Background job service unavailable"
    assert not Publishing.objects.exists()


def test_wrong_method_answers_405_in_the_envelope(api) -> None:
    assert_error(api.get(INITIATE), 405, "METHOD_NOT_ALLOWED")


# --- publishing list and detail ---------------------------------------------------


def test_list_shows_only_the_callers_publishings_paginated_and_filterable(api, user, other_user) -> None:
    mine = ProjectFactory.create(owner=user)
    PublishingFactory.create(project=mine, published=True)
    failed = PublishingFactory.create(project=mine, failed=True)
    PublishingFactory.create(project=ProjectFactory.create(owner=other_user), failed=True)

    body = api.get("/api/v1/publishing/").json()
    assert body["count"] == 2
    assert "log" not in body["results"][0]

    filtered = api.get("/api/v1/publishing/", {"status": "failed"}).json()
    assert [p["id"] for p in filtered["results"]] == [str(failed.pk)]
    by_project = api.get("/api/v1/publishing/", {"project": str(mine.pk)}).json()
    assert by_project["count"] == 2


def test_list_with_a_bad_filter_answers_400(api) -> None:
    assert_error(api.get("/api/v1/publishing/", {"status": "exploded"}), 400, "VALIDATION_ERROR")
    assert_error(api.get("/api/v1/publishing/", {"project": "nope"}), 400, "VALIDATION_ERROR")


def test_staff_see_every_publishing(client_for, staff, user, other_user) -> None:
    PublishingFactory.create(project=ProjectFactory.create(owner=user))
    PublishingFactory.create(project=ProjectFactory.create(owner=other_user))
    assert client_for(staff).get("/api/v1/publishing/").json()["count"] == 2


def test_detail_shows_the_log_and_links_the_project(api, user) -> None:
    publishing = PublishingFactory.create(
        project=ProjectFactory.create(owner=user), published=True, log="hello"
    )
    body = api.get(f"/api/v1/publishing/{publishing.pk}").json()
    assert body["id"] == str(publishing.pk)
    assert body["log"] == "hello"
    assert body["project"].endswith(f"/api/v1/projects/{publishing.project_id}/")


def test_detail_of_another_users_publishing_answers_404(api, other_user) -> None:
    theirs = PublishingFactory.create(project=ProjectFactory.create(owner=other_user))
    assert_error(api.get(f"/api/v1/publishing/{theirs.pk}"), 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/publishing/not-a-uuid"), 404, "NOT_FOUND")


# --- projects -------------------------------------------------------------------------


def test_create_project_and_slug_defaults_to_the_name(api, user) -> None:
    response = api.post(
        "/api/v1/projects/",
        {
            "name": "My Site",
            "repository_url": "https://git.example.com/me/site.git",
            "target_url": "https://store.example.com/upload",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "my-site"
    assert body["owner"] == "alice"
    assert Project.objects.get(pk=body["id"]).owner == user


def test_create_project_with_a_duplicate_slug_answers_400(api, user) -> None:
    ProjectFactory.create(owner=user, slug="site")
    response = api.post(
        "/api/v1/projects/",
        {
            "name": "Site",
            "slug": "site",
            "repository_url": "https://git.example.com/a.git",
            "target_url": "https://store.example.com/u",
        },
        format="json",
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "slug" in response.json()["errors"]


def test_non_staff_may_not_set_a_build_command(api, settings) -> None:
    settings.PUBLISHING_ALLOW_USER_BUILD_COMMANDS = False
    response = api.post(
        "/api/v1/projects/",
        {
            "name": "S",
            "repository_url": "https://git.example.com/a.git",
            "target_url": "https://store.example.com/u",
            "build_command": "rm -rf /",
        },
        format="json",
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "build_command" in response.json()["errors"]


def test_project_validation_errors_name_the_fields(api) -> None:
    response = api.post("/api/v1/projects/", {"name": ""}, format="json")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert {"name", "repository_url", "target_url"} <= set(response.json()["errors"])


def test_patch_and_delete_own_project(api, user) -> None:
    project = ProjectFactory.create(owner=user)
    response = api.patch(f"/api/v1/projects/{project.pk}/", {"ref": "release"}, format="json")
    assert response.status_code == 200
    assert response.json()["ref"] == "release"
    assert api.delete(f"/api/v1/projects/{project.pk}/").status_code == 204


def test_delete_project_with_an_active_publishing_answers_409(api, user) -> None:
    project = ProjectFactory.create(owner=user)
    PublishingFactory.create(project=project, queued=True)
    assert_error(api.delete(f"/api/v1/projects/{project.pk}/"), 409, "CONFLICT")


def test_another_users_project_is_404_for_every_method(api, other_user) -> None:
    theirs = ProjectFactory.create(owner=other_user)
    url = f"/api/v1/projects/{theirs.pk}/"
    assert_error(api.get(url), 404, "NOT_FOUND")
    assert_error(api.patch(url, {"ref": "x"}, format="json"), 404, "NOT_FOUND")
    assert_error(api.delete(url), 404, "NOT_FOUND")
    assert api.get("/api/v1/projects/").json()["count"] == 0


def test_put_is_not_offered(api, project) -> None:
    assert_error(api.put(f"/api/v1/projects/{project.pk}/", {}, format="json"), 405, "METHOD_NOT_ALLOWED")


# --- auth, health, root, schema -----------------------------------------------------------


def test_token_login_and_use(client_for) -> None:
    UserFactory.create(username="carol", password="s3cret-pass")
    client = client_for(None)
    response = client.post(
        "/api/v1/auth/token/", {"username": "carol", "password": "s3cret-pass"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert Token.objects.get(key=token).user.username == "carol"
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/publishing/").status_code == 200


def test_token_with_a_wrong_password_answers_400(client_for) -> None:
    UserFactory.create(username="carol", password="s3cret-pass")
    response = client_for(None).post(
        "/api/v1/auth/token/", {"username": "carol", "password": "x"}, format="json"
    )
    assert_error(response, 400, "VALIDATION_ERROR")


def test_health_is_ok_with_database_and_broker_up(client_for) -> None:
    response = client_for(None).get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_answers_503_naming_the_broker_when_it_is_down(client_for, monkeypatch) -> None:
    from publishing import broker

    def down() -> None:
        raise redis.exceptions.ConnectionError("refused")

    monkeypatch.setattr(broker, "_ping", down)
    response = client_for(None).get("/api/v1/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "broker": "unavailable"}


def test_api_root_is_browsable(client_for, user) -> None:
    client = client_for(None)
    client.force_login(user)
    response = client.get("/api/v1/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"/api/v1/publishing/initiate" in response.content


def test_initiate_form_works_from_the_browsable_api_with_a_session(
    client_for, user, project, stub_broker
) -> None:
    client = client_for(None)
    client.force_login(user)
    response = client.post(INITIATE, {"project_id": str(project.pk)}, HTTP_ACCEPT="text/html")
    assert response.status_code == 202
    assert Publishing.objects.get().status == "queued"


def test_openapi_schema_and_docs_are_served(client_for) -> None:
    client = client_for(None)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/publishing/initiate" in paths
    assert "503" in paths["/api/v1/publishing/initiate"]["post"]["responses"]
    assert "409" in paths["/api/v1/publishing/{id}/cancel"]["post"]["responses"]
    assert "202" in paths["/api/v1/publishing/{id}/retry"]["post"]["responses"]
    assert client.get("/api/docs/").status_code == 200


def test_unknown_api_url_answers_404_in_the_envelope(api) -> None:
    assert_error(api.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
