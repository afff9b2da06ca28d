"""The broker and the workers' connections to it: URLs, timeouts, worker names, Dramatiq's middleware."""

from __future__ import annotations

import socket
from typing import Any

from .validation import read_float, read_int, read_str

__all__ = [
    "BROKER_NAMESPACE",
    "BROKER_URL",
    "DRAMATIQ_AUTODISCOVER_MODULES",
    "DRAMATIQ_BROKER",
    "PUBLISHING_BROKER_COOLDOWN",
    "PUBLISHING_BROKER_SOCKET_TIMEOUT",
    "PUBLISHING_HEARTBEAT_TIMEOUT_MS",
    "PUBLISHING_WORKER_NAME",
    "PUBLISHING_WORKER_SOCKET_TIMEOUT",
    "REDIS_URL",
    "WORKER_METRICS_HOST",
    "WORKER_METRICS_PORT",
]

# Redis: cancellations (dramatiq-abort), the global rate limit, the live-worker list, the throttles'
# counters, and the broker unless BROKER_URL names another.
REDIS_URL: str = read_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# redis://, rediss://, unix:// or amqp://; stub:// is the in-memory broker of
# unit tests.
BROKER_URL: str = read_str("BROKER_URL", REDIS_URL)
# Prefix of every Redis key the broker writes; lets several deployments (or
# test runs) share one Redis.
BROKER_NAMESPACE: str = read_str("BROKER_NAMESPACE", "dramatiq")
# Web requests must never wait long on a sick broker: one short
# socket timeout (seconds), then the circuit breaker answers 503 at once...
PUBLISHING_BROKER_SOCKET_TIMEOUT: float = read_float("PUBLISHING_BROKER_SOCKET_TIMEOUT", 0.5)
# ...for this many seconds after a broker failure.
PUBLISHING_BROKER_COOLDOWN: float = read_float("PUBLISHING_BROKER_COOLDOWN", 2.0)
# Workers may wait longer (seconds), and retry, rather than lose an ack or a retry.
PUBLISHING_WORKER_SOCKET_TIMEOUT: float = read_float("PUBLISHING_WORKER_SOCKET_TIMEOUT", 5.0)
# How long a dead worker's unacked messages wait before redelivery (Redis).
PUBLISHING_HEARTBEAT_TIMEOUT_MS: int = read_int("PUBLISHING_HEARTBEAT_TIMEOUT_MS", 60_000)

# Names this worker host in logs, on each publishing it runs (`worker`) and in
# the list of live workers; two hosts must not share one.
PUBLISHING_WORKER_NAME: str = read_str("PUBLISHING_WORKER_NAME", socket.gethostname())
# Dramatiq's Prometheus exposition server, one per `rundramatiq` (0: no metrics
# middleware). Two worker groups on one machine need two ports.
WORKER_METRICS_PORT: int = read_int("WORKER_METRICS_PORT", 9191)
# 0.0.0.0 in a container, so that Prometheus can reach it.
WORKER_METRICS_HOST: str = read_str("WORKER_METRICS_HOST", "127.0.0.1")

DRAMATIQ_BROKER: dict[str, Any] = {
    # A factory rather than a class: it picks Redis, RabbitMQ or the stub
    # broker from BROKER_URL and sets the socket timeouts.
    "BROKER": "publishing.broker.make_broker",
    "OPTIONS": {
        "url": BROKER_URL,
        "namespace": BROKER_NAMESPACE,
        "socket_timeout": PUBLISHING_BROKER_SOCKET_TIMEOUT,
        "heartbeat_timeout": PUBLISHING_HEARTBEAT_TIMEOUT_MS,
    },
    # Listed in full: django-dramatiq's default list names a Prometheus
    # middleware path that dramatiq 2.x no longer has.
    "MIDDLEWARE": [
        *(["publishing.metrics.WorkerMetrics"] if WORKER_METRICS_PORT else []),
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Pipelines",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
        # Before the rest of ours: a poison message takes no abort lookup, slot or lease.
        "publishing.worker.from_settings.validation",
        "publishing.worker.from_settings.connections",
        # Order matters: a cancelled message is skipped before it takes a
        # rate-limit slot, and only a started one gets a lease.
        "publishing.worker.from_settings.abort",
        "publishing.worker.from_settings.rate_limit",
        "publishing.worker.from_settings.reconciler",
        "publishing.worker.from_settings.leases",
        "publishing.worker.from_settings.shutdown_deadline",
        # Closes each thread's stale database connections around a message, and all at shutdown.
        # No AdminMiddleware: the publishings and their attempts are the job record.
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
