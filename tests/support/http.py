"""A scripted HTTP receiver on loopback: a store, a webhook receiver or a git host that answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Self

from tests.fakes import start_http_server, stop_http_server
from tests.support.polling import wait_until


@dataclass(frozen=True)
class Request:
    """One request as the receiver got it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # The request line and headers as sent, then the body: what a leak check reads.
    raw: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Written chunk by chunk after the headers, with no Content-Length, in place of `body`: an
    # answer that never ends, say. The receiver's `cut_off` is set if the client hangs up on it.
    stream: Iterable[bytes] | None = None


class ScriptedReceiver:
    """Records every request; answers POSTs with `statuses` in turn, then `status` every time.

    The answer's body is `body`, or `error_body` (when given) for a status of 300 or more; `headers`
    go with every answer, after `delay` seconds. GETs are answered `get_status`. Tests change these
    attributes as they go; a subclass overrides `answer` for anything else. `url` is the base URL
    followed by `path`.
    """

    def __init__(
        self,
        *,
        path: str = "/",
        statuses: Iterable[int] = (),
        status: int = 200,
        body: bytes = b"",
        error_body: bytes | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        get_status: int = 404,
    ) -> None:
        self.path = path
        self.statuses = list(statuses)
        self.status = status
        self.body = body
        self.error_body = error_body
        self.headers = dict(headers or {})
        self.delay = delay
        self.get_status = get_status
        self.requests: list[Request] = []
        self.cut_off = threading.Event()
        self.lock = threading.Lock()
        self.base_url = ""
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def next_status(self) -> int:
        """The next scripted status, or `status` once they are spent."""
        with self.lock:
            return self.statuses.pop(0) if self.statuses else self.status

    def answer(self, request: Request) -> Answer:
        if request.method == "GET":
            return Answer(self.get_status)
        status = self.next_status()
        body = self.error_body if status >= 300 and self.error_body is not None else self.body
        return Answer(status, body, self.headers)

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._handle(b"")

            def do_POST(self) -> None:
                self._handle(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def _handle(self, body: bytes) -> None:
                raw = f"{self.requestline}\n{self.headers}\n{body.decode('latin-1')}"
                request = Request(self.command, self.path, dict(self.headers.items()), body, raw)
                with receiver.lock:
                    receiver.requests.append(request)
                answer = receiver.answer(request)
                time.sleep(receiver.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.stream is None:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                try:
                    for chunk in [answer.body] if answer.stream is None else answer.stream:
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    receiver.cut_off.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server, self.base_url = start_http_server(Handler)
        return self

    def close(self) -> None:
        if self._server is not None:
            stop_http_server(self._server)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def received(self, method: str = "POST") -> list[Request]:
        """The requests of `method` so far, oldest first."""
        with self.lock:
            return [request for request in self.requests if request.method == method]

    def wait_for(
        self, count: int, *, timeout: float = 30, context: Callable[[], str] = lambda: ""
    ) -> list[Request]:
        """The first `count` POSTs, once they came; AssertionError (with `context()`) if they never do."""
        return wait_until(
            lambda: (posts := self.received())[count - 1 : count] and posts,
            timeout,
            lambda: f"{len(self.received())} of {count} requests arrived\n{context()}",
        )
