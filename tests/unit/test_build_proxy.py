"""The build proxy: a sandboxed build's only way out with `public` network, to public addresses only."""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from publishing.exceptions import PermanentJobError
from publishing.pipeline import build_proxy
from publishing.pipeline.build import run_build
from publishing.pipeline.build_proxy import BuildProxy
from publishing.pipeline.sandbox import SandboxPolicy
from publishing.pipeline.workspace import workspace
from tests.fakes import http_server


class Page(BaseHTTPRequestHandler):
    """Answers every GET with the request line and Connection header it got."""

    def do_GET(self) -> None:
        body = f"{self.requestline}|{self.headers.get('Connection')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_port() -> Iterator[int]:
    with http_server(Page) as base_url:
        yield int(base_url.rsplit(":", 1)[1])


PUBLIC_ADDRESSES = build_proxy.public_addresses
# The test servers listen on free ports, not on 80 or 443.
ANY_PORT = frozenset(range(1, 65536))


def _allowed(host: str) -> tuple[str, ...]:
    """A resolver that stands in for the public internet: `public.test` is this machine."""
    if host == "public.test":
        return ("127.0.0.1",)
    return PUBLIC_ADDRESSES(host)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[BuildProxy]:
    with BuildProxy(
        tmp_path / "proxy.sock", uid=os.getuid(), gid=os.getgid(), resolve=_allowed, ports=ANY_PORT
    ) as running:
        yield running


def _ask(proxy: BuildProxy, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(proxy.path))
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:6379", "localhost:5432", "[::1]:8000", "169.254.169.254:80", "10.0.0.1:22", "100.64.0.1:80"],
)
def test_the_proxy_refuses_every_non_public_address(proxy, target):
    # When a build asks for a tunnel to the host's services, the metadata address or a private network
    answer = _ask(proxy, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())

    # Then it is refused with the reason
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"local and not allowed" in answer or b"non-public address and not allowed" in answer


@pytest.mark.parametrize(
    "address", ["2002:a9fe:a9fe::1", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe", "::ffff:127.0.0.1"]
)
def test_the_proxy_refuses_ipv6_spellings_of_non_public_ipv4_addresses(proxy, address):
    answer = _ask(proxy, f"CONNECT [{address}]:443 HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")


def test_the_proxy_refuses_a_name_for_a_local_address_in_a_plain_request(proxy):
    answer = _ask(proxy, b"GET http://localhost:80/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"host 'localhost' is local and not allowed" in answer


def test_the_proxy_refuses_ports_other_than_http_and_https(tmp_path, page_port):
    # Given the production port list, and a public host
    with BuildProxy(tmp_path / "proxy.sock", uid=os.getuid(), gid=os.getgid(), resolve=_allowed) as proxy:
        # When a build asks for SMTP, or any other port
        answers = [
            _ask(proxy, f"CONNECT public.test:{port} HTTP/1.1\r\n\r\n".encode()) for port in (25, page_port)
        ]

    # Then both are refused, saying which ports are open
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert b"is not allowed (only 80, 443)" in answer


def test_the_proxy_tunnels_to_a_public_address(proxy, page_port):
    # When a build asks for a tunnel to a public host, then speaks HTTP through it
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(proxy.path))
        client.sendall(f"CONNECT public.test:{page_port} HTTP/1.1\r\n\r\n".encode())
        assert client.recv(1024) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        client.sendall(b"GET /through HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk

    # Then the remote answered through it
    assert answer.startswith(b"HTTP/1.0 200")
    assert answer.endswith(b"GET /through HTTP/1.1|close")


def test_the_proxy_forwards_one_plain_http_request_in_origin_form(proxy, page_port):
    # When a build sends a plain-HTTP request in absolute form, asking to keep the connection
    answer = _ask(
        proxy,
        f"GET http://public.test:{page_port}/a?b=1 HTTP/1.1\r\nHost: public.test\r\n"
        "Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\n\r\n".encode(),
    )

    # Then the remote saw the origin form, and one request per connection
    assert answer.endswith(b"GET /a?b=1 HTTP/1.1|close")


@pytest.mark.parametrize(
    "request_line", [b"GET /relative HTTP/1.1", b"CONNECT nowhere HTTP/1.1", b"\xff\xfe"]
)
def test_the_proxy_answers_anything_else_with_400(proxy, request_line):
    assert _ask(proxy, request_line + b"\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_a_sandboxed_build_with_public_network_goes_out_only_through_the_proxy(
    sandbox_required, monkeypatch, page_port
):
    # Given a build that fetches a public page through its proxy, then tries the host directly
    # and through the proxy
    monkeypatch.setattr(build_proxy, "public_addresses", _allowed)
    monkeypatch.setattr(build_proxy, "PORTS", ANY_PORT)
    script = f"""
import os, socket, urllib.request
print("proxy", os.environ["HTTP_PROXY"])
print("public", urllib.request.urlopen("http://public.test:{page_port}/page", timeout=10).read().decode())
try:
    socket.create_connection(("127.0.0.1", {page_port}), timeout=5)
    print("direct open")
except OSError as exc:
    print("direct", exc.strerror)
proxy = socket.create_connection(("127.0.0.1", 3128), timeout=10)
proxy.sendall(b"CONNECT 127.0.0.1:{page_port} HTTP/1.1\\r\\n\\r\\n")
print("proxied host", proxy.recv(1024).split(b"\\r\\n")[0].decode())
"""
    output: list[str] = []

    # When it runs in the sandbox with `public` network
    with workspace() as folder:
        (folder / "source").mkdir()
        run_build(
            shlex.join(["python3", "-c", script]),
            cwd=folder / "source",
            timeout=60,
            output_limit=64 * 1024,
            on_output=output.append,
            sandbox=SandboxPolicy(mode="required", network="public"),
        )
        socket_left = (folder / "proxy.sock").exists()

    # Then only the public page answered
    assert "".join(output).splitlines() == [
        "proxy http://127.0.0.1:3128",
        "public GET /page HTTP/1.1|close",
        "direct Connection refused",
        "proxied host HTTP/1.1 403 Forbidden",
    ]
    assert not socket_left


def test_a_build_with_public_network_fails_when_it_cannot_bind_the_proxy(tmp_path, sandbox_required):
    # Given a checkout whose workspace already holds something at the proxy's socket path
    with workspace() as folder:
        (folder / "source").mkdir()
        (folder / "proxy.sock").mkdir()

        # When / Then the build does not start, with an error that says why
        with pytest.raises(PermanentJobError) as excinfo:
            run_build(
                "true",
                cwd=folder / "source",
                timeout=10,
                output_limit=1024,
                on_output=lambda text: None,
                sandbox=SandboxPolicy(mode="required", network="public"),
            )
        assert excinfo.value.code == "SANDBOX_UNAVAILABLE"
        assert "build proxy" in excinfo.value.detail


def test_refusals_are_permanent_job_errors_with_their_code():
    with pytest.raises(PermanentJobError) as excinfo:
        build_proxy.public_addresses("127.0.0.1")
    assert excinfo.value.code == "BUILD_NETWORK_REFUSED"


def test_the_proxy_answers_a_build_that_hangs_up_mid_request_with_400(proxy):
    # Given a build that sends half a request head and closes its side
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(proxy.path))
        client.sendall(b"GET http://public.test/ HTTP/1.1\r\nHost: public.test\r\n")
        client.shutdown(socket.SHUT_WR)

        # When it reads the answer
        answer = client.recv(65536)

    # Then the proxy says what was missing rather than waiting for the rest
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"no complete request head\n")


def test_the_proxy_refuses_a_request_head_over_its_size_limit(proxy):
    # Given a head that never ends, one byte past the limit (all of it read, so no reset)
    start = b"GET http://public.test/ HTTP/1.1\r\nX-Padding: "
    request = start + b"a" * (build_proxy.HEAD_LIMIT + 1 - len(start))

    # When / Then it is refused at once, not after the head timeout
    answer = _ask(proxy, request)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"no complete request head\n")


def test_the_proxy_answers_502_when_no_address_of_the_host_accepts(proxy):
    # Given a public host whose port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    # When
    answer = _ask(proxy, f"CONNECT public.test:{closed_port} HTTP/1.1\r\n\r\n".encode())

    # Then
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert answer.endswith(f"could not connect to public.test:{closed_port}\n".encode())


def test_the_proxy_refuses_connections_past_its_limit_with_503(tmp_path, monkeypatch):
    # Given a proxy that allows one connection at a time, and a build holding that one open
    monkeypatch.setattr(build_proxy, "MAX_CONNECTIONS", 1)
    with (
        BuildProxy(tmp_path / "proxy.sock", uid=os.getuid(), gid=os.getgid(), resolve=_allowed) as proxy,
        socket.socket(socket.AF_UNIX) as holder,
    ):
        holder.connect(str(proxy.path))

        # When the build opens another (the answer comes before any request: nothing is read)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(proxy.path))
            answer = client.recv(65536)

    # Then that one is refused with the reason
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert answer.endswith(b"the build has too many connections open through the proxy\n")


def test_the_end_of_the_build_closes_the_tunnels_it_left_open(tmp_path, page_port):
    # Given a build's tunnel to a public host, open and idle
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        with BuildProxy(
            tmp_path / "proxy.sock", uid=os.getuid(), gid=os.getgid(), resolve=_allowed, ports=ANY_PORT
        ) as proxy:
            client.connect(str(proxy.path))
            client.sendall(f"CONNECT public.test:{page_port} HTTP/1.1\r\n\r\n".encode())
            assert client.recv(1024) == b"HTTP/1.1 200 Connection established\r\n\r\n"

        # When the build ends (the proxy closes) / Then the tunnel ends too, not at the idle timeout
        assert client.recv(1024) == b""
