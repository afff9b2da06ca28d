"""Submit step: the file:// store's layout and idempotency, and HTTP answers against a real local server."""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline import network
from publishing.pipeline.base import Artifact, Origin
from publishing.pipeline.submit import submit, validate_target_url
from tests.fakes import rebinding_resolver, resolver
from tests.support.http import Answer, Request, ScriptedReceiver

# The package re-exports the step function under the module's name, hiding the module itself.
submit_module = importlib.import_module("publishing.pipeline.submit")

PUBLISHING_ID = "3f0c6f7e-9a1b-4c2d-8e5f-0a1b2c3d4e5f"
ORIGIN = Origin(owner_id="42", project_id="9b2f4c1e-0d3a-4e5f-8a7b-6c5d4e3f2a1b", project_slug="my-site")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    # requests honours proxy variables; the local test server must be reached directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _artifact(path: Path, content: bytes) -> Artifact:
    path.write_bytes(content)
    return Artifact(path=path, sha256=hashlib.sha256(content).hexdigest(), size=len(content))


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    return _artifact(tmp_path / "pub.tar.gz", b"\x1f\x8b" + bytes(range(256)) * 40)


def _submit(artifact: Artifact, target_url: str, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "target_url": target_url,
        "publishing_id": PUBLISHING_ID,
        "origin": ORIGIN,
        "timeout": 5,
        "allow_private": True,
        "store_roots": ["/"],
        **overrides,
    }
    return submit(artifact, **options)


# --- file:// -----------------------------------------------------------------


def test_submit_to_a_directory_writes_the_archive_and_then_its_manifest(artifact, tmp_path):
    # Given a store directory
    store = tmp_path / "store"

    # When
    submission = _submit(artifact, store.as_uri())

    # Then the archive and manifest sit under the project, with no temporary files left
    final = store / "42" / "my-site" / f"{PUBLISHING_ID}.tar.gz"
    assert final.read_bytes() == artifact.path.read_bytes()
    assert sorted(p.name for p in (store / "42" / "my-site").iterdir()) == [
        f"{PUBLISHING_ID}.json",
        f"{PUBLISHING_ID}.tar.gz",
    ]
    manifest = json.loads((store / "42" / "my-site" / f"{PUBLISHING_ID}.json").read_text())
    assert manifest["publishing_id"] == PUBLISHING_ID
    assert manifest["project"] == "my-site"
    assert manifest["project_id"] == ORIGIN.project_id
    assert manifest["owner_id"] == ORIGIN.owner_id
    assert manifest["sha256"] == artifact.sha256
    assert manifest["size"] == artifact.size
    assert manifest["file"] == f"{PUBLISHING_ID}.tar.gz"
    assert datetime.fromisoformat(manifest["submitted_at"]).utcoffset() == timedelta(0)
    assert submission.uri == final.as_uri()
    assert submission.uri.startswith("file:///")
    assert submission.ref == PUBLISHING_ID


def test_resubmitting_the_same_archive_rewrites_nothing(artifact, tmp_path, monkeypatch):
    # Given an archive already submitted
    store = tmp_path / "store"
    first = _submit(artifact, store.as_uri())
    final = store / "42" / "my-site" / f"{PUBLISHING_ID}.tar.gz"
    manifest = store / "42" / "my-site" / f"{PUBLISHING_ID}.json"
    before = (final.stat().st_ino, manifest.stat().st_ino, manifest.read_text())
    monkeypatch.setattr(submit_module.shutil, "copyfileobj", _fail_if_called)

    # When it is submitted again (a retry)
    second = _submit(artifact, store.as_uri())

    # Then neither file was replaced
    assert second == first
    assert (final.stat().st_ino, manifest.stat().st_ino, manifest.read_text()) == before


def test_resubmitting_different_content_replaces_archive_and_manifest(artifact, tmp_path):
    # Given an archive already submitted
    store = tmp_path / "store"
    _submit(artifact, store.as_uri())

    # When other content is submitted for the same publishing
    other = _artifact(tmp_path / "other.tar.gz", b"other content")
    _submit(other, store.as_uri())

    # Then
    final = store / "42" / "my-site" / f"{PUBLISHING_ID}.tar.gz"
    assert final.read_bytes() == b"other content"
    manifest = json.loads((store / "42" / "my-site" / f"{PUBLISHING_ID}.json").read_text())
    assert manifest["sha256"] == other.sha256


def test_submit_to_a_directory_reports_a_full_disk_as_transient_and_leaves_no_temp_file(
    artifact, tmp_path, monkeypatch
):
    # Given a disk that fills up during the copy
    def copy_fails(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(submit_module.shutil, "copyfileobj", copy_fails)
    store = tmp_path / "store"

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _submit(artifact, store.as_uri())

    # Then
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert list((store / "42" / "my-site").iterdir()) == []


def test_submit_to_a_path_that_is_not_a_directory_is_rejected_permanently(artifact, tmp_path):
    # Given a store URL naming a regular file
    not_a_dir = tmp_path / "store"
    not_a_dir.write_text("file")

    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, not_a_dir.as_uri())
    assert excinfo.value.code == "TARGET_REJECTED"


@pytest.mark.parametrize("slug", ["..", "a/b", ".hidden", ""])
def test_submit_to_a_directory_refuses_unsafe_path_components(artifact, tmp_path, slug):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, (tmp_path / "store").as_uri(), origin=Origin("42", "p", slug))
    assert excinfo.value.code == "TARGET_INVALID"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/upload",
        "s3://bucket/key",
        "file://otherhost/srv/store",
        "file:relative/dir",
        "file:///srv/../etc",
        "file:///srv/store?x=1",
        "https:///upload",
        "https://example.com:port/upload",
        "https://example.com/up load",
    ],
)
def test_validate_target_url_refuses_malformed_urls(url):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        validate_target_url(url, allow_private=True, store_roots=["/"])
    assert excinfo.value.code == "TARGET_INVALID"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/upload", "https://localhost/upload", "http://[::1]/x", "https://10.0.0.8/x"],
)
def test_validate_target_url_refuses_private_hosts_unless_allowed(url):
    # When / Then refused by default
    with pytest.raises(PermanentJobError) as excinfo:
        validate_target_url(url, allow_private=False, store_roots=[])
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    # And accepted when private targets are allowed
    validate_target_url(url, allow_private=True, store_roots=[])


@pytest.mark.parametrize(
    "url", ["https://store.example.com/upload", "file:///srv/store", "file://localhost/srv/s"]
)
def test_validate_target_url_accepts_file_and_public_http_urls(url, monkeypatch):
    # Given a resolver that must not be consulted
    monkeypatch.setattr(socket, "getaddrinfo", _fail_if_called)

    # When / Then no error is raised
    validate_target_url(url, allow_private=False, store_roots=["/srv"])


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
def test_validate_target_url_refuses_file_targets_outside_the_store_roots(url, roots):
    # When / Then a folder outside every root, or any folder with no roots, is refused
    with pytest.raises(PermanentJobError) as excinfo:
        validate_target_url(url, allow_private=True, store_roots=roots)
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"


def test_submit_refuses_a_file_target_outside_the_store_roots_and_writes_nothing(artifact, tmp_path):
    # Given a target outside the only store root (saved before the roots changed)
    outside = tmp_path / "private"
    outside.mkdir(mode=0o700)

    # When the worker submits to it
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, outside.as_uri(), store_roots=[str(tmp_path / "store")])

    # Then it is refused at run time too, and nothing was written there
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert list(outside.iterdir()) == []


def test_two_owners_projects_of_the_same_slug_never_share_a_folder(artifact, tmp_path):
    # Given two owners, each with a project called "site", publishing to the same store
    store = tmp_path / "store"
    alice = _submit(artifact, store.as_uri(), publishing_id="p-a", origin=Origin("1", "proj-a", "site"))
    bob = _submit(artifact, store.as_uri(), publishing_id="p-b", origin=Origin("2", "proj-b", "site"))

    # Then each owner's artifact and manifest are in a folder of that owner
    assert alice.uri == (store / "1" / "site" / "p-a.tar.gz").as_uri()
    assert bob.uri == (store / "2" / "site" / "p-b.tar.gz").as_uri()
    assert sorted(p.name for p in (store / "1" / "site").iterdir()) == ["p-a.json", "p-a.tar.gz"]
    # And each manifest names its project and owner
    manifest = json.loads((store / "2" / "site" / "p-b.json").read_text())
    assert (manifest["project_id"], manifest["owner_id"], manifest["project"]) == ("proj-b", "2", "site")


# --- http(s):// --------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[ScriptedReceiver]:
    """A store on loopback answering `status` (201) with `body` and `headers`; what it received."""
    with ScriptedReceiver(path="/upload", status=201) as fake:
        yield fake


def test_submit_over_http_posts_the_archive_with_idempotency_headers(artifact, store):
    # Given a store answering 201 with a JSON body
    store.body = json.dumps({"id": "sub-42", "uri": "https://cdn.example.com/my-site/42"}).encode()
    store.headers = {"Content-Type": "application/json"}

    # When
    submission = _submit(artifact, store.url)

    # Then the archive's bytes arrived with the headers a store deduplicates and verifies with
    (request,) = store.requests
    assert request.path == "/upload"
    assert request.body == artifact.path.read_bytes()
    assert request.headers["Idempotency-Key"] == PUBLISHING_ID
    assert request.headers["X-Publishing-Id"] == PUBLISHING_ID
    assert request.headers["X-Checksum-SHA256"] == artifact.sha256
    assert request.headers["Content-Type"] == "application/gzip"
    assert request.headers["Content-Length"] == str(artifact.size)
    assert submission.uri == "https://cdn.example.com/my-site/42"
    assert submission.ref == "sub-42"


def test_submit_over_http_prefers_the_location_header(artifact, store):
    # Given a store answering with a Location and a submission id header
    store.headers = {"Location": "/artifacts/7", "X-Submission-Id": "7"}

    # When
    submission = _submit(artifact, store.url)

    # Then the relative location is resolved against the target
    assert submission.uri == store.url.replace("/upload", "/artifacts/7")
    assert submission.ref == "7"


def test_submit_over_http_falls_back_to_the_target_url(artifact, store):
    # Given a store answering 200 with no body
    store.status = 200

    # When
    submission = _submit(artifact, store.url)

    # Then
    assert submission.uri == store.url
    assert submission.ref == ""


@pytest.mark.parametrize("status", [503, 500, 429, 408])
def test_submit_over_http_treats_overload_and_server_errors_as_transient(artifact, store, status):
    # Given a store answering with a retryable status
    store.status = status
    store.body = b"try again later"

    # When
    with pytest.raises(TransientJobError) as excinfo:
        _submit(artifact, store.url)

    # Then
    assert excinfo.value.code == "TARGET_UNAVAILABLE"
    assert str(status) in excinfo.value.detail
    assert "try again later" in excinfo.value.detail


@pytest.mark.parametrize("status", [400, 404, 409, 302])
def test_submit_over_http_treats_other_answers_as_permanent(artifact, store, status):
    # Given a store answering with a non-retryable status (a redirect too: it is not followed)
    store.status = status
    store.headers = {"Location": "http://127.0.0.1:9/elsewhere"}
    store.body = b"nope"

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, store.url)

    # Then
    assert excinfo.value.code == "TARGET_REJECTED"
    assert str(status) in excinfo.value.detail
    assert len(store.requests) == 1


def test_submit_over_http_treats_a_refused_connection_as_transient(artifact):
    # Given a port nothing listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    # When / Then
    with pytest.raises(TransientJobError) as excinfo:
        _submit(artifact, f"http://127.0.0.1:{port}/upload")
    assert excinfo.value.code == "TARGET_UNAVAILABLE"


def test_submit_over_http_treats_a_slow_answer_as_transient(artifact, store):
    # Given a store slower than the timeout
    store.delay = 2.5

    # When / Then
    with pytest.raises(TransientJobError) as excinfo:
        _submit(artifact, store.url, timeout=1)
    assert excinfo.value.code == "TARGET_UNAVAILABLE"


def test_submit_refuses_a_loopback_target_when_private_targets_are_not_allowed(artifact, store):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, store.url, allow_private=False)
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert store.requests == []


def test_submit_refuses_an_unsupported_scheme(artifact):
    # When / Then
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, "ftp://example.com/upload")
    assert excinfo.value.code == "TARGET_INVALID"


def _fail_if_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("must not be called")


# --- the address is checked where the connection opens -------------------------


def test_submit_refuses_a_name_that_resolves_to_loopback_by_the_time_it_connects(
    artifact, store, monkeypatch
):
    # Given a name that resolves to a public address when checked, then to the local store (DNS rebinding)
    port = int(store.url.split(":")[2].split("/")[0])
    monkeypatch.setattr(socket, "getaddrinfo", rebinding_resolver("93.184.216.34", "127.0.0.1"))

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, f"http://store.example.com:{port}/upload", allow_private=False)

    # Then nothing reached the local server
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert "non-public address" in excinfo.value.detail
    assert store.requests == []


@pytest.mark.parametrize("address", ["::1.2.3.4", "fec0::1", "192.88.99.1"])
def test_submit_refuses_at_connect_time_what_the_address_policy_refuses(artifact, monkeypatch, address):
    # Given a name that resolves to a public address when checked, then to an address that the
    # service's policy refuses (and requests-hardened's own filter lets through, or refuses alone)
    monkeypatch.setattr(socket, "getaddrinfo", rebinding_resolver("93.184.216.34", address))

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, "http://store.example.com/upload", allow_private=False)

    # Then the connection is refused for its address, before any packet leaves
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert "non-public address" in excinfo.value.detail


@pytest.fixture
def trusted_store_name(monkeypatch):
    """`store.example.com` is let through to the local server, as a public store would be; any other
    name or address meets the real connection-time check."""
    adapter_module = importlib.import_module("requests_hardened.ip_filter_adapter")
    real_filter = adapter_module.filter_host

    def filter_host(hostname: str, port: int, *, allow_loopback: bool) -> str:
        if hostname == "store.example.com":
            return "127.0.0.1"
        return str(real_filter(hostname, port, allow_loopback=allow_loopback))

    real_getaddrinfo = socket.getaddrinfo
    public = resolver("93.184.216.34")

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return (public if host == "store.example.com" else real_getaddrinfo)(host, *args, **kwargs)

    real_check = network.check_pinned

    def check_pinned(url: str, address: Any) -> None:
        if urlsplit(url).hostname != "store.example.com":
            real_check(url, address)

    monkeypatch.setattr(adapter_module, "filter_host", filter_host)
    monkeypatch.setattr(network, "check_pinned", check_pinned)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class RedirectingStore(ScriptedReceiver):
    """POST /upload answers `status` with `headers` (its Location); a POST elsewhere stores the archive."""

    def answer(self, request: Request) -> Answer:
        if request.path == "/upload":
            return Answer(self.status, b"", self.headers)
        return Answer(201)


@pytest.fixture
def redirecting_store() -> Iterator[RedirectingStore]:
    with RedirectingStore(path="", status=307) as fake:
        yield fake


def test_submit_follows_a_307_to_an_allowed_host_and_sends_the_archive_again(
    artifact, redirecting_store, trusted_store_name
):
    # Given a store that moved its upload endpoint, temporarily
    port = redirecting_store.url.rsplit(":", 1)[1]
    redirecting_store.headers = {"Location": f"http://store.example.com:{port}/final"}

    # When
    submission = _submit(artifact, f"http://store.example.com:{port}/upload", allow_private=False)

    # Then both hops got the whole archive, and the submission names where it landed
    first, second = redirecting_store.requests
    assert (first.path, second.path) == ("/upload", "/final")
    assert first.body == second.body == artifact.path.read_bytes()
    assert second.headers["Idempotency-Key"] == PUBLISHING_ID
    assert submission.uri == f"http://store.example.com:{port}/final"


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{port}/final",
        "http://localhost:{port}/final",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_submit_checks_a_redirect_again_and_refuses_one_into_the_workers_network(
    artifact, redirecting_store, trusted_store_name, location
):
    # Given a public store that redirects to a loopback or cloud-metadata address
    port = redirecting_store.url.rsplit(":", 1)[1]
    redirecting_store.headers = {"Location": location.format(port=port)}

    # When
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, f"http://store.example.com:{port}/upload", allow_private=False)

    # Then the redirect was refused before any connection: only the first hop was reached
    assert excinfo.value.code == "TARGET_NOT_ALLOWED"
    assert [request.path for request in redirecting_store.requests] == ["/upload"]


def test_submit_does_not_follow_a_redirect_that_would_turn_the_upload_into_a_get(
    artifact, redirecting_store, trusted_store_name
):
    # Given a store answering 302 (requests would re-send it as a GET, without the archive)
    port = redirecting_store.url.rsplit(":", 1)[1]
    redirecting_store.status = 302
    redirecting_store.headers = {"Location": f"http://store.example.com:{port}/final"}

    # When / Then the answer is judged as it is
    with pytest.raises(PermanentJobError) as excinfo:
        _submit(artifact, f"http://store.example.com:{port}/upload", allow_private=False)
    assert excinfo.value.code == "TARGET_REJECTED"
    assert "answered 302" in excinfo.value.detail
    assert len(redirecting_store.requests) == 1
