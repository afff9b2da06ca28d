"""Rate-limit precision: a saturated global limit, its worst window and how much of it is used.

`python -m bench ratelimit [--smoke]`. Real processes with production
settings on a PostgreSQL database and a Redis namespace of the benchmark's
own: one worker host, `manage.py rundramatiq --processes 4 --threads 4`
(docker/bin/worker's threads), PUBLISHING_RATE_LIMIT=30/10s, and
PUBLISHING_PIPELINE set to `InstantPipeline` below (no git, no build, no
store: a start costs only Publisher's own bookkeeping, so the limiter, not
the jobs, is what paces the run). Once the workers are ready, one process
(`python -m bench.ratelimit backlog N`) initiates N publishings through
`publishing_initiate`, as the API does: enough to keep the limit
saturated for the measured span (full: 60 s; smoke: 5/2s for 8 s).

Starts are read twice: the limiter's own grants (the members of its Redis
window, with Redis' millisecond times, read every 0.5 s, before they leave
the window) and, at the end, every attempt's `started_at` from the
database, which a worker writes just after its grant. For each: the most
starts in any closed window of the limit's length (must never exceed the
limit), the starts per fixed window, the utilisation (starts in the span
from the first start / limit x span / window), the gaps between successive
starts, and the slot reuse lag (start i+limit - start i - window: how late a
freed slot is taken again; 0 is a perfect limiter).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
import redis

from bench.common import (
    ROOT,
    Context,
    Deployment,
    Outcome,
    Target,
    group_cpu_seconds,
    percentile,
    rate_limited_projects,
)
from publishing.pipeline.base import Artifact, Commit, Job, Source, Submission


@dataclass(frozen=True)
class Plan:
    limit: int
    window_s: int
    span_s: int
    backlog: int
    processes: int
    threads: int

    @property
    def rate(self) -> str:
        return f"{self.limit}/{self.window_s}s"

    @property
    def allowed(self) -> float:
        return self.limit * self.span_s / self.window_s


# The backlog: a first window's burst, the span's worth at the limit, and a margin that keeps
# the queue from running dry before the span ends.
FULL = Plan(limit=30, window_s=10, span_s=60, backlog=240, processes=4, threads=4)
SMOKE = Plan(limit=5, window_s=2, span_s=8, backlog=30, processes=4, threads=4)
SAMPLE_S = 0.5
# Logged by publishing.worker.rate_limit.RateLimit for each deferral.
DEFERRED_LINE = "reached: publishing"


class InstantPipeline:
    """A pipeline that does nothing: what a start costs is Publisher's own bookkeeping."""

    def checkout(self, job: Job) -> Source:
        return Source(path=job.workspace, commit=Commit(sha="0" * 40, subject="", author=""))

    def build(self, job: Job, source: Path) -> None:
        return None

    def package(self, job: Job, source: Path) -> Artifact:
        data = job.publishing_id.encode()
        return Artifact(path=source, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def submit(self, job: Job, artifact: Artifact) -> Submission:
        return Submission(
            uri=f"memory://{job.origin.project_slug}/{job.publishing_id}", ref=job.publishing_id
        )


def backlog(count: int) -> None:
    """Run in the deployment's environment: a user, `count` projects, one publishing initiated for each."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from publishing.services.publishings import publishing_initiate

    user = get_user_model().objects.create(username="ratelimit", is_staff=True)
    for project in rate_limited_projects(user, count, prefix="rate"):
        publishing_initiate(user=user, project_id=project.pk)


class Grants:
    """The limiter's window read every SAMPLE_S from a thread: every start it granted, on Redis' clock."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self._key = key
        self.seen: dict[bytes, int] = {}  # member -> its start, in ms on Redis' clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ratelimit-grants", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Grants:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                window = cast(
                    list[tuple[bytes, float]], self._client.zrange(self._key, 0, -1, withscores=True)
                )
                for member, score in window:
                    self.seen[member] = int(score)
                self._stop.wait(SAMPLE_S)
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def times_us(self) -> list[int]:
        return sorted(ms * 1000 for ms in self.seen.values())

    def by_message(self) -> dict[str, int]:
        """message id -> its grant, in µs (members are `<owner>:<message id>:<ms>`)."""
        return {member.decode().split(":")[-2]: ms * 1000 for member, ms in self.seen.items()}


def attempt_starts_us(database_url: str) -> dict[str, int]:
    """message id -> its attempt's started_at, in µs."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT message_id, (extract(epoch FROM started_at) * 1000000)::bigint FROM publishing_attempt"
        ).fetchall()
    return {str(message_id): int(started) for message_id, started in rows}


def analyse(times_us: list[int], plan: Plan) -> dict[str, Any]:
    """Window counts, utilisation, gaps and slot reuse lag of sorted start times (µs) over the span.

    Integers: a start at t still counts at exactly t + window, and floats would blur that edge.
    """
    if not times_us:
        raise RuntimeError("no starts recorded")
    t0, window, span_us = times_us[0], plan.window_s * 1_000_000, plan.span_s * 1_000_000
    span = [t - t0 for t in times_us if t - t0 < span_us]
    # The limiter's promise: at most `limit` starts at times within any closed `window`.
    sliding = [bisect_right(span, t + window) - i for i, t in enumerate(span)]
    fixed = [
        bisect_left(span, (k + 1) * window) - bisect_left(span, k * window)
        for k in range(plan.span_s // plan.window_s)
    ]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(span)]
    lags = [(span[i + plan.limit] - t - window) / 1e6 for i, t in enumerate(span[: -plan.limit])]
    return {
        "starts": len(span),
        "allowed": plan.allowed,
        "utilisation": len(span) / plan.allowed,
        "max_in_window": max(sliding),
        "windows_over_limit": sum(1 for n in sliding if n > plan.limit),
        "fixed_windows": fixed,
        "gap_s": _distribution(gaps),
        "reuse_lag_s": _distribution(lags),
        # With every freed slot taken `mean lag` late, a saturated limit runs at this share of its rate.
        "steady_utilisation": plan.window_s / (plan.window_s + statistics.fmean(lags)) if lags else None,
        "offsets_s": [t / 1e6 for t in span],
    }


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": round(min(values), 4),
        "p50": round(percentile(values, 0.5), 4),
        "p90": round(percentile(values, 0.9), 4),
        "p99": round(percentile(values, 0.99), 4),
        "max": round(max(values), 4),
        "mean": round(statistics.fmean(values), 4),
    }


def measure(context: Context, plan: Plan) -> dict[str, Any]:
    with Deployment(
        context,
        "ratelimit",
        PUBLISHING_RATE_LIMIT=plan.rate,
        PUBLISHING_PIPELINE=f"{__name__}.InstantPipeline",
    ) as site:
        site.start_worker("workers", processes=plan.processes, threads=plan.threads)
        site.wait_ready("workers", plan.processes)
        workers = site.processes.running["workers"].pid
        client = redis.Redis.from_url(context.redis_url, socket_timeout=10)
        with contextlib.closing(client), Grants(client, f"{site.namespace}:publishing-starts") as grants:
            began = time.monotonic()
            cpu_before = group_cpu_seconds(workers)
            result = subprocess.run(
                [sys.executable, "-m", "bench.ratelimit", "backlog", str(plan.backlog)],
                cwd=ROOT,
                env=site.env,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"the backlog failed:\n{result.stdout}\n{result.stderr[-4000:]}")
            backlog_s = time.monotonic() - began
            while not grants.seen:
                site.processes.check_alive("workers")
                if time.monotonic() - began > 60:
                    raise RuntimeError(f"nothing started:\n{site.processes.log('workers')}")
                time.sleep(0.1)
            first = min(grants.seen.values()) / 1000
            # Until the span is over on Redis' clock (the same machine's), and one more sample.
            while time.time() < first + plan.span_s + 2 * SAMPLE_S:
                site.processes.check_alive("workers")
                time.sleep(0.2)
            # What the deferrals cost (the workers do nothing else), on a machine this busy.
            worker_cores = (group_cpu_seconds(workers) - cpu_before) / (time.monotonic() - began)
            load = os.getloadavg()[0]
        if grants.error is not None:
            raise RuntimeError("reading the limiter's window failed") from grants.error
        starts = attempt_starts_us(site.database_url)
        granted = grants.by_message()
        log = site.processes.log("workers", tail=100_000_000)
        return {
            "plan": plan.__dict__,
            "backlog_s": round(backlog_s, 2),
            "grants": analyse(grants.times_us(), plan),
            "attempts": analyse(sorted(starts.values()), plan),
            # From the slot's grant (Redis) to the attempt's started_at (the worker, in the database).
            "grant_to_record_ms": _distribution(
                [(started - granted[mid]) / 1000 for mid, started in starts.items() if mid in granted]
            ),
            "attempts_without_grant": sum(1 for mid in starts if mid not in granted),
            "deferrals": log.count(DEFERRED_LINE),
            "tracebacks": log.count("Traceback"),
            "worker_cpu_cores": round(worker_cores, 2),
            "loadavg_1min_at_end": round(load, 2),
        }


def run(context: Context) -> Outcome:
    plan = SMOKE if context.smoke else FULL
    figures = measure(context, plan)
    grants, attempts = figures["grants"], figures["attempts"]
    table = [
        [
            f"{plan.rate}, {plan.span_s} s span",
            "starts",
            "allowed",
            "utilisation",
            "max in any window",
            "per fixed window",
            "gap p50 / p99 / max (s)",
            "reuse lag p50 / p99 / max (s)",
        ]
    ]
    for label, row in (("limiter grants (Redis)", grants), ("attempt starts (database)", attempts)):
        gap, lag = row["gap_s"], row["reuse_lag_s"]
        table.append(
            [
                label,
                str(row["starts"]),
                f"{row['allowed']:.0f}",
                f"{row['utilisation']:.1%}",
                str(row["max_in_window"]),
                " ".join(str(n) for n in row["fixed_windows"]),
                f"{gap['p50']:.2f} / {gap['p99']:.2f} / {gap['max']:.2f}",
                f"{lag['p50']:.2f} / {lag['p99']:.2f} / {lag['max']:.2f}" if lag else "-",
            ]
        )
    record = figures["grant_to_record_ms"]
    sustained = grants["steady_utilisation"] or 0.0
    targets = [
        Target(
            f"rate limit never exceeded ({plan.rate})",
            f"max {grants['max_in_window']} granted starts in any {plan.window_s} s window "
            f"(by the attempts' started_at, written {record['p50']:.0f}-{record['max']:.0f} ms "
            f"after the grant: {attempts['max_in_window']})",
            grants["max_in_window"] <= plan.limit,
        ),
        Target(
            "rate limit utilisation >= 95 %",
            f"{grants['utilisation']:.1%} over {plan.span_s} s ({grants['starts']} of "
            f"{grants['allowed']:.0f}); sustained {sustained:.1%} "
            f"(mean slot reuse lag {grants['reuse_lag_s']['mean']:.2f} s)",
            min(grants["utilisation"], sustained) >= 0.95,
        ),
    ]
    notes = [
        f"One worker host: rundramatiq --processes {plan.processes} --threads {plan.threads}; "
        f"{plan.backlog} publishings initiated at once (in {figures['backlog_s']:.1f} s) once it was ready; "
        f"{figures['deferrals']} deferrals logged by the RateLimit middleware; the workers used "
        f"{figures['worker_cpu_cores']:.2f} CPU cores meanwhile (load average "
        f"{figures['loadavg_1min_at_end']:.1f} on {os.cpu_count()} CPUs).",
        "Utilisation: starts within the span from the first start / (limit x span / window). "
        "Reuse lag: start i+limit - start i - window, how late a freed slot was taken again; "
        f"sustained utilisation = window / (window + mean lag): what a limit saturated for hours gives "
        f"({sustained:.1%}).",
        f"Attempt starts (started_at) are written by the worker after its grant: p50 {record['p50']:.0f} ms, "
        f"p99 {record['p99']:.0f} ms, max {record['max']:.0f} ms later; counted on them a window can "
        "hold a start more than the limiter granted in it.",
    ]
    return Outcome(
        title=f"Rate-limit precision: {plan.rate} saturated for {plan.span_s} s, "
        f"{plan.processes} worker processes",
        table=table,
        targets=targets,
        figures=figures,
        notes=notes,
    )


def chart(figures: dict[str, Any], axes: Any) -> None:
    plan = figures["plan"]
    offsets: list[float] = figures["grants"]["offsets_s"]
    seconds, window, limit = int(plan["span_s"]), float(plan["window_s"]), int(plan["limit"])
    per_second = [bisect_left(offsets, s + 1) - bisect_left(offsets, s) for s in range(seconds)]
    axes.bar(range(seconds), per_second, width=1.0, align="edge", alpha=0.35, label="starts in each second")
    # Starts granted in the window that ends at each instant: what the limiter counts.
    grid = [i / 20 for i in range(seconds * 20 + 1)]
    in_window = [bisect_right(offsets, t) - bisect_left(offsets, t - window) for t in grid]
    axes.plot(grid, in_window, linewidth=1.2, label=f"starts in the last {window:g} s")
    axes.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"limit {limit}")
    axes.set_xlabel("seconds after the first start")
    axes.set_ylabel("starts")
    axes.set_xlim(0, seconds)
    axes.set_ylim(0, limit * 1.25)
    axes.legend(loc="upper center", ncols=3, fontsize="small")


if __name__ == "__main__":
    if sys.argv[1:2] != ["backlog"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.ratelimit backlog COUNT")
    backlog(int(sys.argv[2]))
    print(json.dumps({"backlog": int(sys.argv[2])}))
