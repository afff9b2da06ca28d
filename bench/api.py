"""API throughput: `POST /api/v1/publishing/initiate` against an insert-only endpoint in the same app.

`python -m bench api [--smoke]`. A database of its own on the PostgreSQL
server (migrated; the demo user and its token from `bootstrap_demo`; 20 000
projects inserted in one statement, because a project may have only one
active publishing and every initiate must be a 202), and gunicorn
with 2 workers x 4 threads (docker/bin/web's defaults, as bench.sizing runs
it) serving `bench.settings` (production settings, DEBUG off) with the run's
private Redis as the broker, under a namespace of its own; no worker runs.

A loopback load generator (threads, one keep-alive `http.client` connection
each, more connections than the server has threads so that both gunicorn
workers stay busy) drives, for a fixed time per round, initiate with a fresh
project per request (expects 202) and `POST /bench/insert` (same token auth,
same parsing and project lookup, one INSERT: expects 201) over the same
projects. Rounds alternate the two (AB, BA, AB) so that both see the same
machine; the table gives the medians of the rounds' req/s and latency
percentiles. Every answer's status is checked; anything else is counted.

The client must not be the limit: the run measures its CPU share during each
round, and first drives a trivial endpoint (`GET /api/v1/`, no database) to
show the rate the client and gunicorn reach without the database.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import secrets
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from bench.common import (
    Context,
    Outcome,
    Processes,
    Target,
    bootstrap_demo,
    delete_keys,
    group_cpu_seconds,
    gunicorn_argv,
    manage,
    own_database,
    percentile,
    publisher_env,
    ratio,
)
from publishing.redis_server import free_port

# docker/bin/web's defaults (WEB_CONCURRENCY, GUNICORN_THREADS), which bench.sizing also runs.
WEB_WORKERS = 2
WEB_THREADS = 4

INITIATE = "/api/v1/publishing/initiate"
INSERT = "/bench/insert"
TRIVIAL = "/api/v1/"  # the API root: no authentication header, no database, no broker


# --- a Publisher web site of its own ---------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A running gunicorn on a database of its own, with a user, its token and many projects."""

    port: int
    token: str
    projects: list[str]
    processes: Processes
    pgid: int  # gunicorn's process group: the master and its workers
    database_url: str
    env: dict[str, str]  # every process of the site's: another one on its database and broker takes it

    def check_alive(self) -> None:
        self.processes.check_alive("web")


@contextlib.contextmanager
def publisher_site(context: Context, *, name: str, redis_url: str, projects: int) -> Iterator[Site]:
    """Serve Publisher (bench.settings) with gunicorn on a new database and `redis_url`; remove all at exit.

    The database, the gunicorn processes and the Redis keys of the site's
    broker namespace are removed at exit, whatever happened.
    """
    namespace = f"bench-{name}-{secrets.token_hex(4)}"
    dbname = f"publisher_bench_{name}_{os.getpid()}"
    processes = Processes(context.workdir)
    with own_database(context.postgres_url, dbname) as database_url:
        env = publisher_env(
            DJANGO_SETTINGS_MODULE="bench.settings",
            SECRET_KEY=secrets.token_urlsafe(50),
            DEBUG="false",
            # Plain HTTP on loopback: the production redirect to HTTPS would answer every call with 301.
            SECURE_SSL_REDIRECT="false",
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            BROKER_NAMESPACE=namespace,
            PUBLISHING_RATE_LIMIT="0",
            WORKER_METRICS_PORT="0",
            VAR_DIR=str(context.workdir / "var"),
            PYTHONUNBUFFERED="1",
        )
        try:
            manage(env, "migrate", "--no-input")
            token, demo = bootstrap_demo(env)
            project_ids = copy_project(database_url, demo, projects)
            port = free_port()
            web = processes.start("web", gunicorn_argv(port, workers=WEB_WORKERS, threads=WEB_THREADS), env)
            wait_listening(port, processes)
            yield Site(port, token, project_ids, processes, web.pid, database_url, env)
        finally:
            processes.stop_all()
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis.from_url(redis_url, socket_timeout=5)
                delete_keys(client, f"{namespace}:*", f"{namespace}-abort*")
                client.close()


def copy_project(database_url: str, project_id: str, count: int) -> list[str]:
    """`count` copies of a project, in one INSERT ... SELECT: the API would take minutes for thousands."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO publishing_project (id, owner_id, name, slug, repository_url, ref, build_command,"
            " artifact_path, target_url, webhook_url, webhook_secret, created_at, updated_at)"
            " SELECT gen_random_uuid(), owner_id, 'Bench ' || n, 'bench-' || n, repository_url, ref,"
            " build_command, artifact_path, target_url, '', '', now(), now()"
            " FROM publishing_project, generate_series(1, %s) AS n WHERE id = %s RETURNING id",
            (count, project_id),
        ).fetchall()
        # Now rather than by autovacuum in the middle of a round.
        conn.execute("ANALYZE publishing_project")
    return [str(row[0]) for row in rows]


def wait_listening(port: int, processes: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                # Any answer will do: the API root needs neither the database nor the broker.
                connection.request("GET", TRIVIAL, headers={"Accept": "application/json"})
                connection.getresponse().read()
                return
            finally:
                connection.close()
        processes.check_alive("web")
        time.sleep(0.1)
    raise RuntimeError(f"the web server did not answer:\n{processes.log('web')}")


# --- the load generator ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    at: float  # seconds from the start of the load to the request
    seconds: float  # from the request to the end of the answer
    status: int  # 0: no answer (the connection failed)
    code: str | None  # an error answer's "code"


@dataclass
class Load:
    """What one run of the load generator saw."""

    answers: list[Answer]
    wall: float  # seconds from the first request to the last answer
    client_cpu: float  # CPU seconds of this process (every thread of the client) meanwhile
    web_cpu: float  # CPU seconds of gunicorn's processes meanwhile

    def count(self, status: int) -> int:
        return sum(1 for answer in self.answers if answer.status == status)

    def unexpected(self, status: int) -> Counter[int]:
        return Counter(answer.status for answer in self.answers if answer.status != status)

    def latencies_ms(self) -> list[float]:
        return [answer.seconds * 1000 for answer in self.answers]


class Feed:
    """Request bodies handed out to the client threads; None when there are no more."""

    def __init__(self, project_ids: Sequence[str], *, cycle: bool) -> None:
        self._ids = project_ids
        self._next = 0
        self._cycle = cycle
        self._lock = threading.Lock()

    def __call__(self) -> bytes | None:
        with self._lock:
            if self._next >= len(self._ids):
                if not self._cycle:
                    return None
                self._next = 0
            project_id = self._ids[self._next]
            self._next += 1
        return json.dumps({"project_id": project_id}).encode()

    @property
    def used(self) -> int:
        return self._next

    def take(self, count: int) -> Feed:
        """A feed of the next `count` projects of this one, which skips them."""
        with self._lock:
            ids = self._ids[self._next : self._next + count]
            self._next += len(ids)
        return Feed(ids, cycle=False)


def drive(
    site: Site,
    path: str,
    *,
    bodies: Callable[[], bytes | None] | None,
    connections: int,
    seconds: float,
    interval: float = 0.0,
    authenticate: bool = True,
) -> Load:
    """`connections` threads, each with its own keep-alive connection, send requests for `seconds`.

    A POST with the next body from `bodies` (until it says None) or, without
    `bodies`, a GET. Each thread waits for its answer before the next request
    and, with `interval`, starts one request per interval at most, the threads
    spread evenly over it.
    """
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if authenticate:
        headers["Authorization"] = f"Token {site.token}"
    answers: list[Answer] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def client(phase: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
        mine: list[Answer] = []
        slot = start + phase
        try:
            while True:
                if interval:
                    if slot >= deadline:
                        break
                    time.sleep(max(0.0, slot - time.perf_counter()))
                    slot += interval
                elif time.perf_counter() >= deadline:
                    break
                body = bodies() if bodies else None
                if bodies and body is None:
                    break
                sent = time.perf_counter()
                try:
                    connection.request("POST" if bodies else "GET", path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException):
                    connection.close()  # the next request opens a new one
                    mine.append(Answer(sent - start, time.perf_counter() - sent, 0, None))
                    continue
                code = None
                if response.status >= 400:
                    try:
                        code = str(json.loads(data)["code"])
                    except (ValueError, KeyError, TypeError):
                        code = "?"
                mine.append(Answer(sent - start, time.perf_counter() - sent, response.status, code))
        finally:
            connection.close()
            with lock:
                answers.extend(mine)

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_before, web_before = cpu(), group_cpu_seconds(site.pgid)
    # Paced threads take turns rather than send together, so that requests arrive evenly.
    threads = [
        threading.Thread(target=client, args=(n * interval / connections,), name=f"bench-client-{n}")
        for n in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    answers.sort(key=lambda answer: answer.at)
    return Load(answers, wall, cpu() - cpu_before, group_cpu_seconds(site.pgid) - web_before)


# --- the benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rounds: int  # each: initiate and insert, alternating which goes first
    seconds: float  # of load per endpoint per round
    warmup: float  # seconds per endpoint before the rounds, not counted
    trivial: float  # seconds on the trivial endpoint
    projects: int  # each initiate takes one: several times what the fastest run here used


# 16 connections for 2 x 4 server threads: each gunicorn worker accepts its
# share of the keep-alive connections for good, and with only 8 an uneven split
# would leave threads of one worker idle.
CONNECTIONS = 16
FULL = Plan(rounds=3, seconds=8.0, warmup=2.0, trivial=3.0, projects=20_000)
SMOKE = Plan(rounds=1, seconds=2.0, warmup=0.5, trivial=1.0, projects=2_000)


@dataclass
class Figures:
    """One endpoint over the rounds."""

    expect: int
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def add(self, load: Load) -> None:
        ok = load.count(self.expect)
        latencies = load.latencies_ms()
        self.rounds.append(
            {
                "requests": len(load.answers),
                "ok": ok,
                "unexpected": {str(status): n for status, n in load.unexpected(self.expect).items()},
                "wall_s": round(load.wall, 3),
                "req_per_s": round(ok / load.wall, 1),
                "p50_ms": round(percentile(latencies, 0.50), 2),
                "p90_ms": round(percentile(latencies, 0.90), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
                "max_ms": round(max(latencies), 2) if latencies else None,
                "client_cpu_share": round(load.client_cpu / load.wall, 3),
                "web_cpu_ms_per_request": round(load.web_cpu * 1000 / max(len(load.answers), 1), 2),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        )

    def median(self, key: str) -> float:
        return float(statistics.median(r[key] for r in self.rounds))

    def summary(self) -> dict[str, Any]:
        keys = ("req_per_s", "p50_ms", "p90_ms", "p99_ms", "client_cpu_share", "web_cpu_ms_per_request")
        return {
            "expect": self.expect,
            "rounds": self.rounds,
            **{key: round(self.median(key), 3) for key in keys},
            "non_expected": sum(sum(r["unexpected"].values()) for r in self.rounds),
        }


def run(context: Context) -> Outcome:
    plan = SMOKE if context.smoke else FULL
    started = time.monotonic()
    with publisher_site(context, name="api", redis_url=context.redis_url, projects=plan.projects) as site:
        setup_s = time.monotonic() - started
        fresh = Feed(site.projects, cycle=False)  # initiate: one request per project, ever
        reused = Feed(site.projects, cycle=True)  # insert: any project will do
        endpoints = {
            "initiate": (INITIATE, fresh, Figures(expect=202)),
            "insert": (INSERT, reused, Figures(expect=201)),
        }
        for path, feed, _ in endpoints.values():
            drive(site, path, bodies=feed, connections=CONNECTIONS, seconds=plan.warmup)
        trivial = Figures(expect=200)
        trivial.add(
            drive(
                site, TRIVIAL, bodies=None, connections=CONNECTIONS, seconds=plan.trivial, authenticate=False
            )
        )
        for number in range(plan.rounds):
            order = ["initiate", "insert"] if number % 2 == 0 else ["insert", "initiate"]
            for name in order:
                path, feed, stats = endpoints[name]
                stats.add(drive(site, path, bodies=feed, connections=CONNECTIONS, seconds=plan.seconds))
                site.check_alive()
        projects_used, projects = fresh.used, len(site.projects)
    initiate, insert = endpoints["initiate"][2].summary(), endpoints["insert"][2].summary()
    ceiling = trivial.summary()
    figures: dict[str, Any] = {
        "plan": {**plan.__dict__, "connections": CONNECTIONS},
        "web": {"workers": WEB_WORKERS, "threads": WEB_THREADS},
        "setup_s": round(setup_s, 1),
        "projects": projects,
        "projects_used": projects_used,
        "initiate": initiate,
        "insert": insert,
        "trivial": ceiling,
        "ratio": round(ratio(initiate["req_per_s"], insert["req_per_s"]), 3),
        # Each round's own: the two endpoints of a round ran back to back.
        "round_ratios": [
            round(ratio(a["req_per_s"], b["req_per_s"]), 3)
            for a, b in zip(initiate["rounds"], insert["rounds"], strict=True)
        ],
    }
    cpu_ratio = ratio(initiate["web_cpu_ms_per_request"], insert["web_cpu_ms_per_request"])
    return Outcome(
        title=f"API: initiate vs an insert-only endpoint, gunicorn {WEB_WORKERS}x{WEB_THREADS}, PostgreSQL",
        table=table(figures),
        targets=[
            Target(
                "initiate req/s >= 0.9x insert-only",
                f"{figures['ratio']:.2f}x ({initiate['req_per_s']:.0f} vs {insert['req_per_s']:.0f} req/s)",
                figures["ratio"] >= 0.9,
            ),
            Target(
                "initiate web CPU per request <= 1.5x insert-only's",
                f"{cpu_ratio:.2f}x ({initiate['web_cpu_ms_per_request']:.1f} vs "
                f"{insert['web_cpu_ms_per_request']:.1f} ms)",
                cpu_ratio <= 1.5,
            ),
        ],
        figures=figures,
        notes=notes(figures),
    )


def table(figures: dict[str, Any]) -> list[list[str]]:
    rows = [
        ["endpoint", "req/s", "p50 ms", "p90 ms", "p99 ms", "other status", "web CPU ms/req", "client CPU"]
    ]
    for key, label in (
        ("initiate", f"POST {INITIATE} (202)"),
        ("insert", f"POST {INSERT} (201)"),
        ("trivial", f"GET {TRIVIAL}, no database (200)"),
    ):
        row = figures[key]
        rows.append(
            [
                label,
                f"{row['req_per_s']:.0f}",
                f"{row['p50_ms']:.1f}",
                f"{row['p90_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                str(row["non_expected"]),
                f"{row['web_cpu_ms_per_request']:.1f}",
                f"{row['client_cpu_share']:.0%}",
            ]
        )
    initiate, insert = figures["initiate"], figures["insert"]
    rows.insert(
        3,
        [
            "ratio initiate/insert",
            f"{figures['ratio']:.2f}x",
            f"{ratio(initiate['p50_ms'], insert['p50_ms']):.2f}x",
            f"{ratio(initiate['p90_ms'], insert['p90_ms']):.2f}x",
            f"{ratio(initiate['p99_ms'], insert['p99_ms']):.2f}x",
            "",
            f"{ratio(initiate['web_cpu_ms_per_request'], insert['web_cpu_ms_per_request']):.2f}x",
            "",
        ],
    )
    return rows


def notes(figures: dict[str, Any]) -> list[str]:
    plan, trivial, insert = figures["plan"], figures["trivial"], figures["insert"]
    out = [
        f"{plan['rounds']} rounds of {plan['seconds']:.0f} s per endpoint, alternating which goes first, "
        f"after {plan['warmup']:.0f} s of warm-up each; {plan['connections']} keep-alive connections "
        "from client threads that wait for each answer; medians of the rounds "
        f"(initiate/insert per round: {', '.join(f'{r:.2f}' for r in figures['round_ratios'])}).",
        "Every initiate has a project of its own (a project may have one active publishing); no worker "
        "runs, so each leaves a queued message in Redis. Insert-only: same token auth, parsing and project "
        "lookup, one INSERT of a cancelled publishing, no broker.",
        "Both keep their PostgreSQL connection between requests (production settings, "
        "DATABASE_CONN_MAX_AGE 60 s).",
        "web CPU: gunicorn's processes per request (PostgreSQL's own CPU is not in it); client CPU: the "
        "load generator's share of one core.",
        f"The client is not the limit: on the trivial endpoint it drove {trivial['req_per_s']:.0f} req/s "
        f"({ratio(trivial['req_per_s'], insert['req_per_s']):.0f}x insert-only's rate) with "
        f"{trivial['client_cpu_share']:.0%} of a core, and used {insert['client_cpu_share']:.0%} during "
        "insert-only's rounds.",
    ]
    if figures["projects_used"] >= figures["projects"]:
        out.insert(0, "Initiate ran out of projects: its last round stopped early (its rate is still right).")
    return out


def chart(figures: dict[str, Any], axes: Any) -> None:
    keys = ("p50_ms", "p90_ms", "p99_ms")
    names = [("initiate", "initiate"), ("insert", "insert-only")]
    width = 0.8 / len(names)
    for offset, (key, label) in enumerate(names):
        row = figures[key]
        positions = [k + offset * width for k in range(len(keys))]
        axes.bar(positions, [row[k] for k in keys], width, label=f"{label}: {row['req_per_s']:.0f} req/s")
    axes.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(keys))], ["p50", "p90", "p99"])
    axes.set_ylabel(f"ms per request, {figures['plan']['connections']} connections")
    axes.legend()
