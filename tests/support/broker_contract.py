"""What every broker backend (`publishing.broker.BrokerOperations`) must do, as one story a test runs on
one backend: the stub in the unit tests, Redis and RabbitMQ in the integration tests.

enqueue -> live ids and counts -> a worker rejects jobs (dead letters) -> requeue some -> discard the
rest -> trim. Where a backend cannot tell (live ids, counts) it answers None, never something wrong;
where it keeps dead letters until its own expiry, a trim removes nothing and says so.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq

from publishing.broker import BrokerOperations, DeadLetter
from tests.support.polling import wait_until


def message(queue: str, n: int) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name="contract", args=(), kwargs={"n": n}, options={})


def reject(broker: dramatiq.Broker, queue: str, count: int) -> set[str]:
    """What a worker does with jobs that fail for good: fetch `count` messages of `queue`, reject each."""
    consumer = broker.consume(queue, prefetch=count, timeout=100)
    rejected: set[str] = set()
    deadline = time.monotonic() + 10
    try:
        for fetched in consumer:
            if fetched is not None:
                consumer.nack(fetched)
                rejected.add(fetched.message_id)
            if len(rejected) == count:
                return rejected
            assert time.monotonic() < deadline, f"only {len(rejected)} of {count} messages came"
    finally:
        consumer.close()
    raise AssertionError("the consumer ended")


def dead_letters(ops: BrokerOperations, queue: str) -> list[DeadLetter]:
    """The dead letters of `queue`, left where they are."""
    seen: list[DeadLetter] = []

    def keep(letter: DeadLetter) -> bool:
        seen.append(letter)
        return False

    ops.sweep_dead_letters(queue, keep, limit=100)
    return seen


def assert_counts(ops: BrokerOperations, queue: str, *, ready: int, delayed: int, dead: int) -> None:
    """The queue's counts, once the broker has caught up (RabbitMQ routes rejected messages on its own)."""
    first = ops.queue_stats(queue)
    if first is None:
        return  # a backend that cannot count
    wanted = (queue, ready, delayed if first.delayed is not None else None, dead)

    def counts() -> tuple[object, ...] | None:
        stats = ops.queue_stats(queue)
        assert stats is not None
        now = (stats.name, stats.ready, stats.delayed, stats.dead)
        return now if now == wanted else None

    wait_until(counts, 10, lambda: f"counts {ops.queue_stats(queue)}, not {wanted}")


def assert_live(ops: BrokerOperations, queue: str, ids: set[str]) -> None:
    live = ops.live_message_ids(queue)
    assert live is None or live == ids, f"live {live}, not {ids}"


def assert_the_contract(ops: BrokerOperations, queue: str) -> None:
    """The whole story on a fresh `queue` of `ops.broker`."""
    ops.broker.declare_queue(queue)
    ops.ping()

    # Enqueued through the breaker: four ready, one delayed; all held, none dead
    ready = [ops.enqueue(message(queue, n)) for n in range(4)]
    delayed = ops.enqueue(message(queue, 99), delay=60_000)
    assert_live(ops, queue, {m.message_id for m in [*ready, delayed]})
    assert_counts(ops, queue, ready=4, delayed=1, dead=0)

    # A worker rejects the four ready ones: dead letters, no longer held
    assert reject(ops.broker, queue, 4) == {m.message_id for m in ready}
    assert_live(ops, queue, {delayed.message_id})
    assert_counts(ops, queue, ready=0, delayed=1, dead=4)
    assert sorted(letter.kwargs["n"] for letter in dead_letters(ops, queue)) == [0, 1, 2, 3]

    # Requeue the even ones (enqueued again, their letters removed), keep the odd ones
    def requeue_even(letter: DeadLetter) -> bool:
        if letter.kwargs["n"] % 2:
            return False
        ops.enqueue(letter)
        return True

    sweep = ops.sweep_dead_letters(queue, requeue_even, limit=100)
    assert (sweep.seen, sweep.removed) == (4, 2)
    requeued = {m.message_id for m in ready if m.kwargs["n"] % 2 == 0}
    assert_live(ops, queue, {delayed.message_id} | requeued)
    assert_counts(ops, queue, ready=2, delayed=1, dead=2)
    assert sorted(letter.kwargs["n"] for letter in dead_letters(ops, queue)) == [1, 3]

    # Discard the rest
    sweep = ops.sweep_dead_letters(queue, lambda letter: True, limit=100)
    assert (sweep.seen, sweep.removed) == (2, 2)
    assert dead_letters(ops, queue) == []

    # Trim: the requeued two and one more rejected again; keep one
    ops.enqueue(message(queue, 7))
    assert len(reject(ops.broker, queue, 3)) == 3
    assert_counts(ops, queue, ready=0, delayed=1, dead=3)
    trimmed = ops.trim_dead_letters(queue, keep=1)
    assert trimmed in (0, 2)  # 0: the backend keeps dead letters until its own expiry
    assert len(dead_letters(ops, queue)) == 3 - trimmed
    assert ops.trim_dead_letters(queue, keep=1) == 0
