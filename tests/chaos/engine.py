"""One chaos round: a private PostgreSQL, Redis, target and stack; publishings streaming in; faults at random.

A round starts everything it breaks itself (never the machine's shared
services), initiates one publishing per project over time while a fault
thread kills and stops worker groups and restarts Redis and PostgreSQL, then
waits (bounded) for everything to settle and checks the invariants against
the database and the target's own records. Seeded: the same seed gives the
same projects, build times, fault kinds, order and spacing (not the same
interleaving, which the machine decides).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from publishing.redis_server import RedisServer
from tests.chaos.postgres import PostgresServer
from tests.chaos.target import ChaosTarget, TargetRecords
from tests.fakes import git_repository
from tests.integration.stack import ROOT, Stack

FAULT_KINDS = ("kill_child", "kill_group", "term_group", "redis_restart", "postgres_restart")
FAULT_LABELS = {
    "kill_child": "SIGKILL one worker process",
    "kill_group": "SIGKILL a whole worker group",
    "term_group": "SIGTERM a worker group (replaced at once)",
    "redis_restart": "Redis restart",
    "postgres_restart": "PostgreSQL restart (fast or crash)",
}
TERMINAL = {"published", "failed", "cancelled"}
ACTIVE = {"pending", "queued", "building", "submitting"}

# Shortened for the run (say so in the report): with the defaults a killed
# worker's job waits out a 15 s lease and 5 s passes, and a SIGTERMed one 30 s.
CHAOS_ENV = {
    "PUBLISHING_LEASE_TIMEOUT": "6",
    "PUBLISHING_RECONCILE_INTERVAL": "2",
    "PUBLISHING_RECONCILE_GRACE": "5",
    "PUBLISHING_SHUTDOWN_TIMEOUT": "3",
    "PUBLISHING_HEARTBEAT_TIMEOUT_MS": "10000",
    "PUBLISHING_MIN_BACKOFF_MS": "200",
    "PUBLISHING_MAX_BACKOFF_MS": "1000",
    "PUBLISHING_RATE_LIMIT": "0",
    "PUBLISHING_INITIATE_RATE": "0",
    # Builds in the bubblewrap sandbox, as in production: a round without bwrap fails, not skips.
    "PUBLISHING_BUILD_SANDBOX": "required",
}

# `python3 build.py --sleep S`: the chaos projects' build, S seconds long.
BUILD_SCRIPT = """\
import pathlib, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print("build started", flush=True)
time.sleep(float(args.get("--sleep", 0)))
pathlib.Path("dist").mkdir(exist_ok=True)
pathlib.Path("dist/index.html").write_text(pathlib.Path("site/index.html").read_text())
print("build done")
"""

# Run by `manage.py shell` against the round's database: one user, one project a publishing.
SEED_CODE = """
import json, os
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from publishing.models import Project
spec = json.loads(os.environ["CHAOS_SEED"])
user = User.objects.create_user("chaos")
ids = [
    str(Project.objects.create(
        owner=user, name=f"Chaos {n}", slug=f"chaos-{n}", repository_url=spec["source"],
        build_command=f"python3 build.py --sleep {sleep}", artifact_path="dist", target_url=spec["target"],
    ).pk)
    for n, sleep in enumerate(spec["sleeps"])
]
print("CHAOS-SEED " + json.dumps({"token": Token.objects.create(user=user).key, "projects": ids}))
"""


@dataclass(frozen=True)
class RoundConfig:
    """What one round does; `seed` decides everything random in it."""

    name: str
    seed: int
    publishings: int
    appendonly: bool
    arrival_s: float
    extra_faults: int = 0
    first_fault_s: float = 5.0
    fault_gap_s: tuple[float, float] = (5.0, 10.0)
    build_max_s: float = 5.0
    target_fail_ratio: float = 0.2
    settle_timeout_s: float = 240.0
    request_deadline_s: float = 120.0
    worker_processes: int = 2
    worker_threads: int = 2


@dataclass
class Fault:
    kind: str
    at: float
    detail: str = ""
    # publishing id -> attempts when the fault hit: what it caught in flight
    affected: dict[str, int] = field(default_factory=dict)
    wants_health: bool = False
    health_back_after: float | None = None
    recovered_after: float | None = None
    # Why the fault could not be injected: a round whose faults did not strike proves nothing.
    injection_error: str = ""


@dataclass
class WebCall:
    at: float
    what: str
    status: int | None
    code: str = ""
    error: str = ""

    @property
    def is_error(self) -> bool:
        """Anything but 2xx, 409 and the documented 503s (initiate's SERVICE_UNAVAILABLE, health's)."""
        if self.status is None:
            return True
        if 200 <= self.status < 300 or self.status == 409:
            return False
        if self.status == 503:
            return self.what != "health" and self.code != "SERVICE_UNAVAILABLE"
        return True

    def __str__(self) -> str:
        answer = f"{self.status} {self.code}".strip() if self.status is not None else self.error
        return f"t={self.at:.1f}s {self.what}: {answer}"


@dataclass
class Row:
    id: str
    project_id: str
    status: str
    attempts: int
    error_code: str
    artifact_sha256: str
    idempotency_key: str


@dataclass
class RoundResult:
    config: RoundConfig
    duration_s: float = 0.0
    settle_s: float = 0.0
    initiate_requests: int = 0
    health_requests: int = 0
    initiated: int = 0
    faults: list[Fault] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    failed_codes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    web_errors: list[WebCall] = field(default_factory=list)
    web_statuses: Counter[str] = field(default_factory=Counter)
    target_503s: int = 0
    target_posts: int = 0
    # POSTs the target answered from its idempotency record (a submission sent again, accepted once).
    target_replays: int = 0
    workdir: str = ""
    # "<log file>: <exception line>" for every traceback in the processes' logs. An outage is logged in
    # one line where the code meets it (and library tracebacks of one are folded the same way, by
    # publishing.log_context.OutageTracebackFilter): a traceback is a crash, whatever the faults.
    log_tracebacks: list[str] = field(default_factory=list)

    @property
    def failed_injections(self) -> list[Fault]:
        return [f for f in self.faults if f.injection_error]

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.stuck
            or self.violations
            or self.web_errors
            or self.failed_injections
            or self.log_tracebacks
        )

    def recovery(self, kind: str) -> list[float]:
        return [f.recovered_after for f in self.faults if f.kind == kind and f.recovered_after is not None]

    def summary(self) -> str:
        faults = Counter(f.kind for f in self.faults)
        lines = [
            f"round {self.config.name} (seed {self.config.seed}): {self.duration_s:.0f}s, "
            f"{self.initiated}/{self.config.publishings} initiated with {self.initiate_requests} requests, "
            f"statuses {dict(self.statuses)}, failed codes {dict(self.failed_codes)}",
            f"  faults {dict(faults)}; lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"stuck {len(self.stuck)}, violations {len(self.violations)}, web errors {len(self.web_errors)} "
            f"(web answers {dict(self.web_statuses)}); target: {self.target_posts} POSTs, "
            f"{self.target_503s} refused with 503, {self.target_replays} idempotent replays",
        ]
        for fault in self.faults:
            lines.append(
                f"  t={fault.at:5.1f}s {fault.kind:<16} {fault.detail}; "
                f"caught {len(fault.affected)} in flight; "
                f"recovered after {seconds(fault.recovered_after)}"
                + (f" (health back after {seconds(fault.health_back_after)})" if fault.wants_health else "")
            )
        lines += [f"  INJECTION FAILED {f.kind}: {f.injection_error}" for f in self.failed_injections]
        lines += [f"  TRACEBACK {item}" for item in self.log_tracebacks[:30]]
        lines += [f"  LOST {item}" for item in self.lost]
        lines += [f"  DUPLICATED {item}" for item in self.duplicated]
        lines += [f"  STUCK {item}" for item in self.stuck]
        lines += [f"  VIOLATION {item}" for item in self.violations]
        lines += [f"  WEB ERROR {call}" for call in self.web_errors[:30]]
        lines.append(f"  logs in {self.workdir}")
        return "\n".join(lines)


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


# Where a log record starts: `2026-01-01 12:00:00,000 LEVEL ...` (ours) or `[2026-01-01 ...` (gunicorn).
LOG_RECORD = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def tracebacks_in(text: str) -> list[str]:
    """The final exception line of each log record that carries a traceback (chained ones count once).

    An exception line is the first unindented one after a traceback's frames; the lines after it (a
    multi-line message, PostgreSQL's DETAIL) belong to it.
    """
    found: list[str] = []
    in_traceback = after_frame = False
    last = ""
    for line in [*text.splitlines(), "1970-01-01 00:00 (end)"]:
        if LOG_RECORD.match(line):
            if in_traceback:
                found.append(last or "(cut off)")
            in_traceback, after_frame, last = False, False, ""
        elif line.startswith("Traceback (most recent call last):"):
            in_traceback, after_frame = True, False
        elif in_traceback and line.startswith((" ", "\t")):
            after_frame = True
        elif in_traceback and line and after_frame:
            last, after_frame = line, False
    return found


def make_git_source(path: Path) -> str:
    """A local git repository with a page and the sleeping build script; its path."""
    return str(git_repository(path, {"site/index.html": "<h1>chaos</h1>\n", "build.py": BUILD_SCRIPT}))


def children_of(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc): the dramatiq master's worker processes."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


class WorkerPool:
    """Worker groups in slots, each restarted when it exits, as a process supervisor would."""

    def __init__(self, stack: Stack, *, slots: tuple[str, ...], processes: int, threads: int) -> None:
        self.stack = stack
        self.processes = processes
        self.threads = threads
        self.current: dict[str, str] = {}
        self.exits: list[tuple[str, int | None]] = []
        self._generation = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        for slot in slots:
            self._spawn(slot)
        self._thread = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._thread.start()

    @staticmethod
    def host(name: str) -> str:
        """PUBLISHING_WORKER_NAME of a group: its publishings' `worker` is `<host>:<pid>`."""
        return f"chaos-{name}"

    def _spawn(self, slot: str) -> str:
        self._generation += 1
        name = f"worker-{slot}{self._generation}"
        self.stack.start_worker(
            name=name,
            processes=self.processes,
            threads=self.threads,
            PUBLISHING_WORKER_NAME=self.host(name),
        )
        self.current[slot] = name
        return name

    def _supervise(self) -> None:
        while not self._stop.wait(0.3):
            with self._lock:
                for slot, name in list(self.current.items()):
                    code = self.stack.processes[name].poll()
                    if code is not None:
                        self.exits.append((name, code))
                        self._spawn(slot)

    def pick(self, rng: random.Random) -> tuple[str, str]:
        with self._lock:
            slot = rng.choice(sorted(self.current))
            return slot, self.current[slot]

    def replace(self, slot: str) -> tuple[str, str]:
        """Start a new group in `slot` and hand back the old one, no longer supervised: (old, new)."""
        with self._lock:
            old = self.current[slot]
            return old, self._spawn(slot)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class ChaosRound:
    """Everything one round needs, started in `__enter__`, torn down in `__exit__`."""

    def __init__(self, config: RoundConfig, *, workdir: Path | None = None, keep: bool = False) -> None:
        self.config = config
        self.rng = random.Random(config.seed)  # noqa: S311 - reproducible chaos, not security
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="publisher-chaos-"))
        self.keep = keep
        self.result = RoundResult(config=config, workdir=str(self.workdir))
        self._lock = threading.Lock()
        self._calls: list[WebCall] = []
        self._accepted: dict[str, str] = {}  # idempotency key -> publishing id
        self._gave_up: list[str] = []
        self._snapshot: dict[str, tuple[str, int]] = {}
        self._snapshot_at = 0.0
        self._done = threading.Event()
        self._t0 = 0.0
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.target: ChaosTarget | None = None
        self.stack: Stack | None = None
        self.pool: WorkerPool | None = None

    # --- set up and tear down ---------------------------------------------------------------

    def __enter__(self) -> ChaosRound:
        try:
            self._start()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Logs stay for a look whenever something went wrong.
        self.keep = self.keep or exc_type is not None
        self._teardown()

    def _start(self) -> None:
        config = self.config
        self.postgres = PostgresServer().start()
        self.redis = RedisServer(self.workdir / "redis", appendonly=config.appendonly).start()
        self.target = ChaosTarget(fail_ratio=config.target_fail_ratio, seed=config.seed).start()
        source = make_git_source(self.workdir / "source")
        self.stack = Stack(
            database_url=self.postgres.url,
            broker_url=self.redis.url,
            redis_url=self.redis.url,
            namespace="chaos",
            workdir=self.workdir,
            **CHAOS_ENV,
        )
        self._manage("migrate", "--no-input")
        sleeps = [round(self.rng.uniform(0, config.build_max_s), 1) for _ in range(config.publishings)]
        seeded = self._manage(
            "shell",
            "-c",
            SEED_CODE,
            CHAOS_SEED=json.dumps({"source": source, "target": self.target.url, "sleeps": sleeps}),
        )
        line = next(line for line in seeded.splitlines() if line.startswith("CHAOS-SEED "))
        seed = json.loads(line.removeprefix("CHAOS-SEED "))
        self.token: str = seed["token"]
        self.projects: list[str] = seed["projects"]
        self.stack.start_web()
        self.pool = WorkerPool(
            self.stack, slots=("a", "b"), processes=config.worker_processes, threads=config.worker_threads
        )

    def _manage(self, *argv: str, **env: str) -> str:
        assert self.stack is not None
        done = subprocess.run(
            [sys.executable, "manage.py", *argv],
            cwd=ROOT,
            env={**self.stack.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {argv[0]} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _teardown(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        if self.stack is not None:
            self.stack.stop()
        if self.target is not None:
            self.target.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.destroy()
        if not self.keep and self.result.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the round ------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self._t0

    def run(self) -> RoundResult:
        """Publishings and faults at once, then settle and check. Never raises for a broken invariant."""
        self._t0 = time.monotonic()
        watchers = [
            threading.Thread(target=self._watch_database, name="chaos-db-watch", daemon=True),
            threading.Thread(target=self._watch_health, name="chaos-health-watch", daemon=True),
        ]
        for thread in watchers:
            thread.start()
        client = threading.Thread(target=self._client, name="chaos-client")
        faults = threading.Thread(target=self._inject_faults, name="chaos-faults")
        client.start()
        faults.start()
        client.join()
        faults.join()
        settle_from = time.monotonic()
        deadline = settle_from + self.config.settle_timeout_s
        while time.monotonic() < deadline and not self._settled():
            time.sleep(0.5)
        self.result.settle_s = time.monotonic() - settle_from
        # A last look for recoveries that completed with the last snapshot.
        time.sleep(1.0)
        self._done.set()
        for thread in watchers:
            thread.join(timeout=10)
        self.result.duration_s = self.now()
        self._check()
        return self.result

    def _settled(self) -> bool:
        with self._lock:
            ids = set(self._accepted.values())
            snapshot = dict(self._snapshot)
            faults_pending = any(
                f.recovered_after is None and not f.injection_error for f in self.result.faults
            )
        return all(snapshot.get(i, ("", 0))[0] in TERMINAL for i in ids) and not faults_pending

    # --- the client -----------------------------------------------------------------------

    def _client(self) -> None:
        """One initiate per project over arrival_s, each in its own thread: a retrying one waits alone."""
        gap = 2 * self.config.arrival_s / max(self.config.publishings, 1)
        delays = [self.rng.uniform(0, gap) for _ in self.projects]
        threads = []
        for project_id, delay in zip(self.projects, delays, strict=True):
            time.sleep(delay)
            thread = threading.Thread(
                target=self._initiate, args=(project_id, str(uuid.uuid4())), daemon=True
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout=self.config.request_deadline_s + 30)

    def _initiate(self, project_id: str, key: str) -> None:
        """POST until 202, retrying 503s, 500s and broken connections with the same Idempotency-Key."""
        assert self.stack is not None
        url = f"{self.stack.base_url}/api/v1/publishing/initiate"
        headers = {"Authorization": f"Token {self.token}", "Idempotency-Key": key}
        deadline = time.monotonic() + self.config.request_deadline_s
        pause = random.Random(key)  # noqa: S311 - jitter, not security
        while True:
            call = self._request("initiate", "POST", url, headers=headers, json={"project_id": project_id})
            if call.status is not None and 200 <= call.status < 300:
                return
            if call.status is not None and call.status < 500:
                return  # a 4xx is final: a web error (or a 409, which a fresh project never gets)
            if time.monotonic() > deadline:
                with self._lock:
                    self._gave_up.append(f"project {project_id} key {key}: last answer {call}")
                return
            time.sleep(pause.uniform(0.3, 1.0))

    def _request(self, what: str, method: str, url: str, **kwargs: Any) -> WebCall:
        at = self.now()
        try:
            response = requests.request(method, url, timeout=10, **kwargs)
        except requests.RequestException as exc:
            call = WebCall(at=at, what=what, status=None, error=type(exc).__name__)
        else:
            try:
                body = response.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            call = WebCall(at=at, what=what, status=response.status_code, code=str(body.get("code", "")))
            if what == "initiate" and 200 <= response.status_code < 300:
                with self._lock:
                    self._accepted[kwargs["headers"]["Idempotency-Key"]] = str(body["id"])
        with self._lock:
            self._calls.append(call)
        return call

    # --- watching -------------------------------------------------------------------------

    def _watch_health(self) -> None:
        assert self.stack is not None
        url = f"{self.stack.base_url}/api/v1/health"
        while not self._done.wait(0.5):
            call = self._request("health", "GET", url)
            if call.status == 200:
                with self._lock:
                    for fault in self.result.faults:
                        if fault.wants_health and fault.health_back_after is None and call.at >= fault.at:
                            fault.health_back_after = call.at - fault.at

    def _watch_database(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._done.wait(0.5):
            try:
                if conn is None or conn.closed:
                    assert self.postgres is not None
                    conn = psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=2)
                rows = conn.execute("SELECT id::text, status, attempts FROM publishing_publishing").fetchall()
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
                continue
            at = self.now()
            snapshot = {row[0]: (row[1], row[2]) for row in rows}
            with self._lock:
                self._snapshot, self._snapshot_at = snapshot, at
                for fault in self.result.faults:
                    # A fault that never struck has nothing to recover from: it stays unrecovered, out
                    # of the recovery figures (RoundResult.ok fails the round on it instead).
                    if (
                        fault.recovered_after is None
                        and not fault.injection_error
                        and self._recovered(fault, snapshot)
                    ):
                        fault.recovered_after = at - fault.at
        if conn is not None:
            conn.close()

    @staticmethod
    def _recovered(fault: Fault, snapshot: dict[str, tuple[str, int]]) -> bool:
        """Every publishing caught in flight is finished or on a new attempt; health is back if it went."""
        if fault.wants_health and fault.health_back_after is None:
            return False
        for publishing_id, attempts in fault.affected.items():
            status, now_attempts = snapshot.get(publishing_id, ("", attempts))
            if status not in TERMINAL and now_attempts <= attempts:
                return False
        return True

    def _in_flight(self, *, worker_prefix: str | None) -> dict[str, int]:
        """Publishings active now (on one worker group's processes, if given): id -> attempts."""
        assert self.postgres is not None
        query = "SELECT id::text, attempts FROM publishing_publishing WHERE status = ANY(%s)"
        params: list[Any] = [list(ACTIVE)]
        if worker_prefix:
            query += " AND status IN ('building', 'submitting') AND worker LIKE %s"
            params.append(f"{worker_prefix}:%")
        with psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=5) as conn:
            return {row[0]: row[1] for row in conn.execute(query, params).fetchall()}

    # --- faults ---------------------------------------------------------------------------

    def schedule(self) -> list[str]:
        """Each fault kind once, plus `extra_faults` drawn at random, in a random order."""
        kinds = [*FAULT_KINDS, *(self.rng.choice(FAULT_KINDS) for _ in range(self.config.extra_faults))]
        self.rng.shuffle(kinds)
        return kinds

    def _inject_faults(self) -> None:
        kinds = self.schedule()
        time.sleep(self.config.first_fault_s)
        for kind in kinds:
            fault = Fault(kind=kind, at=self.now())
            try:
                getattr(self, f"_{kind}")(fault)
            except Exception as exc:
                # Counted as a failure of the round (RoundResult.ok), never as a recovery.
                fault.detail += f" (injection failed: {exc})"
                fault.injection_error = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if not any(f is fault for f in self.result.faults):
                        self.result.faults.append(fault)
            time.sleep(self.rng.uniform(*self.config.fault_gap_s))

    def _record(self, fault: Fault) -> None:
        with self._lock:
            self.result.faults.append(fault)

    def _kill_child(self, fault: Fault) -> None:
        assert self.pool is not None
        assert self.stack is not None
        _, name = self.pool.pick(self.rng)
        master = self.stack.processes[name].pid
        children = children_of(master)
        fault.affected = self._in_flight(worker_prefix=WorkerPool.host(name))
        if not children:
            fault.detail = f"{name} had no worker process yet: killed it whole"
            os.killpg(master, signal.SIGKILL)
        else:
            victim = self.rng.choice(children)
            fault.detail = f"{name} process {victim} (its master then stops the group)"
            os.kill(victim, signal.SIGKILL)
        fault.at = self.now()
        self._record(fault)

    def _kill_group(self, fault: Fault) -> None:
        assert self.pool is not None
        assert self.stack is not None
        _, name = self.pool.pick(self.rng)
        fault.affected = self._in_flight(worker_prefix=WorkerPool.host(name))
        self.stack.signal(name, signal.SIGKILL, group=True)
        fault.at = self.now()
        fault.detail = f"{name}, master and workers"
        self._record(fault)

    def _term_group(self, fault: Fault) -> None:
        assert self.pool is not None
        assert self.stack is not None
        slot, _ = self.pool.pick(self.rng)
        old, new = self.pool.replace(slot)
        fault.affected = self._in_flight(worker_prefix=WorkerPool.host(old))
        self.stack.signal(old, signal.SIGTERM)
        fault.at = self.now()
        exited = self.stack.wait_exit(old, timeout=60)
        fault.detail = f"{old} (replaced by {new}) exited after {exited:.1f}s"
        self._record(fault)

    def _redis_restart(self, fault: Fault) -> None:
        assert self.redis is not None
        fault.affected = self._in_flight(worker_prefix=None)
        fault.wants_health = True
        down = self.rng.uniform(0.5, 3.0)
        fault.at = self.now()
        self._record(fault)
        self.redis.stop()
        time.sleep(down)
        self.redis.start()
        kept = "AOF kept its data" if self.config.appendonly else "no persistence: data lost"
        fault.detail = f"down {down:.1f}s, {kept}"

    def _postgres_restart(self, fault: Fault) -> None:
        assert self.postgres is not None
        fault.affected = self._in_flight(worker_prefix=None)
        fault.wants_health = True
        mode = self.rng.choice(["fast", "immediate"])
        down = self.rng.uniform(0.5, 3.0)
        fault.at = self.now()
        self._record(fault)
        started = time.monotonic()
        self.postgres.restart(mode=mode, down_for=down)
        fault.detail = f"stop -m {mode}, down {time.monotonic() - started:.1f}s"

    # --- the invariants -------------------------------------------------------------------

    def _rows(self) -> list[Row]:
        assert self.postgres is not None
        query = (
            "SELECT id::text, project_id::text, status, attempts, error_code, artifact_sha256,"
            " coalesce(idempotency_key, '') FROM publishing_publishing"
        )
        with psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=5) as conn:
            return [Row(*row) for row in conn.execute(query).fetchall()]

    def _untold_attempts(self, rows: list[Row]) -> list[str]:
        """Attempts whose log lacks the event that started them or the one that ended them."""
        assert self.postgres is not None
        query = (
            "SELECT l.publishing_id::text, l.attempt, l.text FROM publishing_logline l"
            " JOIN publishing_publishing p ON p.id = l.publishing_id"
            " WHERE l.step = 'event' AND p.log_dropped = 0"
        )
        with psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=5) as conn:
            events = conn.execute(query).fetchall()
        told: dict[str, set[tuple[int, str]]] = {}
        for publishing_id, attempt, text in events:
            own = (f"attempt {attempt} failed", f"attempt {attempt} stopped")
            endings = (*own, "published to ", "cancelled by ")
            if text.startswith(f"attempt {attempt} started on "):
                told.setdefault(publishing_id, set()).add((attempt, "start"))
            elif text.startswith(endings):
                told.setdefault(publishing_id, set()).add((attempt, "end"))
        return [
            f"{row.id} attempt {number}: no {what} event in its log"
            for row in rows
            for number in range(1, row.attempts + 1)
            for what in ("start", "end")
            if (number, what) not in told.get(row.id, set())
        ]

    def _check(self) -> None:
        assert self.target is not None
        result = self.result
        rows = self._rows()
        records: TargetRecords = self.target.records
        by_id = {row.id: row for row in rows}
        calls = list(self._calls)
        result.initiate_requests = sum(1 for c in calls if c.what == "initiate")
        result.health_requests = sum(1 for c in calls if c.what == "health")
        result.web_errors = [c for c in calls if c.is_error]
        result.web_statuses = Counter(
            f"{c.what} {c.status if c.status is not None else c.error}" for c in calls
        )
        result.initiated = len(self._accepted)
        result.target_posts = sum(records.posts.values())
        result.target_503s = sum(records.refused_503.values())
        result.statuses = Counter(row.status for row in rows)
        result.failed_codes = Counter(row.error_code for row in rows if row.status == "failed")

        # Lost: asked for and never answered, or answered and not in the database.
        result.lost = list(self._gave_up)
        result.lost += [f"{pid} (key {key}) answered 202 but absent" for key, pid in self._accepted.items()
                        if pid not in by_id]  # fmt: skip
        # Duplicated: more than one publishing for one project or key, or one accepted twice by the target.
        per_project = Counter(row.project_id for row in rows)
        result.duplicated = [f"project {p} has {n} publishings" for p, n in per_project.items() if n > 1]
        for key, count in records.conflicting.items():
            status = by_id[key].status if key in by_id else "absent"
            result.duplicated.append(f"{key} ({status}) sent {count} other artifact(s) under its key")
        result.target_replays = sum(records.replayed.values())
        result.stuck = [f"{row.id} {row.status} (attempts {row.attempts})" for row in rows
                        if row.status not in TERMINAL]  # fmt: skip
        for row in rows:
            if row.status == "published":
                stored = records.artifacts.get(row.id, set())
                if stored != {row.artifact_sha256}:
                    result.violations.append(f"{row.id} published, target holds {sorted(stored)}")
            elif row.id in records.artifacts:
                result.violations.append(
                    f"{row.id} {row.status} ({row.error_code}) but the target accepted it"
                )
            if row.status == "failed" and row.error_code in ("", "INTERNAL_ERROR"):
                # An unexpected exception is a bug, whatever the faults around it.
                result.violations.append(f"{row.id} failed with {row.error_code or 'no error code'}")
            if row.idempotency_key and self._accepted.get(row.idempotency_key) not in (None, row.id):
                result.violations.append(f"{row.id} has key {row.idempotency_key} of another publishing")
        result.violations += [f"target: {bad}" for bad in records.bad_requests]
        result.violations += self._untold_attempts(rows)
        # Nothing left behind: a killed worker's workspace goes at the next worker start or sweep.
        assert self.stack is not None
        deadline = time.monotonic() + 3 * float(CHAOS_ENV["PUBLISHING_RECONCILE_INTERVAL"])
        while any(self.stack.workspaces.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        result.violations += [f"workspace left: {path.name}" for path in self.stack.workspaces.iterdir()]
        result.log_tracebacks = [
            f"{path.name}: {line}"
            for path in sorted(self.workdir.glob("*.log"))
            for line in tracebacks_in(path.read_text(errors="replace"))
        ]


def run_round(config: RoundConfig, *, keep: bool = False) -> RoundResult:
    with ChaosRound(config, keep=keep) as chaos:
        return chaos.run()


def recovery_stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} s / {max(values):.1f} s"
