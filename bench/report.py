"""docs/benchmarks.md and its charts, written from a full run of `python -m bench`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import ROOT, Outcome

DOCS = ROOT / "docs"
PAGE = DOCS / "benchmarks.md"
PACKAGES = ("dramatiq", "celery", "django", "djangorestframework", "redis", "gunicorn", "psycopg")

INTRO = """\
# Benchmarks

Speed is measured here, by `bench/`, never asserted in the test suite (the
machines are shared and noisy). Each benchmark runs what it compares side by
side in one run, on the same private Redis, and reports medians and ratios.
This page is written by a full run:

```sh
make bench                 # python -m bench: every benchmark, then this page and its charts
python -m bench NAME ...   # some of them (this page is left alone)
make bench-smoke           # each one briefly: proves they work (CI runs it); figures mean nothing
```

Raw results: `bench/results/<name>.json`.
"""

SIZING = """\
## Sizing

```sh
make sizing        # python -m bench.sizing, about 70 s; --quick for a smoke run
```

Worker and web memory, PostgreSQL connections, per-job overhead throughput
and Redis bytes per waiting message, on real gunicorn and `rundramatiq`
processes with PostgreSQL: the figures and what they mean for sizing are in
[deployment.md](deployment.md#sizing).
"""


def write(outcomes: dict[str, Outcome], *, machine: dict[str, Any], command: str) -> list[Path]:
    """Write the page and one chart per benchmark that draws one; return the files written."""
    written: list[Path] = []
    sections: list[str] = []
    for name, outcome in outcomes.items():
        chart = _chart(name, outcome)
        if chart is not None:
            written.append(chart)
        sections.append(_section(name, outcome, chart))
    page = "\n".join(
        [
            INTRO,
            _machine(machine, command),
            "## Targets\n",
            _targets(outcomes),
            *sections,
            SIZING,
        ]
    )
    PAGE.write_text(page)
    return [PAGE, *written]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _machine(machine: dict[str, Any], command: str) -> str:
    versions = ", ".join(f"{package} {_version(package)}" for package in PACKAGES)
    return (
        f"Measured with `{command}` at git {machine['git']}: {machine['nproc']} CPUs, "
        f"{machine['mem_total_mib']} MiB, {machine['uname']}, Python {machine['python']}, "
        f"Redis {machine['redis']}, PostgreSQL {machine['postgresql']}; {versions}. "
        f"Load average {machine['loadavg_at_start']} at the start, "
        f"{machine.get('loadavg_at_end', '?')} at the end.\n"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _targets(outcomes: dict[str, Outcome]) -> str:
    rows = [["benchmark", "target", "measured", ""]]
    for name, outcome in outcomes.items():
        rows += [[name, t.name, t.measured, "✅" if t.ok else "❌"] for t in outcome.targets]
    return markdown_table(rows)


def _section(name: str, outcome: Outcome, chart: Path | None) -> str:
    parts = [f"## {outcome.title}\n", f"`python -m bench {name}`\n", markdown_table(outcome.table)]
    parts += [f"- {note}" for note in outcome.notes]
    if outcome.notes:
        parts.append("")
    if chart is not None:
        parts.append(f"![{outcome.title}]({chart.name})\n")
    return "\n".join(parts)


def _chart(name: str, outcome: Outcome) -> Path | None:
    """docs/bench-<name>.png from the module's `chart(figures, axes)`, if it has one."""
    draw: Callable[[dict[str, Any], Any], None] | None = getattr(
        importlib.import_module(f"bench.{name}"), "chart", None
    )
    if draw is None:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    draw(outcome.figures, axes)
    axes.set_title(outcome.title)
    figure.tight_layout()
    path = DOCS / f"bench-{name}.png"
    figure.savefig(path)
    pyplot.close(figure)
    return path
