"""http(s):// store: what it sends and how it judges the answers, against a real local server; the address
policy where the connection opens."""

from __future__ import annotations

import importlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.pipeline import network
from publishing.pipeline.base import Artifact
from publishing.pipeline.stores.http import HttpStore
from tests.fakes import rebinding_resolver, resolver
from tests.support.http import Answer, Request, ScriptedReceiver
from tests.support.stores import COMMIT, ORIGIN, PUBLISHING_ID, make_artifact


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    # requests honours proxy variables; the local test server must be reached directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    return make_artifact(tmp_path / "pub.tar.gz")


def _submit(artifact: Artifact, target_url: str, *, allow_private: bool = True, timeout: int = 5) -> Any:
    store = HttpStore(allow_private=allow_private, timeout=timeout)
    return store.submit(artifact, target_url=target_url, publishing_id=PUBLISHING_ID, origin=ORIGIN)


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


def test_submit_over_http_names_the_commit_in_x_commit_sha_when_it_is_known(artifact, store, tmp_path):
    # Given an archive built from a known commit
    built = make_artifact(tmp_path / "built.tar.gz", commit=COMMIT)

    # When it and one of an unknown commit are submitted
    _submit(built, store.url)
    _submit(artifact, store.url)

    # Then the first request names the commit, the second has no such header
    first, second = store.requests
    assert first.headers["X-Commit-SHA"] == COMMIT.sha
    assert "X-Commit-SHA" not in second.headers


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
