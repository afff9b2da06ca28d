"""Fixtures of the unit tests."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from django.core.cache import caches
from dramatiq.brokers.stub import StubBroker

from publishing.api import throttling
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


@pytest.fixture
def throttled(settings: Any) -> Iterator[Any]:
    """The initiate throttle (initiate, retry and re-run) at 2 a minute, on a fresh cache and breaker."""
    settings.PUBLISHING_INITIATE_RATE = "2/min"
    caches["throttle"].clear()
    throttling.breaker.reset()
    yield settings
    throttling.breaker.reset()
