"""`python -m publishing.worker_master ARGS`: Dramatiq's own command line, made non-dumpable first.

`rundramatiq` execs this instead of the `dramatiq` script: an exec makes a process dumpable again,
and this process (the master, which forks the worker processes and the metrics exposition server)
holds SECRET_KEY and DATABASE_URL in its environment like every other.
"""

from __future__ import annotations

import sys

from publishing.hygiene import harden_process


def main() -> int:
    harden_process()
    # After the hardening: nothing of Dramatiq runs before it.
    from dramatiq.cli import main as dramatiq_main

    status: int = dramatiq_main()  # type: ignore[no-untyped-call]
    return status


if __name__ == "__main__":
    sys.exit(main())
