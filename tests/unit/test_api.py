from __future__ import annotations

import json
import re
import uuid

import pytest
import redis
from django.contrib.staticfiles import finders
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.serializers import ListSerializer

from publishing.api.serializers import PublishingSerializer
from publishing.models import Attempt, Project, Publishing
from tests.contract import assert_conforms, parameter_schema, query_value_valid
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.support.stub_broker import broker_refuses

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


def test_initiate_answers_what_the_database_holds_without_reading_it_back(api, project, stub_broker) -> None:
    # When a publishing is initiated
    with CaptureQueriesContext(connection) as queries:
        response = api.post(INITIATE, {"project_id": str(project.pk)}, format="json")

    # Then its answer is what a read of it answers, though nothing was read back: no attempts
    # (it has none yet) and no reload of the row it wrote
    assert response.status_code == 202
    statements = [query["sql"] for query in queries.captured_queries]
    assert not [sql for sql in statements if "publishing_attempt" in sql]
    assert not [
        sql for sql in statements if sql.startswith("SELECT") and 'FROM "publishing_publishing"' in sql
    ]
    assert response.json() == api.get(response["Location"]).json()


def test_initiate_writes_its_queued_row_and_log_line_in_one_transaction_without_savepoints(
    api, project, stub_broker
) -> None:
    # When a publishing is initiated
    with CaptureQueriesContext(connection) as queries:
        response = api.post(INITIATE, {"project_id": str(project.pk)}, format="json")

    # Then the row, inserted as queued, and its first log line are its two writes, and its
    # transaction is the only (sub)transaction: the test's own wraps it, so that one is a savepoint
    assert response.status_code == 202
    statements = [query["sql"] for query in queries.captured_queries]
    writes = [
        sql.split(" (")[0].split(" SET")[0] for sql in statements if sql.startswith(("INSERT", "UPDATE"))
    ]
    assert writes == ['INSERT INTO "publishing_publishing"', 'INSERT INTO "publishing_logline"']
    assert len([sql for sql in statements if sql.startswith("SAVEPOINT")]) == 1


def test_serializers_built_once_give_each_instance_fields_of_its_own() -> None:
    one, other = PublishingSerializer(), PublishingSerializer()

    assert list(one.fields) == list(other.fields)
    assert one.fields["status"] is not other.fields["status"]
    assert one.fields["status"].parent is one
    attempts = one.fields["attempt_history"], other.fields["attempt_history"]
    assert isinstance(attempts[0], ListSerializer)
    assert isinstance(attempts[1], ListSerializer)
    assert attempts[0].child is not attempts[1].child


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
    broker_refuses(monkeypatch, stub_broker)
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


def test_the_view_permission_sees_every_publishing_and_staff_alone_sees_its_own(
    client_for, staff, viewer, user, other_user
) -> None:
    PublishingFactory.create(project=ProjectFactory.create(owner=user))
    PublishingFactory.create(project=ProjectFactory.create(owner=other_user))
    assert client_for(viewer).get("/api/v1/publishing/").json()["count"] == 2
    assert client_for(staff).get("/api/v1/publishing/").json()["count"] == 0


def test_detail_links_the_log_and_the_project(api, user) -> None:
    publishing = PublishingFactory.create(
        project=ProjectFactory.create(owner=user), published=True, log="hello"
    )
    body = api.get(f"/api/v1/publishing/{publishing.pk}").json()
    assert body["id"] == str(publishing.pk)
    assert body["log_url"].endswith(f"/api/v1/publishing/{publishing.pk}/log")
    assert api.get(body["log_url"]).content.decode().endswith(" event    hello\n")
    assert body["project"].endswith(f"/api/v1/projects/{publishing.project_id}/")


def test_a_publishing_whose_project_was_deleted_has_a_null_project_as_the_schema_says(api, user) -> None:
    # Given a finished publishing whose project was then deleted (publishings outlive their project)
    project = ProjectFactory.create(owner=user)
    publishing = PublishingFactory.create(project=project, published=True)
    project.delete()

    # When it is listed and shown
    listed = api.get("/api/v1/publishing/")
    shown = api.get(f"/api/v1/publishing/{publishing.pk}")

    # Then both say it has no project, and the schema allows exactly that
    assert listed.json()["results"][0]["project"] is None
    assert shown.json()["project"] is None
    assert_conforms(listed, "GET", "/api/v1/publishing/")
    assert_conforms(shown, "GET", "/api/v1/publishing/{id}")


@pytest.mark.parametrize("path", ["/api/v1/publishing/", "/api/v1/projects/"])
def test_the_schema_allows_exactly_the_page_values_the_lists_take(api, user, path) -> None:
    # Given two pages of each list
    for _ in range(21):
        PublishingFactory.create(project=ProjectFactory.create(owner=user))
    page = parameter_schema("GET", path, "page")

    for value, status in [
        ("", 200),  # the first page, as with no `page` at all
        ("1", 200),
        ("2", 200),
        ("last", 200),
        ("0", 404),
        ("-1", 404),
        ("1.0", 404),
        (" 1", 404),
        ("abc", 404),
    ]:
        # When a page is asked for
        response = api.get(path, {"page": value})

        # Then the server takes it exactly when the schema does; any other is 404 Invalid page
        assert response.status_code == status, (value, response.content)
        assert query_value_valid(value, page) == (status == 200), (value, page)
        if status == 404:
            assert response.json() == {"code": "NOT_FOUND", "detail": "Invalid page."}
    assert api.get(path, {"page": ""}).json()["results"] == api.get(path).json()["results"]


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


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"", 200, id="no-body"),
        # What requests and urllib3 send for an empty form: the closing delimiter alone
        pytest.param(b"--b--\r\n", 200, id="empty-form"),
        pytest.param(
            b'--b\r\nContent-Disposition: form-data; name="ref"\r\n\r\nrelease\r\n--b--\r\n',
            200,
            id="a-field",
        ),
        # A JSON `false` wrapped in a boundary, as schemathesis sent it: no part, no field
        pytest.param(b"--b\r\nFalse--b--\r\n", 400, id="not-a-form"),
        pytest.param(b"--b\r\n\r\nrelease\r\n--b--\r\n", 400, id="a-part-without-a-name"),
        pytest.param(b"garbage", 400, id="no-delimiter"),
    ],
)
def test_a_multipart_patch_changes_nothing_when_empty_and_is_refused_when_it_is_no_form(
    api, user, body, status
) -> None:
    # Given a project
    project = ProjectFactory.create(owner=user, ref="main")
    url = f"/api/v1/projects/{project.pk}/"

    # When it is patched with a multipart body
    response = api.generic("PATCH", url, body, content_type="multipart/form-data; boundary=b")

    # Then an empty one changes nothing, one that is no form at all is a 400, and the schema says so
    assert response.status_code == status, response.content
    if status == 400:
        assert_error(response, 400, "VALIDATION_ERROR")
    assert_conforms(response, "PATCH", "/api/v1/projects/{id}/")
    project.refresh_from_db()
    assert project.ref == ("release" if b"release" in body and status == 200 else "main")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/projects/"),
        ("PATCH", "/api/v1/projects/{id}/"),
        ("POST", "/api/v1/publishing/initiate"),
        ("POST", "/api/v1/auth/token/"),
    ],
)
def test_a_body_of_a_media_type_the_api_does_not_read_is_a_documented_415(api, user, method, path) -> None:
    # Given an operation that reads a body, and a body in a media type it does not parse
    project = ProjectFactory.create(owner=user)

    # When it is sent
    response = api.generic(method, path.format(id=project.pk), b"ref=release", content_type="text/plain")

    # Then the answer is 415 UNSUPPORTED_MEDIA_TYPE in the envelope, as the schema documents
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_conforms(response, method, path)


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


# --- links, attempts and the browsable API's forms ---------------------------------------------


def test_detail_links_its_actions_and_lists_every_attempt(api, user, stub_broker) -> None:
    # Given a publishing that failed on its second attempt
    publishing = PublishingFactory.create(project=ProjectFactory.create(owner=user), failed=True, attempts=2)
    start = publishing.created_at
    Attempt.objects.create(
        publishing=publishing,
        number=1,
        worker="w:1",
        outcome="retrying",
        finished_at=start,
        error_code="TARGET_UNAVAILABLE",
        error_message="store busy",
        log_excerpt="attempt 1: submit: 503",
    )
    Attempt.objects.create(
        publishing=publishing,
        number=2,
        worker="w:2",
        outcome="failed",
        finished_at=start,
        error_code="TARGET_REJECTED",
    )

    # When its detail is read
    body = api.get(f"/api/v1/publishing/{publishing.pk}").json()

    # Then every attempt is there, oldest first, with its worker, outcome, error and log excerpt
    assert [(a["number"], a["worker"], a["outcome"], a["error_code"]) for a in body["attempt_history"]] == [
        (1, "w:1", "retrying", "TARGET_UNAVAILABLE"),
        (2, "w:2", "failed", "TARGET_REJECTED"),
    ]
    assert body["attempt_history"][0]["log_excerpt"] == "attempt 1: submit: 503"
    assert body["attempt_history"][0]["error_message"] == "store busy"
    # And its links lead where they say: retry queues it again
    assert body["cancel"].endswith(f"/api/v1/publishing/{publishing.pk}/cancel")
    retried = api.post(body["retry"])
    assert retried.status_code == 202, retried.content
    assert retried.json()["status"] == "queued"


def test_the_list_links_each_publishing_but_leaves_log_and_attempts_out(api, user) -> None:
    PublishingFactory.create(project=ProjectFactory.create(owner=user), log="long log")
    (item,) = api.get("/api/v1/publishing/").json()["results"]
    assert "log" not in item
    assert "attempt_history" not in item
    assert item["url"].endswith(f"/api/v1/publishing/{item['id']}")
    assert item["retry"] == item["url"] + "/retry"


def test_the_initiate_form_offers_the_callers_projects_only(client_for, user, other_user) -> None:
    mine = ProjectFactory.create(owner=user, name="Marketing site", slug="marketing")
    theirs = ProjectFactory.create(owner=other_user, name="Secret plans", slug="secret")
    client = client_for(None)
    client.force_login(user)

    page = client.get(INITIATE, HTTP_ACCEPT="text/html").content.decode()

    assert f'<option value="{mine.pk}"' in page
    assert "Marketing site (marketing)" in page
    assert str(theirs.pk) not in page
    assert "Secret plans" not in page


# --- webhooks of a project ----------------------------------------------------------------------

HOOK = {"webhook_url": "https://hooks.example.com/publisher", "webhook_secret": "a-long-enough-secret"}


def new_project(**fields):
    return {
        "name": "Hooked",
        "repository_url": "https://git.example.com/me/site.git",
        "target_url": "https://store.example.com/upload",
        **fields,
    }


def test_a_project_keeps_its_webhook_secret_and_never_shows_it(api) -> None:
    response = api.post("/api/v1/projects/", new_project(**HOOK), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["webhook_url"] == HOOK["webhook_url"]
    assert body["webhook_secret_set"] is True
    assert "webhook_secret" not in body
    assert HOOK["webhook_secret"] not in response.content.decode()
    assert HOOK["webhook_secret"] not in api.get(body["url"]).content.decode()
    assert Project.objects.get(pk=body["id"]).webhook_secret == HOOK["webhook_secret"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"webhook_url": "https://hooks.example.com/x"}, "webhook_secret"),
        ({**HOOK, "webhook_secret": "short"}, "webhook_secret"),
        ({**HOOK, "webhook_url": "ftp://hooks.example.com/x"}, "webhook_url"),
        ({**HOOK, "webhook_url": "not a url"}, "webhook_url"),
    ],
)
def test_a_bad_webhook_is_refused_with_the_field_named(api, fields, field) -> None:
    response = api.post("/api/v1/projects/", new_project(**fields), format="json")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert field in response.json()["errors"]
    assert not Project.objects.exists()


def test_a_webhook_on_the_private_network_is_refused_unless_allowed(api, settings) -> None:
    settings.PUBLISHING_ALLOW_PRIVATE_TARGETS = False
    response = api.post(
        "/api/v1/projects/",
        new_project(**{**HOOK, "webhook_url": "http://127.0.0.1:9000/hook"}),
        format="json",
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "webhook_url" in response.json()["errors"]


def test_patching_other_fields_keeps_the_secret_and_clearing_both_stops_the_webhook(api, user) -> None:
    project = ProjectFactory.create(owner=user, **HOOK)
    url = f"/api/v1/projects/{project.pk}/"

    assert api.patch(url, {"ref": "release"}, format="json").status_code == 200
    project.refresh_from_db()
    assert project.webhook_secret == HOOK["webhook_secret"]

    # Clearing only the secret would leave deliveries unsigned: refused
    assert_error(api.patch(url, {"webhook_secret": ""}, format="json"), 400, "VALIDATION_ERROR")

    response = api.patch(url, {"webhook_url": "", "webhook_secret": ""}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["webhook_secret_set"] is False
    project.refresh_from_db()
    assert (project.webhook_url, project.webhook_secret) == ("", "")


# --- the OpenAPI schema ---------------------------------------------------------------------


def test_every_operation_is_described_with_examples_that_match_its_schema(client_for) -> None:
    schema = client_for(None).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]

    def properties(ref: dict[str, str]) -> set[str]:
        return set(components[ref["$ref"].rsplit("/", 1)[1]]["properties"])

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary") or operation.get("description"), where
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if content is None or "$ref" not in content["schema"]:
                    continue
                # Each example shows only fields its schema has (paginated lists: each item)
                fields = properties(content["schema"])
                paged = "results" in fields
                if paged:
                    page = components[content["schema"]["$ref"].rsplit("/", 1)[1]]
                    fields = properties(page["properties"]["results"]["items"])
                for name, example in content.get("examples", {}).items():
                    items = example["value"]["results"] if paged else [example["value"]]
                    for item in items:
                        assert set(item) <= fields, (where, status, name, set(item) - fields)
            if method in ("post", "patch") and "requestBody" in operation:
                assert "examples" in operation["requestBody"]["content"]["application/json"], where
    initiate = schema["paths"]["/api/v1/publishing/initiate"]["post"]
    assert set(initiate["responses"]["202"]["content"]["application/json"]["examples"]) == {"Queued"}
    detail = schema["paths"]["/api/v1/publishing/{id}"]["get"]["responses"]["200"]
    assert "attempt_history" in properties(detail["content"]["application/json"]["schema"])


DEEP = "[" * 5000 + "]" * 5000  # about 10 KB: deeper than Python's recursion limit


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "authenticated"),
    [("/api/v1/auth/token/", False), ("/api/v1/publishing/initiate", True), ("/api/v1/projects/", True)],
)
def test_deeply_nested_json_is_a_400_on_every_json_endpoint(client, api, path, authenticated) -> None:
    # When a deeply nested body is posted, anonymously to the token endpoint and as a user elsewhere
    caller = api if authenticated else client
    response = caller.post(path, data=DEEP, content_type="application/json")

    # Then it is refused as bad input, not a 500
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "nested" in response.json()["detail"]


@pytest.mark.django_db
def test_json_nested_past_the_limit_is_refused_before_any_view_sees_it(api) -> None:
    body = '{"name": ' + "[" * 65 + "]" * 65 + "}"
    response = api.post("/api/v1/projects/", data=body, content_type="application/json")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "nested more than 64 levels" in response.json()["detail"]


@pytest.mark.django_db
def test_a_json_body_over_the_upload_limit_is_a_400(api, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = '{"name": "' + "x" * 2000 + '"}'
    response = api.post("/api/v1/projects/", data=body, content_type="application/json")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/projects/", "/metrics"])
def test_a_host_not_allowed_gets_the_json_envelope_under_the_api(client, path) -> None:
    response = client.get(path, HTTP_HOST="attacker.example")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "Host header" in response.json()["detail"]


@pytest.mark.django_db
def test_a_host_not_allowed_elsewhere_gets_djangos_page(client) -> None:
    response = client.get("/admin/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


def test_a_csrf_refusal_gets_the_json_envelope_under_the_api_and_djangos_page_elsewhere(rf, settings) -> None:
    from django.utils.module_loading import import_string

    view = import_string(settings.CSRF_FAILURE_VIEW)
    api = view(rf.post("/api/v1/publishing/initiate"), reason="CSRF cookie not set.")
    assert api.status_code == 403
    assert json.loads(api.content) == {
        "code": "PERMISSION_DENIED",
        "detail": "CSRF verification failed: CSRF cookie not set.",
    }
    page = view(rf.post("/admin/login/"), reason="CSRF cookie not set.")
    assert page.status_code == 403
    assert page["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_api_docs_load_their_scripts_from_this_service_never_a_cdn(client_for, page: str) -> None:
    # Given the docs page as a browser gets it
    html = client_for(None).get(page).content.decode()

    # Then every script and stylesheet it loads is a static file of this service, and is there
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html), html
