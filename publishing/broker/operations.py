"""What a broker must do for Publisher, beyond Dramatiq's own `Broker` API: one class per backend.

Dramatiq's brokers enqueue and consume. Publisher also pings the broker (health, the breaker's
probe), counts the builds queue (the admin's overview, metrics), asks which message ids are still held
(the reconciler), and lists, removes and trims dead letters (the admin's requeue, retention). Each
backend says how in a subclass of `BrokerOperations`: `redis_backend`, `rabbitmq_backend`,
`stub_backend`, registered in `BACKENDS` (`publishing/broker/__init__.py`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import dramatiq
import dramatiq.errors
import pika
import redis
from dramatiq.middleware import Middleware
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from publishing.breaker import CircuitBreaker
from publishing.exceptions import BrokerUnavailable

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

DeadLetter = dramatiq.Message[Any]


@dataclass(frozen=True)
class DeadLetterSweep:
    """What one pass over a dead-letter queue did."""

    seen: int
    removed: int


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


class BrokerOperations(ABC):
    """Publisher's operations on one Dramatiq broker. Every method that reaches the broker raises
    BrokerUnavailable (never a client library's error) when it is away."""

    # `broker_kind` of the URLs this backend serves, and their schemes.
    kind: ClassVar[str]
    schemes: ClassVar[frozenset[str]]
    # The Dramatiq broker class (or base class) this backend operates on.
    broker_type: ClassVar[type[dramatiq.Broker]]
    # The broker lives in this process's memory (the unit tests' stub): a worker on it starts none of
    # the periodic work (leases, presence, reconciliation), which those tests drive themselves.
    in_memory: ClassVar[bool] = False

    def __init__(self, broker: dramatiq.Broker, *, breaker: CircuitBreaker) -> None:
        self.broker = broker
        self.breaker = breaker

    @classmethod
    def serves(cls, url: str) -> bool:
        """True when this backend is the one for a broker URL like `url`."""
        return urlsplit(url).scheme in cls.schemes

    @staticmethod
    @abstractmethod
    def make(
        url: str,
        *,
        middleware: Sequence[Middleware],
        namespace: str,
        socket_timeout: float,
        heartbeat_timeout: int,
    ) -> dramatiq.Broker:
        """A new broker for `url`, failing fast (short timeouts, no hidden retries); connects lazily."""

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Hand a message to the broker through the breaker, or raise BrokerUnavailable fast."""
        return self.breaker.call(lambda: self.send(message, delay=delay))

    def send(self, message: dramatiq.Message[Any], *, delay: int | None) -> dramatiq.Message[Any]:
        """The enqueue itself, bounded in time; raises the client library's errors."""
        return self.broker.enqueue(message, delay=delay)

    @abstractmethod
    def ping(self) -> None:
        """Return when the broker answers; raise one of BROKER_ERRORS within about a socket timeout."""

    @abstractmethod
    def queue_stats(self, queue: str) -> QueueStats | None:
        """Message counts of `queue`; None when the backend cannot count. Fails fast while the circuit is
        open, yet never goes through it: a slow count must not turn initiates into 503s."""

    @abstractmethod
    def live_message_ids(self, queue: str) -> set[str] | None:
        """Ids of the messages the broker holds in `queue` (ready, delayed or in progress); None when the
        backend cannot tell, and callers then leave queued work alone."""

    @abstractmethod
    def sweep_dead_letters(
        self, queue: str, remove: Callable[[DeadLetter], bool], *, limit: int
    ) -> DeadLetterSweep:
        """Show the dead letters of `queue` to `remove`, oldest first; drop those it answers True for.

        One callback rather than read-then-delete: RabbitMQ can only remove a message by taking it. An
        exception from `remove` ends the pass; what was removed stays removed, the rest stays
        dead-lettered. Fails fast while the circuit is open.
        """

    @abstractmethod
    def trim_dead_letters(self, queue: str, *, keep: int) -> int:
        """Keep only the newest `keep` dead letters of `queue`; how many went (0 when the backend keeps
        them until its own expiry)."""

    def prepare_worker(self) -> None:
        """Adjust the broker's connections in a worker process, before it consumes (see WorkerConnections).

        Nothing to adjust by default.
        """
        return

    @contextlib.contextmanager
    def reaching(self, *, fail_fast: bool = False) -> Iterator[None]:
        """Turn broker errors inside into BrokerUnavailable; with `fail_fast`, raise it at once while the
        circuit is open."""
        if fail_fast and self.breaker.is_open:
            raise BrokerUnavailable()
        try:
            yield
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable() from exc
