"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from tests.fakes import ScriptedPipeline


@pytest.fixture
def worker(stub_broker: StubBroker, settings) -> Iterator[dramatiq.Worker]:
    """A Dramatiq worker on the stub broker running ScriptedPipeline (`ScriptedPipeline.reset` scripts it)."""
    settings.PUBLISHING_PIPELINE = "tests.fakes.ScriptedPipeline"
    ScriptedPipeline.reset()
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def drain(stub_broker: StubBroker, worker: dramatiq.Worker) -> Callable[[], None]:
    """Run every message of the builds queue (retries and requeues included) to the end, then return."""

    def run() -> None:
        stub_broker.join("publishing-builds", fail_fast=False)
        worker.join()

    return run
