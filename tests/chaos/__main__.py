"""`python -m tests.chaos [--seed N] [--publishings N] [--no-write]`: the long chaos run (`make chaos`).

Two rounds, A with Redis keeping its data (AOF) and B with Redis losing it
at each restart, PostgreSQL restarts and worker kills in both. Prints each
round and writes the Chaos section of docs/reliability.md. Exits 1 when an
invariant broke.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.engine import (
    CHAOS_ENV,
    FAULT_KINDS,
    FAULT_LABELS,
    RoundConfig,
    RoundResult,
    recovery_stats,
    seconds,
)
from tests.integration.stack import ROOT

REPORT = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- chaos:begin (written by `make chaos`) -->", "<!-- chaos:end -->"


def rounds(seed: int, publishings: int) -> list[RoundConfig]:
    # The same arrival rate and fault spacing in both rounds; 4 faults more than one of each kind.
    return [
        RoundConfig(
            name=name,
            seed=seed + n,
            appendonly=appendonly,
            publishings=publishings,
            arrival_s=publishings * 1.1,
            extra_faults=4,
        )
        for n, (name, appendonly) in enumerate((("A", True), ("B", False)))
    ]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def markdown(results: list[RoundResult], *, seed: int, publishings: int, elapsed: float) -> str:
    total = lambda attr: sum(len(getattr(r, attr)) for r in results)  # noqa: E731
    faults = Counter(f.kind for r in results for f in r.faults)
    lines = [
        BEGIN,
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, seed **{seed}**, {elapsed / 60:.1f} min, "
        f"on {machine()}.",
        f"Reproduce: `make chaos CHAOS_SEED={seed}` (or `python -m tests.chaos --seed {seed} "
        f"--publishings {publishings}`). The seed fixes projects, build times, fault kinds, order and "
        "spacing; the interleaving with the workers is the machine's.",
        "",
        "| round | Redis | publishings | initiate requests | faults injected | lost | duplicated | stuck | "
        "web errors | published | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        failed = ", ".join(f"{code} {n}" for code, n in sorted(r.failed_codes.items())) or "0"
        lines.append(
            f"| {r.config.name} | {'AOF, data kept' if r.config.appendonly else 'no persistence, data lost'} "
            f"| {r.initiated}/{r.config.publishings} | {r.initiate_requests} | {len(r.faults)} "
            f"| {len(r.lost)} | {len(r.duplicated)} | {len(r.stuck)} | {len(r.web_errors)} "
            f"| {r.statuses.get('published', 0)} | {failed} |"
        )
    lines += [
        f"| **total** | | {sum(r.initiated for r in results)} | {sum(r.initiate_requests for r in results)} "
        f"| {sum(len(r.faults) for r in results)} | **{total('lost')}** | **{total('duplicated')}** "
        f"| **{total('stuck')}** | {total('web_errors')} | "
        f"{sum(r.statuses.get('published', 0) for r in results)} | "
        f"{sum(sum(r.failed_codes.values()) for r in results)} |",
        "",
        "Recovery per fault kind: from the fault until every publishing it caught in flight "
        "(on the victim group, or all active ones for Redis and PostgreSQL) is finished or running a new "
        "attempt, and, for Redis and PostgreSQL, `/api/v1/health` answers 200 again.",
        "",
        "| fault | injected | recovery median / max | health back median / max |",
        "|---|---|---|---|",
    ]
    for kind in FAULT_KINDS:
        recovered = [v for r in results for v in r.recovery(kind)]
        health = [
            f.health_back_after
            for r in results
            for f in r.faults
            if f.kind == kind and f.health_back_after is not None
        ]
        lines.append(
            f"| {FAULT_LABELS[kind]} | {faults[kind]} "
            f"| {recovery_stats(recovered)} | {recovery_stats(health)} |"
        )
    problems = [
        f"- round {r.config.name}: {kind} {item}"
        for r in results
        for kind, items in (("LOST", r.lost), ("DUPLICATED", r.duplicated), ("STUCK", r.stuck),
                            ("VIOLATION", r.violations), ("WEB ERROR", [str(c) for c in r.web_errors]))
        for item in items
    ]  # fmt: skip
    lines += [
        "",
        "Web answers seen: "
        + ", ".join(
            f"{key}: {n}" for key, n in sorted(sum((r.web_statuses for r in results), Counter()).items())
        )
        + f". The target refused {sum(r.target_503s for r in results)} of "
        f"{sum(r.target_posts for r in results)} POSTs with a 503 (a fifth of first tries), and answered "
        f"{sum(r.target_replays for r in results)} from its idempotency record (the same archive sent again "
        "under its key by an attempt that followed one cut off after the store's answer).",
        "",
        "Settings shortened for the run (environment of every process): "
        + ", ".join(f"`{k}={v}`" for k, v in CHAOS_ENV.items())
        + f". Each round: gunicorn (1 process, 4 threads), two worker groups of "
        f"{results[0].config.worker_processes} processes of {results[0].config.worker_threads} threads, "
        "restarted by a supervisor thread when they exit, a private PostgreSQL and Redis.",
        "",
        "Faults, in order:",
        "",
    ]
    for r in results:
        for f in r.faults:
            lines.append(
                f"- {r.config.name} t={f.at:.0f}s {FAULT_LABELS[f.kind]}: {f.detail}; "
                f"caught {len(f.affected)}, recovered after {seconds(f.recovered_after)}"
            )
    lines += ["", "Problems found: " + ("none." if not problems else ""), *problems, "", END]
    return "\n".join(lines)


def write_report(section: str) -> None:
    """Replace the Chaos section between its markers; the other sections are left as they are."""
    text = REPORT.read_text() if REPORT.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text += "\n## Chaos\n\n" + section + "\n"
    REPORT.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED") or 0) or None)
    parser.add_argument("--publishings", type=int, default=60, help="per round (two rounds)")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/reliability.md")
    parser.add_argument("--keep", action="store_true", help="keep each round's folder (logs) even when green")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    print(f"chaos: seed {seed}, {args.publishings} publishings per round, 2 rounds", flush=True)  # noqa: T201
    started = time.monotonic()
    from tests.chaos.engine import run_round

    results = []
    for config in rounds(seed, args.publishings):
        result = run_round(config, keep=args.keep)
        print(result.summary(), flush=True)  # noqa: T201
        results.append(result)
    section = markdown(results, seed=seed, publishings=args.publishings, elapsed=time.monotonic() - started)
    print(section)  # noqa: T201
    if not args.no_write:
        write_report(section)
        print(f"chaos: written to {REPORT.relative_to(ROOT)}")  # noqa: T201
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
