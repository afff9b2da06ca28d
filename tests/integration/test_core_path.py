"""The core path with real processes: API -> Redis -> rundramatiq worker -> store (file://, HTTP, S3)."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django_dramatiq.models import Task

from tests.support.http import Answer, Request, ScriptedReceiver
from tests.support.s3 import s3_client

pytestmark = pytest.mark.integration


def test_initiate_is_published_by_a_real_worker_into_a_file_store(
    redis_url, make_stack, make_project, owner_token, git_source: Path, tmp_path: Path
) -> None:
    # Given the web server and a worker on a real Redis, and a project targeting a file store
    store = tmp_path / "store"
    project = make_project(f"file://{store}")
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token)

    # When the user initiates a publishing
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text
    publishing = response.json()
    assert response.headers["Location"] == publishing["url"]

    # Then the worker publishes it, and the store holds exactly its artifact and manifest
    done = stack.wait_for(api, publishing["id"])
    assert done["status"] == "published", done
    assert done["attempts"] == 1
    assert done["progress"] == 100
    artifact = store / str(project.owner_id) / project.slug / f"{publishing['id']}.tar.gz"
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == done["artifact_sha256"]
    manifest = json.loads((artifact.parent / f"{publishing['id']}.json").read_text())
    assert manifest["sha256"] == done["artifact_sha256"]
    # And the publishing, its attempt, its log and the manifest name the commit git checked out
    head = subprocess.run(
        ["git", "-C", str(git_source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert (done["commit_sha"], done["commit_subject"], done["commit_author"]) == (
        head,
        "init",
        "t <t@example.invalid>",
    )
    assert done["attempt_history"][0]["commit_sha"] == head
    assert f"checkout -> {head[:12]} init" in api.get(done["log_url"]).text
    assert (manifest["commit_sha"], manifest["commit_subject"]) == (head, "init")
    assert sorted(p.name for p in (store / str(project.owner_id) / project.slug).iterdir()) == sorted(
        [artifact.name, f"{publishing['id']}.json"]
    )
    assert "build done" in api.get(done["log_url"]).text
    # And the workspace was removed
    assert not any(stack.workspaces.iterdir())
    # And the publishing and its attempt are the whole job record: once the worker has stopped (and
    # so written anything it holds back), it wrote no django-dramatiq Task row for the message
    stack.signal("worker", signal.SIGTERM)
    stack.wait_exit("worker", timeout=30)
    assert [a["outcome"] for a in done["attempt_history"]] == ["published"]
    assert not Task.tasks.exists()


def test_initiate_is_published_by_a_real_worker_into_an_s3_store(
    redis_url, make_stack, make_project, owner_token, s3_server, s3_bucket, s3_credentials
) -> None:
    # Given a worker whose S3 store is moto's server on loopback, and a project targeting a bucket there
    project = make_project(f"s3://{s3_bucket}/sites")
    _, token = owner_token
    stack = make_stack(
        redis_url,
        PUBLISHING_S3_STORE_ROOTS=f"s3://{s3_bucket}",
        PUBLISHING_S3_ENDPOINT_URL=s3_server.url,
        **s3_credentials,
    )
    api = stack.serve(token)

    # When the user initiates a publishing
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text

    # Then the worker publishes it into the bucket, and the publishing records the object's URL
    done = stack.wait_for(api, response.json()["id"])
    assert done["status"] == "published", (done, stack.logs("worker"))
    assert done["attempts"] == 1
    key = f"sites/{project.owner_id}/{project.slug}/{done['id']}.tar.gz"
    assert done["artifact_uri"] == f"s3://{s3_bucket}/{key}"
    # And the object holds the archive, with the checksum S3 recorded for it the publishing's own
    client = s3_client(s3_server.url)
    head = client.head_object(Bucket=s3_bucket, Key=key, ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == done["artifact_sha256"]
    body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == done["artifact_sha256"]
    manifest = json.loads(
        client.get_object(Bucket=s3_bucket, Key=key.replace(".tar.gz", ".json"))["Body"].read()
    )
    assert (manifest["uri"], manifest["sha256"]) == (done["artifact_uri"], done["artifact_sha256"])
    # And no credential reached the worker's log
    assert s3_credentials["AWS_SECRET_ACCESS_KEY"] not in stack.logs("worker", tail=None)


class FlakyTarget(ScriptedReceiver):
    """An HTTP store answering scripted statuses (then 201) with a submission id, recording what it got."""

    def answer(self, request: Request) -> Answer:
        status = self.next_status()
        payload = json.dumps({"id": f"sub-{len(self.requests)}"}).encode()
        return Answer(status, payload, {"Content-Type": "application/json"})


@pytest.fixture
def flaky_target() -> Iterator[FlakyTarget]:
    with FlakyTarget(path="/upload", statuses=[503, 503, 201], status=201) as target:
        yield target


def test_a_flaky_http_target_is_retried_until_published(
    redis_url, make_stack, make_project, owner_token, flaky_target
) -> None:
    # Given a target that answers 503, 503, then 201
    project = make_project(flaky_target.url)
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token)

    # When a publishing is initiated
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text
    done = stack.wait_for(api, response.json()["id"])

    # Then the third attempt published it, every attempt carried the same idempotency key and checksum
    assert done["status"] == "published", done
    assert done["attempts"] == 3
    assert done["submission_ref"] == "sub-3"
    assert [r.headers["Idempotency-Key"] for r in flaky_target.requests] == [done["id"]] * 3
    assert {r.headers["X-Checksum-SHA256"] for r in flaky_target.requests} == {done["artifact_sha256"]}
    assert {hashlib.sha256(r.body).hexdigest() for r in flaky_target.requests} == {done["artifact_sha256"]}
    # And the retries are in the worker's log with the ids
    worker_log = stack.logs("worker", tail=None)
    assert worker_log.count("will retry") == 2
    assert f"publishing_id={done['id']}" in worker_log


def test_concurrent_initiates_while_workers_write_never_fail(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given 12 projects and a threaded web server, all on one database
    from concurrent.futures import ThreadPoolExecutor

    store = tmp_path / "store"
    projects = [make_project(f"file://{store}", slug=f"site-{n}", name=f"Site {n}") for n in range(12)]
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token, worker=False)

    # When they are all initiated at once, twice each
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda p: stack.initiate(api, p.pk), projects + projects))

    # Then every request got a clear answer: one 202 and one 409 a project, never a 500
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * 12 + [409] * 12, [r.text for r in responses if r.status_code >= 500]
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]

    # When a worker with 4 threads writes progress and logs while the API is polled
    stack.start_worker(threads=4)

    # Then every publishing was published once, and the database never said it was locked
    for publishing_id in accepted:
        assert stack.wait_for(api, publishing_id)["status"] == "published"
    assert len(list(store.glob("*/*/*.tar.gz"))) == 12
    assert "database is locked" not in stack.logs("worker", tail=None) + stack.logs("web", tail=None)
