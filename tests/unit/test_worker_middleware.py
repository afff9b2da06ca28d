"""Which actors the worker middleware acts on is an option of the actor, and the settings build them."""

from __future__ import annotations

import uuid

import pytest
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.shutdown import Shutdown

from publishing import jobs
from publishing.rate_limit import Verdict
from publishing.worker.leases import Leases, RunningJobs
from publishing.worker.rate_limit import RateLimit
from publishing.worker.reconciler import Reconciler
from publishing.worker.shutdown import ShutdownDeadline


class CountingLimiter:
    """A `WindowLimiter` that lets everything through and remembers who asked."""

    fair = True

    def __init__(self) -> None:
        self.asked: list[str] = []

    def acquire(self, token: str, *, owner: str, jitter_ms: int = 0) -> Verdict:
        self.asked.append(token)
        return Verdict(taken=True, wait_ms=0)


def the(stub_broker: StubBroker, kind: type) -> object:
    (found,) = [m for m in stub_broker.middleware if isinstance(m, kind)]
    return found


def build() -> MessageProxy:
    message = jobs.build_message(publishing_id=str(uuid.uuid4()), project_id="p", user_id="1", owner_id="1")
    return MessageProxy(message)


def webhook() -> MessageProxy:
    """A webhook delivery's message, naming a publishing too: only the actor's options set it apart."""
    message = jobs.webhook_message(delivery_id=str(uuid.uuid4()))
    return MessageProxy(message.copy(kwargs={**message.kwargs, "publishing_id": str(uuid.uuid4())}))


def test_the_actors_declare_what_the_middleware_does_to_them(stub_broker: StubBroker) -> None:
    build_actor = stub_broker.get_actor(jobs.BUILD_ACTOR)
    webhook_actor = stub_broker.get_actor(jobs.WEBHOOK_ACTOR)
    assert build_actor.options["rate_limited"] is True
    assert build_actor.options["leased"] is True
    assert "rate_limited" not in webhook_actor.options
    assert "leased" not in webhook_actor.options
    assert {"rate_limited", "leased"} <= stub_broker.actor_options


def test_only_a_rate_limited_actors_message_takes_a_slot(
    stub_broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the worker's RateLimit counting on a limiter
    rate_limit = the(stub_broker, RateLimit)
    limiter = CountingLimiter()
    monkeypatch.setattr(rate_limit, "_get_limiter", lambda: limiter)

    # When a build and a webhook delivery come in
    build_message, webhook_message = build(), webhook()
    rate_limit.before_process_message(stub_broker, build_message)  # type: ignore[attr-defined]
    rate_limit.before_process_message(stub_broker, webhook_message)  # type: ignore[attr-defined]

    # Then only the build (declared rate_limited) asked for a slot
    assert limiter.asked == [build_message.message_id]


def test_only_a_leased_actors_message_is_registered_as_running(stub_broker: StubBroker) -> None:
    # Given the worker's Leases
    leases = the(stub_broker, Leases)
    assert isinstance(leases, Leases)

    # When a build and a webhook delivery start
    build_message, webhook_message = build(), webhook()
    leases.before_process_message(stub_broker, build_message)
    leases.before_process_message(stub_broker, webhook_message)

    # Then only the build (declared leased) holds a lease, until it ends
    assert list(leases.running.snapshot()) == [build_message.message_id]
    leases.after_process_message(stub_broker, build_message)
    assert leases.running.snapshot() == {}


def test_the_settings_configure_each_middleware(stub_broker: StubBroker, settings) -> None:
    # The test settings' values, read by publishing.worker.from_settings when the broker was built
    reconciler = the(stub_broker, Reconciler)
    deadline = the(stub_broker, ShutdownDeadline)
    assert isinstance(reconciler, Reconciler)
    assert isinstance(deadline, ShutdownDeadline)
    assert reconciler.interval == settings.PUBLISHING_RECONCILE_INTERVAL
    assert deadline.timeout == settings.PUBLISHING_SHUTDOWN_TIMEOUT


def test_a_database_outage_at_the_shutdown_deadline_still_interrupts_the_job_in_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a job still running at the deadline, while the database is away
    from django.db import utils as db_utils

    from publishing.services import maintenance

    def database_away(**kwargs: object) -> bool:
        raise db_utils.OperationalError("connection refused")

    monkeypatch.setattr(maintenance, "publishing_requeue", database_away)
    running = RunningJobs()
    running.add("m-1", publishing_id="p-1", retries=0)
    interrupted: list[tuple[str, type[BaseException]]] = []
    monkeypatch.setattr(
        running, "interrupt", lambda message_id, thread_id, exc: interrupted.append((message_id, exc))
    )

    # When the deadline passes
    ShutdownDeadline(timeout=0)._enforce_deadline(running)

    # Then the job is cut off all the same (its lease runs out, and a reconciler requeues it), and
    # the outage is one warning line, not a traceback from a dying thread
    assert interrupted == [("m-1", Shutdown)]
    [record] = [r for r in caplog.records if "shutdown deadline" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert "p-1" in record.getMessage()
    assert "connection refused" in record.getMessage()


def test_the_cut_short_signal_ends_the_grace_period_once_the_idle_threads_have_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a job running with a long grace period, and an idle worker thread about to stop
    import signal
    import threading
    import time

    from publishing.services import maintenance
    from publishing.worker_master import CUT_SHORT_SIGNAL

    requeued_at: list[float] = []

    def requeue(**kwargs: object) -> bool:
        requeued_at.append(time.monotonic())
        return True

    monkeypatch.setattr(maintenance, "publishing_requeue", requeue)
    running = RunningJobs()
    running.add("m-1", publishing_id="p-1", retries=0)
    interrupted: list[str] = []
    monkeypatch.setattr(
        running, "interrupt", lambda message_id, thread_id, exc: interrupted.append(message_id)
    )
    idle_stopped_at: list[float] = []

    def idle_then_stop() -> None:
        time.sleep(0.3)
        idle_stopped_at.append(time.monotonic())

    idle = threading.Thread(target=idle_then_stop)
    idle.start()
    deadline = ShutdownDeadline(timeout=30)
    previous = signal.getsignal(CUT_SHORT_SIGNAL)
    try:
        deadline.after_process_boot(broker=None)  # type: ignore[arg-type]

        # When the worker process gets the signal (runlocal's second Ctrl-C)
        signal.raise_signal(CUT_SHORT_SIGNAL)
        started = time.monotonic()
        deadline._enforce_deadline(running, [idle])
    finally:
        signal.signal(CUT_SHORT_SIGNAL, previous)

    # Then the job is requeued and interrupted at once, not 30 s later, but not before the idle thread
    # stopped (it could otherwise take the requeued message up again)
    assert interrupted == ["m-1"]
    assert requeued_at[0] - started < 5
    assert requeued_at[0] >= idle_stopped_at[0]
