"""Which worker processes are alive, from heartbeats they write to Redis themselves.

Dramatiq's own broker heartbeats cannot tell: every process that enqueues
(the web tier too) writes one, and RabbitMQ keeps none we can read. Each
worker process adds its name, `host:pid`, to one sorted set in the Redis at
REDIS_URL (with either broker) with Redis' time as score.
"""

from __future__ import annotations

import os

import redis
from django.conf import settings

# A worker whose last heartbeat is older than this is gone.
FORGET_AFTER_S = 24 * 3600


def worker_name() -> str:
    """`host:pid` of this process: PUBLISHING_WORKER_NAME names the host."""
    return f"{settings.PUBLISHING_WORKER_NAME}:{os.getpid()}"


def _key() -> str:
    return f"{settings.BROKER_NAMESPACE}:workers"


# On Redis' clock, like the rate limit: hosts' clocks may disagree.
# KEYS[1] the set; ARGV[1] the worker's name, ARGV[2] seconds after which the dead are forgotten.
_HEARTBEAT = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZADD', KEYS[1], seconds, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', seconds - tonumber(ARGV[2]))
return 1
"""
# KEYS[1] the set; ARGV[1] how recent, in seconds.
_ALIVE = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], seconds - tonumber(ARGV[1]), '+inf')
"""


def heartbeat(client: redis.Redis, name: str) -> None:
    """Say that worker `name` is alive now (and forget the long-dead)."""
    client.eval(_HEARTBEAT, 1, _key(), name, FORGET_AFTER_S)


def leave(client: redis.Redis, name: str) -> None:
    """A clean shutdown: worker `name` is gone at once, not after its lease."""
    client.zrem(_key(), name)


def alive(client: redis.Redis, *, within: float) -> list[str]:
    """Names of the workers heard from in the last `within` seconds, sorted."""
    names = client.eval(_ALIVE, 1, _key(), within)
    return sorted(name.decode() if isinstance(name, bytes) else str(name) for name in names)
