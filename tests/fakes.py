"""Stand-ins for what leaves the process: a scripted pipeline, local HTTP servers, a resolver."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from publishing.pipeline.base import Artifact, Commit, Job, Source, Submission
from publishing.pipeline.commits import COMMIT_ID


def resolver(*addresses: str) -> Callable[..., list[Any]]:
    """A `socket.getaddrinfo` under which every name resolves to `addresses`."""

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0))
            for a in addresses
        ]

    return getaddrinfo


def rebinding_resolver(first: str, then: str) -> Callable[..., list[Any]]:
    """A `socket.getaddrinfo` that answers `first` once, then `then` (DNS rebinding)."""
    answers = [resolver(first), resolver(then)]

    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        return (answers.pop(0) if len(answers) > 1 else answers[0])(*args, **kwargs)

    return getaddrinfo


def git_repository(path: Path, files: dict[str, str]) -> Path:
    """A local git repository at `path` with `files` (relative path -> text) in one commit on `main`."""
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(path)]
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "init"], check=True)
    return path


def start_http_server(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """Serve `handler` on a free loopback port from a thread; the server and its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop_http_server(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`start_http_server` for a `with` block: yields the base URL, stops the server after."""
    server, base_url = start_http_server(handler)
    try:
        yield base_url
    finally:
        stop_http_server(server)


def scripted_commit(job: Job) -> Commit:
    """The commit a stand-in checkout says it holds: the one asked for, or one per repository, ref and tag."""
    head = hashlib.sha1(f"{job.repository_url}@{job.ref}:".encode(), usedforsecurity=False).hexdigest()
    if COMMIT_ID.fullmatch(job.commit) and job.commit != head:
        return Commit(sha=job.commit, subject="The commit asked for", author="Ada <ada@example.invalid>")
    if job.commit in ("", head):
        return Commit(sha=head, subject=f"The head of {job.ref}", author="Ada <ada@example.invalid>")
    named = f"{job.repository_url}@{job.ref}:{job.commit}"
    sha = hashlib.sha1(named.encode(), usedforsecurity=False).hexdigest()
    return Commit(sha=sha, subject=f"The head of {job.ref}", author="Ada <ada@example.invalid>")


class ScriptedPipeline:
    """Each `submit` pops the next outcome: an exception to raise, or None to succeed."""

    submit_outcomes: ClassVar[deque[BaseException | None]] = deque()
    submitted: ClassVar[list[str]] = []
    runs: ClassVar[int] = 0
    # The job of every run, as the runner handed it over.
    jobs: ClassVar[list[Job]] = []

    @classmethod
    def reset(cls, *outcomes: BaseException | None) -> None:
        cls.submit_outcomes = deque(outcomes)
        cls.submitted = []
        cls.runs = 0
        cls.jobs = []

    def checkout(self, job: Job) -> Source:
        type(self).runs += 1
        type(self).jobs.append(job)
        source = job.workspace / "source"
        source.mkdir()
        (source / "index.html").write_text(f"<p>{job.publishing_id}</p>")
        job.log("checked out\n")
        return Source(path=source, commit=scripted_commit(job))

    def build(self, job: Job, source: Path) -> None:
        job.log("built\n")

    def package(self, job: Job, source: Path) -> Artifact:
        data = (source / "index.html").read_bytes()
        path = job.workspace / "artifact.tar.gz"
        path.write_bytes(data)
        return Artifact(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def submit(self, job: Job, artifact: Artifact) -> Submission:
        outcome = type(self).submit_outcomes.popleft() if type(self).submit_outcomes else None
        if outcome is not None:
            raise outcome
        type(self).submitted.append(job.publishing_id)
        return Submission(
            uri=f"memory://{job.origin.project_slug}/{job.publishing_id}", ref=job.publishing_id
        )
