"""The broker: construction, degraded mode, and what Publisher does with it beyond Dramatiq.

The web tier must never hang on the broker. Every call it makes goes through one circuit breaker
(`publishing/breaker.py`): after a failure requests answer 503 at once, without touching the network,
until a cool-down passes; then a single request probes and, if the broker answers, closes it.

What differs per broker (Redis, RabbitMQ, the tests' stub) is a method of that backend's
`BrokerOperations` class (`publishing/broker/operations.py`), chosen once from the configured Dramatiq
broker; the functions below delegate to it. To add a backend, write its class in a module of this
package and register it in BACKENDS.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import dramatiq_abort
import redis
from django.conf import settings
from dramatiq.middleware import Middleware
from dramatiq_abort.backends import RedisBackend, StubBackend

from publishing.breaker import CircuitBreaker
from publishing.broker.operations import (
    BROKER_ERRORS,
    BrokerOperations,
    DeadLetter,
    DeadLetterSweep,
    QueueStats,
)
from publishing.broker.rabbitmq_backend import RabbitmqOperations
from publishing.broker.redis_backend import RedisOperations, redis_client
from publishing.broker.stub_backend import StubOperations
from publishing.exceptions import BrokerUnavailable
from publishing.redaction import redacted_url

__all__ = [
    "BACKENDS",
    "BROKER_ERRORS",
    "BrokerOperations",
    "DeadLetter",
    "DeadLetterSweep",
    "QueueStats",
    "abort",
    "breaker",
    "broker_kind",
    "enqueue",
    "ensure_available",
    "is_healthy",
    "live_message_ids",
    "make_broker",
    "operations",
    "operations_for",
    "queue_stats",
    "redis_client",
    "sweep_dead_letters",
    "trim_dead_letters",
    "uses_stub_broker",
    "warn_if_unreachable",
    "web_redis",
    "worker_redis",
]

logger = logging.getLogger(__name__)

BACKENDS: tuple[type[BrokerOperations], ...] = (RedisOperations, RabbitmqOperations, StubOperations)

breaker = CircuitBreaker(
    name="broker",
    cooldown=settings.PUBLISHING_BROKER_COOLDOWN,
    errors=BROKER_ERRORS,
    unavailable=BrokerUnavailable,
)


def _backend_for_url(url: str) -> type[BrokerOperations]:
    for backend in BACKENDS:
        if backend.serves(url):
            return backend
    scheme = urlsplit(url).scheme
    raise ValueError(f"Unsupported BROKER_URL scheme {scheme!r}: use redis://, unix://, amqp:// or stub://")


def broker_kind(url: str) -> str:
    """`redis`, `rabbitmq` or `stub`, from the scheme of a broker URL."""
    return _backend_for_url(url).kind


def make_broker(
    *,
    url: str,
    middleware: Sequence[Middleware] | None = None,
    namespace: str = "dramatiq",
    socket_timeout: float = 0.5,
    heartbeat_timeout: int = 60_000,
) -> dramatiq.Broker:
    """Build the broker named by `url` (django-dramatiq calls this from DRAMATIQ_BROKER)."""
    return _backend_for_url(url).make(
        url,
        middleware=list(middleware or []),
        namespace=namespace,
        socket_timeout=socket_timeout,
        heartbeat_timeout=heartbeat_timeout,
    )


def operations_for(broker: dramatiq.Broker) -> BrokerOperations:
    """The operations of the backend whose broker class `broker` is (or derives from)."""
    for backend in BACKENDS:
        if isinstance(broker, backend.broker_type):
            return backend(broker, breaker=breaker)
    raise TypeError(f"no BrokerOperations for {type(broker).__name__}: register one in BACKENDS")


_operations: BrokerOperations | None = None


def operations() -> BrokerOperations:
    """The operations of the configured Dramatiq broker, built once per broker."""
    global _operations
    broker = dramatiq.get_broker()
    current = _operations
    if current is None or current.broker is not broker:
        # Tests swap the global broker; in a service it is set once at start-up.
        current = _operations = operations_for(broker)
    return current


def uses_stub_broker() -> bool:
    """From the settings: middleware is built before the broker exists."""
    return broker_kind(settings.BROKER_URL) == "stub"


@functools.cache
def web_redis() -> redis.Redis:
    """The web tier's client for the Redis at REDIS_URL (aborts, the rate-limit window, live workers).

    Fail-fast like the broker's; one per process.
    """
    return redis_client(settings.REDIS_URL, socket_timeout=settings.PUBLISHING_BROKER_SOCKET_TIMEOUT)


@functools.cache
def worker_redis() -> redis.Redis:
    """The workers' client for the Redis at REDIS_URL (aborts, the rate limit, presence); one per process.

    Longer timeouts than the web's: dramatiq-abort blocks up to 1 s waiting for abort events.
    """
    return redis_client(settings.REDIS_URL, socket_timeout=settings.PUBLISHING_WORKER_SOCKET_TIMEOUT)


def abort(message_id: str) -> None:
    """Ask the workers to skip or interrupt a message (dramatiq-abort's signal), through the breaker.

    Raises BrokerUnavailable when the signal's Redis is away.
    """
    breaker.call(lambda: dramatiq_abort.abort(message_id, middleware=_web_abortable(dramatiq.get_broker())))


@functools.cache
def _web_abortable(broker: dramatiq.Broker) -> dramatiq_abort.Abortable:
    """The workers' Abortable for the web tier: the same keys, but a fail-fast Redis client.

    Aborts live in the Redis at REDIS_URL (also with RabbitMQ as the broker); the stub broker's
    Abortable holds them in memory, so the web tier signals through that one.
    """
    middleware = next(m for m in broker.middleware if isinstance(m, dramatiq_abort.Abortable))
    if isinstance(middleware.backend, StubBackend):
        return middleware
    # The workers' keys and time to live, as their middleware was built: one configuration, not two.
    return dramatiq_abort.Abortable(
        backend=RedisBackend(client=web_redis(), namespace=middleware.backend.namespace),
        abort_ttl=middleware.abort_ttl,
    )


def enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
    """Hand a message to the broker, or raise BrokerUnavailable fast."""
    return operations().enqueue(message, delay=delay)


def _ping() -> None:
    operations().ping()


def ensure_available() -> None:
    """Raise BrokerUnavailable while the circuit is open; once its cool-down has passed, ping first.

    Callers call it before they write anything: the probe after a cool-down is
    then a ping, not rows written, a failed enqueue and the rows undone (which
    made every probe against a refused broker the slowest 503 by far).
    """
    if breaker.failures:
        breaker.call(_ping)


def is_healthy() -> bool:
    """True when the broker answers now; never blocks longer than one socket timeout."""
    try:
        breaker.call(_ping)
    except BrokerUnavailable:
        return False
    return True


def warn_if_unreachable() -> None:
    """Log one warning at start-up when the broker is away; the app runs on in degraded mode."""
    if uses_stub_broker():
        return
    try:
        _ping()
    except BROKER_ERRORS as exc:
        logger.warning(
            "broker at %s unreachable at start-up (%s); initiate answers 503 until it is back",
            redacted_url(settings.BROKER_URL),
            type(exc).__name__,
        )


def live_message_ids(queue_name: str | None = None) -> set[str] | None:
    """Ids of the messages the broker holds in a queue (the builds queue by default), ready, delayed or
    in progress; None when the broker cannot tell (RabbitMQ, stub). Raises BrokerUnavailable."""
    return operations().live_message_ids(queue_name or settings.PUBLISHING_QUEUE)


def trim_dead_letters(*, keep: int) -> int:
    """Keep only the newest `keep` dead-lettered publishing messages; returns how many went."""
    return operations().trim_dead_letters(settings.PUBLISHING_QUEUE, keep=keep)


def sweep_dead_letters(
    queue: str, remove: Callable[[DeadLetter], bool], *, limit: int = 1000
) -> DeadLetterSweep:
    """Show the dead letters of `queue` to `remove`, oldest first; drop those it answers True for.

    See BrokerOperations.sweep_dead_letters. Raises BrokerUnavailable.
    """
    return operations().sweep_dead_letters(queue, remove, limit=limit)


def queue_stats() -> QueueStats | None:
    """Message counts of the publishing queue; None for the stub broker. Raises BrokerUnavailable.

    Past the breaker, never through it: a slow scrape must not turn initiates into 503s.
    """
    return operations().queue_stats(settings.PUBLISHING_QUEUE)
