"""Degraded path: initiate's 503 latency with Redis refused and with Redis hung, and the recovery after each.

`python -m bench degraded [--smoke]`. The same Publisher site as `bench.api`
(gunicorn 2 workers x 4 threads, bench.settings, a PostgreSQL database of its
own) on a Redis of its own (`publishing.redis_server.RedisServer` in the
run's workdir), because it is broken twice: (a) stopped, so that connections
are refused; (b) frozen with SIGSTOP, so that it accepts TCP connections and
never answers. Before the faults, a few initiates warm both gunicorn workers'
Redis connections (a hung Redis then holds connections the web tier trusts).

While each fault lasts, a few client threads send `POST
/api/v1/publishing/initiate` (a new project each) at a steady pace, over
several of the circuit breaker's cool-downs (2 s), so that its probes are in
the figures; every answer must be 503 `{"code": "SERVICE_UNAVAILABLE"}`.
Then Redis is started again (resumed) and one request every 50 ms, each on a
new connection so that either gunicorn worker may take it, measures the time
to the first 202 and to a run of 202s only (both workers' breakers closed).
"""

from __future__ import annotations

import http.client
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.api import INITIATE, WEB_THREADS, WEB_WORKERS, Answer, Feed, Site, drive, publisher_site
from bench.common import Context, Outcome, Target, percentile
from publishing.redis_server import RedisServer

CLIENTS = 4
# An answer this slow waited out the web tier's Redis socket timeout (0.5 s): the breaker was closed.
SLOW = 0.25
TARGETS_MS = {"refused": 50.0, "hung": 1000.0}
POLL_INTERVAL = 0.05
RECOVERY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Plan:
    requests: int  # per fault, over `seconds` from CLIENTS threads
    seconds: float
    streak: int  # consecutive 202s that count as recovered
    projects: int


FULL = Plan(requests=200, seconds=6.0, streak=20, projects=2_000)
SMOKE = Plan(requests=60, seconds=2.5, streak=6, projects=800)


def run(context: Context) -> Outcome:
    plan = SMOKE if context.smoke else FULL
    faults: dict[str, dict[str, Any]] = {}
    with (
        RedisServer(context.workdir / "redis") as server,
        publisher_site(context, name="degraded", redis_url=server.url, projects=plan.projects) as site,
    ):
        feed = Feed(site.projects, cycle=False)
        try:
            warm = drive(site, INITIATE, bodies=feed, connections=CLIENTS, seconds=1.0, interval=0.1)
            if warm.unexpected(202) or not warm.answers:
                raise RuntimeError(f"initiate does not work with Redis up: {warm.unexpected(202)}")
            steps: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
                "refused": (server.stop, server.start),
                "hung": (server.pause, server.resume),
            }
            for fault, (break_redis, mend_redis) in steps.items():
                break_redis()
                load = drive(
                    site,
                    INITIATE,
                    bodies=feed.take(plan.requests),
                    connections=CLIENTS,
                    seconds=plan.seconds,
                    interval=CLIENTS * plan.seconds / plan.requests,
                )
                mend_redis()
                mended = time.perf_counter()
                faults[fault] = describe(load.answers, load.wall) | recover(site, feed, mended, plan.streak)
                site.check_alive()
        finally:
            server.resume()  # never leave it frozen: the cleanup talks to it
    figures: dict[str, Any] = {
        "plan": {**plan.__dict__, "clients": CLIENTS},
        "web": {"workers": WEB_WORKERS, "threads": WEB_THREADS},
        "faults": faults,
    }
    return Outcome(
        title=f"Degraded path: initiate with Redis refused and hung, gunicorn {WEB_WORKERS}x{WEB_THREADS}",
        table=table(faults),
        targets=[target(fault, faults[fault]) for fault in faults],
        figures=figures,
        notes=notes(figures),
    )


def describe(answers: list[Answer], wall: float) -> dict[str, Any]:
    """Latency and correctness of the answers sent while a fault lasted, and what the breaker did."""
    latencies = [answer.seconds * 1000 for answer in answers]
    slow = [answer for answer in answers if answer.seconds >= SLOW]
    fast = [answer.seconds * 1000 for answer in answers if answer.seconds < SLOW]
    wrong = [answer for answer in answers if (answer.status, answer.code) != (503, "SERVICE_UNAVAILABLE")]
    return {
        "answers": len(answers),
        "wall_s": round(wall, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "service_unavailable": len(answers) - len(wrong),
        "other": sorted({f"{answer.status} {answer.code}" for answer in wrong}),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "first_ms": round(latencies[0], 2),
        "fast_p50_ms": round(statistics.median(fast), 2) if fast else None,
        # Each one a request that waited out the socket timeout: the first ones, then the probes.
        "slow": [{"at_s": round(answer.at, 2), "ms": round(answer.seconds * 1000, 1)} for answer in slow],
    }


def recover(site: Site, feed: Feed, since: float, streak: int) -> dict[str, Any]:
    """Seconds from Redis being back to the first 202, and to the first of `streak` 202s in a row."""
    statuses: set[int] = set()
    polls = in_a_row = 0
    first: float | None = None
    recovered = 0.0
    while in_a_row < streak:
        sent = time.perf_counter()
        if sent - since > RECOVERY_TIMEOUT:
            raise RuntimeError(
                f"initiate did not recover within {RECOVERY_TIMEOUT:.0f} s: {sorted(statuses)}"
            )
        status = post_once(site, feed)
        polls += 1
        statuses.add(status)
        if status == 202:
            first = sent - since if first is None else first
            recovered = sent - since if in_a_row == 0 else recovered
            in_a_row += 1
        else:
            in_a_row = 0
        time.sleep(max(0.0, sent + POLL_INTERVAL - time.perf_counter()))
    return {
        "recovery_first_202_s": round(first or 0.0, 3),
        "recovery_all_202_s": round(recovered, 3),
        "recovery_polls": polls,
        "recovery_statuses": sorted(statuses),
    }


def post_once(site: Site, feed: Feed) -> int:
    """One initiate on a new connection (either gunicorn worker may take it); 0 for no answer."""
    body = feed()
    if body is None:
        raise RuntimeError("out of projects")
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
    headers = {"Authorization": f"Token {site.token}", "Content-Type": "application/json"}
    try:
        connection.request("POST", INITIATE, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def target(fault: str, row: dict[str, Any]) -> Target:
    limit = TARGETS_MS[fault]
    all_503 = row["service_unavailable"] == row["answers"]
    measured = f"{row['p99_ms']:.0f} ms ({row['service_unavailable']}/{row['answers']} 503)"
    shown = f"{limit:.0f} ms" if limit < 1000 else f"{limit / 1000:.0f} s"
    return Target(f"503 p99 <= {shown} with Redis {fault}", measured, row["p99_ms"] <= limit and all_503)


def table(faults: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [
        [
            "Redis",
            "answers",
            "503 SERVICE_UNAVAILABLE",
            "p50 ms",
            "p99 ms",
            "max ms",
            f">= {SLOW:.2f} s",
            "first ms",
            "back: 1st 202 s",
            "all 202 s",
        ]
    ]
    for fault, row in faults.items():
        rows.append(
            [
                fault,
                str(row["answers"]),
                str(row["service_unavailable"]),
                f"{row['p50_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                f"{row['max_ms']:.1f}",
                str(len(row["slow"])),
                f"{row['first_ms']:.1f}",
                f"{row['recovery_first_202_s']:.2f}",
                f"{row['recovery_all_202_s']:.2f}",
            ]
        )
    return rows


def notes(figures: dict[str, Any]) -> list[str]:
    plan, faults = figures["plan"], figures["faults"]
    out = [
        f"{plan['requests']} initiates per fault from {plan['clients']} client threads, paced over "
        f"{plan['seconds']:.0f} s (the breaker's cool-down is 2 s, the web tier's Redis socket timeout "
        "0.5 s); each answer checked for 503 with code SERVICE_UNAVAILABLE.",
        f"Recovery: one initiate every {POLL_INTERVAL * 1000:.0f} ms on a new connection from the moment "
        f"Redis is started (resumed); 'all 202' is the start of {plan['streak']} 202s in a row.",
    ]
    for fault, row in faults.items():
        slow = row["slow"]
        when = ", ".join(f"{s['ms']:.0f} ms at {s['at_s']:.1f} s" for s in slow[:8])
        out.append(
            f"Redis {fault}: the first answer took {row['first_ms']:.0f} ms; {len(slow)} of {row['answers']} "
            f"waited out the socket timeout ({when or 'none'}); the others took {row['fast_p50_ms']:.0f} ms "
            "(p50): the open breaker answered them, or its probe, once per cool-down and gunicorn worker, "
            "a ping that fails at once when Redis refuses and waits out the timeout when it hangs."
        )
    return out


def chart(figures: dict[str, Any], axes: Any) -> None:
    faults = figures["faults"]
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    width = 0.8 / len(keys)
    for offset, key in enumerate(keys):
        positions = [n + offset * width for n in range(len(faults))]
        axes.bar(positions, [faults[fault][key] for fault in faults], width, label=key.removesuffix("_ms"))
    for n, fault in enumerate(faults):
        axes.hlines(
            TARGETS_MS[fault], n - width / 2, n + width * (len(keys) - 0.5), colors="red", linestyles="--"
        )
    axes.set_xticks(
        [n + width * (len(keys) - 1) / 2 for n in range(len(faults))],
        [f"Redis {fault} (target p99 {TARGETS_MS[fault]:.0f} ms, dashed)" for fault in faults],
    )
    axes.set_ylabel("ms per 503 answer")
    axes.set_yscale("log")
    axes.legend()
