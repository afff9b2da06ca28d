"""Cancellation: dramatiq-abort's middleware, skipping or interrupting the messages the web tier aborts."""

from __future__ import annotations

import dramatiq_abort
import redis
from dramatiq_abort.backends import RedisBackend, StubBackend


def abortable(*, client: redis.Redis | None, namespace: str, abort_ttl_ms: int) -> dramatiq_abort.Abortable:
    """dramatiq-abort's middleware with its aborts in the Redis of `client` (in memory when None).

    An abort lives `abort_ttl_ms`: longer than any queue wait or backoff, so a cancelled message that
    only starts much later is still skipped. Actors declared `abortable=False` are never looked up.
    """
    backend = StubBackend() if client is None else RedisBackend(client=client, namespace=namespace)
    return dramatiq_abort.Abortable(backend=backend, abort_ttl=abort_ttl_ms)
