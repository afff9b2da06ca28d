from __future__ import annotations

import threading

import dramatiq
import pika
import pytest
import redis
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from publishing import broker as publishing_broker
from publishing.broker import broker_kind
from publishing.exceptions import BrokerUnavailable
from publishing.redaction import redacted_url


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.TimeoutError("timed out"),
        pika.exceptions.AMQPConnectionError("refused"),
        # What pika raises when a hung RabbitMQ never finishes the handshake: not an AMQPError.
        AMQPConnectorStackTimeout("Timeout during AMQP handshake"),
        dramatiq.errors.ConnectionClosed(OSError("closed")),
        ConnectionRefusedError(),
    ],
)
def test_every_way_a_broker_fails_opens_the_broker_circuit(error: BaseException) -> None:
    def fail() -> None:
        raise error

    with pytest.raises(BrokerUnavailable):
        publishing_broker.breaker.call(fail)
    assert publishing_broker.breaker.is_open


def test_errors_that_are_not_broker_errors_pass_the_broker_circuit_untouched() -> None:
    def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        publishing_broker.breaker.call(bug)
    assert not publishing_broker.breaker.is_open


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


def test_a_broker_url_is_logged_without_its_credentials() -> None:
    assert redacted_url("amqp://guest:s3cret@mq:5672/") == "amqp://***@mq:5672/"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0?password=s3cret", "redis://127.0.0.1:6379/0?password=***"),
        (
            "rediss://cache:6380/1?username=ops&socket_timeout=5&Password=s3cret",
            "rediss://cache:6380/1?username=***&socket_timeout=5&Password=***",
        ),
        ("unix:///run/redis.sock?db=2&password=s3cret", "unix:///run/redis.sock?db=2&password=***"),
        ("redis://:s3cret@cache:6379/0?password=s3cret#top", "redis://***@cache:6379/0?password=***#top"),
    ],
)
def test_a_redis_url_is_shown_without_the_credentials_in_its_query(url: str, shown: str) -> None:
    # redis-py reads `?password=` and `?username=` as credentials too
    assert redacted_url(url) == shown


def retries(broker) -> int:
    retry = broker.client.get_retry()
    assert retry is not None
    return int(retry.get_retries())


def test_worker_processes_get_patient_redis_connections(settings) -> None:
    # Given a Redis broker built with the web tier's fail-fast client (no connection is made)
    from dramatiq.brokers.redis import RedisBroker

    from publishing.broker import make_broker
    from publishing.worker.connections import WorkerConnections

    settings.PUBLISHING_WORKER_SOCKET_TIMEOUT = 7.0
    broker = make_broker(url="redis://127.0.0.1:6399/0", socket_timeout=0.5)
    assert isinstance(broker, RedisBroker)
    assert broker.client.connection_pool.connection_kwargs["socket_timeout"] == 0.5
    assert retries(broker) == 0

    # When a worker boots on it
    WorkerConnections().before_worker_boot(broker, worker=dramatiq.Worker(broker))

    # Then its connections wait longer and retry
    kwargs = broker.client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (7.0, 7.0)
    assert retries(broker) == 5


def test_amqp_urls_get_short_timeouts_and_a_heartbeat_unless_given() -> None:
    from urllib.parse import parse_qs, urlsplit

    from publishing.broker.rabbitmq_backend import amqp_url

    query = parse_qs(urlsplit(amqp_url("amqp://guest:guest@mq:5672/?heartbeat=30", socket_timeout=0.5)).query)
    assert query["heartbeat"] == ["30"]
    assert query["socket_timeout"] == ["0.5"]
    assert query["connection_attempts"] == ["1"]


def test_a_rabbitmq_publish_that_never_confirms_gives_up_at_its_deadline(settings, monkeypatch) -> None:
    # Given RabbitMQ as the broker, hung: the publish waits for a confirmation that never comes
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    rabbit = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/")
    released = threading.Event()
    monkeypatch.setattr(rabbit, "enqueue", lambda message, delay=None: released.wait(30))
    monkeypatch.setattr(dramatiq, "get_broker", lambda: rabbit)
    settings.PUBLISHING_BROKER_SOCKET_TIMEOUT = 0.1  # the deadline is then its 2 s floor
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={}
    )

    # Then the caller gets BrokerUnavailable (the publish thread is left to pika), and the circuit opens
    try:
        with pytest.raises(BrokerUnavailable):
            publishing_broker.enqueue(message)
        assert publishing_broker.breaker.is_open
    finally:
        released.set()


class Untouchable:
    """A Redis client that fails the test when anything is asked of it."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"Redis was asked for {name}")


def test_queue_stats_are_unavailable_at_once_while_the_circuit_is_open(monkeypatch) -> None:
    # Given a Redis broker, and a circuit the broker's last failure opened
    from dramatiq.brokers.redis import RedisBroker

    from publishing import broker as publishing_broker

    redis_broker = RedisBroker(url="redis://127.0.0.1:1/0")
    redis_broker.client = Untouchable()
    monkeypatch.setattr(dramatiq, "get_broker", lambda: redis_broker)

    def refused() -> None:
        raise redis.exceptions.ConnectionError("refused")

    with pytest.raises(BrokerUnavailable):
        publishing_broker.breaker.call(refused)
    assert publishing_broker.breaker.is_open

    # When / Then the overview's read fails fast, without waiting on Redis
    with pytest.raises(BrokerUnavailable):
        publishing_broker.queue_stats()
