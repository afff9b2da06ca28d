"""Degraded mode (the broker away: 503 at once, never a hang), with a private Redis that is stopped,
frozen and started again."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from publishing.models import Publishing
from tests.integration.stack import SHORT_SOCKET_TIMEOUT

pytestmark = pytest.mark.integration

# The socket timeout the web tier is given in these tests; a request that
# waited it out on every call would take this long each.
SOCKET_TIMEOUT = SHORT_SOCKET_TIMEOUT


def test_redis_down_answers_503_fast_and_recovers_without_restart(
    private_redis, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given the service on a private Redis
    project = make_project(f"file://{tmp_path / 'store'}")
    _, token = owner_token
    stack = make_stack(private_redis.url, PUBLISHING_BROKER_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT))
    api = stack.serve(token)

    # When Redis is stopped (connections refused)
    private_redis.stop()

    # Then initiate answers 503 SERVICE_UNAVAILABLE, and leaves no row behind
    for _ in range(5):
        response, _elapsed = stack.timed_initiate(api, project.pk)
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
    private_redis.start()

    # Then initiate succeeds again (after at most the breaker's cool-down) and the worker does the job
    response = stack.initiate_until_accepted(api, project.pk)
    assert response.status_code == 202, response.text
    done = stack.wait_for(api, response.json()["id"])
    assert done["status"] == "published", done


def test_a_hung_redis_answers_503_without_every_request_waiting_out_the_timeout(
    private_redis, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given the service on a private Redis
    project = make_project(f"file://{tmp_path / 'store'}")
    _, token = owner_token
    stack = make_stack(
        private_redis.url,
        PUBLISHING_BROKER_SOCKET_TIMEOUT=str(SOCKET_TIMEOUT),
        # Long enough that the ten requests below all fall in one open spell, however slow the machine
        PUBLISHING_BROKER_COOLDOWN="10",
    )
    api = stack.serve(token, worker=False)
    assert stack.timed_initiate(api, project.pk)[0].status_code == 202
    Publishing.objects.all().delete()

    # When Redis hangs: the process is frozen, its connections stay open, nothing answers
    private_redis.pause()

    # Then every initiate answers 503; only the first one waits for the socket timeout,
    # the next ones are refused by the open circuit without touching Redis
    results = [stack.timed_initiate(api, project.pk) for _ in range(10)]
    assert [r.status_code for r, _ in results] == [503] * 10
    later = [elapsed for _, elapsed in results[1:]]
    # Functional, not a speed benchmark: a request that touched the hung Redis waited out the socket
    # timeout, so none of these nine did
    assert max(later) < SOCKET_TIMEOUT, later
    # And nothing was left pending or queued without a message
    assert not Publishing.objects.exclude(status__in=["published", "failed", "cancelled"]).exists()

    # When Redis wakes up again
    private_redis.resume()

    # Then requests succeed again, without restarting anything
    response = stack.initiate_until_accepted(api, project.pk)
    assert response.status_code == 202, response.text


def test_the_web_starts_without_redis_with_one_warning_and_answers_503(
    make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given no Redis at all where the service looks for one (a port nobody listens on)
    from publishing.redis_server import free_port

    project = make_project(f"file://{tmp_path / 'store'}")
    _, token = owner_token
    stack = make_stack(f"redis://127.0.0.1:{free_port()}/0")

    # When the web server starts
    api = stack.serve(token, worker=False)

    # Then it serves, saying once that the broker is away, and answers 503 on initiate
    response, _ = stack.timed_initiate(api, project.pk)
    assert response.status_code == 503
    assert response.json()["code"] == "SERVICE_UNAVAILABLE"
    health = requests.get(f"{stack.base_url}/api/v1/health", timeout=10)
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "database": "ok", "broker": "unavailable"}
    assert stack.logs("web", tail=None).count("unreachable at start-up") == 1
    assert not Publishing.objects.exists()
