"""Metrics: what the worker records about attempts, and what GET /metrics shows."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from publishing import metrics, selectors
from publishing.broker import QueueStats
from publishing.exceptions import PermanentJobError, TransientJobError
from tests.factories import PublishingFactory
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain, initiate

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """Worker-side metrics recorded into a registry of this test's own."""
    registry = CollectorRegistry()
    metrics.install(metrics.AppMetrics.create(registry))
    yield registry
    metrics.install(None)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_attempt_outcomes_and_step_timings_are_counted(stub_broker, worker, registry) -> None:
    # Given one job that publishes after a retry, and one that fails for good
    ScriptedPipeline.reset(TransientJobError("HTTP 503", code="TARGET_UNAVAILABLE"))
    initiate()
    drain(stub_broker, worker)
    ScriptedPipeline.reset(PermanentJobError("HTTP 400", code="TARGET_REJECTED"))
    initiate()
    drain(stub_broker, worker)

    # Then each attempt's outcome is counted
    assert sample(registry, "publisher_attempts_total", outcome="published") == 1
    assert sample(registry, "publisher_attempts_total", outcome="retry") == 1
    assert sample(registry, "publisher_attempts_total", outcome="failed") == 1
    # And each step was timed: three checkouts went well, two of three submits failed
    assert sample(registry, "publisher_pipeline_step_seconds_count", step="checkout", outcome="ok") == 3
    assert sample(registry, "publisher_pipeline_step_seconds_count", step="submit", outcome="ok") == 1
    assert sample(registry, "publisher_pipeline_step_seconds_count", step="submit", outcome="error") == 2


def test_nothing_is_recorded_where_no_worker_booted(stub_broker, worker, registry) -> None:
    # Given metrics that were installed once, then taken away (the web tier, or a worker without metrics)
    metrics.install(None)

    # When a job runs, through every step
    publishing = initiate()
    drain(stub_broker, worker)

    # Then it ran as usual
    publishing.refresh_from_db()
    assert publishing.status == "published"
    # And nothing was recorded: no attempt counted, no step timed
    recorded = [
        sample
        for family in registry.collect()
        for sample in family.samples
        if sample.name.endswith(("_total", "_count")) and sample.value
    ]
    assert recorded == []


def test_dramatiqs_hooks_are_quiet_in_a_process_that_never_booted(stub_broker) -> None:
    # Given the middleware as the web tier has it: built, never booted
    middleware = metrics.WorkerMetrics()
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={"retries": 1}
    )
    # Then a retried message's enqueue (which Dramatiq's own would count) does not fail
    middleware.after_enqueue(stub_broker, message, None)
    middleware.after_nack(stub_broker, MessageProxy(message))


def test_each_worker_run_gets_a_clean_metrics_folder(settings, tmp_path) -> None:
    settings.VAR_DIR = tmp_path
    settings.WORKER_METRICS_PORT = 9300
    settings.WORKER_METRICS_HOST = "0.0.0.0"  # noqa: S104 - as in a container
    settings.PUBLISHING_WORKER_NAME = "host-a"
    stale = tmp_path / "metrics" / "host-a-9300" / "counter_123.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old counts")

    env = metrics.worker_metrics_environment()

    assert env == {
        "dramatiq_prom_db": str(stale.parent),
        "dramatiq_prom_host": "0.0.0.0",  # noqa: S104
        "dramatiq_prom_port": "9300",
        "PROMETHEUS_MULTIPROC_DIR": str(stale.parent),
    }
    assert list(stale.parent.iterdir()) == []
    settings.WORKER_METRICS_PORT = 0
    assert metrics.worker_metrics_environment() == {}


def scrape(client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def test_web_metrics_count_publishings_by_status(client, stub_broker, settings) -> None:
    settings.METRICS_TOKEN = ""
    PublishingFactory.with_status("published")
    PublishingFactory.with_status("published")
    PublishingFactory.with_status("queued")

    samples = scrape(client)

    assert samples[("publisher_publishings", (("status", "published"),))] == 2
    assert samples[("publisher_publishings", (("status", "queued"),))] == 1
    assert samples[("publisher_publishings", (("status", "failed"),))] == 0
    assert samples[("publisher_oldest_queued_seconds", ())] >= 0
    assert samples[("publisher_up", (("dependency", "database"),))] == 1
    # The stub broker has no queue to read, and there is no Redis for workers
    assert not any(name == "publisher_queue_messages" for name, _ in samples)


def test_web_metrics_want_the_token_when_one_is_set(client, settings) -> None:
    settings.METRICS_TOKEN = "s3cret"

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json() == {
            "code": "NOT_AUTHENTICATED",
            "detail": "A valid metrics token is required.",
        }
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, Authorization="Bearer s3cret")


def test_web_metrics_refuse_other_methods_with_the_error_envelope(client) -> None:
    response = client.post("/metrics")
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


def test_web_metrics_without_a_database_still_show_the_broker_and_the_workers(
    client, settings, monkeypatch
) -> None:
    # Given the database away, a RabbitMQ queue (which cannot count delayed messages) and two workers
    settings.METRICS_TOKEN = ""
    overview = selectors.SystemOverview(
        database_ok=False,
        broker_ok=True,
        publishings={},
        oldest_queued_seconds=0.0,
        queue=QueueStats(name="publishing-builds", ready=3, delayed=None, dead=1),
        workers=["worker-a", "worker-b"],
        rate_limit=None,
    )
    monkeypatch.setattr(selectors, "system_overview", lambda: overview)

    # When
    samples = scrape(client)

    # Then the database is down and has no counts (not zeros); the queue shows what RabbitMQ counts
    assert samples[("publisher_up", (("dependency", "database"),))] == 0
    assert samples[("publisher_up", (("dependency", "broker"),))] == 1
    assert not any(name.startswith(("publisher_publishings", "publisher_oldest")) for name, _ in samples)
    depth = {labels: value for (name, labels), value in samples.items() if name == "publisher_queue_messages"}
    assert depth == {
        (("queue", "publishing-builds"), ("state", "ready")): 3,
        (("queue", "publishing-builds"), ("state", "dead")): 1,
    }
    assert samples[("publisher_workers_alive", ())] == 2
