"""Publisher's side of the overhead benchmark: enqueue `bench.site.tasks.noop` as the web tier enqueues.

`python -m bench.peer_publisher send N`, with DJANGO_SETTINGS_MODULE=bench.settings
and the run's environment, enqueues N messages from this one process through
`publishing.broker.enqueue` (the circuit breaker, Publisher's broker and its
middleware) and prints the seconds that took as JSON. `manage.py rundramatiq` runs them.
"""

from __future__ import annotations

import json
import sys
import time

import django


def send(count: int) -> float:
    django.setup()
    from bench.site.tasks import noop
    from publishing.broker import enqueue

    started = time.perf_counter()
    for _ in range(count):
        enqueue(noop.message())
    return time.perf_counter() - started


if __name__ == "__main__":
    if sys.argv[1:2] != ["send"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.peer_publisher send COUNT")
    print(json.dumps({"seconds": send(int(sys.argv[2]))}))
