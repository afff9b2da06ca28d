"""`python -m tests.support.coverage_floor REPORT --package P --branches N`: fail below N % of branches.

Reads coverage.py's JSON report (`make test` writes var/coverage/coverage.json) and counts the branches
of the files in one package: the figure `make test` holds up, printed either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def branch_coverage(report: dict[str, object], package: str) -> tuple[int, int]:
    """(covered branches, branches) over the report's files under `package/`."""
    files = report["files"]
    assert isinstance(files, dict)
    covered = total = 0
    for name, data in files.items():
        if Path(name).parts[0] == package:
            covered += data["summary"]["covered_branches"]
            total += data["summary"]["num_branches"]
    return covered, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("--package", default="publishing")
    parser.add_argument("--branches", type=float, required=True, help="the floor, in percent")
    args = parser.parse_args(argv)
    covered, total = branch_coverage(json.loads(args.report.read_text()), args.package)
    percent = 100.0 * covered / total if total else 0.0
    verdict = "ok" if percent >= args.branches else "BELOW THE FLOOR"
    print(  # noqa: T201
        f"coverage: {covered} of {total} branches in {args.package}/ ({percent:.2f}%), "
        f"floor {args.branches:g}%: {verdict}"
    )
    return 0 if percent >= args.branches else 1


if __name__ == "__main__":
    sys.exit(main())
