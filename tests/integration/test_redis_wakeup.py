"""Publisher's Redis broker wakes idle consumers on enqueue; without wake-ups it still delivers by polling."""

from __future__ import annotations

import threading
import time
from typing import cast

import dramatiq
import pytest

from publishing.redis_wakeup import WakingRedisBroker, _WakeableConsumer
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

# Idle consumers poll this rarely here (backed off all the way, they wait 10-20 s with jitter): a message
# found well before the shortest of those waits came by a wake-up.
POLL_MS = 20_000
MIN_POLL_S = POLL_MS / 1000 / 2


def consume_one(consumer: _WakeableConsumer, found: list[tuple[str, float]], *, timeout: float = 30) -> None:
    """Iterate `consumer` until it yields a message; record its id and when it came, and ack it."""
    message = wait_until(lambda: next(consumer) or None, timeout, "no message came", interval=0)
    found.append((message.message_id, time.monotonic()))
    consumer.ack(message)


def consumer_of(broker: WakingRedisBroker, queue: str, timeout_ms: int) -> _WakeableConsumer:
    return cast(_WakeableConsumer, broker.consume(queue, prefetch=1, timeout=timeout_ms))


def make_message(queue: str) -> dramatiq.Message[None]:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})


def test_an_idle_consumer_is_woken_by_an_enqueue_long_before_its_next_poll(redis_url, namespace) -> None:
    # Given an idle consumer that has backed off to its longest wait (10-20 s with jitter)
    worker_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    web_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    worker_side.declare_queue("q")
    web_side.declare_queue("q")
    consumer = consumer_of(worker_side, "q", POLL_MS)
    consumer.misses = 32
    found: list[tuple[str, float]] = []
    thread = threading.Thread(target=consume_one, args=(consumer, found))
    thread.start()
    # And it is in that wait now: its fetch found nothing (so a message can only come by a wake-up or
    # the next poll), and its process listens for wake-ups
    wait_until(lambda: consumer.misses > 32, 10, "the consumer never fetched")
    wait_until(
        lambda: dict(web_side.client.pubsub_numsub(worker_side.wake_channel)).get(
            worker_side.wake_channel.encode()
        ),
        10,
        "the wake-up listener never subscribed",
    )

    # When another process enqueues a message
    message = web_side.enqueue(make_message("q"))
    sent = time.monotonic()

    # Then the consumer has it long before the shortest poll wait (10 s) could have found it
    thread.join(timeout=POLL_MS / 1000 + 5)
    assert [message_id for message_id, _ in found] == [message.message_id]
    assert found[0][1] - sent < MIN_POLL_S / 2, "picked up by polling, not by the wake-up"
    print(f"\nwoken consumer picked the message up after {(found[0][1] - sent) * 1000:.1f} ms")  # noqa: T201


def test_without_wake_ups_messages_are_still_delivered_by_polling(redis_url, namespace) -> None:
    # Given a consumer that never hears the wake-ups (another channel), polling every 200 ms at most
    worker_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    worker_side.wake_channel = f"{namespace}:elsewhere"
    web_side = WakingRedisBroker(url=redis_url, namespace=namespace)
    worker_side.declare_queue("q")
    consumer = consumer_of(worker_side, "q", 200)
    found: list[tuple[str, float]] = []
    thread = threading.Thread(target=consume_one, args=(consumer, found))
    thread.start()
    # And it is idle, polling: its fetches have found nothing
    wait_until(lambda: consumer.misses > 0, 10, "the consumer never fetched")

    # When a message is enqueued
    message = web_side.enqueue(make_message("q"))

    # Then the consumer still gets it, once
    thread.join(timeout=30)
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
    consume_one(consumer_of(WakingRedisBroker(url=redis_url, namespace=namespace), "q", 200), found)
    assert [message_id for message_id, _ in found] == [message.message_id]
