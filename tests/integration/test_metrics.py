"""Prometheus metrics from a real worker (Dramatiq's exposition server) and from the web's /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from publishing.redis_server import free_port
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration


def scrape(
    url: str, *, timeout: float = 30, **kwargs
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, sorted labels), from the first answer within `timeout`."""

    def answer() -> requests.Response | None:
        try:
            return requests.get(url, timeout=5, **kwargs)
        except requests.ConnectionError:
            return None

    response = wait_until(answer, timeout, f"{url} never answered", interval=0.2)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_worker_and_web_metrics_describe_a_publishing(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a worker with its metrics on a port of its own, and a web tier asking for a metrics token
    project = make_project(f"file://{tmp_path / 'store'}")
    _, token = owner_token
    port = free_port()
    stack = make_stack(redis_url, METRICS_TOKEN="scrape-me", PUBLISHING_RATE_LIMIT="50/60s")
    api = stack.serve(token, worker=False)
    stack.start_worker(processes=2, WORKER_METRICS_PORT=str(port), PUBLISHING_WORKER_NAME="metrics-host")

    # When one publishing runs
    response = stack.initiate(api, project.pk)
    assert stack.wait_for(api, response.json()["id"])["status"] == "published"

    # Then the worker's metrics count it: Dramatiq's own, and the pipeline's steps and outcome
    # (counted a moment after the status is written: wait for them)
    labels = (("actor_name", "build_and_submit"), ("queue_name", "publishing-builds"))
    worker = wait_until(
        lambda: (
            (samples := scrape(f"http://127.0.0.1:{port}/metrics"))
            and ("dramatiq_messages_total", labels) in samples
            and samples
        ),
        30,
        "the worker's metrics never counted the message",
        interval=0.2,
    )
    assert worker[("dramatiq_messages_total", labels)] == 1
    assert worker[("publisher_attempts_total", (("outcome", "published"),))] == 1
    for step in ("checkout", "build", "package", "submit"):
        assert worker[("publisher_pipeline_step_seconds_count", (("outcome", "ok"), ("step", step)))] == 1
    # (one scrape covers both worker processes: counts are not doubled or split)

    # And the web tier's /metrics, with the token, shows the state of the system
    assert requests.get(f"{stack.base_url}/metrics", timeout=5).status_code == 401
    web = scrape(f"{stack.base_url}/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert web[("publisher_publishings", (("status", "published"),))] == 1
    assert web[("publisher_publishings", (("status", "queued"),))] == 0
    assert web[("publisher_up", (("dependency", "broker"),))] == 1
    assert web[("publisher_up", (("dependency", "database"),))] == 1
    assert web[("publisher_queue_messages", (("queue", "publishing-builds"), ("state", "ready")))] == 0
    assert web[("publisher_workers_alive", ())] == 2
    assert web[("publisher_rate_limit_starts", ())] == 1
    assert web[("publisher_rate_limit_capacity", ())] == 50

    # When the worker stops cleanly, it leaves the list of live workers at once
    stack.signal("worker", 15)
    stack.wait_exit("worker", timeout=60)
    web = scrape(f"{stack.base_url}/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert web[("publisher_workers_alive", ())] == 0
