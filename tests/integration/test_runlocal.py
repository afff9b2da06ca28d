"""`make run`'s command, `manage.py runlocal`: the whole service on one machine, and Ctrl-C stops it all.

Started as `make run` starts it (the local settings), on the test database, with a Redis that does not
answer, so that it starts its embedded one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from publishing.redis_server import free_port
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Runlocal:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def healthy(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=2).status_code == 200
        return False

    def family(self) -> dict[int, str]:
        """runlocal's children and theirs (the worker, the web server, the embedded Redis): pid -> command."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # The command sits in parentheses and may hold spaces: the fields follow the last ")".
                parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        family: list[int] = []
        for pid, parent in sorted(parents.items()):
            if parent == self.process.pid or parent in family:
                family.append(pid)
        # A child may have a lower pid than its parent (pids wrap): once more picks those up.
        family += [pid for pid, parent in parents.items() if parent in family and pid not in family]
        return {pid: _command(pid) for pid in family}


def _command(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def _alive(pids: dict[int, str]) -> dict[int, str]:
    """Those of `pids` still running (a zombie has ended: its parent only has not reaped it yet)."""
    running = {}
    for pid, command in pids.items():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                running[pid] = command
    return running


def _kill(pids: dict[int, str]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runlocal(database_url: str, namespace: str, tmp_path: Path) -> Iterator[Runlocal]:
    port = free_port()
    nobody_there = f"redis://127.0.0.1:{free_port()}/0"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "publisher_project.settings.local",
        "DATABASE_URL": database_url,
        "REDIS_URL": nobody_there,
        "BROKER_URL": nobody_there,
        "BROKER_NAMESPACE": namespace,
        "VAR_DIR": str(tmp_path / "var"),
        "WORKER_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "runlocal.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runlocal", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Runlocal(process, log, port)
    family: dict[int, str] = {}
    try:
        wait_until(lambda: started.healthy() or process.poll() is not None, 90, started.output, interval=0.2)
        assert process.poll() is None, started.output()
        family = started.family()
        yield started
    finally:
        _kill({**family, **({process.pid: "runlocal"} if process.poll() is None else {})})
        process.wait(timeout=30)


def test_runlocal_serves_everything_on_an_embedded_redis_and_ctrl_c_stops_it_all(runlocal: Runlocal) -> None:
    # Given the service up on the embedded Redis that runlocal started
    assert "does not answer: started an embedded Redis" in runlocal.output()
    family = runlocal.family()
    assert len(family) >= 3, family

    # When the terminal's Ctrl-C reaches it
    runlocal.process.send_signal(signal.SIGINT)

    # Then it stops the worker and the web server, then its Redis, and exits 0 saying so
    assert runlocal.process.wait(timeout=90) == 0, runlocal.output()
    assert "Stopped." in runlocal.output()
    wait_until(lambda: not _alive(family), 10, lambda: f"still running: {_alive(family)}")
    assert not runlocal.healthy()


def test_runlocal_stops_everything_when_a_child_dies_and_says_which(runlocal: Runlocal) -> None:
    # Given the service up, when its web server dies
    family = runlocal.family()
    (web,) = [pid for pid, command in family.items() if " runserver " in command]
    os.kill(web, signal.SIGKILL)

    # Then runlocal stops the rest, and fails naming the one that died
    assert runlocal.process.wait(timeout=90) == 1, runlocal.output()
    assert "web server exited unexpectedly; stopped everything" in runlocal.output()
    wait_until(lambda: not _alive(family), 10, lambda: f"still running: {_alive(family)}")
