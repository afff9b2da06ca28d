"""Recovery: how long after a worker host is SIGKILLed mid-build its job runs again on another host.

`python -m bench recovery [--smoke]`. Each run is a Publisher of its own:
real processes with production settings on a PostgreSQL database and a Redis
namespace of the run's own, gunicorn (1 worker x 2 threads) and two worker
hosts, each `manage.py rundramatiq --processes 1 --threads 1` with its own
PUBLISHING_WORKER_NAME (as tests/integration/test_scale_out.py runs them),
the second started a random part of a lease-renewal period after the first.
The project publishes a local git repository to a `file://` store (local
sources, private targets and user build commands allowed; rate limit off, so
that only recovery is timed); its build writes its pid and then holds while
a file of the run's exists.

A run: initiate through the API; once the build runs on one host, wait a
random 0.5 s to 0.5 s + one reconcile interval (so that the kill lands
anywhere in the lease-heartbeat and reconciler cycles) and SIGKILL that
host's whole process group (no shutdown hook runs, the dying worker
requeues nothing), then release the hold, so that the next attempt's build
finishes at once. The API is polled until the publishing is building again
and then published; the figures are its own records (attempt 1's end, when
the reconciler requeued it; attempt 2's start and worker; the publishing's
end) against the wall-clock time of the kill. Each run checks that the other
host took over, that there were exactly two attempts and that the store
holds one artifact.

Full: three runs with the product's defaults (15 s leases renewed every
2.5 s, a reconciler pass every 5 s per worker process) and one with short
leases (10 s / 2 s), the four deployments side by side (recovery waits out
timers, not the CPU: one after another they would take over two minutes).
Smoke: one run with short leases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench.common import Context, Deployment, Outcome, Target, bootstrap_demo, git_repository

HOSTS = ("host-a", "host-b")
# The product's defaults (publisher_project/settings/jobs.py), said here for the report.
DEFAULT_LEASE_S = 15
DEFAULT_RECONCILE_S = 5
POLL_S = 0.1
# Lease + a reconcile interval + a generous margin: past this the job was not recovered.
RECOVERY_TIMEOUT_S = 150.0


@dataclass(frozen=True)
class Plan:
    label: str
    env: dict[str, str]
    lease_s: int
    reconcile_s: int


DEFAULTS = Plan(
    f"product defaults ({DEFAULT_LEASE_S} s lease, {DEFAULT_RECONCILE_S} s reconcile)",
    {},
    DEFAULT_LEASE_S,
    DEFAULT_RECONCILE_S,
)
SHORT_LEASES = Plan(
    "short leases (10 s lease, 2 s reconcile)",
    {"PUBLISHING_LEASE_TIMEOUT": "10", "PUBLISHING_RECONCILE_INTERVAL": "2"},
    10,
    2,
)
FULL = (DEFAULTS, DEFAULTS, DEFAULTS, SHORT_LEASES)
SMOKE = (SHORT_LEASES,)

# `python3 build.py --beacon TOKEN`: the first attempt holds (at most 5 minutes), then it builds. The
# sandbox lets a build see nothing but its checkout and its environment, where PUBLISHER_ATTEMPT says
# which run it is: the attempt after the killed one builds at once. TOKEN finds its process on the host.
BUILD_SCRIPT = """\
import os, pathlib, time
deadline = time.monotonic() + 300
while os.environ.get("PUBLISHER_ATTEMPT") == "1" and time.monotonic() < deadline:
    time.sleep(0.05)
pathlib.Path("dist").mkdir(exist_ok=True)
pathlib.Path("dist/index.html").write_text("<h1>Recovered</h1>\\n")
"""


def make_source(folder: Path) -> Path:
    """A local git repository with the holding build."""
    return git_repository(folder, {"build.py": BUILD_SCRIPT}, "holding build")


def build_pid(token: str) -> int | None:
    """The host pid of the build whose command line holds `token` (not bwrap's, which repeats it)."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            if token.encode() in argv and Path(argv[0].decode()).name != "bwrap":
                return int(entry.name)
    return None


def host_of(worker: str) -> str:
    """`host-a:1234` -> `host-a`."""
    return worker.rsplit(":", 1)[0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def when(value: object) -> float:
    if not isinstance(value, str):
        raise RuntimeError(f"expected a timestamp, got {value!r}")
    return datetime.fromisoformat(value).timestamp()


class Recovery:
    """One run: a deployment with two worker hosts, an API session as the demo user, a holding project."""

    def __init__(self, context: Context, number: int, plan: Plan) -> None:
        self.number = number
        self.plan = plan
        self.context = dataclasses.replace(context, workdir=context.workdir / f"run-{number}")
        self.context.workdir.mkdir()
        self.beacon = f"beacon-{secrets.token_hex(8)}"
        self.store = self.context.workdir / "store"
        self.api = requests.Session()
        self.base_url = ""
        self.project_id = ""
        self._exit = contextlib.ExitStack()
        # Set when the benchmark is interrupted: the run's threads give up at their next wait.
        self.stop = threading.Event()

    def __enter__(self) -> Recovery:
        with contextlib.ExitStack() as undo:
            undo.callback(self.api.close)
            self.site = undo.enter_context(
                Deployment(
                    self.context,
                    f"recovery-{self.number}",
                    PUBLISHING_ALLOW_LOCAL_SOURCES="true",
                    PUBLISHING_ALLOW_PRIVATE_TARGETS="true",
                    PUBLISHING_ALLOW_USER_BUILD_COMMANDS="true",
                    PUBLISHING_FILE_STORE_ROOTS=str(self.store),
                    PUBLISHING_RATE_LIMIT="0",
                    **self.plan.env,
                )
            )
            # The hosts boot while the web starts. Booted together, they would renew leases and
            # reconcile in step (every lease / 6 and every reconcile interval from their boot), so
            # that a lease could only run out just before, or 1/3 or 2/3 of an interval before, the
            # survivor's next pass; hosts boot at unrelated times: the second one starts a random
            # part of a renewal period later.
            stagger = time.monotonic() + random.uniform(0, self.plan.lease_s / 6)  # noqa: S311
            self.start_host(HOSTS[0])
            token, self.project_id = bootstrap_demo(self.site.env)
            self._sleep(stagger - time.monotonic())
            self.start_host(HOSTS[1])
            self.base_url = self.site.start_web(workers=1, threads=2)
            self.api.headers["Authorization"] = f"Token {token}"
            self.source = make_source(self.context.workdir / "source")
            changes = {
                "repository_url": str(self.source),
                "build_command": f"python3 build.py --beacon {self.beacon}",
                "target_url": f"file://{self.store}",
            }
            self._call("PATCH", f"/api/v1/projects/{self.project_id}/", 200, json=changes)
            for host in HOSTS:
                self.site.wait_ready(host, 1)
            self._exit = undo.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def _call(self, method: str, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        response = self.api.request(method, self.base_url + path, timeout=30, **kwargs)
        if response.status_code != expect:
            answer = f"{response.status_code}, not {expect}: {response.text[:500]}"
            raise RuntimeError(f"{method} {path}: {answer}")
        body: dict[str, Any] = response.json()
        return body

    def wait_until(self, publishing_id: str, what: str, done: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self._call("GET", f"/api/v1/publishing/{publishing_id}", 200)
            if done(body):
                return body
            if body["status"] in ("failed", "cancelled") or time.monotonic() > deadline:
                logs = "\n".join(f"--- {h}\n{self.site.processes.log(h)}" for h in HOSTS)
                raise RuntimeError(f"publishing {publishing_id} never {what}: {body}\n{logs}")
            self._sleep(POLL_S)

    def start_host(self, host: str) -> None:
        self.site.start_worker(host, processes=1, threads=1, PUBLISHING_WORKER_NAME=host)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(max(seconds, 0)):
            raise RuntimeError(f"run {self.number} interrupted")

    def _lease_renewed_at(self, publishing_id: str) -> float:
        with psycopg.connect(self.site.database_url) as conn:
            row = conn.execute(
                "SELECT heartbeat_at FROM publishing_publishing WHERE id = %s", (publishing_id,)
            ).fetchone()
        if row is None or row[0] is None:
            raise RuntimeError(f"publishing {publishing_id} has no lease")
        renewed: datetime = row[0]
        return renewed.timestamp()

    def measure(self) -> dict[str, Any]:
        publishing_id = str(
            self._call("POST", "/api/v1/publishing/initiate", 202, json={"project_id": self.project_id})["id"]
        )
        running = self.wait_until(
            publishing_id,
            "started",
            lambda b: b["status"] == "building" and b["worker"] and build_pid(self.beacon) is not None,
            timeout=60,
        )
        self._sleep(random.uniform(0.5, 0.5 + self.plan.reconcile_s))  # noqa: S311 - a phase, not a secret
        victim = host_of(running["worker"])
        pid = build_pid(self.beacon)
        killed_at = time.time()
        self.site.kill(victim)
        # A build of its own session: did it outlive its worker? (A sandboxed one dies with it.)
        gone_by = time.monotonic() + 1
        while pid is not None and alive(pid) and time.monotonic() < gone_by:
            self._sleep(0.02)
        build_outlived_worker = pid is not None and alive(pid)
        # The dead worker can no longer renew it: this is the lease the reconciler waits out.
        renewed_at = self._lease_renewed_at(publishing_id)
        again = self.wait_until(
            publishing_id,
            "ran again",
            lambda b: b["attempts"] >= 2 and b["status"] in ("building", "submitting", "published"),
            timeout=RECOVERY_TIMEOUT_S,
        )
        seen_again_at = time.time()
        done = self.wait_until(publishing_id, "published", lambda b: b["status"] == "published", timeout=60)
        first, second, *more = done["attempt_history"]
        artifacts = sorted(path.name for path in self.store.glob("*/*/*.tar.gz"))
        survivor = host_of(again["worker"])
        checks = {
            "another host took over": survivor != victim,
            "two attempts": done["attempts"] == 2 and not more,
            "attempt 1 lost": first["outcome"] == "lost",
            "attempt 2 published": second["outcome"] == "published",
            "one artifact": artifacts == [f"{publishing_id}.tar.gz"],
        }
        if not all(checks.values()):
            failed = [name for name, ok in checks.items() if not ok]
            raise RuntimeError(f"run {self.number}: {', '.join(failed)}: {done}, artifacts {artifacts}")
        row = {
            "plan": self.plan.label,
            "run": self.number,
            "victim": victim,
            "survivor": survivor,
            "kill_after_start_s": killed_at - when(first["started_at"]),
            "lease_left_at_kill_s": renewed_at + self.plan.lease_s - killed_at,
            "kill_to_requeued_s": when(first["finished_at"]) - killed_at,
            "kill_to_running_s": when(second["started_at"]) - killed_at,
            "kill_to_published_s": when(done["finished_at"]) - killed_at,
            "kill_to_seen_running_by_api_s": seen_again_at - killed_at,
            "attempts": done["attempts"],
            "artifacts": len(artifacts),
            "build_outlived_worker": build_outlived_worker,
        }
        print(
            f"  run {self.number} ({self.plan.label}): {victim} killed, running again on {survivor} after "
            f"{row['kill_to_running_s']:.1f} s, published after {row['kill_to_published_s']:.1f} s",
            flush=True,
        )
        return row


def measure(context: Context, plans: tuple[Plan, ...]) -> tuple[list[dict[str, Any]], float]:
    """One run per plan, side by side; the rows and the seconds the setup took."""
    began = time.monotonic()
    runs = [Recovery(context, number, plan) for number, plan in enumerate(plans, start=1)]
    with contextlib.ExitStack() as stack:
        for recovery in runs:
            stack.push(recovery)  # its __exit__ only: __enter__ runs in the pool, and undoes itself on error
        # The pool is shut down (its threads done) before the runs are torn down.
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            try:
                list(pool.map(Recovery.__enter__, runs))
                setup_s = time.monotonic() - began
                print(f"  {len(runs)} deployments set up in {setup_s:.1f} s", flush=True)
                rows = list(pool.map(Recovery.measure, runs))
            except BaseException:
                for recovery in runs:
                    recovery.stop.set()
                raise
    return rows, setup_s


def run(context: Context) -> Outcome:
    plans = SMOKE if context.smoke else FULL
    rows, setup_s = measure(context, plans)
    keys = ("kill_to_requeued_s", "kill_to_running_s", "kill_to_published_s")
    table = [
        [
            "run",
            "killed",
            "taken over by",
            "lease left at kill (s)",
            "kill -> requeued (s)",
            "kill -> running again (s)",
            "kill -> published (s)",
        ]
    ]
    for row in rows:
        table.append(
            [
                f"#{row['run']} {row['plan']}",
                row["victim"],
                row["survivor"],
                f"{row['lease_left_at_kill_s']:.1f}",
                *(f"{row[key]:.1f}" for key in keys),
            ]
        )
    headline = plans[0]
    mine = [row for row in rows if row["plan"] == headline.label]
    values = {key: [float(row[key]) for row in mine] for key in keys}
    summary = {
        f"{key}_{stat}": round(function(values[key]), 2)
        for key in keys
        for stat, function in (("median", statistics.median), ("max", max))
    }
    if len(mine) > 1:
        table.append(
            [
                f"{headline.label}: median / max",
                "",
                "",
                "",
                *(f"{statistics.median(values[key]):.1f} / {max(values[key]):.1f}" for key in keys),
            ]
        )
    worst, median = summary["kill_to_running_s_max"], summary["kill_to_running_s_median"]
    measured = f"max {worst:.1f} s, median {median:.1f} s ({len(mine)} runs, {headline.label})"
    targets = [
        Target("killed job running again <= 90 s", measured, worst <= 90),
        Target("killed job running again <= 30 s (better)", measured, worst <= 30),
        Target(
            "killed job published exactly once",
            f"{len(rows)}/{len(rows)} runs: 2 attempts, 1 artifact",
            all(row["attempts"] == 2 and row["artifacts"] == 1 for row in rows),
        ),
    ]
    orphans = sum(1 for row in rows if row["build_outlived_worker"])
    notes = [
        f"Product defaults: PUBLISHING_LEASE_TIMEOUT={DEFAULT_LEASE_S} s (renewed every "
        f"{DEFAULT_LEASE_S / 6:g} s), PUBLISHING_RECONCILE_INTERVAL={DEFAULT_RECONCILE_S} s in each worker "
        "process. A killed job runs again once its lease has run out and a surviving worker's "
        "reconciler passes: the lease left at the kill + up to one reconcile interval + the pickup.",
        "Each run is a deployment of its own (database, Redis namespace, gunicorn, two hosts of "
        "1 process x 1 thread), all side by side. Kill -> published adds the next attempt's checkout, "
        "build (instant: the hold was released at the kill), package and submit.",
        "The times are the publishing's own records (attempt ends and starts, written by the "
        "workers) against the wall-clock time of the SIGKILL, on one machine.",
        f"The killed worker's build process outlived it (by more than 1 s) in {orphans} of {len(rows)} "
        "runs: a sandboxed build dies with the worker that started it, whatever session it made.",
    ]
    return Outcome(
        title="Recovery: a worker host SIGKILLed mid-build, its job taken over by the other host",
        table=table,
        targets=targets,
        figures={"setup_s": round(setup_s, 1), "runs": rows, "summary": summary},
        notes=notes,
    )


def chart(figures: dict[str, Any], axes: Any) -> None:
    rows: list[dict[str, Any]] = figures["runs"]
    positions = range(len(rows))
    width = 0.4
    axes.bar(
        [p - width / 2 for p in positions],
        [row["kill_to_running_s"] for row in rows],
        width,
        label="kill -> running again",
    )
    axes.bar(
        [p + width / 2 for p in positions],
        [row["kill_to_published_s"] for row in rows],
        width,
        label="kill -> published",
    )
    for target, style in ((90, "--"), (30, ":")):
        axes.axhline(target, color="grey", linestyle=style, linewidth=1, label=f"{target} s")
    labels = [f"#{row['run']} {row['plan'].split(' (')[0]}" for row in rows]
    axes.set_xticks(list(positions), labels)
    axes.set_ylabel("seconds after SIGKILL")
    axes.set_ylim(0, 100)
    axes.legend(loc="upper left", ncols=2, fontsize="small")
