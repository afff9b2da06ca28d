"""An S3 API on loopback for the s3:// store's tests: moto's standalone server, and a proxy in front of it.

moto answers the S3 API as AWS does, but it does not verify `x-amz-checksum-sha256` against the body
(AWS, MinIO and R2 do). `S3Proxy` does, answering a mismatch as AWS does (400 BadDigest), and it can
answer scripted errors (a 503 SlowDown, a 403 AccessDenied) before passing requests on.

Fixtures (registered by tests/conftest.py): `s3_server` (the session's moto server),
`s3_credentials` (test credentials in the environment, nothing from ~/.aws), `s3_bucket` (a bucket
of the test's own), `s3_proxy` (a proxy in front of the server).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import boto3
import pytest

from tests.fakes import start_http_server, stop_http_server

# Credentials moto accepts; set in the environment, where the store finds them as in production.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Nothing from this machine's ~/.aws, and no wait on an instance-metadata endpoint.
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class MotoServer:
    """moto's S3 (and every other service) on a free loopback port, in a thread of this process."""

    def __init__(self) -> None:
        # Imported here: moto's server (Flask and every service's models) takes a second to import, and
        # every test session registers these fixtures.
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def __enter__(self) -> Self:
        # werkzeug logs every request moto serves at INFO.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop()


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 client of `endpoint_url`, for a test to look at what the store wrote."""
    return boto3.session.Session(
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=endpoint_url)


def error_body(code: str, message: str) -> bytes:
    """An S3 error document, as S3 answers a refused request."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<RequestId>test</RequestId></Error>"
    ).encode()


@dataclass(frozen=True)
class Scripted:
    """An error answer the proxy gives the next request of `method` instead of passing it on."""

    method: str
    status: int
    code: str
    message: str = "scripted by the test"


@dataclass
class S3Proxy:
    """Passes every request on to `upstream`, after checking a PUT's SHA-256 as S3 does and answering
    what `script` says first. `seen` holds (method, path, headers) of every request."""

    upstream: str
    script: list[Scripted] = field(default_factory=list)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None

    def scripted(self, method: str) -> Scripted | None:
        with self.lock:
            for index, entry in enumerate(self.script):
                if entry.method == method:
                    return self.script.pop(index)
        return None

    def requests(self, method: str) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            return [(path, headers) for seen_method, path, headers in self.seen if seen_method == method]

    def start(self) -> Self:
        proxy = self
        upstream = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1: boto3 sends `Expect: 100-continue` with a PUT and waits for the answer.
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                with proxy.lock:
                    proxy.seen.append((self.command, self.path, headers))
                if entry := proxy.scripted(self.command):
                    self._answer(entry.status, error_body(entry.code, entry.message), {})
                    return
                claimed = self.headers.get("x-amz-checksum-sha256")
                actual = base64.b64encode(hashlib.sha256(body).digest()).decode()
                if self.command == "PUT" and claimed and claimed != actual:
                    message = "The SHA256 you specified did not match the calculated checksum."
                    self._answer(400, error_body("BadDigest", message), {})
                    return
                connection = http.client.HTTPConnection(upstream.hostname or "", upstream.port, timeout=30)
                try:
                    forwarded = {k: v for k, v in headers.items() if k.lower() != "expect"}
                    connection.request(self.command, self.path, body=body or None, headers=forwarded)
                    answer = connection.getresponse()
                    data = answer.read()
                    passed = {
                        k: v
                        for k, v in answer.getheaders()
                        if k.lower()
                        not in ("transfer-encoding", "connection", "content-length", "date", "server")
                    }
                    if self.command == "HEAD":
                        passed["Content-Length"] = answer.getheader("Content-Length", "0")
                    self._answer(answer.status, data, passed)
                finally:
                    connection.close()

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server, self.url = start_http_server(Handler)
        return self

    def close(self) -> None:
        if self._server is not None:
            stop_http_server(self._server)
            self._server = None


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test credentials in this process's environment, and no proxy between it and loopback."""
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in (
        *PROXY_VARIABLES,
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    return dict(TEST_CREDENTIALS)


@pytest.fixture
def s3_bucket(s3_server: MotoServer, s3_credentials: dict[str, str]) -> str:
    """A bucket of this test's own on the session's moto server."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client(s3_server.url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_proxy(s3_server: MotoServer) -> Iterator[S3Proxy]:
    proxy = S3Proxy(upstream=s3_server.url).start()
    yield proxy
    proxy.close()
