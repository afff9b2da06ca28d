"""The broker backends keep the contract the stub keeps in the unit tests (tests/support/broker_contract.py),
on a real Redis and a real RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from publishing.broker import BrokerOperations, make_broker, operations_for
from tests.support.broker_contract import assert_the_contract

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def backend(
    request: pytest.FixtureRequest, redis_url: str, namespace: str
) -> Iterator[tuple[BrokerOperations, str]]:
    """The operations of a broker built as the settings build it, and a fresh queue on it."""
    if request.param == "redis":
        broker = make_broker(url=redis_url, namespace=namespace, socket_timeout=2)
        queue = "contract"
    else:
        broker = make_broker(url=request.getfixturevalue("rabbitmq_url"), socket_timeout=2)
        queue = request.getfixturevalue("queue_name")
    yield operations_for(broker), queue
    broker.close()


def test_the_backend_keeps_the_contract(backend: tuple[BrokerOperations, str]) -> None:
    ops, queue = backend
    assert_the_contract(ops, queue)
