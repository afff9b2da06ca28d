"""s3:// store: against moto's S3 server on loopback, behind a proxy that checks SHA-256 as S3 does and
answers scripted errors."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline.base import Artifact, Origin
from publishing.pipeline.stores.s3 import S3Store
from tests.support.s3 import TEST_CREDENTIALS, Scripted, s3_client
from tests.support.stores import COMMIT, ORIGIN, PUBLISHING_ID, fail_if_called, make_artifact

pytestmark = pytest.mark.usefixtures("s3_credentials")

s3_module = importlib.import_module("publishing.pipeline.stores.s3")

KEY = f"sites/42/my-site/{PUBLISHING_ID}.tar.gz"
MANIFEST_KEY = f"sites/42/my-site/{PUBLISHING_ID}.json"


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    return make_artifact(tmp_path / "pub.tar.gz")


def _store(endpoint_url: str, bucket: str, **overrides: Any) -> S3Store:
    options: dict[str, Any] = {
        "roots": [f"s3://{bucket}"],
        "endpoint_url": endpoint_url,
        "timeout": 5,
        **overrides,
    }
    return S3Store(**options)


def _submit(store: S3Store, artifact: Artifact, target_url: str, **overrides: Any) -> Any:
    options: dict[str, Any] = {"publishing_id": PUBLISHING_ID, "origin": ORIGIN, **overrides}
    return store.submit(artifact, target_url=target_url, **options)


def test_submit_puts_the_archive_with_its_checksum_then_the_manifest(artifact, s3_proxy, s3_bucket):
    # Given a bucket behind an S3 API that verifies checksums
    store = _store(s3_proxy.url, s3_bucket)

    # When
    submission = _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # Then the archive is at <prefix>/<owner id>/<slug>/<publishing id>.tar.gz, as sent
    client = s3_client(s3_proxy.upstream)
    stored = client.get_object(Bucket=s3_bucket, Key=KEY)
    assert stored["Body"].read() == artifact.path.read_bytes()
    assert stored["ContentType"] == "application/gzip"
    # And S3 received and recorded the archive's SHA-256
    head = client.head_object(Bucket=s3_bucket, Key=KEY, ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == artifact.sha256
    assert head["Metadata"] == {"sha256": artifact.sha256, "publishing-id": PUBLISHING_ID}
    (put_archive, put_manifest) = s3_proxy.requests("PUT")
    assert put_archive[1]["x-amz-checksum-sha256"] == head["ChecksumSHA256"]
    assert put_archive[1]["If-None-Match"] == "*"
    # And the manifest beside it names the object's s3 URL
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=MANIFEST_KEY)["Body"].read())
    assert manifest["uri"] == f"s3://{s3_bucket}/{KEY}"
    assert (manifest["sha256"], manifest["size"], manifest["file"]) == (
        artifact.sha256,
        artifact.size,
        f"{PUBLISHING_ID}.tar.gz",
    )
    assert (manifest["owner_id"], manifest["project_id"], manifest["project"]) == (
        "42",
        ORIGIN.project_id,
        "my-site",
    )
    assert put_manifest[0].endswith(MANIFEST_KEY)
    # And the submission records the object's URL
    assert submission.uri == f"s3://{s3_bucket}/{KEY}"
    assert submission.ref == PUBLISHING_ID


def test_the_object_metadata_and_the_manifest_name_the_commit(s3_server, s3_bucket, tmp_path):
    # Given an archive built from a known commit
    built = make_artifact(tmp_path / "built.tar.gz", commit=COMMIT)

    # When it is submitted
    _submit(_store(s3_server.url, s3_bucket), built, f"s3://{s3_bucket}/sites")

    # Then the object's metadata names the commit's id, and the manifest the whole commit
    client = s3_client(s3_server.url)
    assert client.head_object(Bucket=s3_bucket, Key=KEY)["Metadata"]["commit-sha"] == COMMIT.sha
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=MANIFEST_KEY)["Body"].read())
    assert (manifest["commit_sha"], manifest["commit_subject"], manifest["commit_author"]) == (
        COMMIT.sha,
        COMMIT.subject,
        COMMIT.author,
    )


def test_a_bucket_without_prefix_keeps_the_layout_at_its_top(artifact, s3_server, s3_bucket):
    # When
    submission = _submit(_store(s3_server.url, s3_bucket), artifact, f"s3://{s3_bucket}")

    # Then
    assert submission.uri == f"s3://{s3_bucket}/42/my-site/{PUBLISHING_ID}.tar.gz"
    s3_client(s3_server.url).head_object(Bucket=s3_bucket, Key=f"42/my-site/{PUBLISHING_ID}.tar.gz")


def test_resending_the_same_archive_writes_nothing_and_succeeds(artifact, s3_proxy, s3_bucket):
    # Given an archive already submitted (archive and manifest: two PUTs)
    store = _store(s3_proxy.url, s3_bucket)
    first = _submit(store, artifact, f"s3://{s3_bucket}/sites")
    assert len(s3_proxy.requests("PUT")) == 2

    # When it is submitted again (a retry after an attempt cut off after the store's answer)
    second = _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # Then it succeeds with the same result, and nothing was written again
    assert second == first
    assert len(s3_proxy.requests("PUT")) == 2


def test_a_different_archive_under_the_same_key_is_refused_and_the_stored_one_kept(
    artifact, s3_server, s3_bucket, tmp_path
):
    # Given an archive already submitted for this publishing
    store = _store(s3_server.url, s3_bucket)
    _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # When another archive is submitted for the same publishing
    other = make_artifact(tmp_path / "other.tar.gz", b"other content")
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(store, other, f"s3://{s3_bucket}/sites")

    # Then it is refused for good, and the first one stays
    assert excinfo.value.code == "TARGET_CONFLICT"
    assert artifact.sha256 in excinfo.value.detail
    body = s3_client(s3_server.url).get_object(Bucket=s3_bucket, Key=KEY)["Body"].read()
    assert body == artifact.path.read_bytes()


def test_an_object_written_meanwhile_is_judged_by_its_checksum(artifact, s3_server, s3_bucket, monkeypatch):
    # Given another attempt that writes the same archive between this one's look and its write
    store = _store(s3_server.url, s3_bucket)
    real = s3_module._stored_sha256
    looks: list[str] = []

    def racing_look(client: Any, target: Any) -> str | None:
        looks.append(target.key)
        if len(looks) == 1:
            s3_client(s3_server.url).put_object(
                Bucket=s3_bucket,
                Key=KEY,
                Body=artifact.path.read_bytes(),
                Metadata={"sha256": artifact.sha256},
            )
            return None
        stored: str | None = real(client, target)
        return stored

    monkeypatch.setattr(s3_module, "_stored_sha256", racing_look)

    # When this attempt writes (conditionally: the object exists now)
    submission = _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # Then its write was refused by S3, it looked again, found the same archive and succeeded
    assert looks == [KEY, KEY]
    assert submission.uri == f"s3://{s3_bucket}/{KEY}"


def test_a_checksum_mismatch_is_a_clear_permanent_error_and_nothing_is_stored(artifact, s3_proxy, s3_bucket):
    # Given an archive whose bytes changed after it was packaged (its recorded sha256 no longer fits)
    artifact.path.write_bytes(b"changed after packaging")
    store = _store(s3_proxy.url, s3_bucket)

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # Then S3 refused it, and the error says what happened
    assert excinfo.value.code == "TARGET_CHECKSUM_MISMATCH"
    assert "another SHA-256" in excinfo.value.detail
    assert artifact.sha256 in excinfo.value.detail
    assert "BadDigest" in excinfo.value.detail
    listing = s3_client(s3_proxy.upstream).list_objects_v2(Bucket=s3_bucket)
    assert listing.get("KeyCount") == 0


def test_a_missing_bucket_is_a_permanent_error_that_names_it(artifact, s3_server, s3_bucket):
    # Given a target under the roots, in a bucket that does not exist
    store = _store(s3_server.url, "no-such-bucket-here")

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(store, artifact, "s3://no-such-bucket-here/sites")

    # Then
    assert excinfo.value.code == "TARGET_REJECTED"
    assert "bucket 'no-such-bucket-here' does not exist" in excinfo.value.detail


@pytest.mark.parametrize("method", ["HEAD", "PUT"])
def test_access_denied_is_a_permanent_error_that_says_what_to_check(
    artifact, s3_proxy, s3_bucket, method, caplog
):
    # Given credentials the bucket refuses
    s3_proxy.script = [Scripted("HEAD", 403, "AccessDenied", "Access Denied")] if method == "HEAD" else []
    s3_proxy.script.append(Scripted("PUT", 403, "AccessDenied", "Access Denied"))
    store = _store(s3_proxy.url, s3_bucket)

    # When
    with caplog.at_level(logging.DEBUG), pytest.raises(PermanentJobError) as excinfo:
        _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # Then (a HEAD refused is no answer yet: credentials without s3:ListBucket get 403 for a missing key)
    assert excinfo.value.code == "TARGET_REJECTED"
    assert "access denied" in excinfo.value.detail
    assert "AccessDenied" in excinfo.value.detail
    # And no credential is in the error or the service's log; the secret key in no log at all (boto3's
    # DEBUG log names the access key id in the Authorization header it shows)
    for credential in (TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"]):
        assert credential not in excinfo.value.detail
        assert not [
            r for r in caplog.records if r.name.startswith("publishing") and credential in r.getMessage()
        ]
    assert TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in caplog.text


@pytest.mark.parametrize(
    ("method", "status", "code"),
    [
        ("PUT", 503, "SlowDown"),
        ("HEAD", 503, "503"),
        ("PUT", 500, "InternalError"),
        ("PUT", 400, "RequestTimeout"),
    ],
)
def test_an_overloaded_or_failing_s3_is_transient_and_the_retry_publishes(
    artifact, s3_proxy, s3_bucket, method, status, code
):
    # Given an S3 API that answers one request with an error worth a retry
    s3_proxy.script = [Scripted(method, status, code, "Please reduce your request rate.")]
    store = _store(s3_proxy.url, s3_bucket)

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # Then it is retried (one request only: the job's retries do the waiting, with backoff)
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert str(status) in excinfo.value.detail
    assert len(s3_proxy.requests(method)) == 1
    # And the retry publishes
    submission = _submit(store, artifact, f"s3://{s3_bucket}/sites")
    assert submission.uri == f"s3://{s3_bucket}/{KEY}"


def test_an_unreachable_endpoint_is_transient_and_its_credentials_are_not_shown(artifact, s3_bucket):
    # Given an endpoint nothing listens on, written with credentials in it
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = _store(f"http://user:endpoint-secret@127.0.0.1:{port}", s3_bucket)

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _submit(store, artifact, f"s3://{s3_bucket}/sites")

    # Then
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert "endpoint-secret" not in excinfo.value.detail
    assert f"127.0.0.1:{port}" in excinfo.value.detail


def test_no_credentials_is_a_permanent_error_that_names_the_variables(
    artifact, s3_server, s3_bucket, monkeypatch
):
    # Given a worker without S3 credentials
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(_store(s3_server.url, s3_bucket), artifact, f"s3://{s3_bucket}/sites")

    # Then
    assert excinfo.value.code == "TARGET_REJECTED"
    assert "AWS_ACCESS_KEY_ID" in excinfo.value.detail


@pytest.mark.parametrize("slug", ["..", "a/b", ".hidden", ""])
def test_unsafe_names_never_become_keys(artifact, s3_proxy, s3_bucket, slug):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(
            _store(s3_proxy.url, s3_bucket),
            artifact,
            f"s3://{s3_bucket}/sites",
            origin=Origin("42", "p", slug),
        )
    assert excinfo.value.code == "TARGET_INVALID"
    assert s3_proxy.seen == []


# --- what a target may be, judged without the network ------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://Upper-Case/x",
        "s3://ab/x",
        "s3://under_score/x",
        "s3://a..b/x",
        "s3://192.168.1.1/x",
        "s3://bucket:9000/x",
        "s3://key:secret@bucket/x",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://bucket/./b",
        "s3://bucket/x?versionId=1",
        "s3://bucket/x#y",
        "s3://bucket/a%00b",
    ],
)
def test_malformed_s3_targets_are_refused(url, monkeypatch):
    # Given no network
    monkeypatch.setattr(socket, "getaddrinfo", fail_if_called)
    store = S3Store(roots=["s3://bucket"])

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        store.validate(url)
    assert excinfo.value.code == "TARGET_INVALID"
    assert "secret" not in excinfo.value.detail


@pytest.mark.parametrize(
    ("url", "roots"),
    [
        ("s3://artifacts/sites", []),
        ("s3://backups/db", ["s3://artifacts"]),
        ("s3://artifacts-evil/x", ["s3://artifacts"]),
        ("s3://artifacts/other", ["s3://artifacts/sites"]),
        ("s3://artifacts/sites-evil", ["s3://artifacts/sites"]),
        ("s3://artifacts", ["s3://artifacts/sites"]),
    ],
)
def test_s3_targets_outside_the_roots_are_refused(url, roots):
    # When / Then a place outside every root, or any place with no roots, is refused
    with pytest.raises(PermanentJobError) as excinfo:
        S3Store(roots=roots).validate(url)
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"


@pytest.mark.parametrize(
    "url",
    [
        "s3://artifacts",
        "s3://artifacts/",
        "s3://artifacts/sites",
        "s3://artifacts/sites/team-a",
        "s3://my.bucket-1/x",
    ],
)
def test_s3_targets_under_a_root_are_accepted_without_the_network(url, monkeypatch):
    # Given no network
    monkeypatch.setattr(socket, "getaddrinfo", fail_if_called)

    # When / Then
    S3Store(roots=["s3://artifacts", "s3://my.bucket-1"]).validate(url)


def test_submit_refuses_a_target_outside_the_roots_and_sends_nothing(artifact, s3_proxy, s3_bucket):
    # Given a target saved before the roots changed
    store = _store(s3_proxy.url, s3_bucket, roots=[f"s3://{s3_bucket}/elsewhere"])

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(store, artifact, f"s3://{s3_bucket}/sites")
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert s3_proxy.seen == []


def test_the_checksum_sent_is_the_packaged_one(artifact):
    # The header value is the base64 of the digest the package step recorded, not of its hex.
    assert base64.b64encode(bytes.fromhex(artifact.sha256)) == base64.b64encode(
        hashlib.sha256(artifact.path.read_bytes()).digest()
    )


def test_an_artifact_that_cannot_be_read_fails_permanently_and_writes_nothing(artifact, s3_proxy, s3_bucket):
    # Given an artifact whose file is gone by the time it is submitted
    artifact.path.unlink()

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(_store(s3_proxy.url, s3_bucket), artifact, f"s3://{s3_bucket}/sites")
    assert excinfo.value.code == "ARTIFACT_NOT_FOUND"
    assert s3_proxy.requests("PUT") == []


def test_a_malformed_endpoint_is_a_permanent_error_that_says_the_store_is_misconfigured(artifact, s3_bucket):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(_store("not a url", s3_bucket), artifact, f"s3://{s3_bucket}/sites")
    assert excinfo.value.code == "TARGET_REJECTED"
    assert "misconfigured" in excinfo.value.detail
