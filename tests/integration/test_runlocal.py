"""`make run`'s command, `manage.py runlocal`: the whole service on one machine, and Ctrl-C stops it all.

Started as `make run` starts it (the local settings), on the test database, with a Redis that does not
answer, so that it starts its embedded one: in a log file, or through a pseudo-terminal as a person
sees it (pexpect), Ctrl-C included. Each start costs seconds: a test shares one where it can.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
import requests

from publishing.models import Project, Publishing
from publishing.redis_server import free_port
from tests.integration.runlocal import (
    ROOT,
    Runlocal,
    alive,
    healthy,
    local_env,
    manage,
    start_runlocal,
    worker_alive,
)
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def runlocal(database_url: str, namespace: str, tmp_path: Path) -> Iterator[Runlocal]:
    started = start_runlocal(
        database_url, tmp_path / "var", tmp_path / "runlocal.log", extra_env={"BROKER_NAMESPACE": namespace}
    )
    family: dict[int, str] = {}
    try:
        started.wait_healthy()
        family = started.family()
        yield started
    finally:
        started.kill(family)


def test_runlocal_serves_everything_on_an_embedded_redis_and_ctrl_c_stops_it_all(runlocal: Runlocal) -> None:
    # Given the service up on the embedded Redis that runlocal started
    assert "does not answer: started an embedded Redis" in runlocal.output()
    family = runlocal.family()
    assert len(family) >= 3, family

    # When the terminal's Ctrl-C reaches it
    runlocal.process.send_signal(signal.SIGINT)

    # Then it stops the worker and the web server, then its Redis, and exits 0 saying so
    assert runlocal.process.wait(timeout=90) == 0, runlocal.output()
    assert "\033[" not in runlocal.output(), "colours only on a terminal"
    assert "Stopped." in runlocal.output()
    wait_until(lambda: not alive(family), 10, lambda: f"still running: {alive(family)}")
    assert not runlocal.healthy()


def test_runlocal_stops_everything_when_its_terminal_closes(runlocal: Runlocal) -> None:
    # Given the service up, when its terminal closes (the shell's SIGHUP)
    family = runlocal.family()
    runlocal.process.send_signal(signal.SIGHUP)

    # Then it stops everything as on Ctrl-C
    assert runlocal.process.wait(timeout=30) == 0, runlocal.output()
    assert "Stopped." in runlocal.output()
    wait_until(lambda: not alive(family), 10, lambda: f"still running: {alive(family)}")


def test_a_killed_runlocal_leaves_no_worker_or_web_server_behind(runlocal: Runlocal) -> None:
    # Given the service up, when runlocal itself is killed (no chance to stop anything)
    def children() -> dict[int, str]:
        # (rundramatiq becomes publishing.worker_master once it has exec'd, a moment after it starts)
        return {
            pid: command
            for pid, command in runlocal.family().items()
            if "publishing.worker_master" in command or " runserver " in command
        }

    # the web server, the Dramatiq master and its worker process
    wait_until(lambda: len(children()) >= 3, 30, lambda: str(runlocal.family()), interval=0.2)
    started = children()
    runlocal.process.send_signal(signal.SIGKILL)
    runlocal.process.wait(timeout=10)

    # Then its worker and web server stop all the same
    wait_until(lambda: not alive(started), 30, lambda: f"still running: {alive(started)}")


def test_runlocal_stops_everything_when_a_child_dies_and_says_which(runlocal: Runlocal) -> None:
    # Given the service up, when its web server dies
    family = runlocal.family()
    (web,) = [pid for pid, command in family.items() if " runserver " in command]
    os.kill(web, signal.SIGKILL)

    # Then runlocal stops the rest, and fails naming the one that died
    assert runlocal.process.wait(timeout=90) == 1, runlocal.output()
    assert "web server exited unexpectedly; stopped everything" in runlocal.output()
    wait_until(lambda: not alive(family), 10, lambda: f"still running: {alive(family)}")


def test_runlocal_whose_reader_went_away_stops_everything_and_leaves_nothing_behind(
    database_url: str, namespace: str, tmp_path: Path
) -> None:
    # Given runlocal piped into a reader (`make run | head -40`), up
    started = start_runlocal(
        database_url,
        tmp_path / "var",
        tmp_path / "stderr",
        stdout=subprocess.PIPE,
        extra_env={"BROKER_NAMESPACE": namespace},
    )
    process = started.process
    family: dict[int, str] = {}
    try:
        assert process.stdout is not None
        while b"Publisher on http" not in process.stdout.readline():
            assert process.poll() is None
        started.wait_healthy()
        family = started.family()
        assert len(family) >= 3, family

        # When the reader goes away, and the processes write on (each request is a line of the web log)
        process.stdout.close()
        for _ in range(5):
            started.healthy()

        # Then runlocal stops its worker, its web server and its Redis, as on Ctrl-C (no crash, no
        # traceback), and exits: none is left behind
        assert process.wait(timeout=30) == 0, started.output()
        assert "Traceback" not in started.output()
        wait_until(lambda: not alive(family), 15, lambda: f"still running: {alive(family)}")
        assert not (tmp_path / "var" / "runlocal.json").exists()
    finally:
        started.kill(family)


# --- through a pseudo-terminal, as a person at a terminal sees it ----------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PREFIXED = re.compile(r"^(web|worker|redis) +\| ")


@dataclass
class Terminal:
    """runlocal in a pseudo-terminal: what it wrote so far, without colours, and its web port."""

    child: pexpect.spawn
    port: int

    def text(self) -> str:
        if not self.child.closed:
            with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
                self.child.read_nonblocking(1_000_000, timeout=0.1)
        return ANSI.sub("", self.child.logfile_read.getvalue().decode(errors="replace")).replace("\r", "")

    def healthy(self) -> bool:
        return healthy(self.port)

    def exits_within(self, seconds: float) -> float:
        """Wait for it to end; how long that took (fails past `seconds`)."""
        started = time.monotonic()
        with contextlib.suppress(pexpect.TIMEOUT):
            self.child.expect(pexpect.EOF, timeout=seconds)
        took = time.monotonic() - started
        if not self.child.isalive():
            self.child.close()
        return took


@pytest.fixture
def start_in_terminal(database_url: str, tmp_path: Path) -> Iterator[Callable[[], Terminal]]:
    """Start runlocal in a pseudo-terminal on a Redis that does not answer (so on its embedded one)."""
    import io

    started: list[Terminal] = []
    nobody_there = f"redis://127.0.0.1:{free_port()}/0"

    def start() -> Terminal:
        port = free_port()
        env = local_env(database_url, tmp_path / "var", REDIS_URL=nobody_there, BROKER_URL=nobody_there)
        child = pexpect.spawn(
            sys.executable, ["manage.py", "runlocal", "--port", str(port)], cwd=str(ROOT), env=env,
            dimensions=(50, 160),
        )  # fmt: skip
        child.logfile_read = io.BytesIO()
        terminal = Terminal(child, port)
        started.append(terminal)
        wait_until(lambda: terminal.healthy() or not child.isalive(), 90, terminal.text, interval=0.2)
        assert child.isalive(), terminal.text()
        wait_until(lambda: worker_alive(tmp_path / "var"), 60, terminal.text, interval=0.2)
        return terminal

    yield start
    for terminal in started:
        if terminal.child.isalive():
            # Everything it started is in its session's process groups: the pty's, and each child's.
            terminal.child.sendintr()
            terminal.child.sendintr()
            with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
                terminal.child.expect(pexpect.EOF, timeout=20)
            terminal.child.close(force=True)


def test_the_cli_finds_runlocals_broker_a_second_runlocal_refuses_and_the_screen_stays_readable(
    start_in_terminal: Callable[[], Terminal],
    make_project,
    owner_token: tuple[object, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    # Given make run's service up in a terminal, on the embedded Redis of its own choosing
    project = make_project(f"file://{tmp_path / 'var' / 'store'}")
    terminal = start_in_terminal()
    record = (tmp_path / "var" / "runlocal.json").read_text()
    assert f'"pid": {terminal.child.pid}' in record, record
    # and a second terminal that knows nothing of that Redis: no BROKER_URL, no REDIS_URL
    newcomer = local_env(database_url, tmp_path / "var")

    # When the newcomer publishes and waits for it
    published = manage(newcomer, "publish", project.slug, "--wait")

    # Then it ends published, through the broker that runlocal started
    assert published.returncode == 0, published.stdout + published.stderr + terminal.text()
    assert "SERVICE_UNAVAILABLE" not in published.stdout + published.stderr
    publishing = Publishing.objects.get(project=project)
    assert publishing.status == Publishing.Status.PUBLISHED

    # When the publishing page polls its log, as it does every 2 s
    _, token = owner_token
    for since in range(3):
        answer = requests.get(
            f"http://127.0.0.1:{terminal.port}/api/v1/publishing/{publishing.pk}/log?since={since}",
            headers={"Authorization": f"Token {token}"},
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
    # and a second runlocal is started on the same machine
    second = manage(newcomer, "runlocal", "--port", str(free_port()), timeout=60)

    # Then the second refuses, naming the first and its broker
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"runlocal already runs (pid {terminal.child.pid})" in second.stderr
    assert "redis://127.0.0.1:" in second.stderr
    # and the first screenful carries each process's name, no traceback and no poll in the request log
    screen = [line for line in terminal.text().splitlines() if line.strip()][:50]
    assert not [line for line in screen if "Traceback" in line or "Address already in use" in line], screen
    assert not [line for line in screen if "/log?since=" in line], screen
    assert any(line.startswith("redis  | ") for line in screen), screen
    assert any(line.startswith("worker | ") for line in screen), screen
    # (the request log is there all the same: the health checks that found the service up)
    assert any(line.startswith("web    | ") and "GET /api/v1/health" in line for line in screen), screen
    unnamed = [line for line in screen if not PREFIXED.match(line)]
    assert len(unnamed) <= 3, unnamed  # runlocal's own: where it serves, and how to stop it
    assert "\x1b[" in terminal.child.logfile_read.getvalue().decode(), (
        "the prefixes are coloured on a terminal"
    )

    # When Ctrl-C reaches it with nothing running
    terminal.child.sendintr()

    # Then it stops at once, saying so, and its record is gone
    assert terminal.exits_within(5) < 5, terminal.text()
    assert terminal.text().rstrip().endswith("Stopped."), terminal.text()
    assert not (tmp_path / "var" / "runlocal.json").exists()


def test_ctrl_c_twice_during_a_build_requeues_it_at_once_and_the_next_run_publishes_it_once(
    start_in_terminal: Callable[[], Terminal], make_project, database_url: str, tmp_path: Path
) -> None:
    # Given a build running under runlocal, started from a second terminal
    store = tmp_path / "var" / "store"
    project: Project = make_project(f"file://{store}", build_args="--sleep 8")
    terminal = start_in_terminal()
    queued = manage(local_env(database_url, tmp_path / "var"), "publish", project.slug)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    publishing = Publishing.objects.get(project=project)
    wait_until(lambda: _status(publishing) == Publishing.Status.BUILDING, 60, terminal.text)

    # When Ctrl-C reaches it
    terminal.child.sendintr()

    # Then it says how many jobs run, what becomes of them, and counts down
    terminal.child.expect(
        "Stopping: 1 job running; it gets up to 30 s to finish, then it is requeued", timeout=10
    )
    terminal.child.expect(r"requeued in \d+ s \(Ctrl-C: now\)", timeout=10)

    # When Ctrl-C reaches it again
    terminal.child.sendintr()

    # Then it requeues the build at once and is gone within 5 s
    assert terminal.exits_within(5) < 5, terminal.text()
    assert "Requeueing the running jobs now..." in terminal.text()
    assert terminal.text().rstrip().endswith("Stopped."), terminal.text()
    publishing.refresh_from_db()
    assert publishing.status == Publishing.Status.QUEUED, (publishing.status, publishing.error_message)
    assert not list(store.rglob("*.tar.gz"))

    # When make run starts again on the same machine
    again = start_in_terminal()

    # Then the requeued build runs again
    wait_until(lambda: _status(publishing) == Publishing.Status.BUILDING, 60, again.text)

    # When Ctrl-C reaches this one once, while it builds
    again.child.sendintr()

    # Then the build gets its grace period, ends in it, and is published once; then everything stops
    again.child.expect("Stopping: 1 job running", timeout=10)
    again.child.expect("The running jobs ended; the worker stops.", timeout=30)
    assert again.exits_within(10) < 10, again.text()
    assert again.text().rstrip().endswith("Stopped."), again.text()
    publishing.refresh_from_db()
    assert publishing.status == Publishing.Status.PUBLISHED, (publishing.status, publishing.error_message)
    assert publishing.attempts == 2
    assert len(list(store.rglob("*.tar.gz"))) == 1


def _status(publishing: Publishing) -> str:
    status: str = Publishing.objects.values_list("status", flat=True).get(pk=publishing.pk)
    return status


def test_make_run_installs_the_runtime_requirements_only() -> None:
    # When make shows what `make run` would do from scratch (a dry run: nothing is run)
    # (Run from `make test`, make's own variables would make it a sub-make that prints its directory.)
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    plan = subprocess.run(
        ["make", "-n", "-B", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout

    # Then it installs base.txt and local.txt (the embedded Redis), never the dev stack
    assert "-r requirements/base.txt -r requirements/local.txt" in plan
    assert "dev.txt" not in plan
    # and asks whether one runs already before it migrates, and runs runlocal last
    assert plan.index("-m publisher_project.runlocal_record") < plan.index("manage.py migrate")
    assert plan.rstrip().endswith("manage.py runlocal")
