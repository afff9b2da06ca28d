"""The shutdown deadline: running jobs get a grace period, then are requeued and interrupted."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence

import dramatiq
from dramatiq.middleware import Middleware
from dramatiq.middleware.shutdown import Shutdown

from publishing.log_context import outage_errors
from publishing.worker.leases import Leases, RunningJobs
from publishing.worker_master import CUT_SHORT_SIGNAL

logger = logging.getLogger(__name__)

# The longest the requeue waits for the worker's other threads to stop (an idle one looks every
# worker_timeout, 1 s by default; one busy with a job that holds no lease takes what it takes).
IDLE_THREADS_STOP_SECONDS = 3.0


class ShutdownDeadline(Middleware):
    """On shutdown, the running leased jobs get `timeout` s to finish.

    A job still running then is requeued (retry count untouched) and its
    thread interrupted with Shutdown, which also kills its build. Which jobs
    run is the broker's Leases middleware's to say. CUT_SHORT_SIGNAL ends
    the grace period at once.
    """

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self.cut_short = threading.Event()

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # Emitted in the worker process's main thread, the only one that may set a signal handler.
        if threading.current_thread() is threading.main_thread():
            signal.signal(CUT_SHORT_SIGNAL, lambda signum, frame: self.cut_short.set())

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        running = next((m.running for m in broker.middleware if isinstance(m, Leases)), None)
        if running is None or not running.snapshot():
            return
        logger.info(
            "worker shutting down: %d running job(s) get up to %ss to finish",
            len(running.snapshot()),
            self.timeout,
        )
        threading.Thread(
            target=self._enforce_deadline,
            args=(running, list(worker.workers)),
            name="publishing-shutdown",
            daemon=True,
        ).start()

    def _enforce_deadline(self, running: RunningJobs, threads: Sequence[threading.Thread] = ()) -> None:
        from django.db import connection

        deadline = time.monotonic() + self.timeout
        while running.snapshot() and time.monotonic() < deadline and not self.cut_short.wait(0.2):
            pass
        # A requeued job's message goes back to the broker, whose consumers in this process still run
        # until its worker threads have stopped: an idle thread still waiting for work would start it
        # again here. Idle threads stop within Dramatiq's worker_timeout (long since, unless cut short).
        busy = {thread_id for _, thread_id, _ in running.snapshot().values()}
        idle_stopped_by = time.monotonic() + IDLE_THREADS_STOP_SECONDS
        for thread in threads:
            if thread.ident not in busy:
                thread.join(timeout=max(idle_stopped_by - time.monotonic(), 0))
        try:
            for message_id, (publishing_id, thread_id, retries) in running.snapshot().items():
                if self._requeue(publishing_id, retries, outage_errors()):
                    running.interrupt(message_id, thread_id, Shutdown)
        finally:
            connection.close()

    def _requeue(self, publishing_id: str, retries: int, outages: tuple[type[BaseException], ...]) -> bool:
        """Whether to interrupt the publishing's job: requeued, or left to run out its lease."""
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        try:
            requeued = maintenance.publishing_requeue(
                publishing_id=publishing_id, reason="Cut off by a worker shutdown.", retries=retries
            )
        except outages as exc:
            # Cut off all the same: the worker stops on time, and the publishing, still running on
            # the record, is requeued by a reconciler once its lease runs out.
            logger.warning(
                "publishing %s still running at the %ss shutdown deadline, and could not be requeued "
                "(%s): interrupted; it is requeued once its lease runs out",
                publishing_id,
                self.timeout,
                exc,
            )
            return True
        if requeued:
            logger.warning(
                "publishing %s still running at the shutdown deadline (%s): requeued, retry count %d kept",
                publishing_id,
                "cut short" if self.cut_short.is_set() else f"{self.timeout}s",
                retries,
            )
        # Not requeued: it finished (or was cancelled) at the last moment.
        return requeued
