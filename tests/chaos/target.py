"""The HTTP store the chaos publishings submit to: it records every POST and fails some first tries.

It honours `Idempotency-Key` (the publishing id) as Publisher expects of a
store: the first 2xx for a key is the one accepted submission; a later POST
with the same key and the same archive gets that answer again (a replay,
counted, never a second submission), with another archive a 422 (counted: the
suite calls it a duplicate). A replay is what a worker cut off between the
store's answer and its own record leads to: the two cannot be one
transaction, which is why the key exists.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes import start_http_server, stop_http_server


@dataclass
class TargetRecords:
    """What the target saw, per Idempotency-Key."""

    posts: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    replayed: Counter[str] = field(default_factory=Counter)
    conflicting: Counter[str] = field(default_factory=Counter)
    refused_503: Counter[str] = field(default_factory=Counter)
    # key -> checksums of the distinct artifacts stored for it
    artifacts: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    bad_requests: list[str] = field(default_factory=list)


class ChaosTarget:
    """A threaded HTTP server answering 503 to a fraction of first tries, 201 otherwise."""

    def __init__(self, *, fail_ratio: float, seed: int) -> None:
        self.fail_ratio = fail_ratio
        self.records = TargetRecords()
        self._rng = random.Random(seed)  # noqa: S311 - reproducible failures, not security
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> ChaosTarget:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = target.receive(
                    key=self.headers.get("Idempotency-Key", ""),
                    checksum=self.headers.get("X-Checksum-SHA256", ""),
                    body=body,
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # thousands of lines of noise otherwise

        self._server, base = start_http_server(Handler)
        self.url = f"{base}/store"
        return self

    def receive(self, *, key: str, checksum: str, body: bytes) -> tuple[int, dict[str, str]]:
        """Record one POST; the status and JSON body to answer."""
        actual = hashlib.sha256(body).hexdigest()
        with self._lock:
            records = self.records
            if not key or checksum != actual:
                records.bad_requests.append(f"key={key!r} checksum={checksum!r} actual={actual}")
                return 400, {"detail": "Idempotency-Key and a matching X-Checksum-SHA256 are required."}
            records.posts[key] += 1
            if records.posts[key] == 1 and self._rng.random() < self.fail_ratio:
                records.refused_503[key] += 1
                return 503, {"detail": "Store busy, try again."}
            answer = {"id": f"sub-{key}", "uri": f"{self.url}/{key}.tar.gz"}
            if records.accepted[key]:
                if actual not in records.artifacts[key]:
                    records.conflicting[key] += 1
                    return 422, {"detail": "This Idempotency-Key was used for another artifact."}
                records.replayed[key] += 1
                return 200, answer
            records.accepted[key] += 1
            records.artifacts[key].add(actual)
            return 201, answer

    def stop(self) -> None:
        if self._server is not None:
            stop_http_server(self._server)
            self._server = None
