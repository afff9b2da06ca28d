"""The store registry: each target URL goes to the store of its scheme, which judges it; the submit step
asks it too."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from publishing.exceptions import PermanentJobError
from publishing.pipeline import stores
from publishing.pipeline.stores import store_for, validate_target_url
from publishing.pipeline.stores.file import FileStore
from publishing.pipeline.stores.http import HttpStore
from publishing.pipeline.stores.s3 import S3Store
from publishing.pipeline.submit import submit
from tests.support.stores import ORIGIN, PUBLISHING_ID, fail_if_called, make_artifact


def _policy(
    settings, *, allow_private: bool, file_roots: list[str] | None = None, s3_roots: list[str] | None = None
) -> None:
    """The operator's policy for every store: private hosts, file:// folders, s3:// buckets."""
    settings.PUBLISHING_ALLOW_PRIVATE_TARGETS = allow_private
    settings.PUBLISHING_FILE_STORE_ROOTS = file_roots or []
    settings.PUBLISHING_S3_STORE_ROOTS = s3_roots or []


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("file:///srv/store", FileStore),
        ("http://store.example.com/upload", HttpStore),
        ("HTTPS://store.example.com/upload", HttpStore),
        ("s3://artifacts/sites", S3Store),
    ],
)
def test_each_scheme_has_its_store(url, kind):
    # When / Then
    assert isinstance(store_for(url), kind)
    assert url.split(":", 1)[0].lower() in stores.STORES


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/upload",
        "s3://Not_A_Bucket/key",
        "file://otherhost/srv/store",
        "file:relative/dir",
        "file:///srv/../etc",
        "file:///srv/store?x=1",
        "https:///upload",
        "https://example.com:port/upload",
        "https://example.com/up load",
    ],
)
def test_validate_target_url_refuses_malformed_urls(url, settings):
    # Given every folder and bucket allowed, and private hosts too
    _policy(settings, allow_private=True, file_roots=["/"], s3_roots=["s3://Not_A_Bucket"])

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        validate_target_url(url)
    assert excinfo.value.code == "TARGET_INVALID"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/upload", "https://localhost/upload", "http://[::1]/x", "https://10.0.0.8/x"],
)
def test_validate_target_url_refuses_private_hosts_unless_allowed(url, settings):
    # When / Then refused by default
    _policy(settings, allow_private=False)
    with pytest.raises(PermanentJobError) as excinfo:
        validate_target_url(url)
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    # And accepted when private targets are allowed
    _policy(settings, allow_private=True)
    validate_target_url(url)


@pytest.mark.parametrize(
    "url", ["https://store.example.com/upload", "file:///srv/store", "file://localhost/srv/s"]
)
def test_validate_target_url_accepts_file_and_public_http_urls(url, monkeypatch, settings):
    # Given a resolver that must not be consulted
    monkeypatch.setattr(socket, "getaddrinfo", fail_if_called)
    _policy(settings, allow_private=False, file_roots=["/srv"])

    # When / Then no error is raised
    validate_target_url(url)


@pytest.mark.parametrize(
    ("url", "roots"),
    [
        ("file:///srv/store", []),
        ("file:///etc/cron.d", ["/srv/store"]),
        ("file:///srv/store-evil", ["/srv/store"]),
        ("file:///srv", ["/srv/store"]),
        ("file:///root/.ssh", ["/srv/store", "/var/lib/publisher"]),
    ],
)
def test_validate_target_url_refuses_file_targets_outside_the_store_roots(url, roots, settings):
    # Given
    _policy(settings, allow_private=True, file_roots=roots)

    # When / Then a folder outside every root, or any folder with no roots, is refused
    with pytest.raises(PermanentJobError) as excinfo:
        validate_target_url(url)
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"


@pytest.mark.parametrize("url", ["ftp://example.com/upload", "gopher://example.com/", "/srv/store"])
def test_the_submit_step_refuses_a_scheme_no_store_serves_and_names_those_there_are(url, tmp_path: Path):
    # When
    with pytest.raises(PermanentJobError) as excinfo:
        submit(
            make_artifact(tmp_path / "a.tar.gz"), target_url=url, publishing_id=PUBLISHING_ID, origin=ORIGIN
        )

    # Then
    assert excinfo.value.code == "TARGET_INVALID"
    assert "file://, http://, https://, s3://" in excinfo.value.detail


def test_the_submit_step_delivers_through_the_store_of_the_scheme(tmp_path: Path, settings):
    # Given a file:// target under the store roots
    _policy(settings, allow_private=False, file_roots=[str(tmp_path)])

    # When
    submission = submit(
        make_artifact(tmp_path / "a.tar.gz"),
        target_url=(tmp_path / "store").as_uri(),
        publishing_id=PUBLISHING_ID,
        origin=ORIGIN,
    )

    # Then the file store wrote it where its layout says
    assert submission.uri == (tmp_path / "store" / "42" / "my-site" / f"{PUBLISHING_ID}.tar.gz").as_uri()


def test_the_submit_step_applies_the_settings_policy_at_run_time(tmp_path: Path, settings):
    # Given a file:// target saved before the store roots changed
    _policy(settings, allow_private=False, file_roots=[str(tmp_path / "elsewhere")])

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        submit(
            make_artifact(tmp_path / "a.tar.gz"),
            target_url=(tmp_path / "store").as_uri(),
            publishing_id=PUBLISHING_ID,
            origin=ORIGIN,
        )
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert not (tmp_path / "store").exists()


@pytest.mark.django_db
def test_the_api_schema_names_every_scheme_a_target_may_have() -> None:
    # When
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    # Then the project's target_url says which stores there are, in the form of their URLs
    description = response.json()["components"]["schemas"]["Project"]["properties"]["target_url"][
        "description"
    ]
    for entry in stores.STORES.values():
        assert entry.form in description
    assert "s3://bucket/prefix" in description
