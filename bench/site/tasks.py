"""Actors that django_dramatiq discovers in this app: they run with all of Publisher's middleware."""

from __future__ import annotations

import dramatiq

BENCH_QUEUE = "bench-noop"


@dramatiq.actor(queue_name=BENCH_QUEUE, max_retries=0)
def noop() -> None:
    """Nothing: what is measured is the stack around it."""
