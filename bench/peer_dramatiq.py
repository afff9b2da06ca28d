"""Bare Dramatiq, a peer of the overhead benchmark: `RedisBroker` with its default middleware, a no-op actor.

`dramatiq bench.peer_dramatiq` runs it; `python -m bench.peer_dramatiq send N`
enqueues N messages from this one process and prints the seconds that took
as JSON. The Redis URL and the key namespace come from BENCH_REDIS_URL and
BENCH_NAMESPACE (set by the benchmark), so that nothing here is Publisher's.
"""

from __future__ import annotations

import json
import os
import sys
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench-noop"

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"], namespace=os.environ["BENCH_NAMESPACE"])  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop() -> None:
    """Nothing: what is measured is the stack around it."""


def send(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        noop.send()
    return time.perf_counter() - started


if __name__ == "__main__":
    if sys.argv[1:2] != ["send"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.peer_dramatiq send COUNT")
    print(json.dumps({"seconds": send(int(sys.argv[2]))}))
