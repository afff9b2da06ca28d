"""django-dramatiq's `rundramatiq`, with the shutdown grace period taken from the settings (SPEC §8)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django_dramatiq.management.commands.rundramatiq import Command as DramatiqCommand

from publishing.metrics import worker_metrics_environment

# After the running jobs' own deadline (PUBLISHING_SHUTDOWN_TIMEOUT, enforced by
# publishing.middleware.Lifecycle, which requeues what is left) the worker
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
        super().handle(*args, **options)
