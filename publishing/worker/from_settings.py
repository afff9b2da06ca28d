"""The worker middleware built from the Django settings: DRAMATIQ_BROKER["MIDDLEWARE"] names these.

django-dramatiq imports each dotted path and calls it without arguments; nothing else in
publishing.worker reads the settings.
"""

from __future__ import annotations

import dramatiq_abort
from django.conf import settings

from publishing.broker import uses_stub_broker, worker_redis
from publishing.rate_limit import WindowLimiter, publishing_limiter, publishing_rate
from publishing.worker.abort import abortable
from publishing.worker.connections import WorkerConnections
from publishing.worker.leases import Leases
from publishing.worker.rate_limit import RateLimit
from publishing.worker.reconciler import Reconciler
from publishing.worker.shutdown import ShutdownDeadline
from publishing.worker.validation import MessageValidation


def validation() -> MessageValidation:
    return MessageValidation()


def connections() -> WorkerConnections:
    return WorkerConnections()


def abort() -> dramatiq_abort.Abortable:
    # Aborts live in the Redis at REDIS_URL, also with RabbitMQ as the broker; the stub keeps them in memory.
    return abortable(
        client=None if uses_stub_broker() else worker_redis(),
        namespace=f"{settings.BROKER_NAMESPACE}-abort",
        abort_ttl_ms=settings.PUBLISHING_ABORT_TTL_MS,
    )


def rate_limit() -> RateLimit:
    def make_limiter() -> WindowLimiter | None:
        return publishing_limiter(worker_redis())

    # The stub broker's unit tests run unlimited: they script the limiter where they test it.
    return RateLimit(
        rate=publishing_rate(),
        make_limiter=None if uses_stub_broker() else make_limiter,
    )


def leases() -> Leases:
    return Leases(
        beat_every=max(settings.PUBLISHING_LEASE_TIMEOUT / 6, 0.5),
        redis_client=worker_redis(),
        presence_join_timeout=settings.PUBLISHING_WORKER_SOCKET_TIMEOUT * 2,
    )


def reconciler() -> Reconciler:
    return Reconciler(
        interval=settings.PUBLISHING_RECONCILE_INTERVAL,
        settings_module=settings.SETTINGS_MODULE,
        debug=settings.DEBUG,
    )


def shutdown_deadline() -> ShutdownDeadline:
    return ShutdownDeadline(timeout=settings.PUBLISHING_SHUTDOWN_TIMEOUT)
