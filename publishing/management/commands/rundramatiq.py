"""django-dramatiq's `rundramatiq`, with the shutdown grace period taken from the settings.

A stop lets running builds finish within it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django_dramatiq.management.commands.rundramatiq import Command as DramatiqCommand

from publishing import worker_master
from publishing.metrics import worker_metrics_environment

# After the running jobs' own deadline (PUBLISHING_SHUTDOWN_TIMEOUT, enforced by
# publishing.worker.shutdown.ShutdownDeadline, which requeues what is left) the worker
# needs a moment to unwind the interrupted threads before Dramatiq gives up.
UNWIND_SECONDS = 10


class Command(DramatiqCommand):  # type: ignore[misc]
    help = (
        "Run Dramatiq workers; on SIGTERM running jobs get PUBLISHING_SHUTDOWN_TIMEOUT s, then are requeued. "
        "Metrics on WORKER_METRICS_PORT."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(
            worker_shutdown_timeout=(settings.PUBLISHING_SHUTDOWN_TIMEOUT + UNWIND_SECONDS) * 1000
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Read by Dramatiq's exposition server and by the worker processes,
        # which the parent command replaces itself with (exec).
        os.environ.update(worker_metrics_environment())
        with _through_worker_master():
            super().handle(*args, **options)


@contextlib.contextmanager
def _through_worker_master() -> Iterator[None]:
    """django-dramatiq execs the `dramatiq` script; exec the same arguments through
    publishing.worker_master, which makes the master non-dumpable before Dramatiq starts."""
    execvp = os.execvp

    def exec_master(file: str, args: Sequence[str]) -> None:
        if args[0] != "dramatiq":  # dramatiq-gevent: its own entry point, left as it is
            execvp(file, list(args))
        execvp(sys.executable, worker_master.command(args[1:]))

    os.execvp = exec_master  # type: ignore[assignment]
    try:
        yield
    finally:
        os.execvp = execvp
