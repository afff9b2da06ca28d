"""What `bench.e2e` runs beside Publisher: the shell script it is compared with, an HTTP store on
loopback, and the samplers of memory and disk."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import group_memory, outside_memory, process_table
from bench.projects import Project
from publishing.redis_server import free_port

# The system's PATH, as in the build sandbox: the script's build then runs the same python3.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STEPS = ("checkout", "build", "package", "submit")

# The publishing's four steps as a person would script them; prints the time after each.
SCRIPT = r"""#!/usr/bin/env bash
# usage: publish.sh REPOSITORY BRANCH WORK TARGET ID (TARGET: file:///folder or http://...)
set -o errexit -o nounset -o pipefail
repository=$1 branch=$2 work=$3 target=$4 id=$5
now() { date +%s.%N; }
started=$(now)
git clone --quiet --depth 1 --single-branch --branch "$branch" "$repository" "$work/source"
cloned=$(now)
(cd "$work/source" && python3 build.py >"$work/build.log" 2>&1)
built=$(now)
tar --sort=name --mtime=@315532800 --owner=0 --group=0 --numeric-owner -C "$work/source/dist" -cf - . \
    | gzip -6 -n >"$work/$id.tar.gz"
packaged=$(now)
case "$target" in
    file://*) cp "$work/$id.tar.gz" "${target#file://}/$id.tar.gz" ;;
    # Expect: empty, as requests sends it: curl would wait a second for a 100 Continue the receiver
    # never sends.
    *) curl --fail --silent --show-error --output /dev/null -H "Content-Type: application/gzip" \
        -H "Expect:" -H "Idempotency-Key: $id" --data-binary "@$work/$id.tar.gz" "$target" ;;
esac
submitted=$(now)
echo "$started $cloned $built $packaged $submitted"
"""


@dataclass(frozen=True)
class ScriptRun:
    total_s: float
    steps_s: dict[str, float]
    artifact_bytes: int
    # What the run left on disk, for the disk report: the checkout without the build's output, the
    # build's output, the archive.
    checkout_bytes: int
    dist_bytes: int


def run_script(script: Path, project: Project, work: Path, target: str, name: str) -> ScriptRun:
    """Run the shell script once in the empty folder `work`, then remove what it left there."""
    work.mkdir(parents=True)
    started = time.perf_counter()
    answer = subprocess.run(
        ["bash", str(script), project.url, project.branch, str(work), target, name],
        env={**os.environ, "PATH": SYSTEM_PATH, "LC_ALL": "C"},
        capture_output=True,
        text=True,
        check=False,
    )
    total = time.perf_counter() - started
    if answer.returncode != 0:
        raise RuntimeError(f"the script failed ({answer.returncode}): {answer.stderr[-2000:]}")
    marks = [float(mark) for mark in answer.stdout.split()]
    steps = {step: marks[n + 1] - marks[n] for n, step in enumerate(STEPS)}
    dist = work / "source" / project.artifact_path
    sizes = (disk_usage(work / "source") - disk_usage(dist), disk_usage(dist))
    artifact = (work / f"{name}.tar.gz").stat().st_size
    shutil.rmtree(work)
    return ScriptRun(total, steps, artifact, *sizes)


def disk_usage(path: Path) -> int:
    """Bytes allocated to the files below `path` (du's figure); 0 for what vanishes meanwhile."""
    total = 0
    pending = [path]
    while pending:
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
    return total


class _Receiver(BaseHTTPRequestHandler):
    """Stores each POSTed body under the folder of its server, streamed, and answers where."""

    server: ReceivingServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        name = self.headers.get("Idempotency-Key", "upload").replace("/", "_")
        path = self.server.folder / f"{name}.tar.gz"
        with path.open("wb") as out:
            while length:
                chunk = self.rfile.read(min(length, 1024 * 1024))
                if not chunk:
                    break
                out.write(chunk)
                length -= len(chunk)
        body = json.dumps({"id": name, "uri": f"{self.server.url}/{name}.tar.gz"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the benchmark prints its own lines."""


class ReceivingServer(ThreadingHTTPServer):
    """An HTTP store on 127.0.0.1 that writes each upload to `folder`, served by a process of its own:
    in the benchmark's, it would share a GIL with the thread that polls Publisher's API, and only
    during Publisher's runs (the script's run with that thread waiting)."""

    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/store"
        super().__init__(("127.0.0.1", port), _Receiver)

    @contextlib.contextmanager
    def serving(self) -> Iterator[ReceivingServer]:
        server = multiprocessing.get_context("fork").Process(target=self.serve_forever, name="http-store")
        server.start()
        try:
            yield self
        finally:
            server.terminate()
            server.join()
            self.server_close()


@dataclass
class Samples:
    """(time.time(), value) pairs of a sampler, and its peak."""

    values: list[tuple[float, int]] = field(default_factory=list)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        """The highest value sampled between `start` and `end`; 0 if none was."""
        inside = [value for at, value in self.values if start <= at <= end]
        return max(inside, default=0)


class Sampler:
    """Samples the worker's process tree (RSS, KiB) and the workspace folder's disk use (bytes), in a
    thread, while a publishing runs; used apart from the timed rounds, which it would slow down."""

    def __init__(self, worker_pgid: int, workspace: Path, interval: float = 0.05) -> None:
        self.worker_pgid = worker_pgid
        self.workspace = workspace
        self.interval = interval
        self.rss_kib = Samples()
        self.disk_bytes = Samples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def tree_rss_kib(self) -> int:
        """RSS of the worker's process group and of what it started in sessions of its own (git, the
        build)."""
        table = process_table()
        own = group_memory(self.worker_pgid, table)
        outside = outside_memory(self.worker_pgid, table)
        return own.rss_kib + outside.rss_kib

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time()
            self.rss_kib.values.append((now, self.tree_rss_kib()))
            self.disk_bytes.values.append((now, disk_usage(self.workspace)))
