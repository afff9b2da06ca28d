"""Rules that had no test of their own: what the user is told when each one applies."""

from __future__ import annotations

import errno
import gzip
import importlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker

from publishing import broker
from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.models import Attempt, Project, Publishing
from publishing.pipeline.base import Artifact, Origin
from publishing.pipeline.network import MAX_REDIRECTS
from publishing.pipeline.stores.http import RESPONSE_READ_LIMIT, HttpStore
from publishing.services.maintenance import publishing_reconcile
from publishing.services.publishings import publishing_initiate
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline
from tests.support.http import Answer, Request, ScriptedReceiver
from tests.support.polling import wait_until
from tests.support.stub_broker import broker_refuses, queued_messages

# The package re-exports the step function under the module's name, hiding the module itself.
package_step = importlib.import_module("publishing.pipeline.package")

PUBLISHING_ID = "3f0c6f7e-9a1b-4c2d-8e5f-0a1b2c3d4e5f"
ORIGIN = Origin(owner_id="42", project_id="9b2f4c1e-0d3a-4e5f-8a7b-6c5d4e3f2a1b", project_slug="my-site")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests honours proxy variables; the local test servers must be reached directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# --- artifact_path, on save --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("artifact_path", "says"),
    [
        ("/srv/www", "relative path inside the checkout"),
        ("../outside", "relative path inside the checkout"),
        ("public/../../outside", "relative path inside the checkout"),
        (".git", "inside .git"),
        ("public/.git/config", "inside .git"),
    ],
)
def test_an_artifact_path_outside_the_checkout_or_in_git_is_refused_on_save(
    api, user, artifact_path: str, says: str
) -> None:
    # Given a project of alice's
    project = ProjectFactory.create(owner=user, artifact_path="public")

    # When she creates another, or changes this one, with that artifact path
    created = api.post(
        "/api/v1/projects/",
        {
            "name": "Site",
            "repository_url": "https://git.example.com/me/site.git",
            "target_url": "https://store.example.com/upload",
            "artifact_path": artifact_path,
        },
        format="json",
    )
    changed = api.patch(f"/api/v1/projects/{project.pk}/", {"artifact_path": artifact_path}, format="json")

    # Then both are refused, naming the field and why; nothing is saved
    for response in (created, changed):
        assert response.status_code == 400, response.content
        body = response.json()
        assert body["code"] == "VALIDATION_ERROR"
        assert says in " ".join(body["errors"]["artifact_path"])
    assert Project.objects.filter(owner=user).count() == 1
    project.refresh_from_db()
    assert project.artifact_path == "public"


def test_an_artifact_path_inside_the_checkout_is_accepted(api, user) -> None:
    response = api.post(
        "/api/v1/projects/",
        {
            "name": "Site",
            "repository_url": "https://git.example.com/me/site.git",
            "target_url": "https://store.example.com/upload",
            "artifact_path": "public/site",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["artifact_path"] == "public/site"


# --- health ------------------------------------------------------------------------------------------------


def test_health_answers_503_naming_the_database_when_it_is_down(client_for, monkeypatch) -> None:
    # Given a database that refuses connections
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refused)

    # When a monitor asks
    response = client_for(None).get("/api/v1/health")

    # Then it is told which dependency is down, with the broker still fine
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable", "broker": "ok"}


# --- package and submit ------------------------------------------------------------------------------------


def no_space_on_first_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up as the archive is written: the first write of the gzip stream fails with ENOSPC."""
    write = gzip.GzipFile.write
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def full(self: gzip.GzipFile, data: Any) -> int:
        if failures:
            raise failures.pop()
        return write(self, data)

    monkeypatch.setattr(gzip.GzipFile, "write", full)


def test_a_full_disk_while_packaging_is_transient_and_leaves_no_partial_archive(
    tmp_path, monkeypatch
) -> None:
    # Given a checkout to package, on a disk that is full
    source = tmp_path / "source"
    (source / "public").mkdir(parents=True)
    (source / "public" / "index.html").write_text("<p>hi</p>" * 1000)
    out = tmp_path / "out"
    no_space_on_first_write(monkeypatch)

    # When it is packaged
    with pytest.raises(TransientJobError) as excinfo:
        package_step.package(source, "public", out_dir=out, name="pub")

    # Then it is a PACKAGE_NO_SPACE (worth a retry once space is freed), and no partial archive is left
    assert excinfo.value.code == "PACKAGE_NO_SPACE"
    assert "No space left" in excinfo.value.detail
    assert list(out.iterdir()) == []


@pytest.mark.django_db(transaction=True)
def test_a_publishing_whose_disk_fills_while_packaging_is_retried_and_published_once(
    drain, monkeypatch
) -> None:
    # Given the real packaging step, on a disk that is full for the first attempt
    def package(pipeline: ScriptedPipeline, job: Any, source: Path) -> Artifact:
        artifact: Artifact = package_step.package(source, ".", out_dir=job.workspace / "out", name="pub")
        return artifact

    monkeypatch.setattr(ScriptedPipeline, "package", package)
    no_space_on_first_write(monkeypatch)
    owner = UserFactory.create()
    publishing = publishing_initiate(user=owner, project_id=ProjectFactory.create(owner=owner).pk)

    # When the worker runs it
    drain()

    # Then attempt 1 says PACKAGE_NO_SPACE and will retry; attempt 2 published it, submitted once
    publishing.refresh_from_db()
    assert publishing.status == "published"
    attempts = [(a.number, a.outcome, a.error_code) for a in Attempt.objects.filter(publishing=publishing)]
    assert attempts == [(1, "retrying", "PACKAGE_NO_SPACE"), (2, "published", "")]
    assert ScriptedPipeline.submitted == [str(publishing.pk)]


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    path = tmp_path / "pub.tar.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    return Artifact(path=path, sha256="0" * 64, size=path.stat().st_size)


def submit_to(artifact: Artifact, url: str) -> Any:
    store = HttpStore(allow_private=True, timeout=5)
    return store.submit(artifact, target_url=url, publishing_id=PUBLISHING_ID, origin=ORIGIN)


def test_an_artifact_that_cannot_be_read_at_submit_fails_permanently_sending_nothing(
    artifact: Artifact,
) -> None:
    # Given a store, and an artifact whose file is gone by the time it is submitted
    artifact.path.unlink()

    # When it is submitted
    with ScriptedReceiver(path="/upload", status=201) as store, pytest.raises(PermanentJobError) as excinfo:
        submit_to(artifact, store.url)

    # Then ARTIFACT_NOT_FOUND, and the store never heard of it
    assert excinfo.value.code == "ARTIFACT_NOT_FOUND"
    assert "cannot be read" in excinfo.value.detail
    assert store.requests == []


def test_a_store_that_redirects_in_circles_is_left_after_the_redirect_limit(artifact: Artifact) -> None:
    # Given a store whose upload endpoint always redirects (307: the archive is sent again each time)
    class Elsewhere(ScriptedReceiver):
        def answer(self, request: Request) -> Answer:
            return Answer(307, headers={"Location": f"/hop-{len(self.received())}"})

    # When the artifact is submitted to it
    with Elsewhere(path="/upload") as store, pytest.raises(PermanentJobError) as excinfo:
        submit_to(artifact, store.url)

    # Then it gives up after MAX_REDIRECTS hops, for good, saying why
    assert excinfo.value.code == "TARGET_REJECTED"
    assert f"Exceeded {MAX_REDIRECTS} redirects" in excinfo.value.detail
    paths = [request.path for request in store.received()]
    assert paths == ["/upload", *[f"/hop-{n}" for n in range(1, MAX_REDIRECTS + 1)]]


def test_a_stores_endless_error_answer_is_read_only_up_to_the_cap(artifact: Artifact) -> None:
    # Given a store that answers 503 with a body that never ends
    sent = [0]

    def endless() -> Iterator[bytes]:
        chunk = b"overloaded " * 1000
        # Bounded, so that a client that slurps makes the test fail rather than hang.
        while sent[0] < 256 * 1024 * 1024:
            sent[0] += len(chunk)
            yield chunk

    # When the artifact is submitted to it
    with ScriptedReceiver(path="/upload", status=503) as store:
        store.answer = lambda request: Answer(503, stream=endless())  # type: ignore[method-assign]
        with pytest.raises(TransientJobError) as excinfo:
            submit_to(artifact, store.url)
        wait_until(store.cut_off.is_set, 10, "the store was never hung up on")

    # Then the job stopped reading at the cap and hung up: a transient error quoting the start of the body
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert "answered 503: overloaded overloaded" in excinfo.value.detail
    assert len(excinfo.value.detail) < 300
    assert sent[0] < 256 * 1024 * 1024
    assert RESPONSE_READ_LIMIT < 256 * 1024 * 1024


# --- retry, reconcile with the broker down -------------------------------------------------------------


@pytest.mark.django_db
def test_retry_of_a_publishing_whose_project_was_deleted_answers_409(api, user, stub_broker) -> None:
    # Given alice's failed publishing, whose project she then deleted
    project = ProjectFactory.create(owner=user)
    publishing = PublishingFactory.create(failed=True, project=project)
    assert api.delete(f"/api/v1/projects/{project.pk}/").status_code == 204

    # When she retries it
    response = api.post(f"/api/v1/publishing/{publishing.pk}/retry")

    # Then it is a conflict saying why, and nothing was queued
    assert response.status_code == 409, response.content
    assert response.json() == {"code": "CONFLICT", "detail": "The project of this publishing was deleted."}
    publishing.refresh_from_db()
    assert publishing.status == "failed"
    assert queued_messages(stub_broker) == []


@pytest.mark.django_db
def test_reconcile_while_the_broker_is_down_leaves_every_row_for_the_next_pass(
    stub_broker: StubBroker, monkeypatch, settings
) -> None:
    # Given a pending publishing left by a crash, an attempt whose worker died, a queued one with no message
    settings.PUBLISHING_RECONCILE_GRACE = 60
    settings.PUBLISHING_LEASE_TIMEOUT = 30
    long_ago = timezone.now() - timedelta(minutes=5)
    pending = PublishingFactory.create(created_at=long_ago)
    lost = PublishingFactory.create(building=True, heartbeat_at=long_ago, message_id="old")
    unsent = PublishingFactory.create(queued=True, message_id="")
    # And a broker that refuses every message
    enqueue = stub_broker.enqueue
    broker_refuses(monkeypatch, stub_broker)

    # When the reconciler runs
    publishing_reconcile()

    # Then it does not crash; each row is queued with no message, which the next pass looks for
    rows = Publishing.objects.filter(pk__in=[pending.pk, lost.pk, unsent.pk])
    assert sorted(rows.values_list("status", "message_id")) == [("queued", "")] * 3
    assert queued_messages(stub_broker) == []
    assert Attempt.objects.filter(publishing=lost, outcome="running").count() == 0

    # When the broker is back (and the breaker's cool-down over), and the next pass runs
    monkeypatch.setattr(stub_broker, "enqueue", enqueue)
    broker.breaker.reset()
    report = publishing_reconcile()

    # Then each publishing got exactly one message
    assert report.resent_queued == 3
    ids = sorted(str(m.kwargs["publishing_id"]) for m in queued_messages(stub_broker))
    assert ids == sorted(str(p.pk) for p in (pending, lost, unsent))
    for row in rows:
        assert row.message_id in {m.message_id for m in queued_messages(stub_broker)}
