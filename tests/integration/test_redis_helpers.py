"""The Redis-side pieces on a real Redis: the sliding window, broker inspection, dead-letter trimming."""

from __future__ import annotations

import time

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from publishing import broker as publishing_broker
from publishing.broker import redis_client
from publishing.rate_limit import Rate, WindowLimiter

pytestmark = pytest.mark.integration


def test_the_window_admits_n_starts_then_says_when_the_next_slot_frees(redis_url, namespace) -> None:
    # Given a limit of 3 starts per second
    limiter = WindowLimiter(redis_client(redis_url, socket_timeout=2), f"{namespace}:starts", Rate(3, 1_000))

    # When 4 starts are asked for at once
    verdicts = [limiter.acquire(f"m{n}", owner="alice") for n in range(4)]

    # Then 3 are taken and the 4th is told to wait under a second
    assert [v.taken for v in verdicts] == [True, True, True, False]
    assert 0 < verdicts[3].wait_ms <= 1_001
    # And once that wait is over, a slot is free again
    time.sleep(verdicts[3].wait_ms / 1000 + 0.01)
    assert limiter.acquire("m3", owner="alice").taken


def test_two_limiters_on_one_key_share_the_window(redis_url, namespace) -> None:
    a = WindowLimiter(redis_client(redis_url, socket_timeout=2), f"{namespace}:starts", Rate(2, 10_000))
    b = WindowLimiter(redis_client(redis_url, socket_timeout=2), f"{namespace}:starts", Rate(2, 10_000))
    assert [a.acquire("1", owner="alice").taken, b.acquire("2", owner="bob").taken] == [True, True]
    assert a.acquire("3", owner="alice").wait_ms > 0
    assert b.acquire("4", owner="bob").wait_ms > 0


@pytest.fixture
def redis_broker(redis_url, namespace, monkeypatch) -> RedisBroker:
    broker = RedisBroker(client=redis.Redis.from_url(redis_url), namespace=namespace)
    monkeypatch.setattr(dramatiq, "get_broker", lambda: broker)
    return broker


def test_live_message_ids_sees_ready_and_delayed_messages(redis_broker, settings) -> None:
    # Given one ready and one delayed publishing message
    ready = dramatiq.Message[None](
        queue_name=settings.PUBLISHING_QUEUE, actor_name="build_and_submit", args=(), kwargs={}, options={}
    )
    delayed = dramatiq.Message[None](
        queue_name=settings.PUBLISHING_QUEUE, actor_name="build_and_submit", args=(), kwargs={}, options={}
    )
    redis_broker.enqueue(ready)
    redis_broker.enqueue(delayed, delay=60_000)

    # Then both are seen
    assert publishing_broker.live_message_ids() == {ready.message_id, delayed.message_id}


def test_dead_letters_are_trimmed_to_the_newest(redis_broker, settings) -> None:
    # Given 8 dead-lettered messages, dead-lettered one after the other
    dead = f"{redis_broker.namespace}:{settings.PUBLISHING_QUEUE}.XQ"
    for n in range(8):
        redis_broker.client.zadd(dead, {f"m{n}": 1_000 + n})
        redis_broker.client.hset(f"{dead}.msgs", f"m{n}", b"{}")

    # When retention keeps 3
    assert publishing_broker.trim_dead_letters(keep=3) == 5

    # Then the newest 3 remain, with their bodies, and nothing else
    assert redis_broker.client.zrange(dead, 0, -1) == [b"m5", b"m6", b"m7"]
    assert sorted(redis_broker.client.hkeys(f"{dead}.msgs")) == [b"m5", b"m6", b"m7"]
    assert publishing_broker.trim_dead_letters(keep=3) == 0
