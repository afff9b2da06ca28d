"""Celery, a peer of the overhead benchmark: a no-op task on Redis, no result backend.

`celery -A bench.peer_celery worker ...` runs it; `python -m bench.peer_celery
send N` enqueues N messages from this one process and prints the seconds that
took as JSON. The Redis URL and a key prefix of the run's own come from
BENCH_REDIS_URL and BENCH_NAMESPACE.

`task_acks_late`: a message is acked after its task ran, as Dramatiq acks, so
that an empty queue with nothing unacked means every job is done (the
benchmark reads exactly that). Celery makes the same number of Redis calls
either way; only the moment of the ack moves.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench.celery_peer import celery_app

QUEUE = "bench-noop"

app = celery_app("bench-peer", os.environ["BENCH_REDIS_URL"], os.environ["BENCH_NAMESPACE"], QUEUE)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing: what is measured is the stack around it."""


def send(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        noop.delay()
    return time.perf_counter() - started


if __name__ == "__main__":
    if sys.argv[1:2] != ["send"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.peer_celery send COUNT")
    print(json.dumps({"seconds": send(int(sys.argv[2]))}))
