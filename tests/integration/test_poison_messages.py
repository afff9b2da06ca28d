"""Poison messages on a real broker and a real worker: dead-lettered, logged, and the queue keeps moving.

A well-formed message for a publishing that no longer exists (a ghost of an initiate whose send timed
out) is no poison: it is acked and dropped with one INFO line.

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

from publishing.models import Publishing
from publishing.redis_server import RedisServer
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
    unknown_delivery = str(uuid.uuid4())
    not_found = {
        "unknown delivery": target.send(
            "deliver_webhook", {"delivery_id": unknown_delivery}, queue_name=target.webhooks
        ),
    }
    # No poison: a well-formed message for a publishing that no longer exists is dropped quietly
    unknown_publishing = str(uuid.uuid4())
    ghost = target.send(build, ids(publishing_id=unknown_publishing))
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
    not_found_line = f"webhook delivery {unknown_delivery} not found; message dead-lettered"
    assert len([line for line in errors if not_found_line in line]) == 1, errors
    assert sum("undefined actor 'no_such_actor'" in line for line in errors) == 1
    assert len(errors) == len(poison), "\n".join(errors)
    assert not any(f"Retrying message '{message_id}'" in log for message_id in [*poison.values(), ghost])

    # And the message for no publishing left one INFO line and no dead letter
    assert ghost not in dead_letters()
    assert f"message {ghost} for publishing {unknown_publishing}, which no longer exists: dropped" in log
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


def test_a_ghost_message_of_an_initiate_that_timed_out_is_dropped_quietly(
    private_redis: RedisServer, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a web server on a Redis of the test's own, with two projects, one of them queued
    store = tmp_path / "store"
    queued_project, ghost_project = make_project(f"file://{store}"), make_project(f"file://{store}")
    _, token = owner_token
    stack = make_stack(private_redis.url, PUBLISHING_BROKER_SOCKET_TIMEOUT="1")
    api = stack.serve(token, worker=False)
    queued = stack.initiate(api, queued_project.pk)
    assert queued.status_code == 202, queued.text

    # When Redis hangs during an initiate: the send times out, initiate answers 503 and deletes the
    # row, but Redis takes the message when it wakes up (a ghost)
    private_redis.pause()
    try:
        refused = stack.initiate(api, ghost_project.pk)
    finally:
        private_redis.resume()
    assert refused.status_code == 503, refused.text
    assert not Publishing.objects.filter(project=ghost_project).exists()
    client = redis.Redis.from_url(private_redis.url, socket_timeout=5)

    def both_messages() -> list[bytes] | None:
        bodies = cast("list[bytes]", client.hvals(f"{stack.env['BROKER_NAMESPACE']}:{BUILDS}.msgs"))
        return bodies if len(bodies) == 2 else None

    bodies = wait_until(both_messages, 10, "the ghost message never reached Redis", interval=0.1)
    messages = [dramatiq.Message.decode(body) for body in bodies]
    (ghost,) = [m for m in messages if m.kwargs["publishing_id"] != queued.json()["id"]]
    ghost_id = ghost.kwargs["publishing_id"]

    # And a worker starts
    stack.start_worker()

    # Then the queued publishing is published, and the ghost is dropped with one INFO line naming it
    done = stack.wait_for(api, queued.json()["id"])
    assert done["status"] == "published", done
    line = f"message {ghost.message_id} for publishing {ghost_id}, which no longer exists: dropped"
    wait_until(lambda: line in stack.logs("worker", tail=None), 30, lambda: stack.all_logs(), interval=0.2)
    log = stack.logs("worker", tail=None)
    (dropped,) = [entry for entry in log.splitlines() if line in entry]
    assert " INFO " in dropped
    # And nothing else: no ERROR at all, no WARNING about it, no retry, no dead letter, nothing queued
    # (another test's sandbox may leave build processes for this worker's start-up sweep: a WARNING)
    assert not [entry for entry in log.splitlines() if " ERROR " in entry], log
    assert not [e for e in log.splitlines() if " WARNING " in e and (ghost.message_id in e or ghost_id in e)]
    assert f"Retrying message '{ghost.message_id}'" not in log
    namespace = stack.env["BROKER_NAMESPACE"]
    assert client.hlen(f"{namespace}:{BUILDS}.XQ.msgs") == 0
    assert client.hlen(f"{namespace}:{BUILDS}.msgs") == 0
    assert Publishing.objects.count() == 1
