"""`python -m bench [--smoke] [NAME ...]`: Publisher against its peers, side by side, in one run.

Each benchmark is a module `bench.<name>` with `run(context) -> Outcome`. It
starts what it measures itself (on a private Redis that this runner starts,
and databases of its own on the PostgreSQL server), and removes it at the end.
The runner prints each table and then every target with its figure, writes
the JSON to `bench/results/<name>.json` and, after a full run of all of them,
`docs/benchmarks.md` with its charts.

`--smoke` runs each one briefly: it checks that they work (CI runs it), not
how fast anything is; its figures mean nothing and nothing is judged.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.common import RESULTS, Context, Outcome, machine_info, raise_exit, render_table
from bench.report import write as write_report
from publishing.redis_server import RedisServer

# In the order they run: the quick ones first, so a broken setup shows early.
BENCHMARKS = (
    "pickup", "sandbox", "overhead", "scaling", "api", "watchers", "degraded", "recovery", "ratelimit",
    "fairness", "e2e",
)  # fmt: skip
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="any of: " + ", ".join(BENCHMARKS) + " (all)"
    )
    parser.add_argument("--smoke", action="store_true", help="a short run of each: does it work?")
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help="maintenance database URL; benchmarks create and drop their own databases beside it",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
    names: list[str] = args.names or list(BENCHMARKS)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    signal.signal(signal.SIGTERM, raise_exit)

    outcomes: dict[str, Outcome] = {}
    failed: list[str] = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="publisher-bench-") as folder,
        RedisServer(Path(folder) / "redis") as server,
    ):
        machine = machine_info(redis.Redis.from_url(server.url), args.postgres)
        for name in names:
            context = Context(
                smoke=args.smoke,
                redis_url=server.url,
                postgres_url=args.postgres,
                workdir=Path(folder) / name,
            )
            context.workdir.mkdir()
            print(f"=== {name}{' (smoke)' if args.smoke else ''}", flush=True)
            began = time.monotonic()
            try:
                outcome: Outcome = importlib.import_module(f"bench.{name}").run(context)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            seconds = time.monotonic() - began
            outcomes[name] = outcome
            print(f"{outcome.title} ({seconds:.0f} s)\n{render_table(outcome.table)}\n", flush=True)
            _write(name, outcome, smoke=args.smoke, command=command, machine=machine, seconds=seconds)
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print(summary(outcomes, smoke=args.smoke))
    print(f"\n{len(outcomes)} benchmarks in {time.monotonic() - started:.0f} s", end="")
    print(f"; failed: {', '.join(failed)}" if failed else "")
    if not args.smoke and not failed and set(names) == set(BENCHMARKS):
        written = write_report(outcomes, machine=machine, command=command)
        print("written: " + ", ".join(str(path) for path in written))
    return 1 if failed else 0


def summary(outcomes: dict[str, Outcome], *, smoke: bool) -> str:
    rows = [["target", "measured", "met"]]
    for outcome in outcomes.values():
        for target in outcome.targets:
            verdict = "-" if smoke else ("yes" if target.ok else "NO")
            rows.append([target.name, target.measured, verdict])
    heading = "Targets (smoke run: figures only prove it runs)" if smoke else "Targets"
    return f"{heading}\n{render_table(rows, left=2)}" if len(rows) > 1 else "No targets measured."


def _write(
    name: str, outcome: Outcome, *, smoke: bool, command: str, machine: dict[str, Any], seconds: float
) -> Path:
    folder = RESULTS / "smoke" if smoke else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = {
        "benchmark": name,
        "smoke": smoke,
        "command": command,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(seconds, 1),
        "machine": machine,
        **asdict(outcome),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
