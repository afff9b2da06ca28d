"""Fixtures of the unit tests."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain as run_to_the_end


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
    """`tests.support.stub_broker.drain` on this test's broker and worker, called with no arguments."""
    return functools.partial(run_to_the_end, stub_broker, worker)
