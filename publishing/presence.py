"""Which worker processes are alive, from heartbeats they write to Redis themselves.

Dramatiq's own broker heartbeats cannot tell: every process that enqueues
(the web tier too) writes one, and RabbitMQ keeps none we can read. Each
worker process adds its name, `host:pid`, to one sorted set in the Redis at
REDIS_URL (with either broker) with the time as score.
"""

from __future__ import annotations

import os
import time

import redis
from django.conf import settings

# A worker whose last heartbeat is older than this is gone.
FORGET_AFTER_S = 24 * 3600


def worker_name() -> str:
    """`host:pid` of this process: PUBLISHING_WORKER_NAME names the host."""
    return f"{settings.PUBLISHING_WORKER_NAME}:{os.getpid()}"


def _key() -> str:
    return f"{settings.BROKER_NAMESPACE}:workers"


def heartbeat(client: redis.Redis, name: str) -> None:
    """Say that worker `name` is alive now (and forget the long-dead)."""
    now = time.time()
    pipe = client.pipeline()
    pipe.zadd(_key(), {name: now})
    pipe.zremrangebyscore(_key(), "-inf", now - FORGET_AFTER_S)
    pipe.execute()


def leave(client: redis.Redis, name: str) -> None:
    """A clean shutdown: worker `name` is gone at once, not after its lease."""
    client.zrem(_key(), name)


def alive(client: redis.Redis, *, within: float) -> list[str]:
    """Names of the workers heard from in the last `within` seconds, sorted."""
    names = client.zrangebyscore(_key(), time.time() - within, "+inf")
    return sorted(name.decode() if isinstance(name, bytes) else str(name) for name in names)
