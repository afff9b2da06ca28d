"""The rate-limit middleware's failure paths, on the stub broker's worker with a scripted limiter.

What must hold whatever fails: a message over the limit is deferred without using a retry, and is
never lost; its publishing runs once, and is submitted once.
"""

from __future__ import annotations

import logging
import types
from collections import deque
from typing import Any

import pytest
import redis
from django.db import OperationalError
from dramatiq.brokers.stub import StubBroker

from publishing.models import Publishing
from publishing.rate_limit import Verdict
from publishing.services import maintenance, runner
from publishing.services.publishings import publishing_initiate
from publishing.worker import rate_limit as rate_limit_module
from tests.factories import ProjectFactory, UserFactory
from tests.fakes import ScriptedPipeline

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "publishing-builds"


class ScriptedLimiter:
    """A `WindowLimiter` answering `acquire` from a script (a Verdict, or an exception to raise), then yes."""

    fair = True

    def __init__(self) -> None:
        self.answers: deque[Verdict | Exception] = deque()
        self.asked: list[str] = []
        self.withdrawn: list[str] = []

    def acquire(self, token: str, *, owner: str, jitter_ms: int = 0) -> Verdict:
        self.asked.append(token)
        answer = self.answers.popleft() if self.answers else Verdict(taken=True, wait_ms=0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def withdraw(self, token: str, *, owner: str) -> bool:
        self.withdrawn.append(token)
        return True


@pytest.fixture
def limiter(stub_broker: StubBroker, monkeypatch: pytest.MonkeyPatch) -> ScriptedLimiter:
    """The worker's RateLimit middleware, limiting with a ScriptedLimiter; short delays, no jitter."""
    (rate_limit,) = [m for m in stub_broker.middleware if isinstance(m, rate_limit_module.RateLimit)]
    scripted = ScriptedLimiter()
    monkeypatch.setattr(rate_limit, "_get_limiter", lambda: scripted)
    monkeypatch.setattr(rate_limit, "jitter_ms", 0)
    monkeypatch.setattr(rate_limit, "unavailable_delay_ms", 20)
    # Its put-back waits 1, 2 then 3 s between tries: not in a unit test.
    monkeypatch.setattr(rate_limit_module, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    return scripted


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(message id, retries) of every run of the actor."""
    seen: list[tuple[str, int]] = []
    run = runner.publishing_run

    def publishing_run(*, message_id: str, retries: int, **kwargs: Any) -> None:
        seen.append((message_id, retries))
        run(message_id=message_id, retries=retries, **kwargs)

    monkeypatch.setattr(runner, "publishing_run", publishing_run)
    return seen


@pytest.fixture
def broker_refusing_delays(stub_broker: StubBroker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """While the list holds a count, that many delayed enqueues (deferrals, Retries' backoffs) fail."""
    failures = [0]
    enqueue = stub_broker.enqueue

    def flaky_enqueue(message: Any, *, delay: int | None = None) -> Any:
        if delay is not None and failures[0] > 0:
            failures[0] -= 1
            raise redis.exceptions.ConnectionError("refused")
        return enqueue(message, delay=delay)

    monkeypatch.setattr(stub_broker, "enqueue", flaky_enqueue)
    return failures


def queued() -> Publishing:
    owner = UserFactory.create()
    return publishing_initiate(user=owner, project_id=ProjectFactory.create(owner=owner).pk)


def test_a_message_is_deferred_without_a_retry_while_the_limiters_redis_is_down(
    limiter, runs, drain, caplog
) -> None:
    # Given the Redis of the rate limit is down for the first look at a message
    limiter.answers.append(redis.exceptions.ConnectionError("refused"))
    publishing = queued()

    # When the worker processes it, and again once it comes back
    with caplog.at_level(logging.WARNING):
        drain()

    # Then it was put back rather than run unlimited or dropped: the same message ran once, no retry used
    publishing.refresh_from_db()
    assert limiter.asked == [publishing.message_id] * 2
    assert runs == [(publishing.message_id, 0)]
    assert (publishing.status, publishing.attempts) == ("published", 1)
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
    assert any("rate limiter unavailable" in r.getMessage() for r in caplog.records)


def test_a_deferral_whose_not_before_cannot_be_recorded_still_defers(
    limiter, runs, drain, monkeypatch, caplog
) -> None:
    # Given a message over the limit, and a database that refuses to record when it will start
    limiter.answers.append(Verdict(taken=False, wait_ms=20))

    def database_down(**kwargs: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(maintenance, "publishing_defer", database_down)
    publishing = queued()

    # When the worker processes it
    with caplog.at_level(logging.WARNING):
        drain()

    # Then it was deferred all the same, and ran once when it came back, no retry used
    publishing.refresh_from_db()
    assert runs == [(publishing.message_id, 0)]
    assert (publishing.status, publishing.attempts) == ("published", 1)
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
    assert any("could not record not_before" in r.getMessage() for r in caplog.records)


def test_a_message_the_broker_will_not_take_back_is_handed_to_the_reconciler(
    limiter, runs, drain, broker_refusing_delays, stub_broker, caplog
) -> None:
    # Given a message over the limit, and a broker that refuses every delayed enqueue for now
    limiter.answers.append(Verdict(taken=False, wait_ms=20))
    broker_refusing_delays[0] = 100
    publishing = queued()
    first_message = publishing.message_id

    # When the worker processes it
    with caplog.at_level(logging.WARNING):
        drain()

    # Then it did not run, used no retry and is not dead-lettered; the publishing says it has no message
    # (for the reconciler), and the rate limit keeps no slot for it
    publishing.refresh_from_db()
    assert runs == []
    assert (publishing.status, publishing.message_id) == ("queued", "")
    assert stub_broker.dead_letters == []
    assert limiter.withdrawn == [first_message]
    assert any("waits for the reconciler" in r.getMessage() for r in caplog.records)

    # When the broker is back and the reconciler makes its pass
    broker_refusing_delays[0] = 0
    assert maintenance.publishing_reconcile().resent_queued == 1
    drain()

    # Then the publishing runs once, from its new message, and is submitted once
    publishing.refresh_from_db()
    assert runs == [(publishing.message_id, 0)]
    assert publishing.message_id != first_message
    assert (publishing.status, publishing.attempts) == ("published", 1)
    assert ScriptedPipeline.submitted == [str(publishing.pk)]


def test_a_message_that_cannot_be_put_back_nor_handed_over_goes_to_retries(
    limiter, runs, drain, broker_refusing_delays, monkeypatch
) -> None:
    # Given a message over the limit, a broker refusing the three tries to put it back, and a database
    # refusing to record that its message is gone
    limiter.answers.append(Verdict(taken=False, wait_ms=20))
    broker_refusing_delays[0] = 3

    def database_down(**kwargs: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(maintenance, "publishing_message_lost", database_down)
    publishing = queued()

    # When the worker processes it
    drain()

    # Then the message is failed into Retries (RateLimitDeferralFailed): it comes back, one retry used,
    # and the publishing runs once
    publishing.refresh_from_db()
    assert runs == [(publishing.message_id, 1)]
    assert (publishing.status, publishing.attempts) == ("published", 1)
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
