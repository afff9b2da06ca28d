"""No secret ever shows: not in an API answer, not in a log line, not in what a webhook receiver gets.

The secrets: the API token, a project's webhook signing secret, passwords written into its
repository, target and webhook URLs (`http://user:password@host/...`), and SECRET_KEY. Jobs run
for real on a worker (stub broker) through the default pipeline's package and HTTP submit steps,
against servers on loopback: published, rejected, retried until failed, and failed at checkout
(a real `git clone`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from publishing.models import Project, Publishing
from publishing.pipeline import DefaultPipeline, Job, Source
from publishing.selectors import log_text
from tests.factories import ProjectFactory, UserFactory
from tests.fakes import scripted_commit
from tests.support.http import Answer, Request, ScriptedReceiver
from tests.support.stub_broker import drain

REPOSITORY_PASSWORD = "repo-pass-5d1f0a"
TARGET_PASSWORD = "store-pass-9c2e44"
HOOK_URL_PASSWORD = "hook-pass-3a7b19"
WEBHOOK_SECRET = "whsec-0f9e8d7c6b5a4f3e2d1c"


class LocalSourcePipeline(DefaultPipeline):
    """The default pipeline with a checkout that writes the source instead of cloning it (no network)."""

    def checkout(self, job: Job) -> Source:
        source = job.workspace / "source"
        source.mkdir()
        (source / "index.html").write_text("<h1>Hello</h1>\n")
        job.log("checked out\n")
        return Source(path=source, commit=scripted_commit(job))


class Receivers(ScriptedReceiver):
    """A git host refusing every clone (in words that repeat the URL with its password, which git
    shows), a store at /upload answering `statuses` in turn (then 201), and a webhook receiver, on one
    loopback port (`base_url`)."""

    def answer(self, request: Request) -> Answer:
        if request.method == "GET":
            repository = with_password(self.base_url, "deploy", REPOSITORY_PASSWORD, "/site.git")
            return Answer(403, f"no access to {repository}\n".encode(), {"Content-Type": "text/plain"})
        status = self.next_status() if request.path.startswith("/upload") else 201
        return Answer(status, b'{"uri": "https://store.example.com/a.tar.gz"}' if status < 300 else b"no")


@pytest.fixture
def receiver() -> Iterator[Receivers]:
    with Receivers(path="") as receivers:
        yield receivers


def with_password(base_url: str, user: str, password: str, path: str) -> str:
    return base_url.replace("http://", f"http://{user}:{password}@") + path


@dataclass
class Seen:
    """Every API answer and log line of a test, to search for secrets."""

    client: APIClient
    answers: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, data: Any = None, **extra: Any) -> Any:
        response = getattr(self.client, method)(path, data, format="json", **extra)
        self.answers.append(f"{method.upper()} {path} -> {response.status_code}\n{response.headers}\n")
        self.answers.append(response.content.decode())
        return response


@pytest.fixture
def alice(transactional_db: None) -> Any:
    return UserFactory.create(username="alice")


@pytest.fixture
def token(alice: Any) -> str:
    key: str = Token.objects.create(user=alice).key
    return key


@pytest.fixture
def seen(token: str) -> Seen:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return Seen(client)


def secrets_in(text: str, token: str) -> list[str]:
    """The secrets that `text` shows."""
    named = {
        "repository password": REPOSITORY_PASSWORD,
        "target password": TARGET_PASSWORD,
        "webhook URL password": HOOK_URL_PASSWORD,
        "webhook secret": WEBHOOK_SECRET,
        "API token": token,
        "SECRET_KEY": django_settings.SECRET_KEY,
    }
    return [name for name, secret in named.items() if secret in text]


def create_project(seen: Seen, receiver: Receivers) -> dict[str, Any]:
    response = seen.call(
        "post",
        "/api/v1/projects/",
        {
            "name": "Site",
            "repository_url": with_password(receiver.base_url, "deploy", REPOSITORY_PASSWORD, "/site.git"),
            "target_url": with_password(receiver.base_url, "uploader", TARGET_PASSWORD, "/upload"),
            "webhook_url": with_password(receiver.base_url, "hook", HOOK_URL_PASSWORD, "/hook"),
            "webhook_secret": WEBHOOK_SECRET,
        },
    )
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


# --- What the API shows --------------------------------------------------------------------------------


def test_a_projects_credentials_are_kept_but_shown_as_stars(seen, receiver, token) -> None:
    # Given a project whose URLs carry passwords, and a webhook secret
    created = create_project(seen, receiver)

    # When it is read back every way the API offers
    seen.call("get", created["url"])
    seen.call("get", "/api/v1/projects/")
    seen.call("get", created["url"], HTTP_ACCEPT="text/html")
    seen.call("options", created["url"])

    # Then no answer shows a secret, and the URLs show where they point with `***` for the credentials
    assert all(not secrets_in(answer, token) for answer in seen.answers)
    assert created["repository_url"] == receiver.base_url.replace("http://", "http://***@") + "/site.git"
    assert created["target_url"].startswith("http://***@127.0.0.1:")
    assert created["webhook_url"].startswith("http://***@127.0.0.1:")
    assert created["webhook_secret_set"] is True
    # And what is stored is what was given
    project = Project.objects.get(pk=created["id"])
    assert REPOSITORY_PASSWORD in project.repository_url
    assert project.webhook_secret == WEBHOOK_SECRET


def test_sending_back_a_url_as_it_was_shown_keeps_its_credentials(seen, receiver) -> None:
    # Given a project with credentials in its URLs, read back with stars
    created = create_project(seen, receiver)

    # When a client sends the whole shown project back (as the browsable API's form does)
    shown = {key: created[key] for key in ("name", "repository_url", "target_url", "webhook_url", "ref")}
    response = seen.call("patch", created["url"], shown)

    # Then the stored credentials are kept, not replaced by the stars
    assert response.status_code == 200, response.content
    project = Project.objects.get(pk=created["id"])
    assert REPOSITORY_PASSWORD in project.repository_url
    assert TARGET_PASSWORD in project.target_url
    assert HOOK_URL_PASSWORD in project.webhook_url

    # When it sends a URL with new credentials
    new_url = with_password(receiver.base_url, "deploy", "rotated-pass", "/site.git")
    assert seen.call("patch", created["url"], {"repository_url": new_url}).status_code == 200

    # Then they replace the old ones
    assert Project.objects.get(pk=created["id"]).repository_url == new_url


def test_a_token_is_shown_only_to_whoever_logged_in_for_it(alice, client_for) -> None:
    # Given alice logging in for a token
    alice.set_password("s3cret-pass-for-login")
    alice.save()
    client = client_for(None)
    response = client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "s3cret-pass-for-login"}, format="json"
    )
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    # When she uses the API with it
    answers = [
        client.get(path).content.decode()
        for path in ("/api/v1/", "/api/v1/projects/", "/api/v1/publishing/", "/api/v1/nothing-here")
    ]

    # Then no answer repeats the token or the password
    assert all(token not in answer and "s3cret-pass-for-login" not in answer for answer in answers)


def test_a_refused_project_does_not_echo_its_credentials(seen, receiver, token) -> None:
    # When a project is refused for a bad URL that carries a password, or for a short secret
    seen.call(
        "post",
        "/api/v1/projects/",
        {
            "name": "Bad",
            "repository_url": f"ftp://deploy:{REPOSITORY_PASSWORD}@git.example.com/site.git",
            "target_url": f"gopher://uploader:{TARGET_PASSWORD}@store.example.com/",
            "webhook_url": f"ftp://hook:{HOOK_URL_PASSWORD}@hooks.example.com/",
            "webhook_secret": WEBHOOK_SECRET[:8],
        },
    )

    # Then the 400 names the fields and shows none of it
    assert '"VALIDATION_ERROR"' in seen.answers[-1]
    assert not secrets_in(seen.answers[-1], token)
    assert WEBHOOK_SECRET[:8] not in seen.answers[-1]


# --- What jobs log and record ---------------------------------------------------------------------------

SCENARIOS = [
    # name, pipeline, the store's answers, the status it ends in, its error code
    ("published", LocalSourcePipeline, [201], "published", ""),
    ("rejected by the store", LocalSourcePipeline, [403], "failed", "TARGET_REJECTED"),
    ("retried, then failed", LocalSourcePipeline, [503] * 10, "failed", "TARGET_UNAVAILABLE"),
    ("failed at checkout", DefaultPipeline, [], "failed", "CHECKOUT_FAILED"),
]


@pytest.mark.parametrize(
    ("pipeline", "store_statuses", "status", "error_code"),
    [pytest.param(*rest, id=name) for name, *rest in SCENARIOS],
)
def test_a_job_logs_and_shows_no_secret_whatever_its_outcome(
    seen, receiver, token, stub_broker, worker, settings, caplog, pipeline, store_statuses, status, error_code
) -> None:
    # Given a project with every kind of secret, and a store that answers as the scenario says
    settings.PUBLISHING_PIPELINE = f"{pipeline.__module__}.{pipeline.__qualname__}"
    receiver.statuses = list(store_statuses)
    caplog.set_level(logging.DEBUG)
    created = create_project(seen, receiver)

    # When alice publishes it, the job runs to its end and its webhook is delivered
    initiated = seen.call("post", "/api/v1/publishing/initiate", {"project_id": created["id"]})
    assert initiated.status_code == 202, initiated.content
    drain(stub_broker, worker)
    detail = seen.call("get", initiated.json()["url"]).json()
    log = seen.call("get", detail["log_url"]).content.decode()
    seen.call("get", detail["log_url"], HTTP_ACCEPT="application/json")
    seen.call("get", "/api/v1/publishing/")
    seen.call("get", initiated.json()["url"], HTTP_ACCEPT="text/html")

    # Then it ended as expected (so the path under test really ran)
    assert (detail["status"], detail["error_code"]) == (status, error_code), detail
    assert detail["attempt_history"]
    # And no log line, API answer or request to the receivers shows a secret
    assert not secrets_in(caplog.text, token), [r.getMessage() for r in caplog.records]
    for answer in seen.answers:
        assert not secrets_in(answer, token), answer
    # (the webhook receiver was called whatever the outcome, and the store whenever the job got that far)
    paths = [request.path for request in receiver.received()]
    assert "/hook" in paths, paths
    assert ("/upload" in paths) == bool(store_statuses), paths
    for request in receiver.received():
        assert not secrets_in(request.raw, token), request.raw
    # And the job's own log, as the API shows it, still says where it checked out from
    port = receiver.base_url.rsplit(":", 1)[1]
    assert f"checkout http://***@127.0.0.1:{port}/site.git" in log
    if pipeline is DefaultPipeline:
        # and git's own words, the server's refusal in them
        assert f"checkout remote: no access to http://***@127.0.0.1:{port}/site.git\n" in log
        assert detail["error_message"].endswith("The requested URL returned error: 403")


def test_the_stored_job_log_holds_no_credentials(seen, receiver, stub_broker, worker, settings) -> None:
    # Given a published project whose repository URL carries a password
    settings.PUBLISHING_PIPELINE = f"{LocalSourcePipeline.__module__}.{LocalSourcePipeline.__qualname__}"
    created = create_project(seen, receiver)
    seen.call("post", "/api/v1/publishing/initiate", {"project_id": created["id"]})
    drain(stub_broker, worker)

    # Then the stored log does not hold the password
    publishing = Publishing.objects.get()
    assert REPOSITORY_PASSWORD not in log_text(publishing)
    assert all(REPOSITORY_PASSWORD not in attempt.log_excerpt for attempt in publishing.attempt_history.all())


def test_a_staff_member_sees_the_same_stars(viewer, receiver) -> None:
    # Given alice's project with credentials in its URLs
    project = ProjectFactory.create(
        repository_url=with_password(receiver.base_url, "deploy", REPOSITORY_PASSWORD, "/site.git"),
        webhook_secret=WEBHOOK_SECRET,
    )
    client = APIClient()
    client.force_authenticate(viewer)

    # When staff who may view every project read it
    answers = [client.get(f"/api/v1/projects/{project.pk}/"), client.get("/api/v1/projects/")]

    # Then they see where it points, not its password or its secret
    for answer in answers:
        assert answer.status_code == 200
        assert REPOSITORY_PASSWORD not in answer.content.decode()
        assert WEBHOOK_SECRET not in answer.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "https://deploy:p@ss-w0rd@git.example.com/site.git",
        "https://deploy:p%40ss-w0rd@git.example.com:8443/site.git",
        "https://p@ss-w0rd@git.example.com/site.git",
    ],
)
def test_a_password_is_hidden_whole_however_it_is_spelled(api, user, url: str) -> None:
    # Given a project whose repository URL has a password with an `@`, encoded or not, or a bare token
    project = ProjectFactory.create(owner=user, repository_url=url)

    # When alice reads it
    shown = api.get(f"/api/v1/projects/{project.pk}/").json()["repository_url"]

    # Then nothing of the password shows, only where it points
    assert "ss-w0rd" not in shown
    assert shown.startswith("https://***@git.example.com")
