"""Bursts of concurrent initiates against gunicorn with two worker processes.

No Dramatiq worker runs: the queue then holds exactly what the web tier
enqueued, to be compared with the rows. Latencies are reported, never
asserted (the machine is shared).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import dramatiq
import pytest
import redis
import requests
from django.db import connection

from publishing.models import Project, Publishing
from tests.factories import ProjectFactory
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

BURST = 200
QUEUE = "publishing-builds"


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer at all (connection refused or reset, timeout)
    body: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class Burst:
    answers: list[Answer]
    wall_seconds: float

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers)

    def report(self, label: str) -> str:
        latencies = sorted(answer.seconds for answer in self.answers)
        p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
        return (
            f"{label} on {connection.vendor}: {len(self.answers)} initiates in {self.wall_seconds:.2f}s, "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms, statuses {dict(sorted(self.statuses().items()))}"
        )


def burst(stack: Stack, token: str, project_ids: list[str]) -> Burst:
    """POST one initiate per project id, all at once: one thread and one connection each."""
    url = f"{stack.base_url}/api/v1/publishing/initiate"
    start = threading.Barrier(len(project_ids) + 1)

    def initiate(project_id: str) -> Answer:
        session = stack.api(token)
        start.wait(timeout=60)
        began = time.perf_counter()
        try:
            response = session.post(url, json={"project_id": project_id}, timeout=60)
        except requests.RequestException as exc:
            return Answer(0, {"error": repr(exc)}, time.perf_counter() - began)
        finally:
            session.close()
        seconds = time.perf_counter() - began
        try:
            body = response.json()
        except ValueError:
            body = {"text": response.text[:200]}
        return Answer(response.status_code, body, seconds)

    with ThreadPoolExecutor(max_workers=len(project_ids)) as pool:
        futures = [pool.submit(initiate, project_id) for project_id in project_ids]
        start.wait(timeout=60)
        began = time.perf_counter()
        answers = [future.result() for future in futures]
        wall = time.perf_counter() - began
    return Burst(answers, wall)


@pytest.fixture
def queue(redis_url: str, namespace: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


def queued_messages(client: redis.Redis, namespace: str) -> list[dramatiq.Message[Any]]:
    """Every message waiting on the builds queue, one entry per enqueue (a duplicate shows twice)."""
    key = f"{namespace}:{QUEUE}"
    bodies = cast("list[bytes]", client.hvals(f"{key}.msgs"))
    # The list and the hash are written together by Dramatiq's enqueue script.
    assert client.llen(key) == len(bodies)
    assert client.hlen(f"{key}.DQ.msgs") == 0
    return [dramatiq.Message.decode(body) for body in bodies]


def assert_each_queued_exactly_once(publishing_ids: set[str], messages: list[dramatiq.Message[Any]]) -> None:
    """One message per publishing, the one its row names: no duplicate, none missing, no stray."""
    per_publishing = Counter(message.kwargs["publishing_id"] for message in messages)
    duplicates = {pid: n for pid, n in per_publishing.items() if n > 1}
    assert not duplicates, f"queued more than once: {duplicates}"
    assert set(per_publishing) == publishing_ids, (
        f"missing: {publishing_ids - set(per_publishing)}, stray: {set(per_publishing) - publishing_ids}"
    )
    rows = dict(Publishing.objects.filter(pk__in=publishing_ids).values_list("pk", "message_id"))
    assert {str(pk): message_id for pk, message_id in rows.items()} == {
        message.kwargs["publishing_id"]: message.message_id for message in messages
    }
    statuses = Counter(Publishing.objects.filter(pk__in=publishing_ids).values_list("status", flat=True))
    assert statuses == {"queued": len(publishing_ids)}


def test_a_burst_across_many_projects_queues_each_publishing_exactly_once(
    make_stack, redis_url: str, namespace: str, owner_token, queue: redis.Redis
) -> None:
    # Given gunicorn with two worker processes, no Dramatiq worker, and 200 projects
    user, token = owner_token
    projects = ProjectFactory.create_batch(BURST, owner=user, target_url="file:///tmp/unused")
    stack = make_stack(redis_url)
    stack.start_web(workers=2)

    # When each project is initiated at the same moment
    result = burst(stack, token, [str(project.pk) for project in projects])
    print("\n" + result.report(f"{BURST} projects"))  # noqa: T201

    # Then every request was accepted, none failed
    assert result.statuses() == {202: BURST}, [a for a in result.answers if a.status != 202][:5]
    accepted = {answer.body["id"] for answer in result.answers}
    assert len(accepted) == BURST
    assert {answer.body["status"] for answer in result.answers} == {"queued"}
    # And each publishing is on the queue exactly once, with the message its row names
    assert_each_queued_exactly_once(accepted, queued_messages(queue, namespace))
    assert Publishing.objects.count() == BURST


def test_a_burst_on_one_project_accepts_one_and_answers_conflict_to_the_rest(
    make_stack, redis_url: str, namespace: str, owner_token, queue: redis.Redis
) -> None:
    # Given gunicorn with two worker processes and one project
    user, token = owner_token
    project: Project = ProjectFactory.create(owner=user, target_url="file:///tmp/unused")
    stack = make_stack(redis_url)
    stack.start_web(workers=2)

    # When it is initiated 200 times at the same moment
    result = burst(stack, token, [str(project.pk)] * BURST)
    print("\n" + result.report(f"{BURST} on one project"))  # noqa: T201

    # Then exactly one was accepted and every other one is a conflict naming it; no 5xx
    assert result.statuses() == {202: 1, 409: BURST - 1}, result.statuses()
    (winner,) = [answer.body for answer in result.answers if answer.status == 202]
    conflicts = [answer.body for answer in result.answers if answer.status == 409]
    assert {body["code"] for body in conflicts} == {"CONFLICT"}
    assert {body.get("active_id") for body in conflicts} == {winner["id"]}
    # And only the winner is recorded and queued, once
    assert_each_queued_exactly_once({winner["id"]}, queued_messages(queue, namespace))
    assert Publishing.objects.count() == 1
