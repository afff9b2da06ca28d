"""Publisher's Redis broker wakes idle consumers on enqueue; without wake-ups it still delivers by polling."""

from __future__ import annotations

import threading
import time
from typing import cast

import dramatiq
import pytest

from publishing.redis_wakeup import WakingRedisBroker, _WakeableConsumer

pytestmark = pytest.mark.integration

# Idle consumers poll this rarely here: a message found well before it came by a wake-up.
POLL_MS = 20_000


def consume_one(
    broker: WakingRedisBroker,
    queue: str,
    timeout_ms: int,
    found: list[tuple[str, float]],
    *,
    idle: bool = False,
) -> None:
    consumer = cast(_WakeableConsumer, broker.consume(queue, prefetch=1, timeout=timeout_ms))
    if idle:
        consumer.misses = 32  # long idle: every wait is the full poll interval (10-20 s with jitter)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            found.append((message.message_id, time.monotonic()))
            consumer.ack(message)
            return


def make_message(queue: str) -> dramatiq.Message[None]:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})


def test_an_idle_consumer_is_woken_by_an_enqueue_long_before_its_next_poll(redis_url, namespace) -> None:
    # Given an idle consumer that has backed off to its longest wait
    worker_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    web_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    worker_side.declare_queue("q")
    web_side.declare_queue("q")
    found: list[tuple[str, float]] = []
    consumer = threading.Thread(
        target=consume_one, args=(worker_side, "q", POLL_MS, found), kwargs={"idle": True}
    )
    consumer.start()
    time.sleep(1)

    # When another process enqueues a message
    message = web_side.enqueue(make_message("q"))
    sent = time.monotonic()

    # Then the consumer has it well before a poll could have found it
    consumer.join(timeout=POLL_MS / 1000)
    assert [message_id for message_id, _ in found] == [message.message_id]
    assert found[0][1] - sent < POLL_MS / 1000 / 4, "picked up by polling, not by the wake-up"
    print(f"\nwoken consumer picked the message up after {(found[0][1] - sent) * 1000:.1f} ms")  # noqa: T201


def test_without_wake_ups_messages_are_still_delivered_by_polling(redis_url, namespace) -> None:
    # Given a consumer that never hears the wake-ups (another channel), polling every 200 ms at most
    worker_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    worker_side.wake_channel = f"{namespace}:elsewhere"
    web_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    worker_side.declare_queue("q")
    found: list[tuple[str, float]] = []
    consumer = threading.Thread(target=consume_one, args=(worker_side, "q", 200, found))
    consumer.start()
    time.sleep(0.5)

    # When a message is enqueued
    message = web_side.enqueue(make_message("q"))

    # Then the consumer still gets it, once
    consumer.join(timeout=30)
    assert [message_id for message_id, _ in found] == [message.message_id]


def test_a_lost_wake_up_never_loses_the_message(redis_url, namespace, monkeypatch) -> None:
    # Given a broker whose wake-up announcement fails (Redis hiccup after the enqueue)
    broker = WakingRedisBroker(url=redis_url, namespace=namespace)
    broker.declare_queue("q")

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("pub/sub went away")

    monkeypatch.setattr(broker.client, "publish", refuse)

    # When a message is enqueued
    message = broker.enqueue(make_message("q"))

    # Then the enqueue succeeded and a polling consumer finds it
    found: list[tuple[str, float]] = []
    consume_one(WakingRedisBroker(url=redis_url, namespace=namespace), "q", 200, found)
    assert [message_id for message_id, _ in found] == [message.message_id]
