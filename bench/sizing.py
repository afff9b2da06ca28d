"""Sizing figures for a Publisher deployment, measured on real processes.

    .venv/bin/python -m bench.sizing [--quick]

Everything it starts is its own and is removed at the end, also after Ctrl-C,
SIGTERM or an error: a database `publisher_sizing_<pid>` on the PostgreSQL
server, the Redis keys under `publisher-sizing-<random>`, a gunicorn web
server (2 workers x 4 threads) and `manage.py rundramatiq` as 1x4 and 2x4
processes x threads (quick: 1x4 only, smaller batches).

It measures, per worker shape: memory (RSS and PSS) of the web and of the
worker's process group, idle and at the peak of a batch; PostgreSQL
connections each tier holds, idle and at the peak; the throughput of a batch
of publishings started at once and their latency; and, with no worker
running, the Redis memory each waiting message takes. It prints a table and
writes JSON (`bench/results/sizing.json`, quick: `sizing-quick.json`).

A measurement, not a test: nothing is asserted. The demo build is tiny, so
the throughput is the per-job overhead of the whole path (git clone, build
subprocess, package, submit, status writes), not the cost of a real build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
import requests
from psycopg import sql

from bench.common import (
    RESULTS,
    Processes,
    delete_keys,
    group_memory,
    gunicorn_argv,
    machine_info,
    manage,
    outside_memory,
    process_table,
    publisher_env,
    raise_exit,
    spread,
)
from publishing.redis_server import free_port

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
QUEUE = "publishing-builds"  # PUBLISHING_QUEUE's default, which the run keeps

WEB_WORKERS = 2
WEB_THREADS = 4
# libpq reads PGAPPNAME, so pg_stat_activity can tell the web's connections
# from the worker's without touching DATABASE_URL or the settings.
APP_WEB = "publisher-sizing-web"
APP_WORKER = "publisher-sizing-worker"
APP_PROBE = "publisher-sizing-probe"
# dramatiq.cli logs this once per worker process when its threads are up.
READY_LINE = "Worker process is ready for action."
# Peaks are sampled: a thread's connection is kept between requests and jobs
# (CONN_MAX_AGE), but opened at its first and closed when a broken one is seen.
SAMPLE_INTERVAL = 0.1


@dataclass(frozen=True)
class Plan:
    configs: tuple[tuple[int, int], ...]  # (processes, threads) of rundramatiq
    batch: int  # publishings started at once per throughput batch
    waiting: int  # messages left waiting for the Redis figure
    settle: float  # seconds a process gets before its idle figures are read


FULL = Plan(configs=((1, 4), (2, 4)), batch=40, waiting=200, settle=3.0)
QUICK = Plan(configs=((1, 4),), batch=10, waiting=50, settle=2.0)


# --- PostgreSQL ----------------------------------------------------------------------------


class Connections:
    """Client connections to the benchmark database, per application name, as the server sees them.

    The probe connects to the maintenance database, so it is not counted
    itself and never holds up the final DROP DATABASE.
    """

    def __init__(self, admin_url: str, dbname: str) -> None:
        self.dbname = dbname
        self._conn = psycopg.connect(admin_url, autocommit=True, application_name=APP_PROBE)

    def count(self) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend' GROUP BY application_name",
            (self.dbname,),
        ).fetchall()
        return {str(app): int(n) for app, n in rows}

    def tiers(self) -> dict[str, int]:
        counts = self.count()
        web = counts.pop(APP_WEB, 0)
        worker = counts.pop(APP_WORKER, 0)
        # Anything else would mean PGAPPNAME did not reach a process: shown, not hidden.
        return {"web": web, "worker": worker, "other": sum(counts.values())}

    def peak_over(self, seconds: float) -> dict[str, int]:
        """Highest count per tier over a short window: idle processes still run periodic threads."""
        peak: dict[str, int] = {}
        deadline = time.monotonic() + seconds
        while True:
            for tier, n in self.tiers().items():
                peak[tier] = max(peak.get(tier, 0), n)
            if time.monotonic() >= deadline:
                return peak
            time.sleep(SAMPLE_INTERVAL)

    def close(self) -> None:
        self._conn.close()


class Sampler:
    """Peaks of memory and connections while a batch runs, from a thread of its own."""

    def __init__(self, *, admin_url: str, dbname: str, web_pgid: int, worker_pgid: int) -> None:
        self._admin_url = admin_url
        self._dbname = dbname
        self._web = web_pgid
        self._worker = worker_pgid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sizing-sampler", daemon=True)
        self._error: BaseException | None = None
        self.peak: dict[str, int] = {}
        self.samples = 0

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None and kind is None:
            raise RuntimeError("the sampler failed") from self._error

    def _run(self) -> None:
        try:
            probe = Connections(self._admin_url, self._dbname)
            try:
                while not self._stop.is_set():
                    self._sample(probe)
                    self._stop.wait(SAMPLE_INTERVAL)
            finally:
                probe.close()
        except Exception as exc:  # reported by __exit__ in the main thread
            self._error = exc

    def _sample(self, probe: Connections) -> None:
        table = process_table()
        web = group_memory(self._web, table)
        worker = group_memory(self._worker, table)
        builds = outside_memory(self._worker, table)
        figures = {
            "web_rss_kib": web.rss_kib,
            "web_pss_kib": web.pss_kib,
            "worker_rss_kib": worker.rss_kib,
            "worker_pss_kib": worker.pss_kib,
            "worker_processes": worker.processes,
            "builds_rss_kib": builds.rss_kib,
            "builds_processes": builds.processes,
            **{f"pg_{tier}": n for tier, n in probe.tiers().items()},
        }
        for key, value in figures.items():
            self.peak[key] = max(self.peak.get(key, 0), value)
        self.samples += 1


# --- the API -------------------------------------------------------------------------------


class Api:
    """The REST API as the demo user; one HTTP session per client thread."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self._token = token
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = cast(requests.Session | None, getattr(self._local, "session", None))
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Token {self._token}"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = self._session().get(self.base_url + path, params=params, timeout=30)
        return _json(response, 200)

    def post(self, path: str, body: dict[str, str], *, expect: int) -> dict[str, Any]:
        response = self._session().post(self.base_url + path, json=body, timeout=30)
        return _json(response, expect)

    def count(self, status: str) -> int:
        return int(self.get("/api/v1/publishing/", status=status)["count"])

    def close(self) -> None:
        for session in self._sessions:
            session.close()


def _json(response: requests.Response, expect: int) -> dict[str, Any]:
    if response.status_code != expect:
        raise RuntimeError(
            f"{response.request.method} {response.url}: {response.status_code} (wanted {expect}): "
            f"{response.text[:500]}"
        )
    body: dict[str, Any] = response.json()
    return body


def in_parallel_timed(api: Api, project_ids: Sequence[str]) -> tuple[list[str], list[float]]:
    """Initiate one publishing per project, as many at once as the web has threads.

    Returns the publishing ids and each request's latency in seconds.
    """

    def initiate(project_id: str) -> tuple[str, float]:
        started = time.perf_counter()
        body = api.post("/api/v1/publishing/initiate", {"project_id": project_id}, expect=202)
        return str(body["id"]), time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=WEB_WORKERS * WEB_THREADS) as pool:
        results = list(pool.map(initiate, project_ids))
    return [pid for pid, _ in results], [seconds for _, seconds in results]


def _when(body: dict[str, Any], field: str) -> datetime:
    value = body.get(field)
    if not isinstance(value, str):
        raise RuntimeError(f"publishing {body.get('id')} has no {field}: {body}")
    return datetime.fromisoformat(value)


# --- the run -------------------------------------------------------------------------------


class Run:
    """One benchmark run: owns the database, the Redis namespace, the processes and a temp dir."""

    def __init__(self, plan: Plan, *, admin_url: str, redis_url: str) -> None:
        self.plan = plan
        self.admin_url = admin_url
        self.redis_url = redis_url
        self.dbname = f"publisher_sizing_{os.getpid()}"
        self.database_url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{self.dbname}"))
        self.namespace = f"publisher-sizing-{secrets.token_hex(6)}"
        self.tmp = Path(tempfile.mkdtemp(prefix="publisher-sizing-"))
        self.processes = Processes(self.tmp)
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.secret_key = secrets.token_urlsafe(50)
        self.db_created = False
        self.connections: Connections | None = None
        self.api: Api | None = None

    # -- environment and commands

    def env(self, *, production: bool, app_name: str | None = None) -> dict[str, str]:
        env = publisher_env(
            DATABASE_URL=self.database_url,
            VAR_DIR=str(self.tmp / "var"),
            REDIS_URL=self.redis_url,
            BROKER_NAMESPACE=self.namespace,
            PUBLISHING_RATE_LIMIT="0",
            WORKER_METRICS_PORT="0",
            PYTHONUNBUFFERED="1",
        )
        if production:
            # settings.local hard-codes DEBUG = True (the DEBUG variable is
            # ignored there), and DEBUG keeps every SQL query in memory in
            # the workers, which have no request cycle to reset it. The web
            # and the worker therefore run the production settings, as a
            # deployment does, opened up for the demo's local git source and
            # file:// store.
            env.update(
                DJANGO_SETTINGS_MODULE="publisher_project.settings.production",
                SECRET_KEY=self.secret_key,
                DEBUG="false",
                SECURE_SSL_REDIRECT="false",
                PUBLISHING_ALLOW_LOCAL_SOURCES="true",
                PUBLISHING_ALLOW_PRIVATE_TARGETS="true",
                PUBLISHING_ALLOW_USER_BUILD_COMMANDS="true",
                PUBLISHING_FILE_STORE_ROOTS=str(self.tmp / "var" / "store"),
            )
        else:
            env["DJANGO_SETTINGS_MODULE"] = "publisher_project.settings.local"
        if app_name:
            env["PGAPPNAME"] = app_name
        return env

    def manage(self, *args: str) -> str:
        return manage(self.env(production=False), *args)

    # -- setup

    def create_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        self.db_created = True
        self.connections = Connections(self.admin_url, self.dbname)

    def bootstrap(self) -> tuple[str, str]:
        """Migrate, create the demo; return the demo user's token and the demo project's id."""
        self.manage("migrate", "--no-input")
        out = self.manage("bootstrap_demo", "--port", str(self.port))
        token = re.search(r"token:\s+(\S+)", out)
        project = re.search(r"project:\s+(\S+)", out)
        if not token or not project:
            raise RuntimeError(f"cannot read bootstrap_demo's output:\n{out}")
        return token.group(1), project.group(1)

    def start_web(self) -> subprocess.Popen[bytes]:
        argv = gunicorn_argv(self.port, workers=WEB_WORKERS, threads=WEB_THREADS)
        process = self.processes.start("web", argv, self.env(production=True, app_name=APP_WEB))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                # Any answer will do: health says 503 until the broker is checked.
                requests.get(f"{self.base_url}/api/v1/health", timeout=2)
                return process
            self.processes.check_alive("web")
            time.sleep(0.1)
        raise RuntimeError(f"the web server did not answer:\n{self.processes.log('web')}")

    def create_projects(self, api: Api, demo: dict[str, Any], count: int) -> list[str]:
        """Copies of the demo project: only one publishing per project may be active at a time."""
        fields = ("repository_url", "ref", "build_command", "artifact_path", "target_url")

        def create(index: int) -> str:
            body = {"name": f"Sizing {index:03d}", "slug": f"sizing-{index:03d}"}
            body.update({name: str(demo[name]) for name in fields})
            return str(api.post("/api/v1/projects/", body, expect=201)["id"])

        with ThreadPoolExecutor(max_workers=WEB_WORKERS * WEB_THREADS) as pool:
            return list(pool.map(create, range(count)))

    # -- measurements

    def wait_ready(self, name: str, processes: int, *, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.processes.log(name, tail=1_000_000).count(READY_LINE) < processes:
            self.processes.check_alive(name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not get ready:\n{self.processes.log(name)}")
            time.sleep(0.1)

    def wait_published(self, api: Api, target: int, failed_before: int, worker: str) -> None:
        deadline = time.monotonic() + 600
        while api.count("published") < target:
            if api.count("failed") > failed_before:
                raise RuntimeError(f"a publishing failed:\n{self.processes.log(worker)}")
            self.processes.check_alive(worker)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the batch did not finish:\n{self.processes.log(worker)}")
            time.sleep(0.25)

    def measure_worker(
        self, api: Api, web_pgid: int, processes: int, threads: int, projects: Sequence[str]
    ) -> dict[str, Any]:
        assert self.connections is not None
        name = f"worker-{processes}x{threads}"
        argv = [sys.executable, "manage.py", "rundramatiq"]
        argv += ["--processes", str(processes), "--threads", str(threads)]
        print(f"  {name}: starting", flush=True)
        booted = time.monotonic()
        worker = self.processes.start(name, argv, self.env(production=True, app_name=APP_WORKER))
        self.wait_ready(name, processes)
        boot_s = time.monotonic() - booted
        time.sleep(self.plan.settle)
        idle = group_memory(worker.pid)
        pg_idle = self.connections.peak_over(1.0)

        published_before = api.count("published")
        failed_before = api.count("failed")
        print(f"  {name}: batch of {len(projects)}", flush=True)
        with Sampler(
            admin_url=self.admin_url, dbname=self.dbname, web_pgid=web_pgid, worker_pgid=worker.pid
        ) as sampler:
            started = time.monotonic()
            ids, initiate_s = in_parallel_timed(api, projects)
            initiated_s = time.monotonic() - started
            self.wait_published(api, published_before + len(ids), failed_before, name)
            wall_s = time.monotonic() - started

        bodies = [api.get(f"/api/v1/publishing/{pid}") for pid in ids]
        queued = [_when(body, "queued_at") for body in bodies]
        began = [_when(body, "started_at") for body in bodies]
        finished = [_when(body, "finished_at") for body in bodies]
        span_s = (max(finished) - min(queued)).total_seconds()

        # Let the threads give back their connections before the idle figures.
        time.sleep(self.plan.settle)
        after = group_memory(worker.pid)
        pg_after = self.connections.peak_over(1.0)
        print(f"  {name}: stopping", flush=True)
        self.processes.stop(name)
        return {
            "processes": processes,
            "threads": threads,
            "boot_s": round(boot_s, 2),
            "idle": asdict(idle),
            "pg_idle": pg_idle,
            "batch": len(ids),
            "initiate_all_s": round(initiated_s, 2),
            "initiate_request_s": spread(initiate_s),
            "wall_s": round(wall_s, 2),
            "per_minute_wall": round(len(ids) / wall_s * 60, 1),
            "server_span_s": round(span_s, 2),
            "per_minute_server": round(len(ids) / span_s * 60, 1),
            "queued_to_finished_s": spread(
                [(f - q).total_seconds() for q, f in zip(queued, finished, strict=True)]
            ),
            "queued_to_started_s": spread(
                [(b - q).total_seconds() for q, b in zip(queued, began, strict=True)]
            ),
            "started_to_finished_s": spread(
                [(f - b).total_seconds() for b, f in zip(began, finished, strict=True)]
            ),
            "max_attempts": max(int(body["attempts"]) for body in bodies),
            "peak": dict(sampler.peak),
            "samples": sampler.samples,
            "after": asdict(after),
            "pg_after": pg_after,
        }

    def measure_redis(self, api: Api, projects: Sequence[str]) -> dict[str, Any]:
        """With no worker running, the Redis memory of waiting messages."""
        ids, _ = in_parallel_timed(api, projects)
        keys: dict[str, dict[str, Any]] = {}
        for pattern in (f"{self.namespace}:*", f"{self.namespace}-abort*"):
            for key in self.redis.scan_iter(match=pattern, count=1000):
                keys[str(key)] = self._describe(str(key))
        queue = f"{self.namespace}:{QUEUE}"
        messages = f"{queue}.msgs"
        for key in (queue, messages):
            if key not in keys:
                raise RuntimeError(f"no key {key} among {sorted(keys)}")
        payloads = cast(list[str], self.redis.hvals(messages))
        queue_bytes = int(keys[queue]["memory_usage"]) + int(keys[messages]["memory_usage"])
        return {
            "waiting": len(ids),
            "queue_length": keys[queue]["length"],
            "messages_length": keys[messages]["length"],
            "queue_bytes": queue_bytes,
            "bytes_per_message": round(queue_bytes / len(ids), 1),
            "payload_bytes_avg": round(sum(len(p.encode()) for p in payloads) / max(len(payloads), 1), 1),
            "keys": keys,
        }

    def _describe(self, key: str) -> dict[str, Any]:
        kind = str(self.redis.type(key))
        length_of = {"list": self.redis.llen, "hash": self.redis.hlen, "zset": self.redis.zcard}
        length: Any = length_of[kind](key) if kind in length_of else None
        # SAMPLES 0: every element is counted, not an estimate from five.
        usage: Any = self.redis.memory_usage(key, samples=0)
        return {"type": kind, "length": length, "memory_usage": int(usage or 0)}

    def measure_database(self) -> dict[str, Any]:
        with psycopg.connect(self.database_url, application_name=APP_PROBE) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            rows = conn.execute(
                "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables"
                " ORDER BY 2 DESC, 1 LIMIT 4"
            ).fetchall()
            tables = {}
            for relname, total in rows:
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(str(relname)))
                ).fetchone()
                tables[str(relname)] = {"rows": int(count[0]) if count else 0, "bytes": int(total)}
        return {"size_bytes": int(size[0]) if size else 0, "largest_tables": tables}

    def execute(self) -> dict[str, Any]:
        started = time.monotonic()
        machine = machine_info(self.redis, self.admin_url)
        print(f"database {self.dbname}, Redis namespace {self.namespace}, logs in {self.tmp}", flush=True)
        self.create_database()
        token, demo_id = self.bootstrap()
        setup_s = time.monotonic() - started

        web = self.start_web()
        time.sleep(self.plan.settle)
        web_cold = group_memory(web.pid)
        api = self.api = Api(self.base_url, token)
        demo = api.get(f"/api/v1/projects/{demo_id}/")
        print(f"creating {max(self.plan.batch, self.plan.waiting)} projects", flush=True)
        projects = self.create_projects(api, demo, max(self.plan.batch, self.plan.waiting))
        web_warm = group_memory(web.pid)

        workers = [
            self.measure_worker(api, web.pid, processes, threads, projects[: self.plan.batch])
            for processes, threads in self.plan.configs
        ]
        print(f"Redis: {self.plan.waiting} waiting messages, no worker", flush=True)
        redis_figures = self.measure_redis(api, projects[: self.plan.waiting])
        web_end = group_memory(web.pid)
        database = self.measure_database()
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return {
            "machine": machine,
            "setup_s": round(setup_s, 1),
            "web": {
                "workers": WEB_WORKERS,
                "threads": WEB_THREADS,
                "idle_at_start": asdict(web_cold),
                "idle_warm": asdict(web_warm),
                "idle_at_end": asdict(web_end),
            },
            "workers": workers,
            "redis": redis_figures,
            "database": database,
        }

    # -- cleanup

    def cleanup(self, *, keep_logs: bool) -> None:
        """Each step on its own: one failing must not leave the others undone."""
        steps = [
            ("stop processes", self.processes.stop_all),
            ("close the API sessions", lambda: self.api.close() if self.api else None),
            ("close the probe", lambda: self.connections.close() if self.connections else None),
            ("drop the database", self._drop_database),
            ("delete the Redis keys", self._delete_keys),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                print(f"cleanup: could not {what}: {exc!r}", file=sys.stderr)
        if keep_logs:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _drop_database(self) -> None:
        if not self.db_created:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # FORCE: a process that outlived its SIGKILL must not keep the database.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname))
            )

    def _delete_keys(self) -> None:
        delete_keys(self.redis, f"{self.namespace}:*", f"{self.namespace}-abort*")
        self.redis.close()


# --- machine and report --------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    web = report["web"]
    workers: list[dict[str, Any]] = report["workers"]
    redis_figures = report["redis"]
    database = report["database"]
    out = [
        f"Publisher sizing ({report['mode']}), {report['finished_at']}",
        f"command:  {report['command']}",
        f"machine:  {machine['nproc']} CPUs, {machine['mem_total_mib']} MiB, {machine['uname']}, "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, Redis {machine['redis']}",
        f"          load average {machine['loadavg_at_start']} at start, {machine['loadavg_at_end']} at end;"
        f" git {machine['git']}",
        f"run time: {report['duration_s']:.0f} s (setup {report['setup_s']:.0f} s)",
        "",
        f"Web: gunicorn {web['workers']} workers x {web['threads']} threads "
        f"(master + workers = {web['idle_at_start']['processes']} processes), MiB RSS / PSS",
    ]
    for label, key in (
        ("  idle, just started", "idle_at_start"),
        ("  idle, after 1st requests", "idle_warm"),
    ):
        out.append(f"{label:<34}{_mib(web[key]['rss_kib']):>6} / {_mib(web[key]['pss_kib'])}")
    out.append(
        f"{'  idle, at the end':<34}{_mib(web['idle_at_end']['rss_kib']):>6} / "
        f"{_mib(web['idle_at_end']['pss_kib'])}"
    )
    out.append("")
    width = 14
    header = f"{'Worker: rundramatiq P x T':<44}" + "".join(
        f"{str(w['processes']) + ' x ' + str(w['threads']):>{width}}" for w in workers
    )
    out.append(header)

    def row(label: str, values: list[str]) -> None:
        out.append(f"  {label:<42}" + "".join(f"{v:>{width}}" for v in values))

    row("processes in the group (idle)", [str(w["idle"]["processes"]) for w in workers])
    row("boot until ready, s", [f"{w['boot_s']:.1f}" for w in workers])
    row("idle RSS, MiB (sum over the group)", [_mib(w["idle"]["rss_kib"]) for w in workers])
    row("idle PSS, MiB", [_mib(w["idle"]["pss_kib"]) for w in workers])
    row("peak RSS in the batch, MiB", [_mib(w["peak"]["worker_rss_kib"]) for w in workers])
    row("peak PSS in the batch, MiB", [_mib(w["peak"]["worker_pss_kib"]) for w in workers])
    row("idle RSS after the batch, MiB", [_mib(w["after"]["rss_kib"]) for w in workers])
    row("git + build processes: peak RSS, MiB", [_mib(w["peak"]["builds_rss_kib"]) for w in workers])
    for tier in ("worker", "web"):
        row(
            f"PG connections, {tier}: idle / peak / after",
            [f"{w['pg_idle'][tier]} / {w['peak']['pg_' + tier]} / {w['pg_after'][tier]}" for w in workers],
        )
    row("PG connections, unattributed (peak)", [str(w["peak"]["pg_other"]) for w in workers])
    row("web peak RSS in the batch, MiB", [_mib(w["peak"]["web_rss_kib"]) for w in workers])
    row("batch: publishings started at once", [str(w["batch"]) for w in workers])
    row("initiating them all, s", [f"{w['initiate_all_s']:.1f}" for w in workers])
    row(
        "initiate request p50 / p95, ms",
        [f"{_ms(w['initiate_request_s']['p50'])} / {_ms(w['initiate_request_s']['p95'])}" for w in workers],
    )
    row("all published after (wall), s", [f"{w['wall_s']:.1f}" for w in workers])
    row("publishings per minute (wall)", [f"{w['per_minute_wall']:.0f}" for w in workers])
    row("publishings per minute (server span)", [f"{w['per_minute_server']:.0f}" for w in workers])
    for label, key in (
        ("queued -> finished p50 / p95, s", "queued_to_finished_s"),
        ("  queued -> started p50 / p95, s", "queued_to_started_s"),
        ("  started -> finished p50 / p95, s", "started_to_finished_s"),
    ):
        row(label, [f"{w[key]['p50']:.1f} / {w[key]['p95']:.1f}" for w in workers])
    row("most attempts of one publishing", [str(w["max_attempts"]) for w in workers])
    row("samples taken (every 0.1 s)", [str(w["samples"]) for w in workers])
    if len(workers) > 1:
        # The step between two shapes is what one more worker process costs,
        # which is what scaling out on one host adds.
        first, last = workers[0], workers[-1]
        extra = last["processes"] - first["processes"]
        if extra > 0:
            rss = (last["idle"]["rss_kib"] - first["idle"]["rss_kib"]) / extra
            pss = (last["idle"]["pss_kib"] - first["idle"]["pss_kib"]) / extra
            out.append(
                f"  each extra worker process, idle: +{_mib(int(rss))} MiB RSS, +{_mib(int(pss))} MiB PSS"
            )
    out += [
        "",
        f"Redis: {redis_figures['waiting']} messages waiting, no worker "
        f"(list {redis_figures['queue_length']}, hash {redis_figures['messages_length']} entries)",
        f"  MEMORY USAGE of {QUEUE} + {QUEUE}.msgs: {redis_figures['queue_bytes']} B"
        f" = {redis_figures['bytes_per_message']:.0f} B per waiting message"
        f" (message body {redis_figures['payload_bytes_avg']:.0f} B on average)",
        "",
        f"PostgreSQL after the run: database {database['size_bytes'] / 2**20:.1f} MiB; largest tables:",
    ]
    for name, table in database["largest_tables"].items():
        out.append(f"  {name:<40}{table['rows']:>7} rows {table['bytes'] / 1024:>9.0f} KiB")
    out += ["", "Notes:", *(f"  - {note}" for note in report["notes"])]
    return "\n".join(out)


NOTES = [
    "The demo build is tiny: throughput and latency are the per-job overhead of the whole path "
    "(git clone, build subprocess, package, submit, status writes), not a real build's cost. "
    "Add your build's own time and memory per worker thread.",
    "RSS sums count pages shared by forked processes (gunicorn and dramatiq fork their workers) "
    "once per process; PSS splits them and is closer to what the group really takes.",
    "Peaks are sampled every 0.1 s. Each web and worker thread keeps its PostgreSQL connection "
    "for DATABASE_CONN_MAX_AGE (60 s) once it has served a request or run a job: the peaks are "
    "about the threads that did.",
    "Throughput on a shared machine is noisy: compare runs on the same machine only; "
    "the load averages show how busy it was. The benchmark's client and sampler use CPU too.",
    "Web and worker run publisher_project.settings.production (DEBUG off) with local sources "
    "and file:// targets allowed; rate limit off; worker metrics off.",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sizing",
        description="Measure memory, connections, throughput and Redis use of a Publisher deployment.",
    )
    parser.add_argument("--quick", action="store_true", help="1x4 worker only, 10 jobs, 50 waiting messages")
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help="maintenance database URL; the run creates and drops its own database beside it",
    )
    parser.add_argument(
        "--redis", default=DEFAULT_REDIS, help="Redis URL; the run uses a key prefix of its own"
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/sizing[-quick].json)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output: Path = args.output or RESULTS / ("sizing-quick.json" if args.quick else "sizing.json")
    command = shlex.join([sys.executable, "-m", "bench.sizing", *(sys.argv[1:] if argv is None else argv)])

    signal.signal(signal.SIGTERM, raise_exit)
    started = time.monotonic()
    run = Run(plan, admin_url=args.postgres, redis_url=args.redis)
    ok = False
    try:
        report = run.execute()
        ok = True
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run.cleanup(keep_logs=not ok)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report = {
        "mode": "quick" if args.quick else "full",
        "command": command,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "plan": asdict(plan),
        **report,
        "notes": NOTES,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(render(report))
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # main() has cleaned up by now; the traceback would only say where it was.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
