"""Unit tests on the stub broker: a publishing to run, what is queued, running it dry, a broker refusing."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
import redis
from django.conf import settings
from dramatiq.brokers.stub import StubBroker

from publishing.models import Publishing
from publishing.services.publishings import publishing_initiate
from publishing.tasks import build_and_submit
from tests.factories import ProjectFactory, UserFactory


def initiate() -> Publishing:
    """A publishing of a new user's new project, queued as the API would."""
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user)
    return publishing_initiate(user=user, project_id=project.pk)


def send_for(publishing: Publishing) -> None:
    """Send a message for a publishing prepared by the test (as a redelivery would)."""
    message = build_and_submit.message_with_options(
        kwargs={"publishing_id": str(publishing.pk), "project_id": "p", "user_id": "u"}
    )
    Publishing.objects.filter(pk=publishing.pk).update(message_id=message.message_id)
    build_and_submit.broker.enqueue(message)


def queued_messages(stub_broker: StubBroker, queue: str | None = None) -> list[dramatiq.Message[Any]]:
    """The messages waiting on `queue` (the builds queue unless said), oldest first."""
    name = queue or settings.PUBLISHING_QUEUE
    return [dramatiq.Message.decode(raw) for raw in stub_broker.queues[name].queue]


def drain(stub_broker: StubBroker, worker: dramatiq.Worker) -> None:
    """Run the builds, then the webhooks they announced, until both queues are empty."""
    for queue in (settings.PUBLISHING_QUEUE, settings.PUBLISHING_WEBHOOK_QUEUE):
        stub_broker.join(queue, fail_fast=False)
    worker.join()


def broker_refuses(monkeypatch: pytest.MonkeyPatch, stub_broker: StubBroker) -> list[dramatiq.Message[Any]]:
    """From now on the broker refuses every message as a Redis that is down would; those it was handed."""
    handed: list[dramatiq.Message[Any]] = []

    def refuse(message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        handed.append(message)
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(stub_broker, "enqueue", refuse)
    return handed
