"""Webhooks with real processes: a local receiver, the web server and a rundramatiq worker.

One signed delivery per terminal status; a receiver answering 500 is retried
(on Redis and on RabbitMQ); the reconciler reads a real Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq
import pika
import pytest
import redis
from django.conf import settings
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker

from publishing import broker as publishing_broker
from publishing.models import WebhookDelivery
from publishing.services import webhooks
from tests.factories import ProjectFactory, PublishingFactory
from tests.integration.stack import Stack
from tests.support.http import ScriptedReceiver
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

SECRET = "integration-signing-key"
# Short retries: the 500 must be retried within the test's patience.
FAST_RETRIES = {"PUBLISHING_WEBHOOK_MIN_BACKOFF_MS": "100", "PUBLISHING_WEBHOOK_MAX_BACKOFF_MS": "500"}


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    """A webhook receiver on loopback answering 200, recording what it got."""
    with ScriptedReceiver(path="/hooks") as hook:
        yield hook


def signature_ok(headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check: HMAC-SHA256 of the raw body with the shared secret, compared in constant time."""
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("X-Publisher-Signature", ""))


def wait_for_rows(predicate: Callable[[], bool], stack: Stack, *, timeout: float = 30) -> None:
    wait_until(
        predicate,
        timeout,
        lambda: f"deliveries never got there: {list(WebhookDelivery.objects.values())}\n{stack.all_logs()}",
        interval=0.1,
    )


def test_each_terminal_status_reaches_the_receiver_once_signed(
    redis_url, make_stack, make_project, owner_token, receiver, tmp_path: Path
) -> None:
    # Given three projects with the same webhook: one publishes, one's build fails, one's build is slow
    store = f"file://{tmp_path / 'store'}"
    hook = {"webhook_url": receiver.url, "webhook_secret": SECRET}
    projects = {
        "published": make_project(store, slug="ok", name="OK", **hook),
        "failed": make_project(
            store, build_args="--sleep not-a-number", slug="broken", name="Broken", **hook
        ),
        "cancelled": make_project(store, build_args="--sleep 30", slug="slow", name="Slow", **hook),
    }
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token, worker=False)
    stack.start_worker(threads=4)

    # When all three are initiated and the slow one is cancelled
    ids = {status: stack.initiate(api, project.pk).json()["id"] for status, project in projects.items()}
    response = api.post(f"{stack.base_url}/api/v1/publishing/{ids['cancelled']}/cancel", timeout=10)
    assert response.status_code == 200, response.text
    for status, publishing_id in ids.items():
        assert stack.wait_for(api, publishing_id)["status"] == status

    # Then the receiver got one delivery per terminal status, each signed with the project's secret
    received = receiver.wait_for(3, context=stack.all_logs)
    by_event = {r.headers["X-Publisher-Event"]: (r.headers, r.body) for r in received}
    assert sorted(by_event) == ["publishing.cancelled", "publishing.failed", "publishing.published"]
    for status, publishing_id in ids.items():
        headers, body = by_event[f"publishing.{status}"]
        assert signature_ok(headers, body)
        assert headers["Content-Type"] == "application/json"
        payload = json.loads(body)
        assert payload["event"] == f"publishing.{status}"
        assert payload["delivery"] == headers["X-Publisher-Delivery"]
        assert (payload["publishing"]["id"], payload["publishing"]["status"]) == (publishing_id, status)
        assert payload["project"]["slug"] == projects[status].slug
    assert by_event["publishing.failed"][1].count(b"BUILD_FAILED") == 1
    # And each is recorded as delivered after one POST, and never sent twice
    wait_for_rows(lambda: WebhookDelivery.objects.filter(state="delivered").count() == 3, stack)
    assert set(WebhookDelivery.objects.values_list("attempts", "response_status")) == {(1, 200)}
    time.sleep(1)
    assert len(receiver.received()) == 3


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_stack(
    request: pytest.FixtureRequest, make_stack: Callable[..., Stack], redis_url: str
) -> Iterator[Callable[..., Stack]]:
    """conftest's make_broker_stack; on RabbitMQ it also deletes the webhook queues named after the test's."""
    if request.param == "redis":
        yield lambda **env: make_stack(redis_url, **env)
        return
    url = request.getfixturevalue("rabbitmq_url")
    queue = request.getfixturevalue("queue_name")
    stacks: list[Stack] = []

    def make(**env: str) -> Stack:
        stack = make_stack(url, PUBLISHING_QUEUE=queue, **env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()  # first: a running worker would declare them again
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for name in (f"{queue}-webhooks", f"{queue}-webhooks.DQ", f"{queue}-webhooks.XQ"):
        channel.queue_delete(name)
    connection.close()


def test_a_receiver_answering_500_is_retried_until_delivered(
    broker_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a receiver that answers 500 once, then 200
    with ScriptedReceiver(path="/hooks", statuses=[500]) as hook:
        project = make_project(f"file://{tmp_path / 'store'}", webhook_url=hook.url, webhook_secret=SECRET)
        _, token = owner_token
        stack = broker_stack(**FAST_RETRIES)
        api = stack.serve(token)

        # When a publishing is published
        done = stack.wait_for(api, stack.initiate(api, project.pk).json()["id"])
        assert done["status"] == "published", done

        # Then the delivery was POSTed again after the 500, the same signed bytes each time
        (first, second) = hook.wait_for(2, context=stack.all_logs)[:2]
        assert (first.headers, first.body) == (second.headers, second.body)
        assert signature_ok(first.headers, first.body)
        wait_for_rows(lambda: WebhookDelivery.objects.filter(state="delivered").exists(), stack)
        delivery = WebhookDelivery.objects.get()
        assert (delivery.attempts, delivery.response_status, delivery.last_error) == (2, 200, "")
        assert delivery.body.encode() == first.body
        assert "will retry" in stack.logs("worker", tail=None)


@pytest.mark.django_db
def test_reconcile_sends_again_what_redis_lost_and_leaves_waiting_messages_alone(
    redis_url, namespace, monkeypatch
) -> None:
    # Given this process's broker on a real Redis
    redis_broker = RedisBroker(client=redis.Redis.from_url(redis_url), namespace=namespace)
    monkeypatch.setattr(dramatiq, "get_broker", lambda: redis_broker)
    project = ProjectFactory.create(webhook_url="https://hooks.example.com/x", webhook_secret=SECRET)
    publishing = PublishingFactory.create(failed=True, project=project)
    long_ago = timezone.now() - timedelta(hours=1)

    def delivery(message_id: str) -> WebhookDelivery:
        return WebhookDelivery.objects.create(
            publishing=publishing,
            url=project.webhook_url,
            event="publishing.failed",
            body="{}",
            message_id=message_id,
            updated_at=long_ago,
        )

    # And a delivery whose message Redis lost, one whose message waits in the delay queue for its retry
    lost = delivery("lost-with-redis-data")
    waiting = delivery("")
    retry = webhooks._message(waiting.pk)
    WebhookDelivery.objects.filter(pk=waiting.pk).update(message_id=retry.message_id)
    redis_broker.enqueue(retry, delay=60_000)

    # When the reconciler runs
    assert webhooks.deliveries_reconcile() == 1

    # Then only the lost one got a new message, which Redis now holds
    lost.refresh_from_db()
    assert lost.message_id not in ("", "lost-with-redis-data")
    assert WebhookDelivery.objects.get(pk=waiting.pk).message_id == retry.message_id
    assert publishing_broker.live_message_ids(settings.PUBLISHING_WEBHOOK_QUEUE) == {
        lost.message_id,
        retry.message_id,
    }
