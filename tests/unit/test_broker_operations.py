"""One interface, one class per backend (publishing/broker/): which backend serves a broker, and the
contract every backend keeps, here on the stub (Redis and RabbitMQ: the integration tests' twin)."""

from __future__ import annotations

import re
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from publishing import broker as publishing_broker
from publishing.broker import make_broker, operations, operations_for
from publishing.broker.rabbitmq_backend import RabbitmqOperations
from publishing.broker.redis_backend import RedisOperations
from publishing.broker.stub_backend import StubOperations
from publishing.exceptions import BrokerUnavailable
from publishing.redis_wakeup import WakingRedisBroker
from tests.support.broker_contract import assert_the_contract, dead_letters, message, reject

ROOT = Path(__file__).resolve().parents[2]


def test_the_stub_keeps_the_contract() -> None:
    assert_the_contract(operations_for(StubBroker()), "contract")


@pytest.mark.parametrize(
    ("url", "broker_type", "backend"),
    [
        ("redis://127.0.0.1:6399/0", WakingRedisBroker, RedisOperations),
        ("amqp://guest:guest@127.0.0.1:1/", RabbitmqBroker, RabbitmqOperations),
        ("stub://", StubBroker, StubOperations),
    ],
)
def test_each_url_gets_its_backends_broker_and_that_broker_its_operations(url, broker_type, backend) -> None:
    # When a broker is built for the URL (no connection is made)
    broker = make_broker(url=url)

    # Then it is that backend's broker, and its operations are that backend's
    assert type(broker) is broker_type
    assert type(operations_for(broker)) is backend


def test_dramatiqs_own_redis_broker_gets_the_redis_operations() -> None:
    broker = RedisBroker(url="redis://127.0.0.1:6399/0")
    assert type(operations_for(broker)) is RedisOperations


def test_a_broker_of_no_backend_is_a_clear_error() -> None:
    class Elsewhere(dramatiq.Broker):
        pass

    with pytest.raises(TypeError, match="register one in BACKENDS"):
        operations_for(Elsewhere())


def test_the_operations_are_built_once_per_configured_broker(stub_broker, monkeypatch) -> None:
    # Given the configured broker's operations
    first = operations()
    assert operations() is first
    assert first.broker is stub_broker

    # When another broker is configured, they follow it
    other = StubBroker()
    monkeypatch.setattr(dramatiq, "get_broker", lambda: other)
    assert operations().broker is other


def test_while_the_circuit_is_open_a_sweep_fails_fast(monkeypatch) -> None:
    # Given a dead letter on the stub, and the circuit open
    ops = operations_for(StubBroker())
    ops.broker.declare_queue("q")
    ops.enqueue(message("q", 1))
    reject(ops.broker, "q", 1)
    monkeypatch.setattr(publishing_broker.breaker, "failures", 1)
    monkeypatch.setattr(publishing_broker.breaker, "_open_until", float("inf"))

    # Then a sweep raises at once and leaves the letter
    with pytest.raises(BrokerUnavailable):
        ops.sweep_dead_letters("q", lambda letter: True, limit=10)
    monkeypatch.undo()
    assert len(dead_letters(ops, "q")) == 1


def test_only_the_broker_package_switches_on_the_broker_type() -> None:
    switch = re.compile(r"isinstance\([^)]*(Redis|Rabbitmq|Stub)Broker\b|broker_kind\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("publishing", "publisher_project")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "broker" not in path.relative_to(ROOT / folder).parts[:1]
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if switch.search(line)
    ]
    assert offenders == []
