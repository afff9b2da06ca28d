"""Degraded mode (SPEC §7) with a private Redis that is stopped, frozen and started again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from publishing.models import Publishing
from publishing.redis_server import RedisServer

pytestmark = pytest.mark.integration

# The socket timeout the web tier is given in these tests; a request that
# waited it out on every call would take this long each.
SOCKET_TIMEOUT = 2.0


def initiate(stack, api, project_id: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = api.post(
        f"{stack.base_url}/api/v1/publishing/initiate", json={"project_id": project_id}, timeout=30
    )
    return response, time.monotonic() - started


def test_redis_down_answers_503_fast_and_recovers_without_restart(
    make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given the service on a private Redis
    redis_server = RedisServer(tmp_path / "private-redis").start()
    try:
        project = make_project(f"file://{tmp_path / 'store'}")
        _, token = owner_token
        stack = make_stack(redis_server.url, PUBLISHING_BROKER_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT))
        stack.start_web()
        stack.start_worker()
        api = stack.api(token)

        # When Redis is stopped (connections refused)
        redis_server.stop()

        # Then initiate answers 503 SERVICE_UNAVAILABLE, and leaves no row behind
        for _ in range(5):
            response, _elapsed = initiate(stack, api, str(project.pk))
            assert response.status_code == 503, response.text
            assert response.json() == {
                "code": "SERVICE_UNAVAILABLE",
                "detail": "Background job service unavailable",
            }
        assert not Publishing.objects.filter(project=project).exists()
        health = requests.get(f"{stack.base_url}/api/v1/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["broker"] == "unavailable"

        # When Redis is started again on the same port, with the web and worker left running
        redis_server.start()

        # Then initiate succeeds again (after at most the breaker's cool-down) and the job is done
        deadline = time.monotonic() + 20
        while True:
            response, _ = initiate(stack, api, str(project.pk))
            if response.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert response.status_code == 202, response.text
        done = stack.wait_for(api, response.json()["id"])
        assert done["status"] == "published", done
    finally:
        redis_server.stop()


def test_a_hung_redis_answers_503_without_every_request_waiting_out_the_timeout(
    make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given the service on a private Redis
    redis_server = RedisServer(tmp_path / "private-redis").start()
    try:
        project = make_project(f"file://{tmp_path / 'store'}")
        _, token = owner_token
        stack = make_stack(
            redis_server.url,
            PUBLISHING_BROKER_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT),
            PUBLISHING_BROKER_COOLDOWN="30",
        )
        stack.start_web()
        api = stack.api(token)
        assert initiate(stack, api, str(project.pk))[0].status_code == 202
        Publishing.objects.all().delete()

        # When Redis hangs: the process is frozen, its connections stay open, nothing answers
        redis_server.pause()

        # Then every initiate answers 503; only the first one waits for the socket timeout,
        # the next ones are refused by the open circuit without touching Redis
        results = [initiate(stack, api, str(project.pk)) for _ in range(10)]
        assert [r.status_code for r, _ in results] == [503] * 10
        later = [elapsed for _, elapsed in results[1:]]
        # Functional, not a speed benchmark: had each request waited out the socket
        # timeout, these nine would take 9 x 2 s.
        assert sum(later) < SOCKET_TIMEOUT * 2, later
        # And nothing was left pending or queued without a message
        assert not Publishing.objects.exclude(status__in=["published", "failed", "cancelled"]).exists()
    finally:
        redis_server.stop()
