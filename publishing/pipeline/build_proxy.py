"""The way out of a sandboxed build's empty network namespace, for PUBLISHING_BUILD_NETWORK=public.

A build with `public` network still has no route anywhere: it reaches the world only through an
HTTP proxy (`HTTP_PROXY`/`HTTPS_PROXY` at 127.0.0.1:PROXY_PORT inside the sandbox, relayed to this
proxy's Unix socket, which is all the sandbox is given of the worker). For every connection the
proxy resolves the host itself and connects only to the addresses it judged public, with the same
policy as the service's own outbound HTTP (`network.check_host`): never loopback, private,
link-local, CGNAT, 6to4, multicast, metadata or any other non-global address, whatever name or
spelling points there, and no re-resolution in between (no DNS rebinding). A process of the build
that ignores the proxy reaches nothing at all.

`CONNECT host:port` (HTTPS) and plain-HTTP requests in absolute form (`GET http://host/path`, one
request per connection) to ports 80 and 443 are served; a refusal answers 403 with the reason,
which git, curl, pip and npm print.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from publishing.exceptions import JobError, PermanentJobError
from publishing.pipeline.network import check_host

logger = logging.getLogger(__name__)

# Inside the sandbox, on its own loopback: where the relay listens for the build's clients.
PROXY_PORT = 3128
HEAD_LIMIT = 16 * 1024
# Waits for a client's request head, and for a connection to a remote host.
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
# Connections one build may hold open through the proxy at once.
MAX_CONNECTIONS = 64
CHUNK = 64 * 1024
# A connection idle this long in both directions is closed: none outlives its build for long.
IDLE_TIMEOUT = 300.0
# HTTP and HTTPS: what package registries, git hosts and CDNs serve on. Not mail, not scans.
PORTS = frozenset({80, 443})


def public_addresses(host: str) -> tuple[str, ...]:
    """The public addresses of `host` to connect to; JobError when there is none to allow."""
    return check_host(host, allow_private=False, code="BUILD_NETWORK_REFUSED", resolve=True)


class BuildProxy:
    """One build's proxy, on a Unix socket at `path` that only `uid` (the build's) may connect to."""

    def __init__(
        self,
        path: Path,
        *,
        uid: int,
        gid: int,
        resolve: Callable[[str], tuple[str, ...]] | None = None,
        ports: frozenset[int] | None = None,
    ) -> None:
        self.path = path
        self._uid, self._gid = uid, gid
        self._resolve = resolve if resolve is not None else public_addresses
        self._ports = ports if ports is not None else PORTS
        self._listener: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def __enter__(self) -> BuildProxy:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chown(self.path, self._uid, self._gid)
            self.path.chmod(0o600)
            listener.listen(MAX_CONNECTIONS)
        except OSError as exc:
            listener.close()
            # A path past the 107 bytes a Unix socket may have (a long PUBLISHING_WORKSPACE_DIR), or
            # something already there.
            raise PermanentJobError(
                f"cannot open the build proxy at {self.path}: {exc.strerror or exc}",
                code="SANDBOX_UNAVAILABLE",
            ) from exc
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        threading.Thread(
            target=self._accept, name=f"build-proxy-{self.path.parent.name}", daemon=True
        ).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        assert self._listener is not None  # noqa: S101 - set before the thread starts
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                _answer(client, 503, "the build has too many connections open through the proxy")
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._open.add if add else self._open.discard)(conn)

    def _serve(self, client: socket.socket) -> None:
        remote: socket.socket | None = None
        self._track(client, add=True)
        try:
            client.settimeout(HEAD_TIMEOUT)
            head = _read_head(client)
            if head is None:
                _answer(client, 400, "no complete request head")
                return
            method, target, rest = _parse(head)
            if method is None:
                _answer(client, 400, "expected CONNECT host:port or an absolute http:// URL")
                return
            host, port = target
            try:
                addresses = self._resolve(host)
            except JobError as exc:
                logger.info("Build proxy refused %s %s:%s: %s", method, host, port, exc.detail)
                _answer(client, 403 if exc.code == "BUILD_NETWORK_REFUSED" else 502, exc.detail)
                return
            except Exception:
                logger.exception("Build proxy could not judge %s:%s", host, port)
                _answer(client, 502, f"could not judge {host}:{port}")
                return
            if port not in self._ports:
                allowed = ", ".join(map(str, sorted(self._ports)))
                _answer(client, 403, f"port {port} is not allowed (only {allowed})")
                return
            remote = _connect(addresses, port)
            if remote is None:
                _answer(client, 502, f"could not connect to {host}:{port}")
                return
            self._track(remote, add=True)
            if self._closed.is_set():
                return  # the build ended while this one connected
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                remote.sendall(rest)
            client.settimeout(IDLE_TIMEOUT)
            remote.settimeout(IDLE_TIMEOUT)
            other = threading.Thread(target=_pipe, args=(client, remote), daemon=True)
            other.start()
            _pipe(remote, client)
            other.join()
        except OSError:
            pass  # the build or the remote hung up
        finally:
            for conn in (client, remote):
                if conn is not None:
                    self._track(conn, add=False)
                    conn.close()
            self._slots.release()


def _read_head(client: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            return None
        chunk = client.recv(CHUNK)
        if not chunk:
            return None
        data += chunk
    return data


def _parse(head: bytes) -> tuple[str | None, tuple[str, int], bytes]:
    """(method, (host, port), what to send on) of a proxy request; method None when it is none."""
    header_block, _, body = head.partition(b"\r\n\r\n")
    request_line, _, headers = header_block.partition(b"\r\n")
    try:
        method, target, version = request_line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return None, ("", 0), b""
    if method == "CONNECT":
        host, _, digits = target.rpartition(":")
        if not digits.isdigit() or not host:
            return None, ("", 0), b""
        return method, (host.strip("[]"), int(digits)), b""
    parts = urlsplit(target)
    try:
        port = parts.port or 80
    except ValueError:
        return None, ("", 0), b""
    if parts.scheme != "http" or not parts.hostname:
        return None, ("", 0), b""
    # One request per connection: a keep-alive request to another host must not reach this one.
    kept = [
        line
        for line in headers.split(b"\r\n")
        if line and not line.lower().startswith((b"connection:", b"proxy-"))
    ]
    origin = f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} {version}".encode()
    return method, (parts.hostname, port), b"\r\n".join([origin, *kept, b"Connection: close", b"", body])


def _connect(addresses: tuple[str, ...], port: int) -> socket.socket | None:
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
        except OSError:
            continue
    return None


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _answer(client: socket.socket, status: int, reason: str) -> None:
    phrase = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    body = f"Publisher's build network: {reason}\n".encode()
    with contextlib.suppress(OSError):
        client.sendall(
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )
