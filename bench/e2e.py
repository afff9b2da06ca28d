"""`python -m bench e2e [--smoke]`: a whole publishing of real-size projects against a shell script.

For each size of `bench.projects` (one page; a real-size site of about 5,000 files and 100 MB with
50 commits of history; a 1 GiB artifact of a few big files), Publisher publishes the project
through its real processes (gunicorn, `rundramatiq` with one worker thread, production settings,
the sandboxed build) to a file:// store and to an HTTP store on loopback, and a shell script runs
the same steps (`git clone --depth 1`, the build command, `tar --sort=name ... | gzip -6 -n`, `cp`
or `curl --data-binary`), the two interleaved in random order, several rounds; the medians are
compared. Publisher's total runs from the initiate request to the publishing's `finished_at`; its
steps are the attempt's step events. Every run starts after `sync` (no dirty page of the last run
left to slow it down), and a Publisher run ends only once the worker has removed its workspace.

Then one more publishing of each size and store, apart from the timed rounds (sampling slows
them down), measures the worker's memory (its process tree's RSS, git and the build included, every
50 ms) and the workspace's disk use. `--smoke` runs the one-page project twice.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench.common import Context, Deployment, Outcome, Target, bootstrap_demo, ratio
from bench.e2e_parts import SCRIPT, STEPS, ReceivingServer, Sampler, ScriptRun, run_script
from bench.projects import SIZES, Project, generate

# Rounds of each size: each round runs Publisher and the script once per store, in random order.
ROUNDS = {"one-page": 10, "real-size": 5, "large": 2}
SMOKE_ROUNDS = {"one-page": 2}
# The large artifact's rounds go to the file store only; its HTTP store run is the sampled one.
STORES = {"one-page": ("file", "http"), "real-size": ("file", "http"), "large": ("file",)}
POLL_S = 0.05
TIMEOUT_S = 900
MIB = 1024 * 1024


@dataclass(frozen=True)
class PublisherRun:
    total_s: float
    steps_s: dict[str, float]
    artifact_bytes: int
    # The publishing's step windows in wall-clock time, for the sampler's figures.
    windows: dict[str, tuple[float, float]]


@dataclass
class Runs:
    """Every timed run of one size and store."""

    publisher: list[PublisherRun] = field(default_factory=list)
    script: list[ScriptRun] = field(default_factory=list)


class EndToEnd:
    """Publisher deployed once (web, one worker), its demo user's API session, the stores."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.stores = context.workdir / "stores"
        # Beside the run's folder, not in it: sandboxed builds, of other uids, must pass through its parents.
        self.workspaces = Path(tempfile.mkdtemp(prefix="publisher-e2e-workspaces-"))
        self.workspaces.chmod(0o711)
        self.api = requests.Session()
        self.base_url = ""
        self.projects: dict[str, str] = {}
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> EndToEnd:
        with contextlib.ExitStack() as undo:
            undo.callback(self.api.close)
            undo.callback(shutil.rmtree, self.workspaces, ignore_errors=True)
            (self.stores / "file").mkdir(parents=True)
            self.receiver = undo.enter_context(ReceivingServer(self.stores / "http").serving())
            self.site = undo.enter_context(
                Deployment(
                    self.context,
                    "e2e",
                    PUBLISHING_ALLOW_LOCAL_SOURCES="true",
                    PUBLISHING_ALLOW_PRIVATE_TARGETS="true",
                    PUBLISHING_ALLOW_USER_BUILD_COMMANDS="true",
                    PUBLISHING_FILE_STORE_ROOTS=str(self.stores / "file"),
                    PUBLISHING_WORKSPACE_DIR=str(self.workspaces),
                    PUBLISHING_RATE_LIMIT="0",
                )
            )
            token, _ = bootstrap_demo(self.site.env)
            self.api.headers["Authorization"] = f"Token {token}"
            self.site.start_worker("worker", processes=1, threads=1)
            self.base_url = self.site.start_web(workers=2, threads=4)
            self.site.wait_ready("worker", 1)
            self._exit = undo.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def target(self, store: str) -> str:
        return f"file://{self.stores / 'file'}" if store == "file" else self.receiver.url

    def add_project(self, project: Project, store: str) -> str:
        """A Publisher project of `project` that delivers to `store`: its id."""
        body = {
            "name": f"{project.size.name} {store}",
            "slug": f"{project.size.name}-{store}",
            "repository_url": project.url,
            "ref": project.branch,
            "build_command": project.build_command,
            "artifact_path": project.artifact_path,
            "target_url": self.target(store),
        }
        project_id = str(self._call("POST", "/api/v1/projects/", 201, json=body)["id"])
        self.projects[f"{project.size.name}-{store}"] = project_id
        return project_id

    def publish(self, project_id: str) -> PublisherRun:
        """Initiate, wait until published and its workspace is gone; the total from the request to
        `finished_at`."""
        sent = time.time()
        path = "/api/v1/publishing/initiate"
        publishing_id = str(self._call("POST", path, 202, json={"project_id": project_id})["id"])
        body = self._wait(publishing_id)
        finished = datetime.fromisoformat(body["finished_at"]).timestamp()
        windows = self._step_windows(publishing_id)
        # The worker removes the workspace once it has published: the next run must not share the
        # machine with that removal.
        deadline = time.monotonic() + TIMEOUT_S
        while any(self.workspaces.iterdir()) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return PublisherRun(
            total_s=finished - sent,
            steps_s={step: end - start for step, (start, end) in windows.items()},
            artifact_bytes=int(body["artifact_size"]),
            windows=windows,
        )

    def _wait(self, publishing_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            body = self._call("GET", f"/api/v1/publishing/{publishing_id}", 200)
            if body["status"] == "published":
                return body
            if body["status"] in ("failed", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(
                    f"publishing {publishing_id} ended {body['status']}: {body['error_code']} "
                    f"{body['error_message']}\n{self.site.processes.log('worker')}"
                )
            time.sleep(POLL_S)

    def _step_windows(self, publishing_id: str) -> dict[str, tuple[float, float]]:
        """Each step's (start, end) as the published attempt's step events say."""
        with psycopg.connect(self.site.database_url) as conn:
            row = conn.execute(
                "SELECT steps FROM publishing_attempt WHERE publishing_id = %s AND outcome = 'published'",
                (publishing_id,),
            ).fetchone()
        if row is None:
            raise RuntimeError(f"publishing {publishing_id} has no published attempt")
        return {
            step["name"]: (
                datetime.fromisoformat(step["started_at"]).timestamp(),
                datetime.fromisoformat(step["finished_at"]).timestamp(),
            )
            for step in row[0]
        }

    def _call(self, method: str, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        response = self.api.request(method, self.base_url + path, timeout=60, **kwargs)
        if response.status_code != expect:
            said = f"{response.status_code}, not {expect}: {response.text[:500]}"
            raise RuntimeError(f"{method} {path}: {said}")
        answer: dict[str, Any] = response.json()
        return answer

    def sampled(self, project_id: str) -> tuple[PublisherRun, Sampler, int]:
        """One publishing with the worker's memory and the workspace's disk sampled: (run, samples,
        idle RSS in KiB)."""
        sampler = Sampler(self.site.processes.running["worker"].pid, self.workspaces)
        idle = statistics.median(sampler.tree_rss_kib() for _ in range(5))
        with sampler:
            run = self.publish(project_id)
        return run, sampler, int(idle)


def run(context: Context) -> Outcome:
    rounds = SMOKE_ROUNDS if context.smoke else ROUNDS
    script = context.workdir / "publish.sh"
    script.write_text(SCRIPT)
    results: dict[str, dict[str, Runs]] = {}
    sampled: dict[str, dict[str, Any]] = {}
    with EndToEnd(context) as e2e:
        for name, count in rounds.items():
            project = generate(SIZES[name], context.workdir / "projects" / name)
            stores = STORES[name] if not context.smoke else ("file", "http")
            ids = {store: e2e.add_project(project, store) for store in ("file", "http")}
            results[name] = {store: Runs() for store in stores}
            for number in range(count):
                order = [(store, who) for store in stores for who in ("publisher", "script")]
                for store, who in random.sample(order, len(order)):
                    runs = results[name][store]
                    # Each run starts with no dirty page waiting to be written: the last run's writes
                    # (hundreds of MB) would otherwise be paid for by whichever runs next, through
                    # the kernel's write throttling and the file store's fsync.
                    os.sync()
                    if who == "publisher":
                        runs.publisher.append(e2e.publish(ids[store]))
                    else:
                        work = context.workdir / "script" / f"{name}-{store}-{number}"
                        runs.script.append(run_script(script, project, work, e2e.target(store), work.name))
                print(f"  {name}: round {number + 1} of {count}", flush=True)
            sampled[name] = {store: _sampled(e2e, ids[store]) for store in ("file", "http")}
            _remove_project(project)
    return _outcome(results, sampled, rounds, smoke=context.smoke)


def _remove_project(project: Project) -> None:
    shutil.rmtree(project.repository)


def _sampled(e2e: EndToEnd, project_id: str) -> dict[str, Any]:
    run, sampler, idle_kib = e2e.sampled(project_id)
    start, end = run.windows["package"][0], run.windows["submit"][1]
    # None when package and submit were over between two samples.
    package_submit = sampler.rss_kib.peak(start, end)
    return {
        "idle_rss_mib": idle_kib / 1024,
        "peak_rss_mib": sampler.rss_kib.peak() / 1024,
        "peak_rss_package_submit_mib": package_submit / 1024 if package_submit else None,
        "peak_disk_mib": sampler.disk_bytes.peak() / MIB,
        "samples": len(sampler.rss_kib.values),
    }


def _medians(runs: Runs) -> dict[str, dict[str, float]]:
    """Per side, the median total, step times and the rest ("other": what is none of the steps)."""
    sides: dict[str, dict[str, float]] = {}
    for side, items in (("publisher", runs.publisher), ("script", runs.script)):
        figures = {"total": statistics.median(run.total_s for run in items)}
        for step in STEPS:
            figures[step] = statistics.median(run.steps_s[step] for run in items)
        figures["other"] = statistics.median(run.total_s - sum(run.steps_s.values()) for run in items)
        figures["artifact_mib"] = statistics.median(run.artifact_bytes for run in items) / MIB
        sides[side] = figures
    return sides


def _outcome(
    results: dict[str, dict[str, Runs]],
    sampled: dict[str, dict[str, Any]],
    rounds: dict[str, int],
    *,
    smoke: bool,
) -> Outcome:
    medians = {
        name: {store: _medians(runs) for store, runs in stores.items()} for name, stores in results.items()
    }
    columns = ["total", *STEPS, "other"]
    table = [["project", "store", "who", *(f"{c} s" for c in columns), "artifact MiB"]]
    for name, stores in medians.items():
        for store, sides in stores.items():
            publisher, script = sides["publisher"], sides["script"]
            for side, label in (("publisher", "Publisher"), ("script", "shell script")):
                cells = [_seconds(sides[side][c]) for c in columns]
                table.append([name, store, label, *cells, _mib(sides[side]["artifact_mib"])])
            ratios = [f"{ratio(publisher[c], script[c]):.2f}x" for c in columns[:-1]]
            size_ratio = ratio(publisher["artifact_mib"], script["artifact_mib"])
            table.append([name, store, "ratio", *ratios, "", f"{size_ratio:.3f}x"])
    targets = [] if smoke else _targets(medians, sampled)
    return Outcome(
        title="End to end: a whole publishing against the same steps in a shell script, medians",
        table=table,
        targets=targets,
        figures={
            "rounds": rounds,
            "medians_s": medians,
            "sampled": sampled,
            "runs": {
                name: {
                    store: {
                        "publisher": [vars(run) for run in runs.publisher],
                        "script": [vars(run) for run in runs.script],
                    }
                    for store, runs in stores.items()
                }
                for name, stores in results.items()
            },
        },
        notes=_notes(sampled, results),
    )


def _mib(value: float) -> str:
    return f"{value:.4f}" if value < 1 else f"{value:,.1f}"


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _targets(medians: dict[str, dict[str, Any]], sampled: dict[str, dict[str, Any]]) -> list[Target]:
    targets: list[Target] = []
    for store, sides in medians.get("real-size", {}).items():
        publisher, script = sides["publisher"], sides["script"]
        total = ratio(publisher["total"], script["total"])
        targets.append(
            Target(
                f"real-size site, {store} store: initiate to published <= 1.10x the script",
                f"{total:.2f}x ({publisher['total']:.1f} vs {script['total']:.1f} s)",
                total <= 1.10,
            )
        )
        steps = {step: ratio(publisher[step], script[step]) for step in STEPS}
        targets.append(
            Target(
                f"real-size site, {store} store: each step <= 1.15x the script's",
                ", ".join(f"{step} {value:.2f}x" for step, value in steps.items()),
                all(value <= 1.15 for value in steps.values()),
            )
        )
    for store, sides in medians.get("one-page", {}).items():
        added = (sides["publisher"]["total"] - sides["script"]["total"]) * 1000
        targets.append(
            Target(
                f"one-page site, {store} store: Publisher adds <= 300 ms to the script",
                f"{added:+.0f} ms ({sides['publisher']['total'] * 1000:.0f} vs "
                f"{sides['script']['total'] * 1000:.0f} ms)",
                added <= 300,
            )
        )
    for store, figures in sampled.get("large", {}).items():
        grown = figures["peak_rss_mib"] - figures["idle_rss_mib"]
        sampled_enough = figures["samples"] > 0 and figures["peak_rss_mib"] >= figures["idle_rss_mib"]
        targets.append(
            Target(
                f"1 GiB artifact, {store} store: the worker's peak RSS <= idle + 64 MiB",
                f"+{grown:.0f} MiB ({figures['peak_rss_mib']:.0f} vs {figures['idle_rss_mib']:.0f} MiB; "
                f"package and submit {_grown(figures)})",
                sampled_enough and grown <= 64,
            )
        )
    for name, stores in medians.items():
        sides = stores["file"]
        size = ratio(sides["publisher"]["artifact_mib"], sides["script"]["artifact_mib"])
        # A smaller archive is no miss: the target guards against compressing worse than gzip -6.
        targets.append(
            Target(
                f"{name}: artifact at most 2% larger than gzip -6's",
                f"{size:.3f}x ({_mib(sides['publisher']['artifact_mib'])} vs "
                f"{_mib(sides['script']['artifact_mib'])} MiB)",
                size <= 1.02,
            )
        )
    return targets


def _grown(figures: dict[str, Any]) -> str:
    """How far RSS rose over idle during package and submit, or why that is unknown."""
    if figures["peak_rss_package_submit_mib"] is None:
        return "too short to sample"
    return f"{figures['peak_rss_package_submit_mib'] - figures['idle_rss_mib']:+.0f} MiB"


def _notes(sampled: dict[str, dict[str, Any]], results: dict[str, dict[str, Runs]]) -> list[str]:
    notes = [
        "Publisher: from the initiate request to the publishing's finished_at (its own clock, the same "
        "machine's); its steps from the published attempt's step events. \"other\" is what lies outside "
        "the steps: the request, the queue, the worker's records around the steps. Each run starts after "
        "`sync`. The file store's submit fsyncs the archive, its manifest and their folder (published "
        "means on disk); the script's `cp` leaves its copy in the page cache.",
    ]
    for name, stores in sampled.items():
        script = results[name][next(iter(results[name]))].script[0]
        parts = script.checkout_bytes / MIB, script.dist_bytes / MIB, script.artifact_bytes / MIB
        for store, figures in stores.items():
            notes.append(
                f"{name}, {store} store, one publishing sampled every 50 ms: the worker's process tree "
                f"{figures['idle_rss_mib']:.0f} MiB idle, peak {figures['peak_rss_mib']:.0f} MiB "
                f"(package and submit: {_grown(figures)} over idle); its workspace's peak "
                f"disk use {figures['peak_disk_mib']:.1f} MiB against checkout {parts[0]:.1f} + build "
                f"{parts[1]:.1f} + artifact {parts[2]:.1f} = {sum(parts):.1f} MiB."
            )
    return notes


def chart(figures: dict[str, Any], axes: Any) -> None:
    """Each size's file-store publishing and script, their steps stacked, as shares of the script's total."""
    labels: list[str] = []
    bottoms: list[float] = []
    bars: dict[str, list[float]] = {part: [] for part in (*STEPS, "other")}
    for name, stores in figures["medians_s"].items():
        sides = stores["file"]
        for side, label in (("publisher", "Publisher"), ("script", "script")):
            labels.append(f"{name}\n{label} {_seconds(sides[side]['total'])} s")
            for part in bars:
                bars[part].append(sides[side][part] / sides["script"]["total"])
    bottoms = [0.0] * len(labels)
    for part, values in bars.items():
        axes.bar(range(len(labels)), values, 0.6, bottom=bottoms, label=part)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.set_xticks(range(len(labels)), labels, fontsize=7)
    axes.set_ylabel("share of the script's total (file store)")
    axes.legend(fontsize=8, loc="upper right")
