"""The circuit breaker (publishing/breaker.py), as the broker and the throttle cache use it."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from publishing.breaker import CircuitBreaker, CircuitOpen
from publishing.exceptions import BrokerUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused() -> None:
    raise redis.exceptions.ConnectionError("refused")


def broker_like(clock: FakeClock | None = None) -> CircuitBreaker:
    """A breaker as the broker's: redis errors open it, callers get BrokerUnavailable."""
    return CircuitBreaker(
        name="broker",
        cooldown=2.0,
        errors=(redis.exceptions.RedisError,),
        unavailable=BrokerUnavailable,
        clock=clock or FakeClock(),
    )


def half_open() -> tuple[CircuitBreaker, FakeClock]:
    """A breaker that saw its dependency fail and whose cool-down has passed; its clock, to move on."""
    clock = FakeClock()
    breaker = broker_like(clock)
    with pytest.raises(BrokerUnavailable):
        breaker.call(refused)
    clock.now += 2.1
    return breaker, clock


def test_the_breaker_opens_on_failure_and_fails_fast_until_the_cooldown_passes() -> None:
    # Given a breaker that just saw its dependency fail
    clock = FakeClock()
    breaker = broker_like(clock)
    with pytest.raises(BrokerUnavailable):
        breaker.call(refused)
    calls = []

    # When calls come in during the cool-down
    for _ in range(5):
        with pytest.raises(BrokerUnavailable):
            breaker.call(lambda: calls.append(1))

    # Then none of them reached the dependency
    assert calls == []
    assert breaker.is_open

    # When the cool-down has passed and the dependency answers again
    clock.now += 2.1
    assert breaker.call(lambda: "ok") == "ok"
    # Then the circuit is closed
    assert not breaker.is_open
    assert breaker.failures == 0


def test_a_failed_probe_reopens_the_circuit() -> None:
    breaker, _ = half_open()
    with pytest.raises(BrokerUnavailable):
        breaker.call(refused)
    assert breaker.is_open
    assert breaker.failures == 2


def test_a_half_open_breaker_lets_exactly_one_probe_through() -> None:
    # Given a breaker that saw its dependency fail, whose cool-down has passed
    breaker, _ = half_open()

    # When one caller probes (slowly) and others call meanwhile
    probing, release = threading.Event(), threading.Event()
    reached: list[str] = []

    def probe() -> str:
        reached.append("probe")
        probing.set()
        assert release.wait(10)
        return "ok"

    results: list[str] = []
    prober = threading.Thread(target=lambda: results.append(breaker.call(probe)))
    prober.start()
    assert probing.wait(10)
    refused_meanwhile = 0
    for n in range(5):

        def call(n: int = n) -> None:
            reached.append(f"caller {n}")

        try:
            breaker.call(call)
        except BrokerUnavailable:
            refused_meanwhile += 1
    release.set()
    prober.join(10)

    # Then only the probe reached the dependency, the others failed fast, and its success closed the circuit
    assert reached == ["probe"]
    assert refused_meanwhile == 5
    assert results == ["ok"]
    assert breaker.failures == 0
    assert breaker.call(lambda: "next") == "next"


def test_a_failed_probe_lets_the_next_one_through_only_after_another_cooldown() -> None:
    breaker, clock = half_open()
    with pytest.raises(BrokerUnavailable):
        breaker.call(refused)  # the probe, failing
    calls: list[int] = []
    with pytest.raises(BrokerUnavailable):
        breaker.call(lambda: calls.append(1))
    assert calls == []
    clock.now += 2.1
    breaker.call(lambda: calls.append(1))
    assert calls == [1]


def test_errors_that_are_not_its_errors_pass_through_untouched() -> None:
    breaker = broker_like()

    def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        breaker.call(bug)
    assert not breaker.is_open


def test_by_default_any_exception_opens_it_and_callers_get_circuit_open() -> None:
    # Given a breaker with the defaults (as the throttle cache's)
    breaker = CircuitBreaker(name="cache", cooldown=2.0, clock=FakeClock())

    # When its dependency raises something of its own
    def broken() -> None:
        raise ValueError("no such backend")

    with pytest.raises(CircuitOpen) as raised:
        breaker.call(broken)

    # Then the circuit is open, and the cause is kept
    assert isinstance(raised.value.__cause__, ValueError)
    assert breaker.is_open


def test_an_outage_warns_once_when_it_starts_then_logs_at_debug_and_its_end_at_info(caplog) -> None:
    # Given a breaker whose cool-downs pass at once
    breaker = CircuitBreaker(name="broker", cooldown=0, clock=FakeClock())
    caplog.set_level(logging.DEBUG, logger="publishing.breaker")

    # When the dependency fails again and again, then answers
    for _ in range(5):
        with pytest.raises(CircuitOpen):
            breaker.call(refused)
    breaker.call(lambda: None)

    # Then one warning, the rest at debug level, and one line when it is back
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 4 + [logging.INFO]
    assert "broker unavailable (ConnectionError: refused); failing fast" in caplog.records[0].getMessage()
    assert "broker reachable again after 5 failed call(s)" in caplog.records[-1].getMessage()


def test_a_long_outage_warns_again_once_per_warning_interval(caplog) -> None:
    # Given a breaker that warns at most once a minute
    clock = FakeClock()
    breaker = CircuitBreaker(name="cache", cooldown=0, warning_interval=60, clock=clock)
    caplog.set_level(logging.DEBUG, logger="publishing.breaker")

    # When its dependency fails every 10 s for two minutes
    for _ in range(13):
        breaker.failed(redis.exceptions.ConnectionError("refused"))
        clock.now += 10

    # Then it warned at 0, 60 and 120 s
    warned = [n for n, r in enumerate(caplog.records) if r.levelno == logging.WARNING]
    assert warned == [0, 6, 12]


def test_a_logged_failure_hides_credentials(caplog) -> None:
    breaker = CircuitBreaker(name="cache", cooldown=1.0)

    def refused_with_a_url() -> None:
        raise redis.exceptions.ConnectionError("cannot reach redis://user:s3cret@cache:6379/0")

    with pytest.raises(CircuitOpen):
        breaker.call(refused_with_a_url)

    assert "s3cret" not in caplog.text
    assert "redis://***@cache:6379/0" in caplog.text
