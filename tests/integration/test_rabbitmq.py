"""RabbitMQ in place of Redis (BROKER_URL=amqp://...): the same code path, end to end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def rabbitmq_url() -> str:
    url = os.environ.get("RABBITMQ_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("RABBITMQ_URL is not set: .ci/run exports it once RabbitMQ answers")
        pytest.skip("set RABBITMQ_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) to run the RabbitMQ test")
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPError as exc:
        pytest.fail(f"RABBITMQ_URL={url} does not answer: {exc}")
    return url


@pytest.fixture
def queue_name(rabbitmq_url: str) -> Iterator[str]:
    """A queue of this test's own on the shared RabbitMQ, deleted afterwards."""
    name = f"publisher-test-{uuid.uuid4().hex[:12]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    for queue in (name, f"{name}.DQ", f"{name}.XQ"):
        channel.queue_delete(queue)
    connection.close()


def test_initiate_is_published_through_rabbitmq(
    rabbitmq_url, queue_name, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given web and worker processes on RabbitMQ
    store = tmp_path / "store"
    project = make_project(f"file://{store}")
    _, token = owner_token
    stack = make_stack(rabbitmq_url, PUBLISHING_QUEUE=queue_name)
    api = stack.serve(token)

    # When the user initiates a publishing
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text

    # Then a worker publishes it through RabbitMQ
    done = stack.wait_for(api, response.json()["id"])
    assert done["status"] == "published", done
    assert (store / project.slug / f"{done['id']}.tar.gz").exists()
    health = api.get(f"{stack.base_url}/api/v1/health").json()
    assert health == {"status": "ok", "database": "ok", "broker": "ok"}
