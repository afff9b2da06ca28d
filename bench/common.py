"""What the benchmarks share: child processes and their memory, statistics, the machine."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from publishing.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


# --- processes and their memory ------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process now."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        # The command name (2nd field) may hold spaces and ')': the fields we
        # want come after the last ')'.
        rest = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), int(rest[2]))
    return table


def _kib(pid: int, filename: str, label: str) -> int:
    try:
        text = Path(f"/proc/{pid}/{filename}").read_text()
    except OSError:  # exited meanwhile
        return 0
    for line in text.splitlines():
        if line.startswith(label):
            return int(line.split()[1])
    return 0  # a zombie has no memory lines


@dataclass(frozen=True)
class Memory:
    processes: int
    rss_kib: int  # VmRSS summed: counts pages shared by forked processes once per process
    pss_kib: int  # Pss summed: shared pages split between their sharers, so close to the real total


def group_memory(pgid: int, table: dict[int, tuple[int, int]] | None = None) -> Memory:
    """Memory of every process in process group `pgid` (a leader started in a session of its own)."""
    table = process_table() if table is None else table
    pids = [pid for pid, (_, group) in table.items() if group == pgid]
    return Memory(
        processes=len(pids),
        rss_kib=sum(_kib(pid, "status", "VmRSS:") for pid in pids),
        pss_kib=sum(_kib(pid, "smaps_rollup", "Pss:") for pid in pids),
    )


def outside_memory(root: int, table: dict[int, tuple[int, int]]) -> Memory:
    """Memory of `root`'s descendants outside its process group.

    The pipeline runs git and the build command in sessions of their own (so
    that a cancel can kill a whole build), so they are not in the worker's
    group; this counts them separately.
    """
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            pending.append(child)
            if table[child][1] != root:
                found.append(child)
    return Memory(
        processes=len(found),
        rss_kib=sum(_kib(pid, "status", "VmRSS:") for pid in found),
        pss_kib=sum(_kib(pid, "smaps_rollup", "Pss:") for pid in found),
    )


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the benchmark dies, even of SIGKILL.

    Children run in sessions of their own (so that Ctrl-C reaches only the
    benchmark, which then stops each one once), so without this a killed
    benchmark would leave a web server and workers behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Long-running children, each the leader of its own process group, logging to a file."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.running[name] = process
        return process

    def log(self, name: str, *, tail: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:]

    def check_alive(self, name: str) -> None:
        process = self.running[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)}")

    def stop(self, name: str, *, timeout: float = 45.0) -> None:
        process = self.running.pop(name)
        if process.poll() is None:
            # The leader only: gunicorn and dramatiq stop their own workers,
            # and a second SIGTERM makes dramatiq kill its workers rather
            # than let them finish.
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        # Whatever is left of the group (a stuck worker, multiprocessing's
        # resource tracker) goes now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


# --- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 0.50), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3) if values else math.nan,
    }


# --- the machine ---------------------------------------------------------------------------


def machine_info(client: redis.Redis, postgres_url: str | None = None) -> dict[str, Any]:
    """The machine, the servers' versions and the load, for a result's header."""
    uname = platform.uname()
    postgresql = "-"
    if postgres_url:
        with psycopg.connect(postgres_url, application_name="publisher-bench-probe") as conn:
            row = conn.execute("SHOW server_version").fetchone()
        postgresql = str(row[0]) if row else "?"
    server: Any = client.info("server")
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"MemTotal:\s+(\d+)", meminfo)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "uname": f"{uname.system} {uname.release} {uname.machine}",
        "python": platform.python_version(),
        "postgresql": postgresql,
        "redis": str(server["redis_version"]),
        "mem_total_mib": int(total.group(1)) // 1024 if total else None,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git": git_revision(),
    }


def git_revision() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return f"{commit}{' (dirty tree)' if git('status', '--porcelain') else ''}"


def raise_exit(signum: int, frame: FrameType | None) -> NoReturn:
    # SIGTERM unwinds like Ctrl-C does, so that the cleanup in main() runs.
    raise SystemExit(128 + signum)


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What the runner gives each benchmark."""

    smoke: bool  # a short run that proves the benchmark works; its figures mean nothing
    redis_url: str  # a private Redis for this run: use it, never flush it, stop it (degraded starts its own)
    postgres_url: str  # a maintenance URL: create databases of your own beside it, and drop them
    workdir: Path  # an empty folder of this benchmark's own, removed after the run


@dataclass(frozen=True)
class Target:
    """One target of the benchmarks issue, with what this run measured against it."""

    name: str  # what is promised, e.g. "drain >= 0.9x bare Dramatiq"
    measured: str  # the figure, e.g. "0.93x (3 900 vs 4 200 jobs/s)"
    ok: bool


@dataclass
class Outcome:
    """What a benchmark's `run` returns: a table to print, targets, and the raw figures.

    `table` is a header row then rows of cells, already formatted; `figures`
    is JSON-able and holds everything a chart or a later comparison needs.
    """

    title: str
    table: list[list[str]]
    targets: list[Target]
    figures: dict[str, Any]
    notes: list[str]


def ratio(value: float, baseline: float) -> float:
    """value / baseline, NaN when the baseline is 0 or NaN."""
    if not baseline or math.isnan(baseline):
        return math.nan
    return value / baseline


def render_table(rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """Plain-text columns, the first row a header; the first `left` columns left-aligned, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i < left else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


# --- Publisher's processes, their database and their Redis keys ----------------------------

# Inherited variables that would change what is measured (a developer's
# DATABASE_URL, BROKER_URL=amqp://..., PUBLISHING_RATE_LIMIT, PG*): a benchmark
# sets its own, so that two machines measure the same thing (bench.sizing's list).
PUBLISHER_VARIABLES = (
    "ALLOWED_HOSTS",
    "BROKER_",
    "DATABASE_URL",
    "DEBUG",
    "DJANGO_",
    "LOG_LEVEL",
    "METRICS_TOKEN",
    "PG",
    "PUBLISHING_",
    "REDIS_URL",
    "SECRET_KEY",
    "SECURE_",
    "VAR_DIR",
    "WORKER_",
)


def manage(env: dict[str, str], *args: str) -> str:
    """`manage.py ARGS` in `env`, from the project's root: its standard output; RuntimeError if it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return result.stdout


def bootstrap_demo(env: dict[str, str], *args: str) -> tuple[str, str]:
    """The demo user (staff) with its API token, and the demo project, in `env`'s database: (token,
    project id).

    bootstrap_demo refuses the production settings (its superuser's password is published), so a
    benchmark's throwaway database gets it under the local ones, which read the same DATABASE_URL and
    VAR_DIR.
    """
    local = {**env, "DJANGO_SETTINGS_MODULE": "publisher_project.settings.local"}
    out = manage(local, "bootstrap_demo", *args)
    token = re.search(r"token:\s+(\S+)", out)
    project = re.search(r"project:\s+(\S+)", out)
    if not token or not project:
        raise RuntimeError(f"cannot read bootstrap_demo's output:\n{out}")
    return token.group(1), project.group(1)


def rate_limited_projects(owner: Any, count: int, *, prefix: str) -> list[Any]:
    """`count` projects of `owner` (a Django user) that no pipeline step will ever reach: for the
    benchmarks that stop at the rate limit. Call it where Django is set up."""
    from publishing.models import Project

    return Project.objects.bulk_create(
        Project(
            owner=owner,
            name=f"{prefix.title()} {n}",
            slug=f"{prefix}-{n}",
            repository_url="https://example.invalid/site.git",
            artifact_path="dist",
            target_url="https://example.invalid/store",
        )
        for n in range(count)
    )


def gunicorn_argv(port: int, *, workers: int, threads: int) -> list[str]:
    """Publisher's web tier as docker/bin/web runs it, on 127.0.0.1:`port`."""
    return [
        str(Path(sys.executable).parent / "gunicorn"), "publisher_project.wsgi",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
        "--graceful-timeout", "5",
    ]  # fmt: skip


def publisher_env(**variables: str) -> dict[str, str]:
    """This process's environment without any of Publisher's own variables, the initiate throttle off,
    builds as the worker's user, a metrics token, plus `variables`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(PUBLISHER_VARIABLES)}
    # The API's per-user throttle off: one bench user sends thousands of initiates a minute.
    env["PUBLISHING_INITIATE_RATE"] = "0"
    # The benchmarks' builds are their own scripts: as the worker's user, root included.
    env["PUBLISHING_BUILD_USER"] = "worker"
    # Production settings refuse to start without one; nothing here scrapes the web tier's /metrics.
    env["METRICS_TOKEN"] = secrets.token_urlsafe(32)
    env.update(variables)
    return env


@contextlib.contextmanager
def own_database(admin_url: str, name: str) -> Iterator[str]:
    """Create database `name` beside `admin_url`'s and yield its URL; dropped at exit, whatever happened."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            # FORCE: a process that outlived its SIGKILL must not keep the database.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def delete_keys(client: redis.Redis, *patterns: str) -> int:
    """Delete the keys matching `patterns` and return how many: SCAN + DEL, never FLUSH a shared Redis."""
    deleted = 0
    for pattern in patterns:
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    return deleted


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of process group `pgid`."""
    ticks = 0
    for pid, (_, group) in process_table().items():
        if group != pgid:
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        ticks += int(rest[11]) + int(rest[12])  # utime, stime: fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


# --- Publisher deployed on real processes --------------------------------------------------

# dramatiq.cli logs this once per worker process when its threads are up.
WORKER_READY = "Worker process is ready for action."


class Deployment:
    """Publisher on real processes (production settings), on a database and a Redis namespace of its own.

    `with Deployment(context, "name", PUBLISHING_X="...") as site:` creates and
    migrates the database; `site.env` is the environment every process gets.
    At exit, whatever happened, the processes are killed (SIGKILL to each
    group: what they leave goes with the database and the keys), the database
    is dropped and the namespace's Redis keys are deleted.
    """

    def __init__(self, context: Context, name: str, **variables: str) -> None:
        self.context = context
        self.namespace = f"bench-{name}-{secrets.token_hex(4)}"
        self.processes = Processes(context.workdir)
        self.database_url = ""
        self.env: dict[str, str] = {}
        self._variables = variables
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Deployment:
        with contextlib.ExitStack() as undo:
            undo.callback(self._delete_keys)
            self.database_url = undo.enter_context(
                own_database(self.context.postgres_url, self.namespace.replace("-", "_"))
            )
            undo.callback(self._kill_all)
            var = self.context.workdir / "var"
            self.env = publisher_env(
                DJANGO_SETTINGS_MODULE="publisher_project.settings.production",
                SECRET_KEY=secrets.token_urlsafe(50),
                DEBUG="false",
                # Plain HTTP on loopback: the production redirect to HTTPS would answer every call with 301.
                SECURE_SSL_REDIRECT="false",
                DATABASE_URL=self.database_url,
                REDIS_URL=self.context.redis_url,
                BROKER_NAMESPACE=self.namespace,
                # Two rundramatiq on one machine would fight over the default port.
                WORKER_METRICS_PORT="0",
                VAR_DIR=str(var),
                PYTHONUNBUFFERED="1",
                **self._variables,
            )
            self.manage("migrate", "--no-input")
            self._exit = undo.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def manage(self, *args: str, **variables: str) -> str:
        """`manage.py ARGS` with the deployment's environment (plus `variables`): its standard output."""
        return manage({**self.env, **variables}, *args)

    def start_web(self, *, workers: int = 2, threads: int = 4, timeout: float = 60) -> str:
        """gunicorn as docker/bin/web runs it, once it answers: its base URL."""
        port = free_port()
        self.processes.start("web", gunicorn_argv(port, workers=workers, threads=threads), self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"http://127.0.0.1:{port}"
            self.processes.check_alive("web")
            time.sleep(0.1)
        raise RuntimeError(f"the web server did not listen:\n{self.processes.log('web')}")

    def start_worker(self, name: str, *, processes: int, threads: int, **variables: str) -> int:
        """`manage.py rundramatiq` as process group `name`; returns its log's ready lines so far."""
        ready_before = self.processes.log(name, tail=10_000_000).count(WORKER_READY)
        argv = [sys.executable, "manage.py", "rundramatiq", "--processes", str(processes)]
        self.processes.start(name, [*argv, "--threads", str(threads)], {**self.env, **variables})
        return ready_before

    def wait_ready(self, name: str, processes: int, *, before: int = 0, timeout: float = 120) -> None:
        """Until `processes` more of `name`'s worker processes are ready (`before`: from start_worker)."""
        deadline = time.monotonic() + timeout
        while self.processes.log(name, tail=10_000_000).count(WORKER_READY) < before + processes:
            self.processes.check_alive(name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not get ready:\n{self.processes.log(name)}")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """SIGKILL to process group `name`, the way a host dies: no shutdown hooks run."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.processes.running[name].pid, signal.SIGKILL)
        self.processes.stop(name)

    def _kill_all(self) -> None:
        for name in list(self.processes.running):
            self.kill(name)

    def _delete_keys(self) -> None:
        client = redis.Redis.from_url(self.context.redis_url, socket_timeout=10)
        try:
            delete_keys(client, f"{self.namespace}:*", f"{self.namespace}-abort*")
        finally:
            client.close()


def git(folder: Path) -> list[str]:
    """`git -C folder`, committing as the benchmarks' own author."""
    return ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-C", str(folder)]


def git_repository(folder: Path, files: dict[str, str], message: str) -> Path:
    """A local git repository at `folder` with `files` (relative path -> text) in one commit on `main`."""
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(folder)], check=True)
    subprocess.run([*git(folder), "add", "."], check=True)
    subprocess.run([*git(folder), "commit", "--quiet", "-m", message], check=True)
    return folder
