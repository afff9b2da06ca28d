"""The reconciler: every worker's periodic pass over the database and the broker.

Each pass requeues publishings whose lease ran out or whose message is gone, prunes job-level records,
sweeps the builds of dead workers and reconciles webhook deliveries (all CAS-guarded, so several
workers doing it at once is harmless).
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.middleware import Middleware

from publishing.broker import operations_for
from publishing.worker.background import guarded

logger = logging.getLogger(__name__)


class Reconciler(Middleware):
    """Says at boot what the worker runs with, sweeps, then runs a pass every `interval` s until shutdown."""

    def __init__(self, *, interval: float, settings_module: str, debug: bool) -> None:
        """`settings_module` and `debug` are what the boot line reports."""
        self.interval = interval
        self._settings_module = settings_module
        self._debug = debug
        self._stopping = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if operations_for(broker).in_memory:
            return  # the unit tests' stub: they drive these services directly
        # Imported here: the services load the models, not loaded yet when this middleware is built
        # (and the sandbox is needed from here on only).
        from publishing.pipeline import sandbox
        from publishing.services import maintenance

        # Which settings a worker runs is the first thing to know when it misbehaves: local settings
        # allow private targets and DEBUG.
        logger.info("Worker settings: %s (DEBUG %s)", self._settings_module, "on" if self._debug else "off")
        level, line = sandbox.describe(sandbox.SandboxPolicy.from_settings())
        logger.log(level, "%s", line)
        # What the builds of a worker that died before this one started left behind.
        guarded(maintenance.builds_sweep)
        # Its own thread: a slow pass (a Redis or SQLite stall) must never delay the leases' heartbeats.
        threading.Thread(target=self._reconcile_forever, name="publishing-reconciler", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stopping.set()

    def _reconcile_forever(self) -> None:
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance, webhooks

        def reconcile() -> None:
            maintenance.publishing_reconcile()
            maintenance.job_records_prune()
            maintenance.builds_sweep()

        while not self._stopping.is_set():
            guarded(reconcile)
            # Guarded apart: one failing must not hold up the other.
            guarded(webhooks.deliveries_reconcile)
            self._stopping.wait(self.interval)
