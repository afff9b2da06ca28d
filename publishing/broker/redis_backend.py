"""Publisher's operations on Dramatiq's Redis broker (`redis://`, `rediss://`, `unix://`).

Dramatiq keeps a queue `q` of namespace `ns` in `ns:q` (ready ids) with `ns:q.msgs` (bodies), its
delayed messages in `ns:q.DQ` / `ns:q.DQ.msgs`, and its dead letters in `ns:q.XQ` (a sorted set by
dead-lettering time) with `ns:q.XQ.msgs`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import cast

import dramatiq
import dramatiq.errors
import redis
from django.conf import settings
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Middleware
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from publishing.broker.operations import BrokerOperations, DeadLetter, DeadLetterSweep, QueueStats
from publishing.redis_wakeup import WakingRedisBroker

logger = logging.getLogger(__name__)


def redis_client(url: str, *, socket_timeout: float) -> redis.Redis:
    """A Redis client that fails fast: short timeouts and no hidden retries."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


class RedisOperations(BrokerOperations):
    kind = "redis"
    schemes = frozenset({"redis", "rediss", "unix"})
    broker_type = RedisBroker
    broker: RedisBroker

    @staticmethod
    def make(
        url: str,
        *,
        middleware: Sequence[Middleware],
        namespace: str,
        socket_timeout: float,
        heartbeat_timeout: int,
    ) -> dramatiq.Broker:
        return WakingRedisBroker(
            client=redis_client(url, socket_timeout=socket_timeout),
            middleware=list(middleware),
            namespace=namespace,
            heartbeat_timeout=heartbeat_timeout,
        )

    def ping(self) -> None:
        self.broker.client.ping()

    def queue_stats(self, queue: str) -> QueueStats | None:
        with self.reaching(fail_fast=True):
            pipe = self.broker.client.pipeline(transaction=False)
            key = self._key(queue)
            pipe.llen(key)
            pipe.hlen(f"{key}.DQ.msgs")
            pipe.zcard(f"{key}.XQ")
            ready, delayed, dead = (int(n) for n in pipe.execute())
        return QueueStats(name=queue, ready=ready, delayed=delayed, dead=dead)

    def live_message_ids(self, queue: str) -> set[str] | None:
        """First, messages that workers fetched and then died with go back to their queue (Dramatiq's
        maintenance, run now): counted live, they must also be runnable."""
        ids: set[str] = set()
        with self.reaching():
            # A message held by a dead worker counts as live below, yet nothing would run it.
            for held in (queue, dq_name(queue)):
                self._requeue_from_dead_workers(held)
            # Delayed first: a message leaves the delay queue only after it is in
            # the ready one, so this order never misses one in transit.
            for key in (f"{self._key(queue)}.DQ.msgs", f"{self._key(queue)}.msgs"):
                for _, data in self.broker.client.hscan_iter(key, count=500):
                    # A body that is no message (dead-lettered once a worker fetches it) names no job.
                    with contextlib.suppress(dramatiq.errors.DecodeError):
                        ids.add(dramatiq.Message.decode(data).message_id)
        return ids

    def sweep_dead_letters(
        self, queue: str, remove: Callable[[DeadLetter], bool], *, limit: int
    ) -> DeadLetterSweep:
        dead = f"{self._key(queue)}.XQ"
        seen = removed = 0
        with self.reaching(fail_fast=True):
            # Keyed by the per-enqueue `redis_message_id`, not the message id.
            client = self.broker.client
            keys = cast("list[bytes]", client.zrange(dead, 0, limit - 1))
            bodies = cast("list[bytes | None]", client.hmget(f"{dead}.msgs", keys) if keys else [])
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
                    self._forget(dead, [key])
                    removed += 1
        return DeadLetterSweep(seen=seen, removed=removed)

    def trim_dead_letters(self, queue: str, *, keep: int) -> int:
        dead = f"{self._key(queue)}.XQ"
        with self.reaching():
            if self.broker.client.zcard(dead) <= keep:
                return 0
            # Oldest first by their dead-lettering time; keep the newest `keep`.
            doomed = cast("list[bytes]", self.broker.client.zrange(dead, 0, -keep - 1))
            if doomed:
                self._forget(dead, doomed)
        return len(doomed)

    def prepare_worker(self) -> None:
        """Trade the web tier's fail-fast settings for patient ones: PUBLISHING_WORKER_SOCKET_TIMEOUT and
        retries with backoff."""
        timeout = settings.PUBLISHING_WORKER_SOCKET_TIMEOUT
        pool = self.broker.client.connection_pool
        pool.connection_kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
        self.broker.client.set_retry(Retry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), 5))
        pool.disconnect()

    def _key(self, queue: str) -> str:
        return f"{self.broker.namespace}:{queue}"

    def _forget(self, dead: str, keys: list[bytes]) -> None:
        """Remove dead letters (by their Redis message ids) from the dead-letter set `dead` and its bodies."""
        pipe = self.broker.client.pipeline()
        pipe.zrem(dead, *keys)
        pipe.hdel(f"{dead}.msgs", *keys)
        pipe.execute()

    def _requeue_from_dead_workers(self, queue: str) -> None:
        # Publisher's broker runs Dramatiq's maintenance on demand; Dramatiq's own (tests, benchmarks)
        # leaves it to its random 0.1% of commands.
        if isinstance(self.broker, WakingRedisBroker):
            self.broker.requeue_from_dead_workers(queue)
