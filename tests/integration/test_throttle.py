"""The initiate and login throttles on a real Redis: one budget for every web process, stored as data,
not pickles."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.core.cache import caches
from rest_framework.test import APIClient

from publisher_project.settings import base
from publishing.api import throttling
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_throttle(settings: Any, redis_url: str, namespace: str) -> Any:
    """The production throttle cache, on the test Redis under the test's own key prefix, at 2 a minute."""
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {**base.CACHES["throttle"], "LOCATION": redis_url, "KEY_PREFIX": namespace},
    }
    settings.PUBLISHING_INITIATE_RATE = "2/min"
    throttling.breaker.reset()
    yield settings
    caches["throttle"].close()
    throttling.breaker.reset()


def test_the_budget_is_kept_in_redis_as_json(
    db, stub_broker, user, redis_throttle, redis_url, namespace
) -> None:
    # Given alice with three projects, and a second "web process" (another client, the same Redis)
    first, second = APIClient(), APIClient()
    first.force_authenticate(user)
    second.force_authenticate(user)
    projects = ProjectFactory.create_batch(3, owner=user)

    # When she initiates twice through one process and once through the other
    statuses = [
        client.post("/api/v1/publishing/initiate", {"project_id": str(project.pk)}, format="json").status_code
        for client, project in zip((first, first, second), projects, strict=True)
    ]

    # Then the third is refused: the count is shared
    assert statuses == [202, 202, 429]
    # And Redis holds the history as JSON (a pickle there would run in the web process when read)
    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys(f"{namespace}:*throttle_publishing-start_{user.pk}")
    history = json.loads(client.get(key) or b"")
    assert len(history) == 2
    assert all(isinstance(moment, float) for moment in history)


def test_failed_logins_are_counted_in_redis_for_every_web_process(
    db, redis_throttle, redis_url, namespace, monkeypatch
) -> None:
    # Given 2 failed logins an hour per username, at a moment well inside the hour, and alice
    redis_throttle.LOGIN_FAILURES_PER_USERNAME = (2, 3600.0)
    redis_throttle.LOGIN_FAILURES_PER_ADDRESS = None
    throttling.login_breaker.reset()
    monkeypatch.setattr(throttling, "_clock", lambda: 1_800_000_100.0)
    alice = UserFactory.create(username="alice")
    alice.set_password("right-password")
    alice.save()

    # When two "web processes" (clients from two addresses, one Redis) each fail once for alice
    def token(address: str, password: str) -> int:
        client = APIClient(REMOTE_ADDR=address)
        body = {"username": "alice", "password": password}
        return client.post("/api/v1/auth/token/", body, format="json").status_code

    failures = [token("203.0.113.1", "guess"), token("203.0.113.2", "guess")]

    # Then a third, with her password, is throttled: the count is shared
    assert failures == [400, 400]
    assert token("203.0.113.3", "right-password") == 429
    # And Redis holds a plain counter (never the username) that expires with the hour
    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys(f"{namespace}:*login:username:*")
    assert b"alice" not in key
    assert client.get(key) == b"3"
    assert 0 < client.ttl(key) <= 3601
    assert throttling.login_breaker.failures == 0
