"""Real processes for integration tests: a gunicorn web server and a rundramatiq worker."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from publishing.redis_server import free_port
from tests.support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# PUBLISHING_BROKER_SOCKET_TIMEOUT in the tests of a broker that is down or hangs: a request that
# touched the broker then took at least this long.
SHORT_SOCKET_TIMEOUT = 2.0
# How long a stack's processes get to exit (and save their coverage data) when the suite measures coverage.
COVERAGE_SHUTDOWN_S = 6.0


def artifacts(store: Path) -> list[Path]:
    """The archives a file:// store holds (`<owner>/<project>/<publishing>.tar.gz`)."""
    return sorted(store.glob("*/*/*.tar.gz"))


# What the tests' processes run with, whichever starts them (a Stack, runlocal).
TEST_SETTINGS = {
    # Tests keep their file:// stores in their temporary folders.
    "PUBLISHING_FILE_STORE_ROOTS": tempfile.gettempdir(),
    "PUBLISHING_MIN_BACKOFF_MS": "200",
    "PUBLISHING_MAX_BACKOFF_MS": "1000",
    "PUBLISHING_BROKER_COOLDOWN": "1",
    # Off unless a test is about it: the default 5/60s would pace every test.
    "PUBLISHING_RATE_LIMIT": "0",
    # The API's per-user throttle on initiate, likewise, and the login throttle.
    "PUBLISHING_INITIATE_RATE": "0",
    "LOGIN_FAILURES_PER_USERNAME": "0",
    "LOGIN_FAILURES_PER_ADDRESS": "0",
    # Off unless a test scrapes it: workers would fight over port 9191.
    "WORKER_METRICS_PORT": "0",
    "PYTHONUNBUFFERED": "1",
}


class Stack:
    """Web and worker processes sharing the test database and one Redis."""

    def __init__(
        self,
        *,
        database_url: str,
        broker_url: str,
        redis_url: str,
        namespace: str,
        workdir: Path,
        **extra_env: str,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        # Not below pytest's tmp_path, which only root may enter: a sandboxed build's uid binds its
        # checkout from here.
        self.workspaces = Path(tempfile.mkdtemp(prefix="publisher-stack-"))
        self.workspaces.chmod(0o711)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "publisher_project.settings.local",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BROKER_URL": broker_url,
            "BROKER_NAMESPACE": namespace,
            "VAR_DIR": str(workdir / "var"),
            "PUBLISHING_WORKSPACE_DIR": str(self.workspaces),
            **TEST_SETTINGS,
            **extra_env,
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str], **extra_env: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_web(self, *, workers: int = 1) -> None:
        """Start gunicorn (`workers` processes of 4 threads each) and wait until it answers."""
        self._spawn("web", [
            str(BIN / "gunicorn"), "publisher_project.wsgi",
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--threads", "4",
            "--graceful-timeout", "5",
        ])  # fmt: skip

        def answers() -> bool:
            try:
                requests.get(f"{self.base_url}/api/v1/health", timeout=2)
            except requests.RequestException:
                self._check_alive("web")
                return False
            return True

        wait_until(answers, 60, lambda: f"web did not start:\n{self.logs('web')}", interval=0.1)

    def start_worker(self, *, processes: int = 1, threads: int = 2, name: str = "worker", **env: str) -> None:
        """Start `manage.py rundramatiq` (its shutdown timeout from the settings, as in production)."""
        argv = [sys.executable, "manage.py", "rundramatiq", "--processes", str(processes)]
        self._spawn(name, [*argv, "--threads", str(threads)], **env)

    def signal(self, name: str, signum: int, *, group: bool = False) -> None:
        process = self.processes[name]
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)

    def wait_exit(self, name: str, timeout: float) -> float:
        """Wait for a process to exit; return how long it took."""
        started = time.monotonic()
        self.processes[name].wait(timeout=timeout)
        return time.monotonic() - started

    def get(self, session: requests.Session, publishing_id: str) -> dict[str, Any]:
        response = session.get(f"{self.base_url}/api/v1/publishing/{publishing_id}", timeout=5)
        body: dict[str, Any] = response.json()
        return body

    def wait_until(
        self, session: requests.Session, publishing_id: str, predicate: Any, *, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll the publishing until `predicate(body)` holds."""
        body: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            nonlocal body
            body = self.get(session, publishing_id)
            return body if predicate(body) else None

        return wait_until(
            reached,
            timeout,
            lambda: f"publishing {publishing_id} never got there: {body}\n{self.all_logs()}",
            interval=0.1,
        )

    def all_logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.logs(name)}" for name in self.processes)

    def _check_alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.logs(name)}")

    def logs(self, name: str, *, tail: int | None = 5000) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:] if tail else text

    def stop(self) -> None:
        # Killed, not shut down: a graceful stop costs 3 to 4 s a stack, and
        # what the processes leave behind (Redis keys, RabbitMQ queues, rows)
        # goes with the test's namespace, queues and database. Tests of
        # shutdown send their own signals.
        if os.environ.get("COVERAGE_PROCESS_CONFIG"):
            # Under coverage (`make test`), a SIGTERM first: a process saves its measurements as it
            # exits, and a SIGKILLed one loses them. Whatever is still running after a moment is killed.
            self._terminate(within=COVERAGE_SHUTDOWN_S)
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            process.wait()
        shutil.rmtree(self.workspaces, ignore_errors=True)

    def _terminate(self, *, within: float) -> None:
        running = [process for process in self.processes.values() if process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + within
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))

    def api(self, token: str) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        return session

    def serve(self, token: str, *, worker: bool = True) -> requests.Session:
        """Start the web server (and a worker); return an API session for `token`'s user."""
        self.start_web()
        if worker:
            self.start_worker()
        return self.api(token)

    def initiate(self, session: requests.Session, project_id: object) -> requests.Response:
        return session.post(
            f"{self.base_url}/api/v1/publishing/initiate", json={"project_id": str(project_id)}, timeout=30
        )

    def timed_initiate(
        self, session: requests.Session, project_id: object
    ) -> tuple[requests.Response, float]:
        """`initiate`, and how long its answer took."""
        started = time.monotonic()
        response = self.initiate(session, project_id)
        return response, time.monotonic() - started

    def initiate_until_accepted(
        self, session: requests.Session, project_id: object, *, timeout: float = 30
    ) -> requests.Response:
        """Initiate until the answer is 202 (the broker back, its circuit closed again)."""
        last: list[requests.Response] = []

        def accepted() -> requests.Response | None:
            last[:] = [self.initiate(session, project_id)]
            return last[0] if last[0].status_code == 202 else None

        return wait_until(
            accepted, timeout, lambda: f"never accepted: {last[0].text if last else ''}", interval=0.3
        )

    def wait_for(
        self, session: requests.Session, publishing_id: str, *, timeout: float = 90
    ) -> dict[str, Any]:
        """Poll the publishing until it is terminal and so is its last attempt; fail with the logs if it
        never is. (The worker records the publishing's end, then its attempt's, in two transactions.)"""
        terminal = {"published", "failed", "cancelled"}

        def ended(body: dict[str, Any]) -> bool:
            attempts = body.get("attempt_history") or []
            return body.get("status") in terminal and all(a.get("outcome") != "running" for a in attempts)

        return self.wait_until(session, publishing_id, ended, timeout=timeout)
