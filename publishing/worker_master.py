"""`python -m publishing.worker_master ARGS`: Dramatiq's own command line, made non-dumpable first.

`rundramatiq` execs this instead of the `dramatiq` script: an exec makes a process dumpable again,
and this process (the master, which forks the worker processes and the metrics exposition server)
holds SECRET_KEY and DATABASE_URL in its environment like every other.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from publishing.hygiene import harden_process

MODULE = "publishing.worker_master"

# Sent to a stopping worker's processes (runlocal's second Ctrl-C): the running jobs' grace period ends
# now, and they are requeued (publishing.worker.shutdown.ShutdownDeadline). The master ignores it; the
# worker processes, which inherit that, set their handler once booted.
CUT_SHORT_SIGNAL = signal.SIGUSR1


def command(args: Sequence[str]) -> list[str]:
    """The command line that runs Dramatiq's `args` (without the program name) through this module."""
    return [sys.executable, "-m", MODULE, *args]


def _reexec(file: str, args: Sequence[str]) -> None:
    os.execv(sys.executable, command(list(args)[1:]))  # noqa: S606 - the same interpreter, no shell


def main() -> int:
    harden_process()
    # Sent to the whole process group: the master, whose default would be to die of it, ignores it.
    signal.signal(CUT_SHORT_SIGNAL, signal.SIG_IGN)
    # Dramatiq reloads (SIGHUP, --watch) by exec'ing its own command line, sys.argv[0] first: this
    # module's file, which is no program. Through this module again, hardened again.
    os.execvp = _reexec  # type: ignore[assignment]
    # After the hardening: nothing of Dramatiq runs before it.
    from dramatiq.cli import main as dramatiq_main

    status: int = dramatiq_main()  # type: ignore[no-untyped-call]
    return status


if __name__ == "__main__":
    sys.exit(main())
