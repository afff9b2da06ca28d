"""Poison messages on a real broker and a real worker: dead-lettered, logged, and the queue keeps moving.

On Redis, then on RabbitMQ: the messages go straight onto the queues the
worker consumes, as another producer (or a bug of ours) could put them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dramatiq
import pika
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from publishing.redis_wakeup import WakingRedisBroker
from tests.integration.stack import Stack
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

BUILDS = "publishing-builds"


@dataclass
class Target:
    """Where the test puts messages, and how it reads the dead letters back."""

    stack: Stack
    producer: dramatiq.Broker
    builds: str
    dead_letter_ids: Callable[[str], set[str]]

    @property
    def webhooks(self) -> str:
        return f"{self.builds}-webhooks"

    def send(self, actor_name: str, kwargs: Any, *, queue_name: str | None = None) -> str:
        message = dramatiq.Message[Any](
            queue_name=queue_name or self.builds, actor_name=actor_name, args=(), kwargs=kwargs, options={}
        )
        self.producer.enqueue(message)
        return message.message_id


def _redis_dead_letters(client: redis.Redis, namespace: str) -> Callable[[str], set[str]]:
    def read(queue: str) -> set[str]:
        bodies = cast("list[bytes]", client.hvals(f"{namespace}:{queue}.XQ.msgs"))
        return {dramatiq.Message.decode(body).message_id for body in bodies}

    return read


def _rabbitmq_dead_letters(url: str) -> Callable[[str], set[str]]:
    def read(queue: str) -> set[str]:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        ids: set[str] = set()
        try:
            channel = connection.channel()
            try:
                channel.queue_declare(f"{queue}.XQ", passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return ids  # nothing dead-lettered yet
            while True:
                method, _properties, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
                if method is None:
                    return ids
                ids.add(dramatiq.Message.decode(body).message_id)
        finally:
            # Never acknowledged: closing hands every letter back to the queue.
            connection.close()

    return read


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def target(request: pytest.FixtureRequest, make_stack, redis_url: str, namespace: str) -> Iterator[Target]:
    if request.param == "redis":
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        producer: dramatiq.Broker = WakingRedisBroker(client=client, namespace=namespace)
        stack = make_stack(redis_url)
        yield Target(stack, producer, BUILDS, _redis_dead_letters(client, namespace))
    else:
        url = request.getfixturevalue("rabbitmq_url")
        queue = request.getfixturevalue("queue_name")
        producer = RabbitmqBroker(url=url)
        stack = make_stack(url, PUBLISHING_QUEUE=queue)
        yield Target(stack, producer, queue, _rabbitmq_dead_letters(url))
    producer.close()


def ids(**changes: Any) -> dict[str, Any]:
    """Well-formed build_and_submit arguments for a publishing no row has, with `changes`."""
    return {"publishing_id": str(uuid.uuid4()), "project_id": str(uuid.uuid4()), "user_id": "1", **changes}


def test_poison_messages_are_dead_lettered_and_the_worker_goes_on(
    target: Target, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a web server and a worker
    store = tmp_path / "store"
    project = make_project(f"file://{store}")
    _, token = owner_token
    stack = target.stack
    api = stack.serve(token)

    # When poison messages reach its queues, ahead of a good publishing
    build = "build_and_submit"
    invalid = {
        "missing argument": target.send(build, {"publishing_id": str(uuid.uuid4())}),
        "extra argument": target.send(build, ids(priority="high")),
        "int id": target.send(build, ids(publishing_id=42)),
        "None id": target.send(build, ids(publishing_id=None)),
        "dict id": target.send(build, ids(publishing_id={"id": str(uuid.uuid4())})),
        "not a UUID": target.send(build, ids(publishing_id="../../etc/passwd")),
        "kwargs not a mapping": target.send(build, [str(uuid.uuid4())]),
        "bad delivery id": target.send("deliver_webhook", {"delivery_id": 7}, queue_name=target.webhooks),
    }
    unknown_publishing = str(uuid.uuid4())
    unknown_delivery = str(uuid.uuid4())
    not_found = {
        "unknown publishing": target.send(build, ids(publishing_id=unknown_publishing)),
        "unknown delivery": target.send(
            "deliver_webhook", {"delivery_id": unknown_delivery}, queue_name=target.webhooks
        ),
    }
    unknown_actor = target.send("no_such_actor", ids())
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text

    # Then the good publishing is published
    done = stack.wait_for(api, response.json()["id"])
    assert done["status"] == "published", done

    # And every poison message is dead-lettered (none retried), with the worker still alive
    poison = {**invalid, **not_found, "unknown actor": unknown_actor}
    webhook_messages = {invalid["bad delivery id"], not_found["unknown delivery"]}

    def dead_letters() -> set[str]:
        return target.dead_letter_ids(target.builds) | target.dead_letter_ids(target.webhooks)

    wait_until(
        lambda: set(poison.values()) <= dead_letters(),
        30,
        lambda: (
            f"not dead-lettered: {set(poison) - {n for n, m in poison.items() if m in dead_letters()}}\n"
            f"{stack.all_logs()}"
        ),
        interval=0.2,
    )
    assert target.dead_letter_ids(target.webhooks) == webhook_messages
    assert stack.processes["worker"].poll() is None, stack.all_logs()

    # And each left one ERROR line saying why, and no retry
    log = stack.logs("worker", tail=None)
    errors = [line for line in log.splitlines() if " ERROR " in line]
    for name, message_id in invalid.items():
        lines = [line for line in errors if f"invalid message {message_id}" in line]
        assert len(lines) == 1, (name, lines)
    for name, missing_id in (("publishing", unknown_publishing), ("webhook delivery", unknown_delivery)):
        lines = [line for line in errors if f"{name} {missing_id} not found; message dead-lettered" in line]
        assert len(lines) == 1, (name, lines)
    assert sum("undefined actor 'no_such_actor'" in line for line in errors) == 1
    assert len(errors) == len(poison), "\n".join(errors)
    assert not any(f"Retrying message '{message_id}'" in log for message_id in poison.values())
    assert "Consumer encountered" not in log
    assert "Logging error" not in log


def test_an_undecodable_body_is_dead_lettered_without_holding_up_the_messages_fetched_with_it(
    make_stack, redis_url: str, namespace: str, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a worker that sits idle, and a body on its queue that is no message at all, ahead of a good one
    project = make_project(f"file://{tmp_path / 'store'}")
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.api(token)
    stack.start_web()
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    queue = f"{namespace}:{BUILDS}"
    client.hset(f"{queue}.msgs", "garbage-1", b"\x00 not json {")
    client.rpush(queue, "garbage-1")
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text

    # When a worker fetches both in one go
    stack.start_worker()

    # Then the good one is published, the body is a dead letter, and the consumer never restarted
    done = stack.wait_for(api, response.json()["id"], timeout=60)
    assert done["status"] == "published", done
    assert client.hget(f"{queue}.XQ.msgs", "garbage-1") == b"\x00 not json {"
    log = stack.logs("worker", tail=None)
    assert "undecodable message garbage-1 on publishing-builds dead-lettered without running" in log
    assert "Consumer encountered" not in log
