"""Queue overhead: no-op jobs through Publisher's worker stack, bare Dramatiq and Celery, on one Redis.

`python -m bench overhead [--smoke]`. The same number of no-op jobs goes
through each peer, the peers interleaved over three rounds (the order turned
each round), all on the run's private Redis under key prefixes of this run:

- Publisher: `manage.py rundramatiq --processes 2 --threads 8` with
  DJANGO_SETTINGS_MODULE=bench.settings (production settings, every one of
  Publisher's middleware, metrics on), the rate limit off, a PostgreSQL
  database of its own; messages of `bench.site.tasks.noop` enqueued through
  `publishing.broker.enqueue`, as the web tier enqueues (`bench.peer_publisher`).
- bare Dramatiq: the `dramatiq` CLI, 2 processes x 8 threads, `RedisBroker`
  with its default middleware (`bench.peer_dramatiq`).
- Celery: `celery worker`, prefork, concurrency 2, no result backend
  (`bench.peer_celery`).

Each peer, each round: one process enqueues all the jobs with no worker
running (the enqueue rate: jobs over the sending loop's own time, imports
excluded); then its workers start against the full queue and the benchmark
reads, every 5 ms, how many jobs are not done yet: for Dramatiq the queue's
message hash (`<queue>.msgs`: a message leaves it when acked, after its actor
and middleware ran), for Celery the queue plus kombu's unacked hash (acks
late). Reading costs the workers nothing and is the same for each. The drain
is timed from the moment every worker process is fetching (Dramatiq's
heartbeat set says so; Celery fetches in one process) and a first job is
done, to the last job done, so that the workers' boot is not in it. Also
read over the drain: the worker process group's CPU and the Redis commands
it sends; when the queue is empty, its memory (RSS and PSS). Medians over
the rounds.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    ROOT,
    Context,
    Memory,
    Outcome,
    Processes,
    Target,
    delete_keys,
    group_cpu_seconds,
    group_memory,
    manage,
    own_database,
    publisher_env,
    ratio,
)
from publishing.redis_server import free_port

# Publisher's full stack drains about 80 no-op jobs/s on a shared 2-CPU machine (see the notes):
# 1 000 jobs a peer, three rounds, fit the 3 minutes this benchmark may take.
JOBS, SMOKE_JOBS = 1_000, 200
ROUNDS, SMOKE_ROUNDS = 3, 1
PROCESSES, THREADS = 2, 8
CELERY_CONCURRENCY = 2
POLL_SECONDS = 0.005
POLL_COMMANDS = 2  # in each peer's `progress`
DRAIN_TIMEOUT = 300.0
BIN = Path(sys.executable).parent
# The queue of every peer's no-op (bench.site.tasks, bench.peer_dramatiq, bench.peer_celery), and the
# hash where kombu keeps Celery's fetched, unacked messages. Not imported: those modules build
# their brokers at import, from the worker's environment.
QUEUE = "bench-noop"
CELERY_UNACKED = "unacked"

PUBLISHER, DRAMATIQ, CELERY = "publisher", "dramatiq", "celery"
PEERS = (PUBLISHER, DRAMATIQ, CELERY)
LABELS = {
    PUBLISHER: "Publisher (rundramatiq, all middleware)",
    DRAMATIQ: "bare Dramatiq",
    CELERY: "Celery (prefork)",
}


@dataclass(frozen=True)
class Peer:
    """How to run one peer: its worker command, its sender and how many of its jobs are not done."""

    name: str
    worker: list[str]
    sender: list[str]
    env: dict[str, str]
    # Given the workers' start (ms since the epoch): how many jobs are not done yet, and whether
    # every worker process has begun fetching.
    progress: Callable[[int], tuple[int, bool]]

    def pending(self) -> int:
        return self.progress(0)[0]


@dataclass(frozen=True)
class Sample:
    """One peer, one round."""

    jobs: int
    enqueue_s: float
    boot_s: float  # workers started -> every worker process fetching and a first job done
    drain_s: float  # from then to the last job done
    drained: int  # jobs done in drain_s
    worker_cpu_s: float  # CPU of the worker group over drain_s
    machine_busy: float  # share of all the machine's CPUs busy over drain_s (anyone's work)
    redis_commands: int  # that the workers sent from their start to empty
    memory: Memory  # the worker group when the queue is empty

    @property
    def enqueue_per_s(self) -> float:
        return self.jobs / self.enqueue_s

    @property
    def drain_per_s(self) -> float:
        return self.drained / self.drain_s if self.drain_s > 0 else math.nan

    @property
    def worker_cpu_ms_per_job(self) -> float:
        return self.worker_cpu_s / self.drained * 1000 if self.drained else math.nan

    @property
    def worker_cpus(self) -> float:
        """CPUs the workers kept busy on average over the drain."""
        return self.worker_cpu_s / self.drain_s if self.drain_s > 0 else math.nan


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user and nice
    return total - idle, total


class Stack:
    """The run's peers on one Redis: owns a PostgreSQL database, the key prefix and the processes."""

    def __init__(self, context: Context, name: str) -> None:
        self.context = context
        self.prefix = f"bench-{name}-{secrets.token_hex(4)}"
        self.redis = redis.Redis.from_url(context.redis_url, socket_timeout=10)
        self.processes = Processes(context.workdir)
        self.secret_key = secrets.token_urlsafe(50)
        self.database_url = ""
        self._exit = contextlib.ExitStack()
        self._stopper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-stop")
        self._stopping: list[Future[None]] = []

    def __enter__(self) -> Stack:
        try:
            self.database_url = self._exit.enter_context(
                own_database(self.context.postgres_url, self.prefix.replace("-", "_"))
            )
            manage(self.publisher_env(), "migrate", "--no-input")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Each step on its own, so that one failing leaves none of the others undone."""
        for what, step in (
            ("stop the workers", self._stop_all),
            ("drop the database", self._exit.close),
            ("delete the Redis keys", lambda: delete_keys(self.redis, f"{self.prefix}*")),
            ("close the Redis client", self.redis.close),
        ):
            try:
                step()
            except Exception as exc:
                print(f"cleanup: could not {what}: {exc!r}", file=sys.stderr)

    def _stop_all(self) -> None:
        self._stopper.shutdown(wait=True)
        self._stopping.clear()
        self.processes.stop_all()

    # --- the peers -------------------------------------------------------------------------

    def publisher_env(self) -> dict[str, str]:
        var = self.context.workdir / "var"
        return publisher_env(
            DJANGO_SETTINGS_MODULE="bench.settings",
            SECRET_KEY=self.secret_key,
            DEBUG="false",
            SECURE_SSL_REDIRECT="false",
            DATABASE_URL=self.database_url,
            REDIS_URL=self.context.redis_url,
            BROKER_URL=self.context.redis_url,
            BROKER_NAMESPACE=f"{self.prefix}-publisher",
            PUBLISHING_RATE_LIMIT="0",
            PUBLISHING_WORKER_NAME=self.prefix,
            # Metrics are on in production: measured with them, on a port of the run's own.
            WORKER_METRICS_PORT=str(free_port()),
            VAR_DIR=str(var),
            PYTHONUNBUFFERED="1",
        )

    def publisher(self, processes: int = PROCESSES, threads: int = THREADS) -> Peer:
        env = self.publisher_env()
        worker = [sys.executable, "manage.py", "rundramatiq"]
        worker += ["--processes", str(processes), "--threads", str(threads)]
        return Peer(
            name=PUBLISHER,
            worker=worker,
            sender=[sys.executable, "-m", "bench.peer_publisher", "send"],
            env=env,
            progress=self._dramatiq_progress(env["BROKER_NAMESPACE"], processes),
        )

    def dramatiq(self) -> Peer:
        env = publisher_env(
            BENCH_REDIS_URL=self.context.redis_url,
            BENCH_NAMESPACE=f"{self.prefix}-dramatiq",
            PYTHONUNBUFFERED="1",
        )
        worker = [str(BIN / "dramatiq"), "--processes", str(PROCESSES), "--threads", str(THREADS)]
        return Peer(
            name=DRAMATIQ,
            worker=[*worker, "bench.peer_dramatiq"],
            sender=[sys.executable, "-m", "bench.peer_dramatiq", "send"],
            env=env,
            progress=self._dramatiq_progress(env["BENCH_NAMESPACE"], PROCESSES),
        )

    def celery(self) -> Peer:
        namespace = f"{self.prefix}-celery"
        env = publisher_env(
            BENCH_REDIS_URL=self.context.redis_url, BENCH_NAMESPACE=namespace, PYTHONUNBUFFERED="1"
        )
        worker = [str(BIN / "celery"), "-A", "bench.peer_celery", "worker"]
        worker += ["--pool", "prefork", "--concurrency", str(CELERY_CONCURRENCY)]
        worker += ["--queues", QUEUE, "--hostname", f"{namespace}@%h"]
        # Cluster chatter (and Celery's per-task INFO lines) off: Dramatiq has neither.
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
        queue = f"{namespace}:{QUEUE}"
        unacked = f"{namespace}:{CELERY_UNACKED}"

        def progress(since_ms: int) -> tuple[int, bool]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.llen(queue)
            pipe.hlen(unacked)
            # One process fetches for the pool, forked before it starts fetching.
            return sum(int(n) for n in pipe.execute()), True

        return Peer(
            name=CELERY,
            worker=worker,
            sender=[sys.executable, "-m", "bench.peer_celery", "send"],
            env=env,
            progress=progress,
        )

    def peer(self, name: str) -> Peer:
        build: dict[str, Callable[[], Peer]] = {
            PUBLISHER: self.publisher,
            DRAMATIQ: self.dramatiq,
            CELERY: self.celery,
        }
        return build[name]()

    def _dramatiq_progress(self, namespace: str, processes: int) -> Callable[[int], tuple[int, bool]]:
        # Dramatiq's Redis broker keeps each message in this hash until it is acked, and each
        # broker (one per process, the sender's too) stamps its id in the heartbeats set at every
        # call, with the caller's clock.
        messages = f"{namespace}:{QUEUE}.msgs"
        heartbeats = f"{namespace}:__heartbeats__"

        def progress(since_ms: int) -> tuple[int, bool]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hlen(messages)
            pipe.zcount(heartbeats, since_ms, "+inf")
            left, fetching = pipe.execute()
            return int(left), int(fetching) >= processes

        return progress

    # --- measuring -----------------------------------------------------------------------------

    def measure(self, peer: Peer, jobs: int, *, label: str | None = None) -> Sample:
        """Enqueue `jobs` with no worker running, then start the workers and time the drain."""
        self._wait_stopped()
        if left := peer.pending():
            raise RuntimeError(f"{peer.name}: {left} jobs left over before the round")
        enqueue_s = self._send(peer, jobs)
        if (queued := peer.pending()) != jobs:
            raise RuntimeError(f"{peer.name}: {queued} jobs queued, {jobs} sent")
        self._wait_stopped()
        name = label or peer.name
        since_ms = int(time.time() * 1000)
        commands_before = self._redis_commands()
        polls = 0
        process = self.processes.start(name, peer.worker, peer.env)
        started = checked = time.monotonic()
        # (time, jobs left, worker CPU, machine CPU) when every worker process is fetching and a job
        # is done: the drain is timed from there, so that a process that boots late does not count.
        mark: tuple[float, int, float, tuple[int, int]] | None = None
        while True:
            left, all_fetching = peer.progress(since_ms)
            polls += 1
            now = time.monotonic()
            if mark is None and left < jobs and (all_fetching or left == 0):
                mark = (now, left, group_cpu_seconds(process.pid), machine_cpu_ticks())
            if left == 0:
                break
            if now - checked > 0.5:
                self.processes.check_alive(name)
                checked = now
                if now - started > DRAIN_TIMEOUT:
                    raise RuntimeError(f"{name}: {left} jobs left after {DRAIN_TIMEOUT:.0f} s")
            time.sleep(POLL_SECONDS)
        assert mark is not None
        marked, drained, cpu, machine = mark
        cpu_s = group_cpu_seconds(process.pid) - cpu
        busy, total = (after - before for after, before in zip(machine_cpu_ticks(), machine, strict=True))
        # Less this loop's own: each poll is one pipeline of POLL_COMMANDS, plus the first INFO.
        commands = self._redis_commands() - commands_before - polls * POLL_COMMANDS - 1
        memory = group_memory(process.pid)
        # Stopping takes seconds of mostly waiting: it overlaps the next peer's enqueue, and the
        # next drain waits for it.
        self._stopping.append(self._stopper.submit(self.processes.stop, name))
        return Sample(
            jobs=jobs,
            enqueue_s=enqueue_s,
            boot_s=marked - started,
            drain_s=now - marked,
            drained=drained,
            worker_cpu_s=cpu_s,
            machine_busy=busy / total if total else math.nan,
            redis_commands=commands,
            memory=memory,
        )

    def _wait_stopped(self) -> None:
        while self._stopping:
            self._stopping.pop().result()

    def _redis_commands(self) -> int:
        stats: dict[str, Any] = self.redis.info("stats")
        return int(stats["total_commands_processed"])

    def _send(self, peer: Peer, jobs: int) -> float:
        result = subprocess.run(
            [*peer.sender, str(jobs)],
            cwd=ROOT,
            env=peer.env,
            capture_output=True,
            text=True,
            timeout=DRAIN_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{peer.name}: sending failed:\n{result.stdout}\n{result.stderr[-4000:]}")
        seconds: float = json.loads(result.stdout.strip().splitlines()[-1])["seconds"]
        return seconds


# --- the benchmark -----------------------------------------------------------------------------


def run(context: Context) -> Outcome:
    jobs, rounds = (SMOKE_JOBS, SMOKE_ROUNDS) if context.smoke else (JOBS, ROUNDS)
    samples: dict[str, list[Sample]] = {name: [] for name in PEERS}
    with Stack(context, "overhead") as peers:
        for number in range(rounds):
            # Turned each round: no peer always runs first, or right after the heaviest.
            order = PEERS[number % len(PEERS) :] + PEERS[: number % len(PEERS)]
            for name in order:
                sample = peers.measure(peers.peer(name), jobs, label=f"{name}-{number + 1}")
                samples[name].append(sample)
                print(
                    f"  round {number + 1} {name}: enqueue {sample.enqueue_per_s:,.0f}/s, "
                    f"drain {sample.drain_per_s:,.0f}/s",
                    flush=True,
                )
    figures = {name: summarise(values) for name, values in samples.items()}
    return outcome(figures, jobs=jobs, rounds=rounds)


def summarise(samples: list[Sample]) -> dict[str, Any]:
    """Medians over the rounds, and each round."""
    return {
        "enqueue_per_s": statistics.median(s.enqueue_per_s for s in samples),
        "drain_per_s": statistics.median(s.drain_per_s for s in samples),
        "boot_s": statistics.median(s.boot_s for s in samples),
        "worker_cpu_ms_per_job": statistics.median(s.worker_cpu_ms_per_job for s in samples),
        "worker_cpus": statistics.median(s.worker_cpus for s in samples),
        "machine_busy": statistics.median(s.machine_busy for s in samples),
        "redis_commands_per_job": statistics.median(s.redis_commands / s.jobs for s in samples),
        "rss_mib": statistics.median(s.memory.rss_kib / 1024 for s in samples),
        "pss_mib": statistics.median(s.memory.pss_kib / 1024 for s in samples),
        "processes": samples[-1].memory.processes,
        "rounds": [
            asdict(s) | {"enqueue_per_s": s.enqueue_per_s, "drain_per_s": s.drain_per_s} for s in samples
        ],
    }


COLUMNS = (
    ("enqueue/s", "enqueue_per_s", "{:,.0f}"),
    ("drain/s", "drain_per_s", "{:,.0f}"),
    ("worker CPU ms/job", "worker_cpu_ms_per_job", "{:.2f}"),
    ("Redis commands/job", "redis_commands_per_job", "{:.1f}"),
    ("RSS MiB", "rss_mib", "{:.0f}"),
    ("PSS MiB", "pss_mib", "{:.0f}"),
)


def outcome(figures: dict[str, Any], *, jobs: int, rounds: int) -> Outcome:
    ours, bare, celery = figures[PUBLISHER], figures[DRAMATIQ], figures[CELERY]
    table = [["no-op jobs, medians", *(title for title, _, _ in COLUMNS), "processes"]]
    for name in PEERS:
        row = figures[name]
        table.append(
            [LABELS[name], *(form.format(row[key]) for _, key, form in COLUMNS), str(row["processes"])]
        )
    for name in (DRAMATIQ, CELERY):
        table.append(
            [
                f"ratio publisher/{name}",
                *(f"{ratio(ours[key], figures[name][key]):.2f}x" for _, key, _ in COLUMNS),
                "",
            ]
        )
    vs_bare = ratio(ours["drain_per_s"], bare["drain_per_s"])
    vs_celery = ratio(ours["drain_per_s"], celery["drain_per_s"])
    targets = [
        Target(
            "drain >= 0.9x bare Dramatiq",
            f"{vs_bare:.2f}x ({ours['drain_per_s']:,.0f} vs {bare['drain_per_s']:,.0f} jobs/s)",
            vs_bare >= 0.9,
        ),
        Target(
            "drain >= 3x Celery",
            f"{vs_celery:.2f}x ({ours['drain_per_s']:,.0f} vs {celery['drain_per_s']:,.0f} jobs/s)",
            vs_celery >= 3,
        ),
    ]
    return Outcome(
        title=f"Queue overhead, {jobs:,} no-op jobs, {rounds} interleaved rounds",
        table=table,
        targets=targets,
        figures=figures | {"jobs": jobs, "rounds": rounds},
        notes=[
            f"{PROCESSES} worker processes x {THREADS} threads for the Dramatiq peers, Celery prefork with "
            f"concurrency {CELERY_CONCURRENCY}; one Redis; each peer's jobs are enqueued by one process "
            "with no worker running, then its workers start against the full queue.",
            "Drain: from the moment every worker process is fetching and a first job is done to the last "
            "job done, read from Redis every 5 ms (Dramatiq: the queue's message hash, which a message "
            "leaves when acked; Celery: the queue plus kombu's unacked hash, acks late). Worker CPU is "
            "the worker process group's over that span; Redis commands are the workers', boot to empty.",
            "Memory: the worker process group (rundramatiq also runs the Prometheus exposition server) "
            "when the queue is empty; RSS counts pages shared by forked processes once per process, "
            "PSS splits them.",
            "Publisher writes no row per message beside the publishings, whose attempts are the job "
            "record: django-dramatiq's task rows, written by its AdminMiddleware and later in batches, "
            "cost drain (the drain before and after they were dropped: Where the missed targets come "
            "from).",
        ],
    )


def chart(figures: dict[str, Any], axes: Any) -> None:
    keys = (("enqueue_per_s", "enqueue"), ("drain_per_s", "drain"))
    width = 0.8 / len(PEERS)
    for offset, name in enumerate(PEERS):
        positions = [k + offset * width for k in range(len(keys))]
        bars = axes.bar(positions, [figures[name][key] for key, _ in keys], width, label=LABELS[name])
        axes.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    axes.set_xticks(
        [k + width * (len(PEERS) - 1) / 2 for k in range(len(keys))], [label for _, label in keys]
    )
    axes.set_ylabel("no-op jobs per second")
    # Headroom above the tallest bar for the legend.
    axes.set_ylim(0, 1.45 * max(figures[name][key] for name in PEERS for key, _ in keys))
    axes.legend(fontsize=8, loc="upper right")
