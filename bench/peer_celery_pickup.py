"""Celery, a peer of the pickup benchmark: a probe task that says when it started, and a filler task.

`celery -A bench.peer_celery_pickup worker ...` runs it, the Redis URL and a
key prefix of the run's own taken from BENCH_REDIS_URL and BENCH_NAMESPACE;
the benchmark sends from its own process with an app from `make_app` (same
configuration, same task names).

The probe's first statement reads `time.time()`; it then RPUSHes "KEY TIME"
to the list `started_key(namespace)`, which the benchmark BLPOPs: the worker
runs tasks in forked children, so the start can only come back through Redis.
The configuration is the overhead peer's (bench.peer_celery): acks late, as
Dramatiq acks, no result backend, cluster chatter off in the worker command.
"""

from __future__ import annotations

import functools
import os
import time

import redis
from celery import Celery

from bench.celery_peer import celery_app

QUEUE = "bench-pickup"
PROBE = "bench.pickup.probe"
FILLER = "bench.pickup.filler"


def started_key(namespace: str) -> str:
    """The list where probes push "KEY TIME"; under the run's prefix, so that its cleanup deletes it."""
    return f"{namespace}:pickup-started"


def make_app(redis_url: str, namespace: str) -> Celery:
    app = celery_app("bench-pickup", redis_url, namespace, QUEUE)
    started = started_key(namespace)

    @functools.cache
    def client() -> redis.Redis:
        # Made on first use, in the pool child that runs the probe: no connection crosses a fork.
        return redis.Redis.from_url(redis_url)

    @app.task(name=PROBE)  # type: ignore[untyped-decorator]
    def probe(key: str) -> None:
        now = time.time()  # first: what is measured ends here
        client().rpush(started, f"{key} {now!r}")

    @app.task(name=FILLER)  # type: ignore[untyped-decorator]
    def filler(seconds: float) -> None:
        time.sleep(seconds)

    return app


@functools.cache
def _worker_app() -> Celery:
    return make_app(os.environ["BENCH_REDIS_URL"], os.environ["BENCH_NAMESPACE"])


def __getattr__(name: str) -> Celery:
    # `celery -A bench.peer_celery_pickup` reads `app`; built on that first read, from the worker's
    # environment, so that the benchmark can import this module (for make_app) without one.
    if name == "app":
        return _worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
