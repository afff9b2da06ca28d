"""Requeueing dead letters from the admin, on dead letters a real broker made (Redis, then RabbitMQ)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import dramatiq
import pika
import pytest
import redis
from django.contrib.messages import get_messages
from django.test import Client
from dramatiq.brokers.redis import RedisBroker

from publishing import broker as publishing_broker
from publishing.models import Publishing
from tests.factories import PublishingFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
QUEUE = "publishing-builds"
REQUEUE = "/admin/publishing/publishing/overview/requeue-dead-letters/"


@pytest.fixture
def redis_broker(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisBroker]:
    """Dramatiq's Redis broker in a namespace of the test's own, as the configured broker."""
    broker = RedisBroker(client=redis.Redis.from_url(redis_url, socket_timeout=2), namespace=namespace)
    broker.declare_queue(QUEUE)
    monkeypatch.setattr(dramatiq, "get_broker", lambda: broker)
    yield broker
    broker.close()


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    return client


def message(actor: str = "build_and_submit", **kwargs: str) -> dramatiq.Message[None]:
    return dramatiq.Message[None](queue_name=QUEUE, actor_name=actor, args=(), kwargs=kwargs, options={})


def dead_letter_on_redis(broker: RedisBroker, sent: dramatiq.Message[None]) -> None:
    """Enqueue, fetch and reject a message: what a worker does with a job that fails for good."""
    broker.enqueue(sent)
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    try:
        for fetched in consumer:
            if fetched is not None:
                consumer.nack(fetched)
                return
    finally:
        consumer.close()


def dead_on_redis(broker: RedisBroker) -> list[str]:
    dead = f"{broker.namespace}:{QUEUE}.XQ"
    bodies = cast("list[bytes]", broker.client.hvals(f"{dead}.msgs"))
    assert broker.client.zcard(dead) == len(bodies)
    return sorted(dramatiq.Message.decode(body).message_id for body in bodies)


def test_requeue_retries_and_drops_dead_letters_that_redis_holds(
    redis_broker: RedisBroker, staff_client: Client
) -> None:
    # Given, dead-lettered in Redis: a failed publishing's job, a published one's, and another actor's
    failed = PublishingFactory.create(failed=True)
    published = PublishingFactory.create(published=True)
    foreign = message("someone_elses_actor")
    for sent in (
        message(publishing_id=str(failed.pk)),
        message(publishing_id=str(published.pk)),
        foreign,
    ):
        dead_letter_on_redis(redis_broker, sent)
    assert len(dead_on_redis(redis_broker)) == 3

    # When staff requeue the dead letters
    response = staff_client.post(REQUEUE)

    # Then the failed one is queued again, and only the foreign letter is left in Redis
    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.status == "queued"
    assert dead_on_redis(redis_broker) == [foreign.message_id]
    reported = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert reported[0] == ("warning", "Dead letters: 1 requeued, 1 dropped as obsolete, 1 left.")

    # And a second press finds nothing left to do
    again = staff_client.post(REQUEUE)
    assert "Dead letters: 0 requeued, 0 dropped as obsolete, 1 left." in [
        str(m) for m in get_messages(again.wsgi_request)
    ]
    assert Publishing.objects.get(pk=failed.pk).message_id == failed.message_id


def test_a_sweep_on_redis_removes_only_what_it_is_told(redis_broker: RedisBroker) -> None:
    sent = [message(n=str(n)) for n in range(5)]
    for each in sent:
        dead_letter_on_redis(redis_broker, each)

    sweep = publishing_broker.sweep_dead_letters(QUEUE, lambda m: int(m.kwargs["n"]) % 2 == 0)

    assert (sweep.seen, sweep.removed) == (5, 3)
    assert dead_on_redis(redis_broker) == sorted([sent[1].message_id, sent[3].message_id])


def on_rabbitmq(url: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """RabbitMQ at `url` as the configured broker (built as the settings build it; it connects lazily)."""
    settings.BROKER_URL = url
    rabbitmq = publishing_broker.make_broker(url=url)
    monkeypatch.setattr(dramatiq, "get_broker", lambda: rabbitmq)


@pytest.mark.rabbitmq
def test_a_sweep_on_rabbitmq_removes_only_what_it_is_told_and_keeps_the_rest(
    rabbitmq_url: str, queue_name: str, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given RabbitMQ as the broker, and five messages in the queue's dead-letter queue
    on_rabbitmq(rabbitmq_url, settings, monkeypatch)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.queue_declare(f"{queue_name}.XQ", durable=True)
    sent = [
        dramatiq.Message[None](
            queue_name=queue_name, actor_name="build_and_submit", args=(), kwargs={"n": n}, options={}
        )
        for n in range(5)
    ]
    for each in sent:
        channel.basic_publish("", f"{queue_name}.XQ", each.encode())

    # When a sweep removes the even ones
    sweep = publishing_broker.sweep_dead_letters(queue_name, lambda m: m.kwargs["n"] % 2 == 0)

    # Then the odd ones are still there, and nothing else
    assert (sweep.seen, sweep.removed) == (5, 3)
    left = []
    while True:
        method, _, body = channel.basic_get(f"{queue_name}.XQ", auto_ack=True)
        if method is None:
            break
        left.append(dramatiq.Message.decode(body).message_id)
    connection.close()
    assert sorted(left) == sorted([sent[1].message_id, sent[3].message_id])


@pytest.mark.rabbitmq
def test_a_sweep_on_rabbitmq_without_a_dead_letter_queue_finds_nothing(
    rabbitmq_url: str, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_rabbitmq(rabbitmq_url, settings, monkeypatch)
    sweep = publishing_broker.sweep_dead_letters(f"publisher-test-{uuid.uuid4().hex[:12]}", lambda m: True)
    assert (sweep.seen, sweep.removed) == (0, 0)
