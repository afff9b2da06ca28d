"""Watching costs little: initiate load alone vs the same load beside 100 page watchers, one web tier.

`python -m bench watchers [--smoke]`. The web site of `bench api` (its own database, gunicorn 2x4
serving `bench.settings`, the run's private Redis, no worker) takes a paced initiate load, a fresh
project per request, at a fixed rate below what it can serve, so that both arms send the same
requests and the web tier's CPU can be compared between them. Rounds alternate (alone, watched;
watched, alone; ...) so that both see the same machine.

The watchers are what a publishing's page does while it is open: each polls
`GET /api/v1/publishing/{id}/log?since=<cursor>` (JSON, the page's session cookie) every 2 s with
the cursor of its last answer, asks again at once while the answer says `more`, and, with
BENCH_WATCHERS_FRAGMENT=1 in the environment (off by default), fetches the page's summary
`/publishings/{id}/?fragment=summary` when new `event` lines came, as page-publishing.js does. They run in
a process of their own (threads, one keep-alive connection each), so that the initiate client's
timings do not wait on their GIL, and keep their cursors from round to round; in the alone arm they
wait. They watch publishings that are running: `bench.watch_feeder` claims one per watcher as the
worker does and writes a line of build output to each every 0.5 s through the attempt's log, in
both arms, so the only difference between the arms is the watchers.

Reported: initiate p50/p99 in each arm (medians of the rounds') and the ratio of the p99s, the
watchers' request p50/p99, and gunicorn's CPU seconds (user + system, all its processes) per second
of wall time, with minus without (without scaled to the watched windows' initiate rate, in case the tier
fell behind in them): what the watchers cost, in all and per poll.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import multiprocessing
import os
import queue
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from bench.api import CONNECTIONS, INITIATE, WEB_THREADS, WEB_WORKERS, Feed, Load, Site, drive, publisher_site
from bench.common import Context, Outcome, Target, percentile, ratio

LOG = "/api/v1/publishing/{id}/log"
FRAGMENT = "/publishings/{id}/?fragment=summary"
POLL_INTERVAL = 2.0  # the page's
TARGET_P99_RATIO = 1.10
FRAGMENT_VARIABLE = "BENCH_WATCHERS_FRAGMENT"


@dataclass(frozen=True)
class Plan:
    rounds: int  # each: one alone and one watched window, alternating which goes first
    seconds: float  # of initiate load per window
    rate: float  # initiates per second, paced
    watchers: int
    warmup: float  # seconds of initiate load before the rounds, not counted
    projects: int  # for the initiate load: one each, never reused


# 50 initiates/s: half of what this 2-core machine's web tier, PostgreSQL and the feeder's 200 lines/s
# leave room for (at 100/s the alone windows were already queueing), so that the watchers' cost shows
# as their own rather than as a saturated tier's.
FULL = Plan(rounds=3, seconds=15.0, rate=50.0, watchers=100, warmup=3.0, projects=8_000)
SMOKE = Plan(rounds=1, seconds=3.0, rate=20.0, watchers=20, warmup=1.0, projects=500)


# --- the watchers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Poll:
    kind: str  # "log" or "fragment"
    at: float  # time.monotonic() when sent: the same clock in every process of the machine
    seconds: float
    status: int  # 0: no answer
    lines: int
    retried: bool  # the kept-alive connection had been closed by the server: sent again on a new one


class Watcher:
    """One open page: a connection, a cursor, a schedule."""

    def __init__(self, port: int, session: str, publishing_id: str, *, fragment: bool) -> None:
        self.port = port
        self.headers = {"Accept": "application/json", "Cookie": f"sessionid={session}"}
        self.log = LOG.format(id=publishing_id)
        self.fragment = FRAGMENT.format(id=publishing_id) if fragment else None
        self.cursor = "0"
        self.connection = self._connect()
        self.polls: list[Poll] = []

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _get(self, path: str, accept: str) -> tuple[int, bytes, bool]:
        headers = {**self.headers, "Accept": accept}
        for attempt in (1, 2):
            try:
                self.connection.request("GET", path, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.read(), attempt == 2
            except (OSError, http.client.HTTPException):
                # gunicorn closes a connection idle for its keep-alive (2 s, the poll's interval):
                # a browser then sends the GET again on a new one, and so does this.
                self.connection.close()
                self.connection = self._connect()
        return 0, b"", True

    def poll(self) -> None:
        """One poll of the page: the new lines (all of them, while `more`) and, if asked, the summary."""
        more, events = True, False
        while more:
            sent = time.monotonic()
            status, body, retried = self._get(f"{self.log}?since={self.cursor}", "application/json")
            lines = 0
            more = False
            if status == 200:
                page = json.loads(body)
                self.cursor, more, lines = page["cursor"], page["more"], len(page["lines"])
                events = events or any(line["step"] == "event" for line in page["lines"])
            self.polls.append(Poll("log", sent, time.monotonic() - sent, status, lines, retried))
        if events and self.fragment:
            sent = time.monotonic()
            status, _, retried = self._get(self.fragment, "text/html")
            self.polls.append(Poll("fragment", sent, time.monotonic() - sent, status, 0, retried))


def watch(
    port: int,
    session: str,
    publishing_ids: list[str],
    fragment: bool,
    active: Event,
    stop: Event,
    results: Queue[list[Poll]],
) -> None:
    """The watchers' process: one thread per publishing, polling while `active`, until `stop`."""

    def page(number: int, watcher: Watcher) -> None:
        phase = POLL_INTERVAL * number / len(publishing_ids)
        slot: float | None = None
        while not stop.is_set():
            if not active.is_set():
                slot = None
                active.wait(0.1)
                continue
            now = time.monotonic()
            if slot is None:  # just woken: the watchers take turns over the interval
                slot = now + phase
            if slot > now and stop.wait(slot - now):
                break
            if active.is_set():
                watcher.poll()
            # Every 2 s, but never two polls at once: a late answer delays the next poll.
            slot = max(slot + POLL_INTERVAL, time.monotonic())
        watcher.connection.close()

    watchers = [Watcher(port, session, pid, fragment=fragment) for pid in publishing_ids]
    threads = [threading.Thread(target=page, args=(n, w), daemon=True) for n, w in enumerate(watchers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put([poll for watcher in watchers for poll in watcher.polls])


class Watchers:
    """The watchers' process, its switch and its results."""

    def __init__(self, site: Site, session: str, publishing_ids: list[str], *, fragment: bool) -> None:
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.active, self.stop = spawn.Event(), spawn.Event()
        self.results: Queue[list[Poll]] = spawn.Queue()
        self.process = spawn.Process(
            target=watch,
            args=(site.port, session, publishing_ids, fragment, self.active, self.stop, self.results),
            name="bench-watchers",
            daemon=True,
        )
        self.process.start()

    def finish(self) -> list[Poll]:
        """Stop the watchers: every poll they made."""
        self.active.clear()
        self.stop.set()
        deadline = time.monotonic() + 60  # a poll in flight may wait out its 30 s timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                polls = self.results.get(timeout=0.5)
                self.process.join(10)
                return polls
            if not self.process.is_alive():
                raise RuntimeError(f"the watchers' process exited with {self.process.exitcode}")
        self.process.kill()
        raise RuntimeError("the watchers did not stop")


# --- the feeder ------------------------------------------------------------------------------


def start_feeder(site: Site, context: Context, project_ids: list[str]) -> tuple[str, list[str], Path]:
    """bench.watch_feeder on the site's database, once its publishings run: (session, their ids, report)."""
    report = context.workdir / "feeder.json"
    argv = [sys.executable, "-m", "bench.watch_feeder", str(report), *project_ids]
    site.processes.start("feeder", argv, site.env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in site.processes.log("feeder", tail=1_000_000).splitlines():
            if line.startswith("READY "):
                ready = json.loads(line.removeprefix("READY "))
                return ready["session"], ready["publishings"], report
        site.processes.check_alive("feeder")
        time.sleep(0.2)
    raise RuntimeError(f"the feeder did not start:\n{site.processes.log('feeder')}")


def stop_feeder(site: Site, report: Path) -> dict[str, Any]:
    site.processes.check_alive("feeder")
    site.processes.stop("feeder")
    return dict(json.loads(report.read_text())) if report.exists() else {}


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Window:
    """One window of initiate load, alone or watched, and what the watchers did meanwhile."""

    watched: bool
    load: Load
    began: float  # time.monotonic(), as the watchers' polls
    ended: float
    polls: list[Poll] = field(default_factory=list)  # those sent within the window

    def row(self) -> dict[str, Any]:
        latencies = self.load.latencies_ms()
        log = [p for p in self.polls if p.kind == "log"]
        return {
            "watched": self.watched,
            "initiates": len(self.load.answers),
            "initiate_per_s": round(self.load.count(202) / self.load.wall, 1),
            "initiate_p50_ms": round(percentile(latencies, 0.50), 2),
            "initiate_p99_ms": round(percentile(latencies, 0.99), 2),
            "other_status": {str(k): n for k, n in self.load.unexpected(202).items()},
            "wall_s": round(self.load.wall, 3),
            "web_cpu_s": round(self.load.web_cpu, 3),
            "web_cpu_per_s": round(self.load.web_cpu / self.load.wall, 4),
            "polls": len(log),
            "polls_per_s": round(len(log) / self.load.wall, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


def measure(site: Site, feed: Feed, plan: Plan, watchers: Watchers, *, watched: bool) -> Window:
    if watched:
        watchers.active.set()
        # One interval: every watcher has polled once, and caught up on what came while it waited.
        time.sleep(POLL_INTERVAL)
    else:
        watchers.active.clear()
        time.sleep(0.3)  # the polls in flight end before the window
    began = time.monotonic()
    paced = CONNECTIONS / plan.rate
    load = drive(site, INITIATE, bodies=feed, connections=CONNECTIONS, seconds=plan.seconds, interval=paced)
    ended = time.monotonic()
    site.check_alive()
    return Window(watched, load, began, ended)


def run(context: Context) -> Outcome:
    plan = SMOKE if context.smoke else FULL
    fragment = os.environ.get(FRAGMENT_VARIABLE, "") in ("1", "true", "yes")
    count = plan.projects + plan.watchers
    with publisher_site(context, name="watchers", redis_url=context.redis_url, projects=count) as site:
        session, watched_ids, report = start_feeder(site, context, site.projects[plan.projects :])
        feed = Feed(site.projects[: plan.projects], cycle=False)
        watchers = Watchers(site, session, watched_ids, fragment=fragment)
        try:
            watchers.active.set()
            drive(site, INITIATE, bodies=feed, connections=CONNECTIONS, seconds=plan.warmup)
            windows: list[Window] = []
            for number in range(plan.rounds):
                for watched in (False, True) if number % 2 == 0 else (True, False):
                    windows.append(measure(site, feed, plan, watchers, watched=watched))
        finally:
            polls = watchers.finish()
        feeder = stop_feeder(site, report)
    for window in windows:
        window.polls = [p for p in polls if window.began <= p.at < window.ended]
    figures = summarize(windows, plan, feeder=feeder, fragment=fragment)
    return Outcome(
        title=f"Watchers: initiate at {plan.rate:.0f}/s alone and beside {plan.watchers} page watchers, "
        f"gunicorn {WEB_WORKERS}x{WEB_THREADS}",
        table=table(figures),
        targets=[
            Target(
                f"initiate p99 beside {plan.watchers} watchers <= {TARGET_P99_RATIO:.2f}x alone",
                f"{figures['p99_ratio']:.2f}x ({figures['watched']['initiate_p99_ms']:.1f} vs "
                f"{figures['alone']['initiate_p99_ms']:.1f} ms)",
                figures["p99_ratio"] <= TARGET_P99_RATIO,
            )
        ],
        figures=figures,
        notes=notes(figures),
    )


def median_of(rounds: list[list[float]], q: float) -> float:
    """The median over the rounds of each round's `q` percentile; NaN without rounds."""
    return round(statistics.median(percentile(r, q) for r in rounds), 2) if rounds else math.nan


def pooled(windows: list[Window]) -> dict[str, Any]:
    """One arm over its rounds: percentiles the median of the rounds' (as bench api gives them: a
    burst of other work on the shared machine spoils one round, not the figure), the p99s also
    pooled; CPU and rates as totals over the total time."""
    latencies = [ms for w in windows for ms in w.load.latencies_ms()]
    rounds = [w.load.latencies_ms() for w in windows]
    wall = sum(w.load.wall for w in windows)
    polls = [p for w in windows for p in w.polls if p.kind == "log"]
    fragments = [p for w in windows for p in w.polls if p.kind == "fragment"]
    answered = [p.seconds * 1000 for p in polls + fragments]
    watched_rounds = [[p.seconds * 1000 for p in w.polls] for w in windows if w.polls]
    other: Counter[int] = Counter()
    for window in windows:
        other.update(window.load.unexpected(202))
    return {
        "initiates": len(latencies),
        "initiate_per_s": round(sum(w.load.count(202) for w in windows) / wall, 1),
        "initiate_p50_ms": median_of(rounds, 0.50),
        "initiate_p99_ms": median_of(rounds, 0.99),
        "initiate_pooled_p50_ms": round(percentile(latencies, 0.50), 2),
        "initiate_pooled_p99_ms": round(percentile(latencies, 0.99), 2),
        "other_status": {str(k): n for k, n in other.items()},
        "web_cpu_per_s": round(sum(w.load.web_cpu for w in windows) / wall, 4),
        "client_cpu_share": round(sum(w.load.client_cpu for w in windows) / wall, 3),
        "polls": len(polls),
        "polls_per_s": round(len(polls) / wall, 2),
        "poll_p50_ms": median_of(watched_rounds, 0.50),
        "poll_p99_ms": median_of(watched_rounds, 0.99),
        "poll_pooled_p99_ms": round(percentile(answered, 0.99), 2),
        "poll_lines_mean": round(statistics.fmean([p.lines for p in polls]), 2) if polls else 0,
        "poll_other_status": dict(Counter(str(p.status) for p in polls + fragments if p.status != 200)),
        "poll_retried": sum(1 for p in polls + fragments if p.retried),
        "fragments": len(fragments),
    }


def summarize(windows: list[Window], plan: Plan, *, feeder: dict[str, Any], fragment: bool) -> dict[str, Any]:
    alone = pooled([w for w in windows if not w.watched])
    watched = pooled([w for w in windows if w.watched])
    # With minus without, the without at the watched windows' initiate rate: the same when the tier
    # keeps up with the paced rate in both, and still the watchers' share when it does not.
    per_initiate = alone["web_cpu_per_s"] / alone["initiate_per_s"] if alone["initiate_per_s"] else 0.0
    extra_cpu = watched["web_cpu_per_s"] - per_initiate * watched["initiate_per_s"]
    rounds = [w.row() for w in windows]
    pairs = list(zip(rounds[0::2], rounds[1::2], strict=True))
    return {
        "plan": {**plan.__dict__, "connections": CONNECTIONS, "poll_interval_s": POLL_INTERVAL},
        "web": {"workers": WEB_WORKERS, "threads": WEB_THREADS},
        "fragment": fragment,
        "alone": alone,
        "watched": watched,
        "p99_ratio": round(ratio(watched["initiate_p99_ms"], alone["initiate_p99_ms"]), 3),
        "pooled_p99_ratio": round(
            ratio(watched["initiate_pooled_p99_ms"], alone["initiate_pooled_p99_ms"]), 3
        ),
        "p50_ratio": round(ratio(watched["initiate_p50_ms"], alone["initiate_p50_ms"]), 3),
        "round_p99_ratios": [
            round(ratio(*(r["initiate_p99_ms"] for r in sorted(pair, key=lambda r: not r["watched"]))), 3)
            for pair in pairs
        ],
        "watchers_cpu_per_s": round(extra_cpu, 4),
        "watchers_cpu_ms_per_poll": round(extra_cpu * 1000 / watched["polls_per_s"], 3)
        if watched["polls_per_s"]
        else None,
        "feeder": feeder,
        "windows": rounds,
    }


def table(figures: dict[str, Any]) -> list[list[str]]:
    rows = [
        [
            "arm", "initiate/s", "p50 ms", "p99 ms", "other status", "web CPU s/s",
            "polls/s", "poll p50 ms", "poll p99 ms",
        ]
    ]  # fmt: skip
    alone, watched = figures["alone"], figures["watched"]
    for label, arm in (
        ("initiate alone", alone),
        (f"initiate + {figures['plan']['watchers']} watchers", watched),
    ):
        polled = bool(arm["polls"])
        rows.append(
            [
                label,
                f"{arm['initiate_per_s']:.0f}",
                f"{arm['initiate_p50_ms']:.1f}",
                f"{arm['initiate_p99_ms']:.1f}",
                str(sum(arm["other_status"].values())),
                f"{arm['web_cpu_per_s']:.3f}",
                f"{arm['polls_per_s']:.1f}" if polled else "-",
                f"{arm['poll_p50_ms']:.1f}" if polled else "-",
                f"{arm['poll_p99_ms']:.1f}" if polled else "-",
            ]
        )
    per_poll = figures["watchers_cpu_ms_per_poll"]
    rows.append(
        [
            "watched / alone",
            f"{ratio(watched['initiate_per_s'], alone['initiate_per_s']):.2f}x",
            f"{figures['p50_ratio']:.2f}x",
            f"{figures['p99_ratio']:.2f}x",
            "",
            f"{figures['watchers_cpu_per_s']:+.3f}"
            + (f" ({per_poll:.2f} ms/poll)" if per_poll is not None else ""),
            "",
            "",
            "",
        ]
    )
    return rows


def notes(figures: dict[str, Any]) -> list[str]:
    plan, alone, watched, feeder = figures["plan"], figures["alone"], figures["watched"], figures["feeder"]
    out = [
        f"{plan['rounds']} rounds of two {plan['seconds']:.0f} s windows, alone and watched, alternating "
        f"which goes first; initiate paced at {plan['rate']:.0f}/s over {plan['connections']} keep-alive "
        "connections (a fresh project each); initiate p50 and p99: medians of the rounds' "
        f"(p99 watched/alone per round: {', '.join(f'{r:.2f}' for r in figures['round_p99_ratios'])}; "
        f"pooled over the rounds: {figures['pooled_p99_ratio']:.2f}, "
        f"{watched['initiate_pooled_p99_ms']:.1f} vs {alone['initiate_pooled_p99_ms']:.1f} ms).",
        f"Watchers: {plan['watchers']} threads of a process of their own, each polling one running "
        f"publishing's log every {plan['poll_interval_s']:.0f} s with its cursor and the page's session "
        "cookie (a user owning the projects, no staff rights), asking again at once while `more`; "
        f"{watched['polls']} polls in the watched windows, {watched['poll_lines_mean']:.1f} new lines "
        f"each on average; {watched['poll_retried']} sent again on a new connection (gunicorn's 2 s "
        f"keep-alive); non-200: {watched['poll_other_status'] or 'none'}.",
        "Summary fragment on new events: "
        + (
            f"on ({watched['fragments']} fetches, their cost in the watchers' CPU per log poll)."
            if figures["fragment"]
            else f"off, the default ({FRAGMENT_VARIABLE}=1 switches it on, as page-publishing.js does)."
        ),
        f"Running publishings: bench.watch_feeder wrote {feeder.get('lines', '?')} lines of build output "
        f"and {feeder.get('events', '?')} events through their attempts' logs "
        f"({feeder.get('lines_per_s', '?')} lines/s, late by p50 {feeder.get('late_p50_s', '?')} s, "
        f"p99 {feeder.get('late_p99_s', '?')} s), in both arms.",
        "web CPU: user + system CPU seconds of gunicorn's processes per second of the window (PostgreSQL's "
        f"own is not in it): {alone['web_cpu_per_s']:.3f} alone, {watched['web_cpu_per_s']:.3f} watched; "
        f"the watchers' is the difference, alone's scaled to the watched windows' initiate rate "
        f"({figures['watchers_cpu_per_s']:.3f} s/s for {watched['polls_per_s']:.1f} polls/s; the "
        "same as the plain difference when both keep the paced rate). Initiate client CPU: "
        f"{alone['client_cpu_share']:.0%} "
        f"and {watched['client_cpu_share']:.0%} of a core.",
    ]
    arms = (("alone", alone), ("watched", watched))
    slow = [arm for arm, row in arms if row["initiate_per_s"] < 0.95 * plan["rate"]]
    if slow:
        out.insert(
            0,
            f"The web tier did not keep up with {plan['rate']:.0f} initiates/s ({' and '.join(slow)}): each "
            "window ran until its requests were sent, and its latencies are those of an overloaded tier.",
        )
    if sum(alone["other_status"].values()) or sum(watched["other_status"].values()):
        out.append(
            f"Initiate answers other than 202: {alone['other_status']} alone, "
            f"{watched['other_status']} watched."
        )
    return out


def chart(figures: dict[str, Any], axes: Any) -> None:
    alone, watched = figures["alone"], figures["watched"]
    labels = ["initiate p50", "initiate p99", "watcher poll p50", "watcher poll p99"]
    width = 0.4
    axes.bar(
        [0 - width / 2, 1 - width / 2],
        [alone["initiate_p50_ms"], alone["initiate_p99_ms"]],
        width,
        label="initiate alone",
    )
    axes.bar(
        [0 + width / 2, 1 + width / 2, 2, 3],
        [watched[key] for key in ("initiate_p50_ms", "initiate_p99_ms", "poll_p50_ms", "poll_p99_ms")],
        width,
        label=f"beside {figures['plan']['watchers']} watchers",
    )
    axes.set_xticks(range(len(labels)), labels)
    axes.set_ylabel(f"ms, initiate at {figures['plan']['rate']:.0f}/s")
    axes.legend()
