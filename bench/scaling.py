"""Scaling: Publisher's drain rate with 1, 2 and 4 worker processes (8 threads each).

`python -m bench scaling [--smoke]`. The machinery of `bench.overhead`: the
same no-op jobs (`bench.site.tasks.noop`) through `manage.py rundramatiq` with
every one of Publisher's middleware, on the run's private Redis and a
PostgreSQL database of its own; for each shape, the jobs are enqueued with no
worker running, then the workers start against the full queue and the drain
is timed from the moment every process is fetching to the last job done.
Also read over the drain: the CPU the workers use and how busy the whole
machine is, which says when more processes cannot help.
"""

from __future__ import annotations

import os
from typing import Any

from bench.common import Context, Outcome
from bench.overhead import PUBLISHER, THREADS, Stack, summarise

SHAPES = (1, 2, 4)
JOBS, SMOKE_JOBS = 1_000, 100
# Busier than this over a drain: the machine's CPUs, not the worker count, set the pace.
CPU_BOUND = 0.9


def run(context: Context) -> Outcome:
    jobs = SMOKE_JOBS if context.smoke else JOBS
    figures: dict[str, Any] = {"jobs": jobs, "threads": THREADS, "cpus": len(os.sched_getaffinity(0))}
    with Stack(context, "scaling") as stack:
        for processes in SHAPES:
            peer = stack.publisher(processes, THREADS)
            sample = stack.measure(peer, jobs, label=f"{PUBLISHER}-{processes}x{THREADS}")
            figures[str(processes)] = summarise([sample])
            print(f"  {processes} x {THREADS}: drain {sample.drain_per_s:,.0f}/s", flush=True)
    return outcome(figures)


def outcome(figures: dict[str, Any]) -> Outcome:
    base = figures[str(SHAPES[0])]["drain_per_s"]
    table = [["worker processes", "drain/s", "x 1 process", "worker CPUs", "machine CPU busy", "PSS MiB"]]
    bound = []
    for processes in SHAPES:
        row = figures[str(processes)]
        table.append(
            [
                f"{processes} x {THREADS} threads",
                f"{row['drain_per_s']:,.0f}",
                f"{row['drain_per_s'] / base:.2f}x",
                f"{row['worker_cpus']:.2f}",
                f"{row['machine_busy']:.0%}",
                f"{row['pss_mib']:.0f}",
            ]
        )
        if row["machine_busy"] >= CPU_BOUND:
            bound.append(str(processes))
    cpus = figures["cpus"]
    verdict = (
        f"CPU-bound with {', '.join(bound)} process(es): the machine's {cpus} CPUs were at least "
        f"{CPU_BOUND:.0%} busy over the drain (the workers, PostgreSQL, Redis and the benchmark)."
        if bound
        else f"Not CPU-bound: the machine's {cpus} CPUs stayed under {CPU_BOUND:.0%} busy over each drain."
    )
    return Outcome(
        title=f"Scaling, Publisher drain of {figures['jobs']:,} no-op jobs by worker processes",
        table=table,
        targets=[],
        figures=figures,
        notes=[
            f"manage.py rundramatiq --processes N --threads {THREADS}, all of Publisher's middleware, "
            "rate limit off; one run of each shape, in order, on a machine shared with other work.",
            "Worker CPUs: CPU seconds of the worker process group per second of drain. Machine CPU busy: "
            "the share of all CPUs busy over the drain, whoever used them.",
            verdict,
        ],
    )


def chart(figures: dict[str, Any], axes: Any) -> None:
    rates = [figures[str(processes)]["drain_per_s"] for processes in SHAPES]
    axes.plot(SHAPES, rates, marker="o", label="Publisher, all middleware")
    for processes, rate in zip(SHAPES, rates, strict=True):
        axes.annotate(
            f"{rate:,.0f}", (processes, rate), textcoords="offset points", xytext=(0, 6), ha="center"
        )
    axes.axvline(figures["cpus"], color="grey", linestyle=":", label=f"{figures['cpus']} CPUs")
    axes.set_xticks(SHAPES)
    axes.set_xlabel(f"worker processes ({THREADS} threads each)")
    axes.set_ylabel("no-op jobs drained per second")
    axes.set_ylim(0, 1.2 * max(rates))
    axes.legend()
