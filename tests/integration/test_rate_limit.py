"""The rate limit's fairness, on the Lua script against a real Redis: who gets a free slot while owners wait.

A start "leaving the window" is simulated by removing its member, so most of
these need no waiting; the expiry bound waits for real, on Redis' clock.
"""

from __future__ import annotations

import time
from typing import cast

import pytest
import redis

from publishing.broker import redis_client
from publishing.rate_limit import Rate, WindowLimiter

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis_client(redis_url, socket_timeout=2)


def limiter_on(client: redis.Redis, namespace: str, rate: Rate, *, fair: bool = True) -> WindowLimiter:
    return WindowLimiter(client, f"{namespace}:starts", rate, fair=fair)


def leave_window(client: redis.Redis, limiter: WindowLimiter, message_id: str) -> None:
    """The start of `message_id` leaves the window, as it does once the window has passed it."""
    members = cast(list[bytes], client.zrange(limiter.key, 0, -1))
    (member,) = [m for m in members if m.decode().split(":")[1] == message_id]
    client.zrem(limiter.key, member)


def redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def test_a_free_slot_is_kept_for_the_waiting_owner_with_fewer_starts(client, namespace) -> None:
    # Given alice's two starts fill a window of 2, and bob's first publishing waits behind them
    limiter = limiter_on(client, namespace, Rate(2, 60_000))
    assert limiter.acquire("a1", owner="alice").taken
    assert limiter.acquire("a2", owner="alice").taken
    assert not limiter.acquire("a3", owner="alice").taken
    bob = limiter.acquire("b1", owner="bob")
    assert not bob.taken
    assert not bob.for_another_owner

    # When one of alice's starts leaves the window and alice's next message asks first
    leave_window(client, limiter, "a1")
    alice = limiter.acquire("a3", owner="alice")

    # Then the free slot is kept for bob (no start in the window): alice comes back after bob's wake
    assert not alice.taken
    assert alice.for_another_owner
    assert alice.wait_ms > 0
    # And bob takes it
    assert limiter.acquire("b1", owner="bob").taken
    # And alice then finds the window full, like anyone else
    again = limiter.acquire("a3", owner="alice")
    assert not again.taken
    assert not again.for_another_owner
    assert limiter.usage() == 2


def test_an_owner_with_no_other_owner_waiting_takes_every_free_slot(client, namespace) -> None:
    # Given alice's backlog alone: two starts in a window of 2 and a third waiting
    limiter = limiter_on(client, namespace, Rate(2, 60_000))
    assert limiter.acquire("a1", owner="alice").taken
    assert limiter.acquire("a2", owner="alice").taken
    assert not limiter.acquire("a3", owner="alice").taken

    # When a start leaves the window
    leave_window(client, limiter, "a1")

    # Then her next message takes the slot: fairness never idles a slot nobody else waits for
    assert limiter.acquire("a3", owner="alice").taken


def test_free_slots_beyond_those_kept_go_to_whoever_asks(client, namespace) -> None:
    # Given a window of 3 full of alice's starts, and bob waiting
    limiter = limiter_on(client, namespace, Rate(3, 60_000))
    for n in range(3):
        assert limiter.acquire(f"a{n}", owner="alice").taken
    assert not limiter.acquire("b1", owner="bob").taken

    # When two of alice's starts leave the window
    leave_window(client, limiter, "a0")
    leave_window(client, limiter, "a1")

    # Then alice takes one of the two free slots, the other is kept for bob
    assert limiter.acquire("a3", owner="alice").taken
    assert limiter.acquire("a4", owner="alice").for_another_owner
    assert limiter.acquire("b1", owner="bob").taken


def test_the_owner_with_the_fewest_starts_is_favoured_over_one_with_more(client, namespace) -> None:
    # Given a window of 4: alice holds 3 starts, carol 1, both with more waiting, and a slot frees
    limiter = limiter_on(client, namespace, Rate(4, 60_000))
    for n in range(3):
        assert limiter.acquire(f"a{n}", owner="alice").taken
    assert limiter.acquire("c0", owner="carol").taken
    assert not limiter.acquire("a3", owner="alice").taken
    assert not limiter.acquire("c1", owner="carol").taken
    leave_window(client, limiter, "a0")

    # When alice asks first (2 starts left in the window against carol's 1)
    alice = limiter.acquire("a3", owner="alice")

    # Then the slot is kept for carol, who takes it
    assert alice.for_another_owner
    assert limiter.acquire("c1", owner="carol").taken


def test_a_wait_that_expired_no_longer_holds_a_slot(client, namespace) -> None:
    # Given a window of 2 (5 s) holding a start of alice's about to leave (in 0.3 s) and a fresh one
    limiter = limiter_on(client, namespace, Rate(2, 5_000))
    limiter.GRACE_MS = 1_000
    leaving = redis_ms(client) - 5_000 + 300
    client.zadd(limiter.key, {f"alice:a0:{leaving}": leaving})
    assert limiter.acquire("a1", owner="alice").taken
    # And bob's message deferred until the old start leaves, and then never coming back (lost)
    bob = limiter.acquire("b1", owner="bob")
    assert not bob.taken
    assert bob.wait_ms <= 301

    # When the old start has left: alice, with a start left in the window, is refused in bob's favour
    time.sleep(0.4)
    assert limiter.acquire("a2", owner="alice").for_another_owner

    # Then once bob's wait is over by more than its grace, alice takes the slot bob never came for
    time.sleep((bob.wait_ms + limiter.GRACE_MS) / 1000 - 0.4 + 0.2)
    assert limiter.acquire("a2", owner="alice").taken
    # And the waiting room holds nothing of bob's any more
    assert client.zscore(f"{limiter.key}:waiting", "bob:b1") is None
    assert client.hget(f"{limiter.key}:waiting-counts", "bob") is None


def test_a_withdrawn_message_frees_its_kept_slot_at_once(client, namespace) -> None:
    # Given bob waiting behind alice's full window, then a free slot kept for him
    limiter = limiter_on(client, namespace, Rate(2, 60_000))
    assert limiter.acquire("a1", owner="alice").taken
    assert limiter.acquire("a2", owner="alice").taken
    assert not limiter.acquire("b1", owner="bob").taken
    leave_window(client, limiter, "a1")
    assert limiter.acquire("a3", owner="alice").for_another_owner

    # When bob's message is withdrawn (its publishing was cancelled)
    assert limiter.withdraw("b1", owner="bob")

    # Then alice takes the slot, and a second withdrawal finds nothing
    assert limiter.acquire("a3", owner="alice").taken
    assert not limiter.withdraw("b1", owner="bob")


def test_the_waiting_room_expires_with_its_last_wait(client, namespace) -> None:
    # Given a deferred message
    limiter = limiter_on(client, namespace, Rate(1, 60_000))
    assert limiter.acquire("a1", owner="alice").taken
    verdict = limiter.acquire("b1", owner="bob", jitter_ms=100)

    # Then the waiting room's keys live until that wait and its grace are over, not forever
    assert verdict.wait_ms > 60_000 - 1_000
    assert verdict.wait_ms <= 60_101
    for suffix in ("waiting", "waiting-owners", "waiting-counts"):
        ttl = cast(int, client.pttl(f"{limiter.key}:{suffix}"))
        assert verdict.wait_ms < ttl <= verdict.wait_ms + limiter.GRACE_MS + 1_000, suffix


def test_without_fairness_a_free_slot_goes_to_whoever_asks_first(client, namespace) -> None:
    # Given the old behaviour: bob waits behind alice's full window
    limiter = limiter_on(client, namespace, Rate(2, 60_000), fair=False)
    assert limiter.acquire("a1", owner="alice").taken
    assert limiter.acquire("a2", owner="alice").taken
    assert not limiter.acquire("b1", owner="bob").taken

    # When a slot frees and alice asks first
    leave_window(client, limiter, "a1")

    # Then she takes it, and nothing was kept in a waiting room
    assert limiter.acquire("a3", owner="alice").taken
    assert not client.exists(f"{limiter.key}:waiting", f"{limiter.key}:waiting-owners")


def test_starts_recorded_by_older_workers_still_count(client, namespace) -> None:
    # Given a start recorded by a worker from before owners (member `<message id>:<ms>`)
    limiter = limiter_on(client, namespace, Rate(2, 60_000))
    now = redis_ms(client)
    client.zadd(limiter.key, {f"old-message:{now}": now})

    # When two owners ask
    verdicts = [limiter.acquire("a1", owner="alice"), limiter.acquire("b1", owner="bob")]

    # Then the old start still takes its place in the window
    assert [v.taken for v in verdicts] == [True, False]
    assert limiter.usage() == 2


def test_an_owner_id_cannot_break_the_member_format(client, namespace) -> None:
    # Given owners whose ids hold the separator, or are huge
    limiter = limiter_on(client, namespace, Rate(3, 60_000))
    assert limiter.acquire("m1", owner="evil:owner").taken
    assert limiter.acquire("m2", owner="x" * 10_000).taken

    # Then each member still reads as owner:message:ms, with the owner capped
    members = [m.decode() for m in cast(list[bytes], client.zrange(limiter.key, 0, -1))]
    assert sorted(len(m.split(":")) for m in members) == [3, 3]
    assert all(len(m.split(":")[0]) <= 64 for m in members)
