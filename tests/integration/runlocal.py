"""`make run`'s service for integration tests: `manage.py runlocal` started as `make run` starts it.

On the test database, in a VAR_DIR of the test's own, with a Redis that does not answer, so that it
starts its embedded one on a port of its choosing; the commands a test runs beside it get `newcomer_env`,
which names no broker: they find runlocal's through its record, as a second terminal does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis
import requests

from publisher_project.runlocal_record import current_record
from publishing.redis_server import free_port
from tests.support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


def local_env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """`make run`'s environment on the test database: no BROKER_URL or REDIS_URL unless `extra` sets them."""
    env = {k: v for k, v in os.environ.items() if k not in {"BROKER_URL", "REDIS_URL", "BROKER_NAMESPACE"}}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "publisher_project.settings.local",
        "DATABASE_URL": database_url,
        "VAR_DIR": str(var_dir),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@dataclass
class Runlocal:
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    # What a second terminal beside it runs with: the same database and VAR_DIR, no broker named.
    newcomer_env: dict[str, str] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def healthy(self) -> bool:
        return healthy(self.port)

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

    def wait_healthy(self) -> None:
        wait_until(lambda: self.healthy() or self.process.poll() is not None, 90, self.output, interval=0.2)
        assert self.process.poll() is None, self.output()

    def kill(self, family: dict[int, str]) -> None:
        """SIGKILL `family` and runlocal itself if it still runs: nothing outlives a test."""
        kill({**family, **({self.process.pid: "runlocal"} if self.process.poll() is None else {})})
        self.process.wait(timeout=30)


def healthy(port: int) -> bool:
    """Whether the service on `port` says it is healthy."""
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200
    return False


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` with `env`, piped, as in a script."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def start_runlocal(
    database_url: str,
    var_dir: Path,
    log: Path,
    *,
    stdout: int | IO[bytes] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Runlocal:
    """Start runlocal on a Redis that does not answer (so on an embedded one), with `extra_env` (as the
    commands beside it); its output goes to `log`, or to `stdout` when given (its errors to `log` then)."""
    extra_env = extra_env or {}
    port = free_port()
    nobody_there = f"redis://127.0.0.1:{free_port()}/0"
    env = local_env(database_url, var_dir, REDIS_URL=nobody_there, BROKER_URL=nobody_there, **extra_env)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runlocal", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out if stdout is None else stdout,
            stderr=subprocess.STDOUT if stdout is None else out,
            start_new_session=True,
        )
    return Runlocal(process, log, port, local_env(database_url, var_dir, **extra_env))


def worker_alive(var_dir: Path, namespace: str = "dramatiq") -> bool:
    """Whether a worker of the runlocal running on `var_dir` says it is alive, as `publish` asks before it
    queues (the worker may start after the web server answers)."""
    record = current_record(var_dir)
    if record is None:
        return False
    client = redis.Redis.from_url(record.redis_url, socket_timeout=2)
    try:
        return bool(client.zcard(f"{namespace}:workers"))
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


def _command(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def alive(pids: dict[int, str]) -> dict[int, str]:
    """Those of `pids` still running (a zombie has ended: its parent only has not reaped it yet)."""
    running = {}
    for pid, command in pids.items():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                running[pid] = command
    return running


def kill(pids: dict[int, str]) -> None:
    """SIGKILL `pids`, and the process group of each that leads one: runlocal starts each child in a
    session of its own, and the Dramatiq master forks its worker processes into its group, maybe after
    `pids` were listed (they would outlive their master, on the test's database)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
