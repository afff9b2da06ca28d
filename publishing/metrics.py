"""Prometheus metrics.

Workers: Dramatiq's `Prometheus` middleware (messages, errors, retries,
durations) plus ours (pipeline step durations, attempt outcomes, rate-limit
waits), all served by Dramatiq's exposition server on WORKER_METRICS_PORT.
Worker processes write them to files (prometheus_client's multiprocess mode);
`rundramatiq` gives each run a clean folder of its own.

Web: GET /metrics reads the current state when scraped (publishings by
status, queue depth, live workers, the rate-limit window), so every gunicorn
process answers alike and nothing is kept between scrapes.

prometheus_client is imported only after the worker process has booted: it
picks its multiprocess mode once, at import, from the environment Dramatiq's
middleware sets in `after_process_boot`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dramatiq
from django.conf import settings
from dramatiq.broker import MessageProxy
from dramatiq.middleware.prometheus import Prometheus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

# Builds take seconds to many minutes.
STEP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
WAIT_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, float("inf"))


@dataclass(frozen=True)
class AppMetrics:
    """Our worker-side metrics, created once the process may create them."""

    step_seconds: Histogram
    attempts: Counter
    rate_limit_waits: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> AppMetrics:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        # A registry of our own: in multiprocess mode the values live in files
        # anyway, and tests can create these more than once.
        registry = registry or CollectorRegistry()
        return cls(
            step_seconds=Histogram(
                "publisher_pipeline_step_seconds",
                "Time spent in each pipeline step, by step and outcome (ok or error).",
                ["step", "outcome"],
                buckets=STEP_BUCKETS,
                registry=registry,
            ),
            attempts=Counter(
                "publisher_attempts",
                "Finished publishing attempts by outcome: published, retry, failed or stopped.",
                ["outcome"],
                registry=registry,
            ),
            rate_limit_waits=Histogram(
                "publisher_rate_limit_wait_seconds",
                "Delays given to publishings deferred by the global rate limit (no retry used).",
                buckets=WAIT_BUCKETS,
                registry=registry,
            ),
        )


# Set in worker processes once they have booted; None elsewhere (web, tests).
_app: AppMetrics | None = None


def install(app: AppMetrics | None) -> None:
    """Use `app` for this process's metrics (None: record nothing)."""
    global _app
    _app = app


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Time a pipeline step; its outcome is `error` when it raises."""
    from time import monotonic

    started = monotonic()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        if _app is not None:
            _app.step_seconds.labels(name, outcome).observe(monotonic() - started)


def attempt_finished(outcome: str) -> None:
    if _app is not None:
        _app.attempts.labels(outcome).inc()


def rate_limit_deferred(seconds: float) -> None:
    if _app is not None:
        _app.rate_limit_waits.observe(seconds)


class WorkerMetrics(Prometheus):
    """Dramatiq's Prometheus middleware, plus ours, and quiet where no worker booted.

    The web tier builds the same middleware list, but only worker processes
    boot: Dramatiq's hooks would fail there on metrics that do not exist
    (`after_enqueue` of a retried message, say).
    """

    booted = False

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        super().after_process_boot(broker)
        install(AppMetrics.create())
        self.booted = True

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.booted:
            super().after_worker_shutdown(broker, worker)

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if self.booted:
            super().after_nack(broker, message)

    def after_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if self.booted:
            super().after_enqueue(broker, message, delay)

    def before_delay_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if self.booted:
            super().before_delay_message(broker, message)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if self.booted:
            super().before_process_message(broker, message)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if self.booted:
            super().after_process_message(broker, message, result=result, exception=exception)

    after_skip_message = after_process_message


def worker_metrics_dir() -> Path:
    """Where one `rundramatiq`'s processes write their metrics: one folder per worker host and port."""
    return (
        Path(settings.VAR_DIR)
        / "metrics"
        / f"{settings.PUBLISHING_WORKER_NAME}-{settings.WORKER_METRICS_PORT}"
    )


def worker_metrics_environment() -> dict[str, str]:
    """The environment Dramatiq's exposition server reads, with a clean folder made for this run.

    prometheus_client's multiprocess files must not outlive the processes
    that wrote them: a restarted worker would add the old counts to its own.
    """
    if not settings.WORKER_METRICS_PORT:
        return {}
    folder = worker_metrics_dir()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return {
        "dramatiq_prom_db": str(folder),
        "dramatiq_prom_host": settings.WORKER_METRICS_HOST,
        "dramatiq_prom_port": str(settings.WORKER_METRICS_PORT),
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }


# --- the web tier's view of the system, read at scrape time ---------------------------------


class StateCollector:
    """Publishings by status, queue depth, live workers and the rate-limit window, read when scraped."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        # Imported here: selectors read the models, which are not loaded yet when the worker
        # middleware imports this module.
        from publishing import selectors

        overview = selectors.system_overview()
        up = GaugeMetricFamily(
            "publisher_up", "1 when the dependency answered this scrape.", labels=["dependency"]
        )
        up.add_metric(["database"], 1 if overview.database_ok else 0)
        up.add_metric(["broker"], 1 if overview.broker_ok else 0)
        yield up
        if overview.database_ok:
            by_status = GaugeMetricFamily(
                "publisher_publishings", "Publishings by status.", labels=["status"]
            )
            for status, count in sorted(overview.publishings.items()):
                by_status.add_metric([status], count)
            yield by_status
            yield GaugeMetricFamily(
                "publisher_oldest_queued_seconds",
                "Age of the oldest queued publishing (0 when none waits).",
                value=overview.oldest_queued_seconds,
            )
        if overview.queue is not None:
            depth = GaugeMetricFamily(
                "publisher_queue_messages",
                "Messages in the broker: ready (not yet fetched), delayed, dead-lettered.",
                labels=["queue", "state"],
            )
            for state in ("ready", "delayed", "dead"):
                count = getattr(overview.queue, state)
                if count is not None:
                    depth.add_metric([overview.queue.name, state], count)
            yield depth
        if overview.workers is not None:
            yield GaugeMetricFamily(
                "publisher_workers_alive",
                "Worker processes heard from within a lease.",
                value=len(overview.workers),
            )
        if overview.rate_limit is not None:
            yield GaugeMetricFamily(
                "publisher_rate_limit_starts",
                "Publishing starts in the current rate-limit window.",
                value=overview.rate_limit.used,
            )
            yield GaugeMetricFamily(
                "publisher_rate_limit_capacity",
                "Starts allowed per rate-limit window.",
                value=overview.rate_limit.limit,
            )


def exposition() -> tuple[bytes, str]:
    """The web tier's metrics, in the text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(StateCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
