"""`python -m bench sandbox [--smoke]`: what the build sandbox adds to a one-page publishing.

The pipeline of a one-page project (`git clone`, a Python build writing `dist/index.html`, the
package, a file:// store) runs in one worker-like process, sandboxed (bubblewrap, a uid of its
own) and unsandboxed (the worker's own user), interleaved in random order for N rounds. Each
step is timed; the medians and their difference are what the sandbox costs. What a publishing
adds around the pipeline (the queue, the database) is the same either way and is measured by the
other benchmarks.

Measured in a child process with Django set up on the test settings (no database is touched),
so that this runner's own process stays free of Django.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Context, Outcome, git_repository

STEPS = ("checkout", "build", "package", "submit")
MODES = ("sandboxed", "unsandboxed")
ROUNDS, SMOKE_ROUNDS = 40, 3
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_SCRIPT = """\
import pathlib
pathlib.Path("dist").mkdir(exist_ok=True)
html = pathlib.Path("index.html").read_text().replace("{{ title }}", "Published")
pathlib.Path("dist/index.html").write_text(html)
"""


def run(context: Context) -> Outcome:
    if shutil.which("bwrap") is None:
        raise RuntimeError("the sandbox benchmark needs bwrap (apt-get install bubblewrap)")
    rounds = SMOKE_ROUNDS if context.smoke else ROUNDS
    answer = subprocess.run(
        [sys.executable, "-m", "bench.sandbox", str(rounds), str(context.workdir)],
        cwd=ROOT,
        # The system's PATH, as in the sandbox: both modes then run the same python3 (a version
        # manager's shim first on PATH would cost the unsandboxed builds alone).
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "publisher_project.settings.test", "PATH": SYSTEM_PATH},
        capture_output=True,
        text=True,
        check=True,
    )
    samples: dict[str, dict[str, list[float]]] = json.loads(answer.stdout.splitlines()[-1])
    medians = {
        mode: {step: statistics.median(samples[mode][step]) for step in (*STEPS, "total")} for mode in MODES
    }
    table = [["step", "sandboxed ms", "unsandboxed ms", "sandbox adds ms"]]
    for step in (*STEPS, "total"):
        sandboxed, unsandboxed = medians["sandboxed"][step], medians["unsandboxed"][step]
        table.append([step, f"{sandboxed:.1f}", f"{unsandboxed:.1f}", f"{sandboxed - unsandboxed:+.1f}"])
    added = medians["sandboxed"]["total"] - medians["unsandboxed"]["total"]
    return Outcome(
        title=f"Sandbox cost: a one-page publishing's pipeline, medians of {rounds} rounds each, interleaved",
        table=table,
        targets=[],
        figures={"rounds": rounds, "samples_ms": samples, "medians_ms": medians, "added_ms": added},
        notes=[
            f"The sandbox adds {added:.0f} ms (median) to a one-page publishing's pipeline, "
            f"{added / medians['unsandboxed']['total']:.0%} of it: bubblewrap's namespaces and mounts, "
            "the uid lease and the hand-over of the checkout; all of it in the build step.",
        ],
    )


def measure(rounds: int, workdir: Path) -> dict[str, dict[str, list[float]]]:
    """Per mode and step, the milliseconds of each round (Django must be set up)."""
    # Imported here: this module is also the runner's, which never sets Django up.
    from publishing.pipeline.base import Origin
    from publishing.pipeline.build import run_build
    from publishing.pipeline.build_limits import BuildLimits
    from publishing.pipeline.checkout import checkout
    from publishing.pipeline.package import package
    from publishing.pipeline.sandbox import SandboxPolicy
    from publishing.pipeline.stores.file import FileStore
    from publishing.pipeline.workspace import workspace

    files = {"index.html": "<h1>{{ title }}</h1>\n", "build.py": BUILD_SCRIPT}
    source = git_repository(workdir / "source", files, "one page")
    store = workdir / "store"
    policies = {"sandboxed": SandboxPolicy(mode="required"), "unsandboxed": SandboxPolicy(mode="off")}
    limits = BuildLimits.from_settings()
    samples: dict[str, dict[str, list[float]]] = {mode: {s: [] for s in (*STEPS, "total")} for mode in MODES}
    for number in range(rounds):
        for mode in random.sample(MODES, len(MODES)):
            times = [time.perf_counter()]
            with workspace() as folder:
                checked_out = checkout(
                    str(source),
                    "main",
                    dest=folder / "source",
                    timeout=60,
                    allow_local=True,
                    allow_private=True,
                    on_output=lambda text: None,
                )
                times.append(time.perf_counter())
                run_build(
                    "python3 build.py",
                    cwd=checked_out,
                    timeout=60,
                    output_limit=64 * 1024,
                    on_output=lambda text: None,
                    limits=limits,
                    sandbox=policies[mode],
                )
                times.append(time.perf_counter())
                artifact = package(checked_out, "dist", out_dir=folder / "out", name=f"{mode}-{number}")
                times.append(time.perf_counter())
                FileStore(roots=[str(store)]).submit(
                    artifact,
                    target_url=f"file://{store}",
                    publishing_id=f"{mode}-{number}",
                    origin=Origin(owner_id="1", project_id="one-page", project_slug="one-page"),
                )
                times.append(time.perf_counter())
            for step, (start, end) in zip(STEPS, itertools.pairwise(times), strict=True):
                samples[mode][step].append((end - start) * 1000)
            samples[mode]["total"].append((times[-1] - times[0]) * 1000)
    return samples


def _main(argv: list[str]) -> None:
    import django

    django.setup()
    rounds, workdir = int(argv[0]), Path(argv[1])
    result: Any = measure(rounds, workdir)
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
