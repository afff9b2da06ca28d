"""RabbitMQ in place of Redis (BROKER_URL=amqp://...): the same code path end to end, and degraded mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from publishing.models import Publishing
from tests.integration.stack import SHORT_SOCKET_TIMEOUT as SOCKET_TIMEOUT
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]


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
    assert (store / str(project.owner_id) / project.slug / f"{done['id']}.tar.gz").exists()
    health = api.get(f"{stack.base_url}/api/v1/health").json()
    assert health == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.fixture
def rabbitmq_proxy(rabbitmq_url) -> Iterator[TcpProxy]:
    """The shared RabbitMQ behind a proxy of this test's own: "RabbitMQ" goes down, the real one never."""
    parts = urlsplit(rabbitmq_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    yield proxy
    proxy.stop()


def proxied(rabbitmq_url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(rabbitmq_url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"))


def test_rabbitmq_down_answers_503_fast_and_recovers_without_restart(
    rabbitmq_url, rabbitmq_proxy, queue_name, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given the service on RabbitMQ (through the proxy)
    project = make_project(f"file://{tmp_path / 'store'}")
    _, token = owner_token
    stack = make_stack(proxied(rabbitmq_url, rabbitmq_proxy), PUBLISHING_QUEUE=queue_name)
    api = stack.serve(token, worker=False)
    assert api.get(f"{stack.base_url}/api/v1/health", timeout=10).status_code == 200

    # When RabbitMQ goes away (connections dropped, new ones refused)
    rabbitmq_proxy.stop()

    # Then initiate answers 503 SERVICE_UNAVAILABLE, quickly, and leaves no row behind
    for _ in range(5):
        response, elapsed = stack.timed_initiate(api, project.pk)
        assert response.status_code == 503, response.text
        assert response.json() == {
            "code": "SERVICE_UNAVAILABLE",
            "detail": "Background job service unavailable",
        }
        assert elapsed < 15, elapsed  # functional: never the 30 s of a hang
    assert not Publishing.objects.filter(project=project).exists()
    health = requests.get(f"{stack.base_url}/api/v1/health", timeout=10)
    assert (health.status_code, health.json()["broker"]) == (503, "unavailable")

    # When RabbitMQ is back, with the web left running
    rabbitmq_proxy.start()
    stack.start_worker()

    # Then initiate succeeds again and the worker publishes it
    response = stack.initiate_until_accepted(api, project.pk)
    assert response.status_code == 202, response.text
    assert stack.wait_for(api, response.json()["id"])["status"] == "published"


def test_a_hung_rabbitmq_answers_503_without_every_request_waiting(
    rabbitmq_url, rabbitmq_proxy, queue_name, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given the service on RabbitMQ (through the proxy), with a 2 s socket timeout
    project = make_project(f"file://{tmp_path / 'store'}")
    _, token = owner_token
    stack = make_stack(
        proxied(rabbitmq_url, rabbitmq_proxy),
        PUBLISHING_QUEUE=queue_name,
        PUBLISHING_BROKER_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT),
        # Long enough that the ten requests below all fall in one open spell, however slow the machine
        PUBLISHING_BROKER_COOLDOWN="10",
    )
    api = stack.serve(token, worker=False)
    assert stack.timed_initiate(api, project.pk)[0].status_code == 202
    Publishing.objects.all().delete()

    # When RabbitMQ hangs: connections stay open, nothing answers
    rabbitmq_proxy.pause()

    # Then every initiate answers 503, and most without touching RabbitMQ (the circuit is open)
    results = [stack.timed_initiate(api, project.pk) for _ in range(10)]
    assert [r.status_code for r, _ in results] == [503] * 10, stack.logs("web")
    # Functional bounds, not speed: the first gives up at its publish deadline
    # (4 x the socket timeout), not after pika's ~20 s heartbeat failure...
    assert results[0][1] < SOCKET_TIMEOUT * 4 + 8, results
    # ...and the next ones are refused by the open circuit: none waited out the socket timeout
    assert max(elapsed for _, elapsed in results[1:]) < SOCKET_TIMEOUT, results
    assert not Publishing.objects.exclude(status__in=["published", "failed", "cancelled"]).exists()

    # When it answers again, requests succeed without a restart
    rabbitmq_proxy.resume()
    response = stack.initiate_until_accepted(api, project.pk, timeout=40)
    assert response.status_code == 202, response.text
