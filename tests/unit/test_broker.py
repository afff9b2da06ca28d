from __future__ import annotations

import pytest
import redis

from publishing.broker import CircuitBreaker, broker_kind, redact_url
from publishing.exceptions import BrokerUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused() -> None:
    raise redis.exceptions.ConnectionError("refused")


def test_breaker_opens_on_failure_and_fails_fast_until_the_cooldown_passes() -> None:
    # Given a breaker that just saw the broker fail
    clock = FakeClock()
    breaker = CircuitBreaker(cooldown=2.0, clock=clock)
    with pytest.raises(BrokerUnavailable):
        breaker.call(refused)
    calls = []

    # When calls come in during the cool-down
    for _ in range(5):
        with pytest.raises(BrokerUnavailable):
            breaker.call(lambda: calls.append(1))

    # Then none of them reached the broker
    assert calls == []
    assert breaker.is_open

    # When the cool-down has passed and the broker answers again
    clock.now += 2.1
    assert breaker.call(lambda: "ok") == "ok"
    # Then the circuit is closed
    assert not breaker.is_open
    assert breaker.failures == 0


def test_a_failed_probe_reopens_the_circuit() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(cooldown=2.0, clock=clock)
    with pytest.raises(BrokerUnavailable):
        breaker.call(refused)
    clock.now += 2.1
    with pytest.raises(BrokerUnavailable):
        breaker.call(refused)
    assert breaker.is_open
    assert breaker.failures == 2


def test_errors_that_are_not_broker_errors_pass_through_untouched() -> None:
    breaker = CircuitBreaker(cooldown=2.0)

    def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        breaker.call(bug)
    assert not breaker.is_open


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://cache:6380/1", "redis"),
        ("unix:///run/redis.sock", "redis"),
        ("amqp://guest:guest@127.0.0.1:5672/", "rabbitmq"),
        ("stub://", "stub"),
    ],
)
def test_broker_kind_follows_the_url_scheme(url: str, kind: str) -> None:
    assert broker_kind(url) == kind


def test_unknown_broker_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Unsupported BROKER_URL"):
        broker_kind("kafka://x")


def test_redact_url_hides_the_password() -> None:
    assert redact_url("amqp://guest:s3cret@mq:5672/") == "amqp://guest:***@mq:5672/"
