"""Broker construction, health and degraded mode.

The web tier must never hang on the broker (SPEC §7). Every call it makes
goes through one circuit breaker: after a failure the breaker opens and
requests answer 503 at once, without touching the network, until a cool-down
passes; then a single request probes and, if the broker answers, closes it.
So a broker that refuses costs one fast failure, one that hangs costs one
socket timeout per cool-down, and recovery needs no restart.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import dramatiq.errors
import pika
import redis
from django.conf import settings
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Middleware
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from publishing.exceptions import BrokerUnavailable
from publishing.redis_wakeup import WakingRedisBroker

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a broker call raises when the broker is away or hung: redis-py's own
# errors (not wrapped by dramatiq), dramatiq's for RabbitMQ, pika's (a hung
# RabbitMQ fails the handshake with an AMQPConnectorException, which is not an
# AMQPError), and the OS's.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    dramatiq.errors.BrokerConnectionError,
    pika.exceptions.AMQPError,
    AMQPConnectorException,
    OSError,
)


def broker_kind(url: str) -> str:
    """`redis`, `rabbitmq` or `stub`, from the scheme of a broker URL."""
    scheme = urlsplit(url).scheme
    if scheme in {"redis", "rediss", "unix"}:
        return "redis"
    if scheme in {"amqp", "amqps"}:
        return "rabbitmq"
    if scheme == "stub":
        return "stub"
    raise ValueError(f"Unsupported BROKER_URL scheme {scheme!r}: use redis://, unix://, amqp:// or stub://")


def redis_client(url: str, *, socket_timeout: float) -> redis.Redis:
    """A Redis client that fails fast: short timeouts and no hidden retries."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


def _amqp_url(url: str, *, socket_timeout: float) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(socket_timeout))
    query.setdefault("stack_timeout", str(max(socket_timeout * 2, 1)))
    query.setdefault("blocked_connection_timeout", str(max(socket_timeout * 2, 1)))
    query.setdefault("connection_attempts", "1")
    # A hung broker never confirms a publish and pika has no timeout for that
    # wait: a short heartbeat turns it into a connection error within seconds.
    query.setdefault("heartbeat", "5")
    return urlunsplit(parts._replace(query=urlencode(query)))


def make_broker(
    *,
    url: str,
    middleware: Sequence[Middleware] | None = None,
    namespace: str = "dramatiq",
    socket_timeout: float = 0.5,
    heartbeat_timeout: int = 60_000,
) -> dramatiq.Broker:
    """Build the broker named by `url` (django-dramatiq calls this from DRAMATIQ_BROKER)."""
    kind = broker_kind(url)
    middleware = list(middleware or [])
    if kind == "stub":
        return StubBroker(middleware=middleware)
    if kind == "rabbitmq":
        return RabbitmqBroker(
            url=_amqp_url(url, socket_timeout=socket_timeout),
            middleware=middleware,
            confirm_delivery=True,
        )
    return WakingRedisBroker(
        client=redis_client(url, socket_timeout=socket_timeout),
        middleware=middleware,
        namespace=namespace,
        heartbeat_timeout=heartbeat_timeout,
    )


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


class WorkerConnections(Middleware):
    """In worker processes, trade the web tier's fail-fast Redis settings for patient ones.

    The web tier must answer within a second, so its client gives up after one
    short timeout. A worker must not: a lost enqueue of a retry or a lost ack
    during a brief Redis stall strands a publishing. Before the worker boots,
    its client gets PUBLISHING_WORKER_SOCKET_TIMEOUT and retries with backoff.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if not isinstance(broker, RedisBroker):
            return
        timeout = settings.PUBLISHING_WORKER_SOCKET_TIMEOUT
        pool = broker.client.connection_pool
        pool.connection_kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
        broker.client.set_retry(Retry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), 5))
        pool.disconnect()


class CircuitBreaker:
    """Fail fast while a dependency is known to be down; let one caller probe it now and then."""

    def __init__(self, *, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._probing = False
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self.failures > 0 and self._clock() < self._open_until

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn`, or raise BrokerUnavailable without running it while the circuit is open."""
        probe = False
        with self._lock:
            if self.failures:
                if self._clock() < self._open_until or self._probing:
                    raise BrokerUnavailable()
                self._probing = probe = True
        try:
            result = fn()
        except BROKER_ERRORS as exc:
            with self._lock:
                self.failures += 1
                self._open_until = self._clock() + self.cooldown
                first = self.failures == 1
            log = logger.warning if first else logger.debug
            log("broker unavailable (%s: %s); failing fast for %.1fs", type(exc).__name__, exc, self.cooldown)
            raise BrokerUnavailable() from exc
        finally:
            if probe:
                with self._lock:
                    self._probing = False
        with self._lock:
            if self.failures:
                logger.warning("broker reachable again after %d failed call(s)", self.failures)
            self.failures = 0
        return result

    def reset(self) -> None:
        with self._lock:
            self.failures = 0
            self._probing = False
            self._open_until = 0.0


breaker = CircuitBreaker(cooldown=settings.PUBLISHING_BROKER_COOLDOWN)


@functools.cache
def _publishers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="publishing-publish")


def _bounded(fn: Callable[[], T]) -> T:
    """Run a RabbitMQ publish with a hard deadline.

    pika has no timeout for a publish confirmation: on a hung RabbitMQ a warm
    connection waits for its heartbeat to fail, about 20 s. The publish runs on
    a thread of its own instead, and the caller gives up after the deadline
    (TimeoutError, a broker error). A publish that lands later anyway is
    harmless: its publishing was deleted or stays queued, and the worker or the
    reconciler sorts it out.
    """
    deadline = max(4 * settings.PUBLISHING_BROKER_SOCKET_TIMEOUT, 2.0)
    return _publishers().submit(fn).result(timeout=deadline)


def enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
    """Hand a message to the broker, or raise BrokerUnavailable fast."""
    broker = dramatiq.get_broker()
    if isinstance(broker, RabbitmqBroker):
        return breaker.call(lambda: _bounded(lambda: broker.enqueue(message, delay=delay)))
    return breaker.call(lambda: broker.enqueue(message, delay=delay))


def _ping() -> None:
    kind = broker_kind(settings.BROKER_URL)
    timeout = settings.PUBLISHING_BROKER_SOCKET_TIMEOUT
    if kind == "redis":
        broker = dramatiq.get_broker()
        client = broker.client if isinstance(broker, RedisBroker) else None
        client = client or redis_client(settings.BROKER_URL, socket_timeout=timeout)
        client.ping()
    elif kind == "rabbitmq":
        params = pika.URLParameters(_amqp_url(settings.BROKER_URL, socket_timeout=timeout))
        pika.BlockingConnection(params).close()


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
            redact_url(settings.BROKER_URL),
            type(exc).__name__,
        )


def redact_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _redis_broker() -> RedisBroker | None:
    broker = dramatiq.get_broker()
    return broker if isinstance(broker, RedisBroker) else None


def live_message_ids(queue_name: str | None = None) -> set[str] | None:
    """Ids of the messages the broker holds in a queue (ready, delayed or in progress).

    First, messages that workers fetched and then died with go back to their queue (Dramatiq's
    maintenance, run now): counted live, they must also be runnable.

    The queue defaults to the builds queue. None when the broker cannot be
    inspected (RabbitMQ, stub): callers then leave queued work alone. Raises
    BrokerUnavailable.
    """
    broker = _redis_broker()
    if broker is None:
        return None
    name = queue_name or settings.PUBLISHING_QUEUE
    queue = f"{broker.namespace}:{name}"
    ids: set[str] = set()
    try:
        # A message held by a dead worker counts as live below, yet nothing would run it.
        if isinstance(broker, WakingRedisBroker):
            for held in (name, dq_name(name)):
                broker.requeue_from_dead_workers(held)
        # Delayed first: a message leaves the delay queue only after it is in
        # the ready one, so this order never misses one in transit.
        for key in (f"{queue}.DQ.msgs", f"{queue}.msgs"):
            for _, data in broker.client.hscan_iter(key, count=500):
                # A body that is no message (dead-lettered once a worker fetches it) names no job.
                with contextlib.suppress(dramatiq.errors.DecodeError):
                    ids.add(dramatiq.Message.decode(data).message_id)
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable() from exc
    return ids


def trim_dead_letters(*, keep: int) -> int:
    """Keep only the newest `keep` dead-lettered publishing messages; returns how many went."""
    broker = _redis_broker()
    if broker is None:
        return 0
    dead = f"{broker.namespace}:{settings.PUBLISHING_QUEUE}.XQ"
    try:
        if broker.client.zcard(dead) <= keep:
            return 0
        # Oldest first by their dead-lettering time; keep the newest `keep`.
        doomed = broker.client.zrange(dead, 0, -keep - 1)
        if doomed:
            pipe = broker.client.pipeline()
            pipe.zrem(dead, *doomed)
            pipe.hdel(f"{dead}.msgs", *doomed)
            pipe.execute()
        return len(doomed)
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable() from exc


DeadLetter = dramatiq.Message[Any]


@dataclass(frozen=True)
class DeadLetterSweep:
    """What one pass over a dead-letter queue did."""

    seen: int
    removed: int


def sweep_dead_letters(
    queue: str, remove: Callable[[DeadLetter], bool], *, limit: int = 1000
) -> DeadLetterSweep:
    """Show the dead-lettered messages of `queue` to `remove`, oldest first; drop those it answers True for.

    One callback rather than read-then-delete: RabbitMQ can only remove a
    message by taking it. An exception from `remove` ends the pass; what was
    removed stays removed, the rest stays dead-lettered. Raises BrokerUnavailable.
    """
    if breaker.is_open:
        raise BrokerUnavailable()
    redis_broker = _redis_broker()
    try:
        if redis_broker is not None:
            return _sweep_redis(redis_broker, queue, remove, limit)
        if broker_kind(settings.BROKER_URL) == "rabbitmq":
            return _sweep_rabbitmq(queue, remove, limit)
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable() from exc
    stub = dramatiq.get_broker()
    if isinstance(stub, StubBroker):
        return _sweep_stub(stub, queue, remove, limit)
    return DeadLetterSweep(seen=0, removed=0)


def _sweep_redis(
    broker: RedisBroker, queue: str, remove: Callable[[DeadLetter], bool], limit: int
) -> DeadLetterSweep:
    dead = f"{broker.namespace}:{queue}.XQ"
    # Keyed by the per-enqueue `redis_message_id`, not the message id.
    keys = cast("list[bytes]", broker.client.zrange(dead, 0, limit - 1))
    bodies = cast("list[bytes | None]", broker.client.hmget(f"{dead}.msgs", keys) if keys else [])
    seen = removed = 0
    for key, body in zip(keys, bodies, strict=True):
        if body is None:
            continue  # expired by Dramatiq's maintenance between the two reads
        try:
            message = dramatiq.Message.decode(body)
        except dramatiq.errors.DecodeError:
            logger.warning("dead letter %r of %s is not a Dramatiq message; left alone", key, queue)
            continue
        seen += 1
        if remove(message):
            pipe = broker.client.pipeline()
            pipe.zrem(dead, key)
            pipe.hdel(f"{dead}.msgs", key)
            pipe.execute()
            removed += 1
    return DeadLetterSweep(seen=seen, removed=removed)


def _sweep_rabbitmq(queue: str, remove: Callable[[DeadLetter], bool], limit: int) -> DeadLetterSweep:
    params = pika.URLParameters(
        _amqp_url(settings.BROKER_URL, socket_timeout=settings.PUBLISHING_BROKER_SOCKET_TIMEOUT)
    )
    connection = pika.BlockingConnection(params)
    seen = removed = 0
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(f"{queue}.XQ", passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return DeadLetterSweep(seen=0, removed=0)  # 404: nothing was ever dead-lettered
        kept: list[int] = []
        # Messages taken and not yet acknowledged are not handed out again on
        # this channel, so the loop ends when every one has been seen once.
        while seen < limit:
            method, _properties, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
            if method is None:
                break
            try:
                message = dramatiq.Message.decode(body)
            except dramatiq.errors.DecodeError:
                kept.append(method.delivery_tag)
                continue
            seen += 1
            if remove(message):
                channel.basic_ack(method.delivery_tag)
                removed += 1
            else:
                kept.append(method.delivery_tag)
        for tag in kept:
            channel.basic_nack(tag, requeue=True)
    finally:
        # Whatever is still unacknowledged (the pass ended early) goes back to the queue.
        connection.close()
    return DeadLetterSweep(seen=seen, removed=removed)


def _sweep_stub(
    broker: StubBroker, queue: str, remove: Callable[[DeadLetter], bool], limit: int
) -> DeadLetterSweep:
    letters = broker.dead_letters_by_queue.get(queue, [])
    seen = removed = 0
    for proxy in list(letters)[:limit]:
        seen += 1
        if remove(dramatiq.Message.decode(proxy.encode())):
            letters.remove(proxy)
            removed += 1
    return DeadLetterSweep(seen=seen, removed=removed)


@dataclass(frozen=True)
class QueueStats:
    """The publishing queue as the broker sees it now."""

    name: str
    # Waiting in the broker, not yet fetched by any worker.
    ready: int
    # Retries' backoffs and rate-limit deferrals, until their time comes
    # (None on RabbitMQ, which cannot count those that workers hold).
    delayed: int | None
    dead: int


def queue_stats() -> QueueStats | None:
    """Message counts of the publishing queue; None for the stub broker. Raises BrokerUnavailable.

    Past the breaker, never through it: a slow scrape must not turn initiates into 503s.
    """
    name = settings.PUBLISHING_QUEUE
    rabbitmq = broker_kind(settings.BROKER_URL) == "rabbitmq"
    redis_broker = _redis_broker()
    if not rabbitmq and redis_broker is None:
        return None
    if breaker.is_open:
        raise BrokerUnavailable()
    try:
        if redis_broker is not None:
            ready, delayed, dead = _redis_counts(redis_broker, f"{redis_broker.namespace}:{name}")
            return QueueStats(name=name, ready=ready, delayed=delayed, dead=dead)
        # A passive declare counts ready messages only: the delayed ones that
        # workers hold until their time (most of them) would be missing.
        ready, dead = _rabbitmq_counts([name, f"{name}.XQ"])
        return QueueStats(name=name, ready=ready, delayed=None, dead=dead)
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable() from exc


def _redis_counts(broker: RedisBroker, key: str) -> list[int]:
    """Ready (not fetched yet), delayed and dead-lettered messages of a queue of Dramatiq's Redis broker."""
    pipe = broker.client.pipeline(transaction=False)
    pipe.llen(key)
    pipe.hlen(f"{key}.DQ.msgs")
    pipe.zcard(f"{key}.XQ")
    return [int(n) for n in pipe.execute()]


def _rabbitmq_counts(queues: list[str]) -> list[int]:
    """Ready messages of each queue (0 for one not declared yet)."""
    params = pika.URLParameters(
        _amqp_url(settings.BROKER_URL, socket_timeout=settings.PUBLISHING_BROKER_SOCKET_TIMEOUT)
    )
    connection = pika.BlockingConnection(params)
    try:
        counts = []
        channel = connection.channel()
        for queue in queues:
            try:
                counts.append(channel.queue_declare(queue, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                counts.append(0)  # 404: no worker has declared it yet
                channel = connection.channel()
        return counts
    finally:
        connection.close()
