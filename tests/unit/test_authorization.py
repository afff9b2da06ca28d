"""Who may do what: every endpoint for every kind of caller, CSRF for sessions, the initiate throttle.

The matrix authenticates the way clients do (an API token, and a session for the non-API pages),
not with `force_authenticate`, so that the authentication classes are under test too.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from publisher_project.settings import base
from publishing.api import throttling
from publishing.breaker import CircuitBreaker
from publishing.models import Project, Publishing
from tests.factories import ProjectFactory, PublishingFactory
from tests.support.api import ERROR_CODES, BrokenCache, assert_error

pytestmark = pytest.mark.django_db

ACTORS = ("anonymous", "owner", "other", "staff", "viewer", "operator")

LOGIN = {"username": "alice", "password": "pw"}
NEW_PROJECT = {
    "name": "New site",
    "repository_url": "https://git.example.com/acme/new.git",
    "target_url": "https://store.example.com/upload",
}
CHANGE = {"ref": "release"}
PUBLISH = {"project_id": "{project}"}

# `{project}`: alice's project, with `{failed}`, a failed publishing; `{queued}`: a queued publishing
# of another project of hers. The owner is alice, "other" is bob. The rest are staff (they may open
# the admin), which alone grants nothing in the API: "staff" has no permission, "viewer" may view
# projects and publishings, "operator" holds every permission of both models and set_build_command.
# fmt: off
MATRIX: list[tuple[str, dict[str, str] | None, int, int, int, int, int, int]] = [
    # request                                    body          anonymous owner other staff viewer operator
    ("GET /api/v1/",                             None,         200,      200,  200,  200,  200,   200),
    ("POST /api/v1/auth/token/",                 LOGIN,        200,      200,  200,  200,  200,   200),
    ("GET /api/v1/projects/",                    None,         401,      200,  200,  200,  200,   200),
    ("POST /api/v1/projects/",                   NEW_PROJECT,  401,      201,  201,  201,  201,   201),
    ("OPTIONS /api/v1/projects/{project}/",      None,         401,      200,  200,  200,  200,   200),
    ("GET /api/v1/projects/{project}/",          None,         401,      200,  404,  404,  200,   200),
    ("PATCH /api/v1/projects/{project}/",        CHANGE,       401,      200,  404,  404,  403,   200),
    ("PUT /api/v1/projects/{project}/",          NEW_PROJECT,  401,      405,  405,  405,  405,   405),
    ("DELETE /api/v1/projects/{project}/",       None,         401,      204,  404,  404,  403,   204),
    ("GET /api/v1/publishing/",                  None,         401,      200,  200,  200,  200,   200),
    ("GET /api/v1/publishing/{failed}",          None,         401,      200,  404,  404,  200,   200),
    ("DELETE /api/v1/publishing/{failed}",       None,         401,      405,  405,  405,  405,   405),
    ("POST /api/v1/publishing/initiate",         PUBLISH,      401,      202,  404,  404,  403,   202),
    ("POST /api/v1/publishing/{queued}/cancel",  None,         401,      200,  404,  404,  403,   200),
    ("POST /api/v1/publishing/{failed}/retry",   None,         401,      202,  404,  404,  403,   202),
    ("GET /api/v1/health",                       None,         200,      200,  200,  200,  200,   200),
    ("GET /api/v1/nothing-here",                 None,         404,      404,  404,  404,  404,   404),
    ("GET /api/schema/",                         None,         200,      200,  200,  200,  200,   200),
    ("GET /api/docs/",                           None,         200,      200,  200,  200,  200,   200),
    ("GET /api/redoc/",                          None,         200,      200,  200,  200,  200,   200),
    ("GET /api-auth/login/",                     None,         200,      200,  200,  200,  200,   200),
    ("GET /admin/",                              None,         302,      302,  302,  200,  200,   200),
    # With METRICS_TOKEN set only its bearer may scrape: no user's session or token opens it.
    ("GET /metrics",                             None,         401,      401,  401,  401,  401,   401),
]
# fmt: on


CELLS = [
    pytest.param(request, body, actor, status, id=f"{request} as {actor} -> {status}")
    for request, body, *statuses in MATRIX
    for actor, status in zip(ACTORS, statuses, strict=True)
]


@dataclass
class World:
    users: dict[str, User | None]
    project: Project
    failed: Publishing
    queued: Publishing

    @property
    def owner(self) -> User:
        owner = self.users["owner"]
        assert owner is not None
        return owner

    def path(self, template: str) -> str:
        return template.format(project=self.project.pk, failed=self.failed.pk, queued=self.queued.pk)


@pytest.fixture
def world(user, other_user, staff, viewer, operator, project, stub_broker) -> World:
    failed = PublishingFactory.create(project=project, failed=True)
    queued = PublishingFactory.create(project=ProjectFactory.create(owner=user), queued=True)
    return World(
        {
            "anonymous": None,
            "owner": user,
            "other": other_user,
            "staff": staff,
            "viewer": viewer,
            "operator": operator,
        },
        project,
        failed,
        queued,
    )


def signed_in(user: User | None, **client_options: Any) -> APIClient:
    """A client as `user`: an API token for the API, a session for the other pages."""
    client = APIClient(**client_options)
    if user is not None:
        client.force_login(user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


# --- The matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize(("request_line", "body", "actor", "status"), CELLS)
def test_every_endpoint_answers_each_kind_of_caller_as_the_matrix_says(
    world: World, settings: Any, request_line: str, body: dict[str, Any] | None, actor: str, status: int
) -> None:
    # Given a caller of this kind
    settings.METRICS_TOKEN = "scrape-me-only-with-this"
    client = signed_in(world.users[actor])
    method, path = request_line.split(" ", 1)
    data = {key: world.path(value) for key, value in body.items()} if body else None

    # When it makes the request
    call = getattr(client, method.lower())
    response = call(world.path(path), data, format="json") if data is not None else call(world.path(path))

    # Then the answer is the matrix's, and an error is in the envelope
    assert response.status_code == status, response.content[:500]
    if status in ERROR_CODES and not path.startswith("/admin/"):
        assert_error(response, status)


def test_another_users_object_is_indistinguishable_from_a_missing_one(world: World) -> None:
    # Given bob, and alice's project and publishing
    bob = signed_in(world.users["other"])
    missing = uuid.uuid4()

    # Then every way of reaching them answers exactly as for an id that does not exist
    for method, template, pk, status in (
        ("get", "/api/v1/projects/{}/", world.project.pk, 404),
        # The view's description only: no fields, no actions, whether the object exists or not.
        ("options", "/api/v1/projects/{}/", world.project.pk, 200),
        ("patch", "/api/v1/projects/{}/", world.project.pk, 404),
        ("delete", "/api/v1/projects/{}/", world.project.pk, 404),
        ("get", "/api/v1/publishing/{}", world.failed.pk, 404),
        ("post", "/api/v1/publishing/{}/cancel", world.queued.pk, 404),
        ("post", "/api/v1/publishing/{}/retry", world.failed.pk, 404),
    ):
        theirs = getattr(bob, method)(template.format(pk))
        nothing = getattr(bob, method)(template.format(missing))
        assert theirs.status_code == nothing.status_code == status, (method, template)
        assert theirs.content == nothing.content
    theirs = bob.post("/api/v1/publishing/initiate", {"project_id": str(world.project.pk)}, format="json")
    nothing = bob.post("/api/v1/publishing/initiate", {"project_id": str(missing)}, format="json")
    assert (theirs.status_code, theirs.content) == (nothing.status_code, nothing.content)
    # And the lists leave them out
    assert bob.get("/api/v1/projects/").json()["count"] == 0
    assert bob.get("/api/v1/publishing/").json()["count"] == 0
    assert bob.get("/api/v1/publishing/", {"project": str(world.project.pk)}).json()["count"] == 0


def test_nothing_changed_for_the_callers_who_were_refused(world: World) -> None:
    # When anonymous callers and bob try every write on alice's objects
    for actor in ("anonymous", "other"):
        client = signed_in(world.users[actor])
        client.patch(world.path("/api/v1/projects/{project}/"), {"ref": "hijacked"}, format="json")
        client.delete(world.path("/api/v1/projects/{project}/"))
        client.post(world.path("/api/v1/publishing/{queued}/cancel"))
        client.post(world.path("/api/v1/publishing/{failed}/retry"))
        client.post("/api/v1/publishing/initiate", {"project_id": str(world.project.pk)}, format="json")

    # Then all is as it was
    world.project.refresh_from_db()
    assert world.project.ref == "main"
    assert Publishing.objects.get(pk=world.queued.pk).status == "queued"
    assert Publishing.objects.get(pk=world.failed.pk).status == "failed"
    assert Publishing.objects.filter(project=world.project).count() == 1


def test_a_stale_token_does_not_stand_in_the_way_of_a_new_one(user) -> None:
    # Given a client still sending a token that was revoked
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token revoked-long-ago")

    # When it logs in again
    response = client.post("/api/v1/auth/token/", {"username": "alice", "password": "pw"}, format="json")

    # Then it gets a token
    assert response.status_code == 200, response.content
    assert Token.objects.get(key=response.json()["token"]).user == user


# --- CSRF: sessions need the token, API tokens do not ----------------------------------------------

UNSAFE = [
    ("POST", "/api/v1/projects/", NEW_PROJECT, 201),
    ("PATCH", "/api/v1/projects/{project}/", {"ref": "release"}, 200),
    ("DELETE", "/api/v1/projects/{project}/", None, 204),
    ("POST", "/api/v1/publishing/initiate", {"project_id": "{project}"}, 202),
    ("POST", "/api/v1/publishing/{queued}/cancel", None, 200),
    ("POST", "/api/v1/publishing/{failed}/retry", None, 202),
]


def send(client: APIClient, world: World, method: str, path: str, body: Any, **extra: Any) -> Any:
    data = {key: world.path(value) for key, value in body.items()} if body else None
    return getattr(client, method.lower())(world.path(path), data, format="json", **extra)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"), UNSAFE, ids=[f"{m} {p}" for m, p, *_ in UNSAFE]
)
def test_a_session_write_without_the_csrf_token_is_refused_and_with_it_passes(
    world: World, method: str, path: str, body: Any, status: int
) -> None:
    # Given alice signed in with a session, in a client that checks CSRF as a browser would
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.owner)

    # When she writes without the CSRF token
    refused = send(client, world, method, path, body)

    # Then the write is refused, saying why, and nothing changed
    assert_error(refused, 403)
    assert "CSRF" in refused.json()["detail"]
    assert Publishing.objects.count() == 2
    assert Project.objects.filter(pk=world.project.pk, ref="main").exists()

    # When she sends the token the browsable API gave her
    client.get("/api/v1/", HTTP_ACCEPT="text/html")
    token = client.cookies["csrftoken"].value
    passed = send(client, world, method, path, body, HTTP_X_CSRFTOKEN=token)

    # Then it passes
    assert passed.status_code == status, passed.content


@pytest.mark.parametrize(
    ("method", "path", "body", "status"), UNSAFE, ids=[f"{m} {p}" for m, p, *_ in UNSAFE]
)
def test_a_token_write_needs_no_csrf_token(
    world: World, method: str, path: str, body: Any, status: int
) -> None:
    # Given a client with alice's API token that would check CSRF
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world.owner).key}")

    # When it writes, with no CSRF token and no session
    response = send(client, world, method, path, body)

    # Then it passes
    assert response.status_code == status, response.content


# --- Throttling of initiate and retry -------------------------------------------------------------------


def initiate(client: APIClient, project: Project) -> Any:
    return client.post("/api/v1/publishing/initiate", {"project_id": str(project.pk)}, format="json")


def test_initiate_over_the_rate_answers_429_with_retry_after(api, user, throttled, stub_broker) -> None:
    # Given three projects and a rate of 2 a minute
    projects = ProjectFactory.create_batch(3, owner=user)

    # When alice initiates all three
    answers = [initiate(api, project) for project in projects]

    # Then the third is throttled, in the envelope, saying when to come back
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert_error(answers[2], 429)
    assert 0 < int(answers[2]["Retry-After"]) <= 60
    assert "throttled" in answers[2].json()["detail"].lower()
    # And it queued nothing
    assert Publishing.objects.filter(project=projects[2]).count() == 0


def test_retry_draws_on_the_same_budget_as_initiate(api, user, throttled, stub_broker) -> None:
    # Given two initiates spent
    for project in ProjectFactory.create_batch(2, owner=user):
        assert initiate(api, project).status_code == 202
    failed = PublishingFactory.create(project=ProjectFactory.create(owner=user), failed=True)

    # When alice retries a failed publishing
    response = api.post(f"/api/v1/publishing/{failed.pk}/retry")

    # Then she is throttled, and it stays failed
    assert_error(response, 429)
    assert response["Retry-After"]
    assert Publishing.objects.get(pk=failed.pk).status == "failed"


def test_the_budget_is_per_user_and_reads_are_never_throttled(
    api, user, other_user, client_for, throttled, stub_broker
) -> None:
    # Given alice over her budget
    answers = [initiate(api, project).status_code for project in ProjectFactory.create_batch(3, owner=user)]
    assert answers == [202, 202, 429]

    # Then she may still read, and bob may still initiate
    assert api.get("/api/v1/publishing/").status_code == 200
    assert initiate(client_for(other_user), ProjectFactory.create(owner=other_user)).status_code == 202


@pytest.mark.parametrize("rate", ["0", ""])
def test_a_rate_of_0_or_empty_turns_the_throttle_off(api, user, throttled, stub_broker, rate: str) -> None:
    throttled.PUBLISHING_INITIATE_RATE = rate
    answers = [initiate(api, project).status_code for project in ProjectFactory.create_batch(5, owner=user)]
    assert answers == [202] * 5


@pytest.fixture
def broken_cache(throttled: Any) -> Iterator[None]:
    throttled.CACHES = {**throttled.CACHES, "throttle": {"BACKEND": f"{BrokenCache.__module__}.BrokenCache"}}
    BrokenCache.calls = 0
    yield
    throttling.breaker.reset()


def test_with_its_cache_down_the_throttle_lets_requests_through_and_warns_once(
    api, user, broken_cache, stub_broker, caplog
) -> None:
    # Given the throttle's cache raising on every call
    caplog.set_level(logging.DEBUG, logger="publishing.breaker")

    # When alice initiates more often than the rate allows
    answers = [initiate(api, project).status_code for project in ProjectFactory.create_batch(4, owner=user)]

    # Then nothing is refused and nothing fails
    assert answers == [202] * 4
    # And the cache was tried once, then left alone for its cool-down, with one warning
    assert BrokenCache.calls == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "throttle cache unavailable" in warnings[0].getMessage()


def test_the_throttle_counts_again_once_its_cache_is_back(
    api, user, throttled, stub_broker, monkeypatch
) -> None:
    # Given a breaker that tried the cache and found it down, whose cool-down has passed
    breaker = CircuitBreaker(name="throttle cache", cooldown=0)
    breaker.failed(redis.exceptions.ConnectionError("refused"))
    monkeypatch.setattr(throttling, "breaker", breaker)

    # When alice initiates three times with the cache back
    answers = [initiate(api, project).status_code for project in ProjectFactory.create_batch(3, owner=user)]

    # Then the rate applies again
    assert answers == [202, 202, 429]
    assert breaker.failures == 0


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


def test_with_redis_hung_the_throttle_costs_one_short_timeout_then_nothing(
    api, user, throttled, stub_broker, hung_redis
) -> None:
    # Given the production throttle cache (its timeouts, no retries) on a Redis that never answers
    throttled.CACHES = {**throttled.CACHES, "throttle": {**base.CACHES["throttle"], "LOCATION": hung_redis}}

    # When alice initiates, then initiates again
    started = time.monotonic()
    first = initiate(api, ProjectFactory.create(owner=user))
    first_took = time.monotonic() - started
    second = initiate(api, ProjectFactory.create(owner=user))

    # Then both pass: the first gave up on Redis (bounded by the socket timeout, not a hang),
    # the second did not call it at all during the cool-down
    assert (first.status_code, second.status_code) == (202, 202)
    assert first_took < 10, "a hung Redis must not hold a request for long"
    assert throttling.breaker.failures == 1
    assert throttling.breaker.is_open


def test_the_schema_documents_429_and_retry_after_for_initiate_and_retry(client_for) -> None:
    schema = client_for(None).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/v1/publishing/initiate", "/api/v1/publishing/{id}/retry"):
        too_many = schema["paths"][path]["post"]["responses"]["429"]
        assert too_many["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert "Retry-After" in too_many["headers"]
        assert {e["value"]["code"] for e in too_many["content"]["application/json"]["examples"].values()} == {
            "THROTTLED"
        }
