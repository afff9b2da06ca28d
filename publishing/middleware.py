"""Dramatiq middleware for the publishing job: message validation, cancellation, the global rate limit,
and the lifecycle (leases, reconciliation, retention, graceful shutdown).

Each is a hook around the actor, so the actor itself stays an adapter. Module
imports stay light: django-dramatiq builds these while Django's apps load.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import random
import reprlib
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import dramatiq
import dramatiq_abort
from django.conf import settings
from dramatiq.broker import MessageProxy
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage
from dramatiq.middleware.shutdown import Shutdown
from dramatiq.threading import raise_thread_exception
from dramatiq_abort.backends import RedisBackend, StubBackend

from publishing import jobs, metrics, presence
from publishing.broker import BROKER_ERRORS, operations_for, uses_stub_broker, worker_redis
from publishing.log_context import job_context, outage_errors
from publishing.rate_limit import WindowLimiter, parse_rate, publishing_limiter

logger = logging.getLogger(__name__)


def _is_ours(message: MessageProxy) -> bool:
    return bool(message.actor_name == jobs.BUILD_ACTOR)


def _publishing_id(message: MessageProxy) -> str | None:
    kwargs = message.kwargs or {}
    value = kwargs.get("publishing_id") or (message.args[0] if message.args else None)
    return str(value) if value else None


def _owner(message: MessageProxy) -> str:
    """Whose share of the rate limit a start counts against: the project's owner (the `owner_id` option
    services put on the message), or the requester for messages sent before that option existed."""
    kwargs = message.kwargs if isinstance(message.kwargs, dict) else {}
    options = message.options if isinstance(message.options, dict) else {}
    value = options.get("owner_id") or kwargs.get("user_id")
    return str(value) if value else "unknown"


@dataclass(frozen=True)
class StrFormat:
    """`Annotated` metadata of an actor's `str` parameter: which values MessageValidation lets through."""

    description: str
    accepts: Callable[[str], bool]


def _is_uuid(value: str) -> bool:
    # What Django's UUIDField takes too: a value accepted here never fails the row lookup.
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


UuidStr = Annotated[str, StrFormat("a UUID string", _is_uuid)]
# Ids that actors only put on log lines: capped, so a bloated one cannot flood every line of its job.
LogIdStr = Annotated[str, StrFormat("a string of at most 64 characters", lambda value: len(value) <= 64)]


@dataclass(frozen=True)
class _Parameter:
    type: type
    format: StrFormat | None


@dataclass(frozen=True)
class _Contract:
    signature: inspect.Signature
    parameters: dict[str, _Parameter]


@functools.cache
def _contract(fn: Callable[..., Any]) -> _Contract:
    """An actor function's signature and the types (and formats) its annotations ask for."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # Annotations that cannot be resolved (another app's actor): the signature alone still binds.
        hints = {}
    parameters: dict[str, _Parameter] = {}
    for name, hint in hints.items():
        base: object = hint
        metadata: tuple[object, ...] = ()
        if typing.get_origin(hint) is Annotated:
            base, *rest = typing.get_args(hint)
            metadata = tuple(rest)
        if name != "return" and isinstance(base, type):
            found = next((m for m in metadata if isinstance(m, StrFormat)), None)
            parameters[name] = _Parameter(type=base, format=found)
    return _Contract(signature=inspect.signature(fn), parameters=parameters)


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_short.maxlist = _short.maxtuple = _short.maxdict = 3
_short.maxlevel = 2


def message_problem(fn: Callable[..., Any], args: object, kwargs: object) -> str | None:
    """Why `fn(*args, **kwargs)` would not be a valid call, per its signature and annotations; None if it is.

    Values show up only as a short repr: a poison message may carry anything.
    """
    if not isinstance(kwargs, dict):
        return f"kwargs is a {type(kwargs).__name__}, not a mapping"
    if not isinstance(args, list | tuple):
        return f"args is a {type(args).__name__}, not a list"
    contract = _contract(fn)
    try:
        bound = contract.signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    for name, value in bound.arguments.items():
        parameter = contract.parameters.get(name)
        if parameter is None:
            continue
        expected = parameter.type
        # bool is an int to isinstance, never to an actor that asked for an int.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            return f"{name} must be a {expected.__name__}, got {type(value).__name__} {_short.repr(value)}"
        if parameter.format is not None and isinstance(value, str) and not parameter.format.accepts(value):
            return f"{name} must be {parameter.format.description}, got {_short.repr(value)}"
    return None


class _ShortSkipLines(logging.Filter):
    """Shortens Dramatiq's "Message %s was skipped." line for the invalid messages being skipped now.

    That line prints the whole message: all of a poison message's payload,
    however large, and a logging error instead when its kwargs are not a
    mapping (Message.__str__ calls .items()). It comes after
    before_process_message and before after_skip_message, hence the ids.
    """

    def __init__(self) -> None:
        super().__init__()
        self.message_ids: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], MessageProxy):
            message = args[0]
            if message.message_id in self.message_ids:
                record.args = (f"{message.actor_name} {message.message_id} (invalid: dead-lettered)",)
        return True


_short_skip_lines = _ShortSkipLines()


class MessageValidation(Middleware):
    """Dead-letter at once a message its actor cannot take: missing, extra or wrong-typed arguments.

    Such a message fails the same way on every run, so Retries would only
    repeat its traceback. It is checked against the actor function's
    signature and annotations (`UuidStr`, `LogIdStr`, plain types) before any
    other of our middleware sees it: it takes no rate-limit slot, no lease and
    no abort lookup. One ERROR line says what is wrong; the message itself
    waits in the dead-letter queue. Messages for an actor no worker knows are
    Dramatiq's own: its consumer dead-letters them before they get here.
    """

    # Long enough to say what is wrong, short enough that a poison message cannot flood the log.
    MAX_PROBLEM_LENGTH = 200

    def __init__(self) -> None:
        # The logger of dramatiq.worker's WorkerThread; adding the same filter again is a no-op.
        logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_short_skip_lines)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        try:
            actor = broker.get_actor(message.actor_name)
        except ActorNotFound:
            return  # Dramatiq's consumer dead-letters these on arrival
        problem = message_problem(actor.fn, message.args, message.kwargs)
        if problem is None:
            return
        if len(problem) > self.MAX_PROBLEM_LENGTH:
            problem = problem[: self.MAX_PROBLEM_LENGTH] + "..."
        # Only the message id is trusted enough for the log context: the arguments are what is wrong.
        with job_context(job_id=message.message_id, message_id=message.message_id):
            logger.error(
                "invalid message %s for %s dead-lettered without running: %s",
                message.message_id,
                message.actor_name,
                problem,
            )
        # Failed, then skipped: the worker rejects it, which dead-letters it, and Retries never sees it.
        message.fail()
        _short_skip_lines.message_ids.add(message.message_id)
        raise SkipMessage(problem)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        _short_skip_lines.message_ids.discard(message.message_id)


class Abortable(dramatiq_abort.Abortable):  # type: ignore[misc]
    """dramatiq-abort's middleware with its event backend built from settings.

    Aborts live in the Redis at REDIS_URL (also with RabbitMQ as the broker)
    for PUBLISHING_ABORT_TTL_MS, longer than any queue wait or backoff, so a
    cancelled message that only starts much later is still skipped.
    """

    def __init__(self) -> None:
        backend: StubBackend | RedisBackend
        if uses_stub_broker():
            backend = StubBackend()
        else:
            backend = RedisBackend(client=worker_redis(), namespace=f"{settings.BROKER_NAMESPACE}-abort")
        super().__init__(backend=backend, abort_ttl=settings.PUBLISHING_ABORT_TTL_MS)


class RateLimit(Middleware):
    """At most N publishing starts per rolling window, across all workers, without using up retries.

    Dramatiq's rate limiters raise inside the actor, which the Retries
    middleware counts as a failure (dramatiq #257, #32). Here the check runs
    before the actor: a message over the limit is put back with a delay (same
    message id, retry count untouched), the publishing's `not_before` says
    when, and the message in hand is skipped. No worker thread waits. With
    PUBLISHING_RATE_LIMIT_FAIR a free slot goes to the waiting project owner
    with the fewest starts in the window (publishing.rate_limit).
    """

    # Spreads deferred messages so they do not all wake for the same slot.
    JITTER_MS = 250
    # Without Redis nothing can be counted: try again later rather than overrun.
    UNAVAILABLE_DELAY_MS = 5_000

    def __init__(self) -> None:
        self.rate = parse_rate(settings.PUBLISHING_RATE_LIMIT)
        self._limiter: WindowLimiter | None = None
        # Messages this middleware skips (deferred); any other skip is a message that is not coming back.
        self._deferring: set[str] = set()

    def _get_limiter(self) -> WindowLimiter | None:
        if self.rate is None or uses_stub_broker():
            return None
        if self._limiter is None:
            self._limiter = publishing_limiter(worker_redis())
        return self._limiter

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        limiter = self._get_limiter()
        if limiter is None or not _is_ours(message):
            return
        jitter = random.randint(0, self.JITTER_MS)  # noqa: S311 - spreading, not security
        for_another_owner = False
        try:
            verdict = limiter.acquire(message.message_id, owner=_owner(message), jitter_ms=jitter)
        except BROKER_ERRORS as exc:
            logger.warning("rate limiter unavailable (%s); deferring message %s", exc, message.message_id)
            delay = self.UNAVAILABLE_DELAY_MS + jitter
        else:
            if verdict.taken:
                return
            delay, for_another_owner = verdict.wait_ms, verdict.for_another_owner
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        try:
            self._put_back(broker, message, delay)
        except RateLimitDeferralFailed:
            # Raised on, it went to Retries, whose enqueue fails the same way: the worker then acks
            # the message and nothing holds it any more, while its publishing stays queued for it (on
            # RabbitMQ and the stub broker for good: the reconciler cannot see which messages exist).
            # Told that its message is gone, the reconciler sends a new one at its next pass.
            self._release(message)
            raise SkipMessage() from None
        metrics.rate_limit_deferred(delay / 1000)
        try:
            maintenance.publishing_defer(publishing_id=_publishing_id(message), delay_ms=delay)
        except Exception as exc:
            # The deferral itself holds (the message is back with its delay); only the page's "not
            # before" is missing, until the message runs.
            logger.warning(
                "could not record not_before for message %s: %s: %s",
                message.message_id,
                type(exc).__name__,
                exc,
            )
        logger.info(
            "rate limit %s reached: publishing %s deferred by %.1fs (no retry used)%s",
            self.rate,
            _publishing_id(message),
            delay / 1000,
            "; a free slot is kept for an owner with fewer starts" if for_another_owner else "",
        )
        self._deferring.add(message.message_id)
        raise SkipMessage()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if message.message_id in self._deferring:
            self._deferring.discard(message.message_id)
            return
        limiter = self._get_limiter()
        if limiter is None or not limiter.fair or not _is_ours(message) or message.failed:
            return  # an invalid message (failed) never reached the window
        # Skipped by another middleware (cancelled): a slot kept for it would idle until its wait expires.
        try:
            limiter.withdraw(message.message_id, owner=_owner(message))
        except BROKER_ERRORS as exc:
            logger.warning("could not withdraw message %s from the rate limit (%s)", message.message_id, exc)

    @staticmethod
    def _release(message: MessageProxy) -> None:
        """Hand a message that could not be put back over to the reconciler; else RateLimitDeferralFailed."""
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        publishing_id = _publishing_id(message)
        try:
            maintenance.publishing_message_lost(publishing_id=publishing_id, message_id=message.message_id)
        except Exception as exc:
            # The database is away too: Retries is the last resort (a retry used, if its enqueue works).
            logger.warning("could not hand message %s over to the reconciler (%s)", message.message_id, exc)
            raise RateLimitDeferralFailed(f"message {message.message_id} could not be deferred") from exc
        logger.warning(
            "message %s could not be deferred; publishing %s waits for the reconciler to send a new one",
            message.message_id,
            publishing_id,
        )

    def _put_back(self, broker: dramatiq.Broker, message: MessageProxy, delay: int) -> None:
        """Enqueue the same message again, delayed; never run it over the limit, never drop it."""
        for attempt in range(3):
            try:
                broker.enqueue(message.copy(), delay=delay)
                return
            except Exception as exc:
                logger.warning("could not defer message %s (%s); trying again", message.message_id, exc)
                time.sleep(attempt + 1)
        raise RateLimitDeferralFailed(f"message {message.message_id} could not be deferred")


class RateLimitDeferralFailed(MiddlewareError):
    """Over the limit, and the broker would not take the message back."""


class Lifecycle(Middleware):
    """Leases, reconciliation, retention and the shutdown deadline, for every worker process.

    - While a publishing runs, its lease (`heartbeat_at`) is refreshed; the
      reconciler requeues publishings whose lease ran out (a dead worker).
    - Every PUBLISHING_RECONCILE_INTERVAL s each worker reconciles the
      database with the broker and prunes job-level records (CAS-guarded, so
      several workers doing it at once is harmless).
    - On shutdown, running jobs get PUBLISHING_SHUTDOWN_TIMEOUT s to finish;
      a job still running then is requeued (retry count untouched) and its
      thread interrupted, which also kills its build.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # message id -> (publishing id, worker thread id, retries)
        self._running: dict[str, tuple[str, int, int]] = {}
        self._stopping = threading.Event()
        self._shut_down = threading.Event()
        self._presence: threading.Thread | None = None

    # --- which publishings run here ---------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        publishing_id = _publishing_id(message)
        if _is_ours(message) and publishing_id:
            retries = int(message.options.get("retries", 0))
            with self._lock:
                self._running[message.message_id] = (publishing_id, threading.get_ident(), retries)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            self._running.pop(message.message_id, None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)

    def running(self) -> dict[str, tuple[str, int, int]]:
        """message id -> (publishing id, worker thread id, retries), a snapshot."""
        with self._lock:
            return dict(self._running)

    # --- periodic work ----------------------------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if operations_for(broker).in_memory:
            return  # the unit tests' stub: they drive these services directly
        # Imported here: the services load the models, not loaded yet when this middleware is built
        # (and the sandbox is needed from here on only).
        from publishing.pipeline import sandbox
        from publishing.services import maintenance

        # Which settings a worker runs is the first thing to know when it misbehaves: local settings
        # allow private targets and DEBUG.
        logger.info(
            "Worker settings: %s (DEBUG %s)", settings.SETTINGS_MODULE, "on" if settings.DEBUG else "off"
        )
        level, line = sandbox.describe(sandbox.SandboxPolicy.from_settings())
        logger.log(level, "%s", line)
        # What the builds of a worker that died before this one started left behind.
        self._guarded(maintenance.builds_sweep)
        # Three threads: a slow reconciliation (a Redis or SQLite stall) must
        # never delay the heartbeats that keep live attempts' leases, nor must
        # a Redis stall delay them on the way to saying the worker is alive.
        threading.Thread(target=self._heartbeat_forever, name="publishing-leases", daemon=True).start()
        self._presence = threading.Thread(
            target=self._presence_forever, name="publishing-presence", daemon=True
        )
        self._presence.start()
        threading.Thread(target=self._reconcile_forever, name="publishing-reconciler", daemon=True).start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._shut_down.set()
        if self._presence is not None:
            # It says goodbye last: no heartbeat of its can land after the goodbye.
            self._presence.join(timeout=settings.PUBLISHING_WORKER_SOCKET_TIMEOUT * 2)

    def _heartbeat_forever(self) -> None:
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        # Until the worker has shut down: jobs finishing in the grace period keep their leases.
        while True:
            self._guarded(
                lambda: maintenance.publishing_heartbeat(
                    running=[(pid, mid) for mid, (pid, _, _) in self.running().items()]
                )
            )
            if self._shut_down.wait(self._beat_every()):
                return

    def _presence_forever(self) -> None:
        name = presence.worker_name()
        client = worker_redis()
        # Only what the live-worker count shows: an unreachable Redis is reported elsewhere.
        while True:
            with contextlib.suppress(*BROKER_ERRORS):
                presence.heartbeat(client, name)
            if self._shut_down.wait(self._beat_every()):
                break
        with contextlib.suppress(*BROKER_ERRORS):
            presence.leave(client, name)

    @staticmethod
    def _beat_every() -> float:
        return max(settings.PUBLISHING_LEASE_TIMEOUT / 6, 0.5)

    def _reconcile_forever(self) -> None:
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance, webhooks

        def reconcile() -> None:
            maintenance.publishing_reconcile()
            maintenance.job_records_prune()
            maintenance.builds_sweep()

        while not self._stopping.is_set():
            self._guarded(reconcile)
            # Guarded apart: one failing must not hold up the other.
            self._guarded(webhooks.deliveries_reconcile)
            self._stopping.wait(settings.PUBLISHING_RECONCILE_INTERVAL)

    @staticmethod
    def _guarded(work: Callable[[], object]) -> None:
        from django.db import close_old_connections

        name = getattr(work, "__qualname__", repr(work))
        try:
            work()
        except outage_errors() as exc:
            # Expected while PostgreSQL or the broker restarts: one line each pass, not a traceback.
            logger.warning("lifecycle task %s: %s (%s); trying again", name, type(exc).__name__, exc)
        except Exception:
            logger.exception("lifecycle task %s failed; trying again", name)
        finally:
            # As after a job: kept for the next pass (DATABASE_CONN_MAX_AGE) unless too old or broken.
            close_old_connections()

    # --- graceful shutdown ------------------------------------------------------------------------

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stopping.set()
        if self.running():
            logger.info(
                "worker shutting down: %d running job(s) get up to %ss to finish",
                len(self.running()),
                settings.PUBLISHING_SHUTDOWN_TIMEOUT,
            )
            threading.Thread(target=self._enforce_deadline, name="publishing-shutdown", daemon=True).start()

    def _enforce_deadline(self) -> None:
        from django.db import connection

        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        deadline = time.monotonic() + settings.PUBLISHING_SHUTDOWN_TIMEOUT
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            for message_id, (publishing_id, thread_id, retries) in self.running().items():
                requeued = maintenance.publishing_requeue(
                    publishing_id=publishing_id, reason="Cut off by a worker shutdown.", retries=retries
                )
                if not requeued:
                    continue  # it finished (or was cancelled) at the last moment
                logger.warning(
                    "publishing %s still running at the %ss shutdown deadline: requeued, retry count %d kept",
                    publishing_id,
                    settings.PUBLISHING_SHUTDOWN_TIMEOUT,
                    retries,
                )
                with self._lock:
                    # Only a thread still inside that message: an idle one must not be hit.
                    if message_id in self._running:
                        raise_thread_exception(thread_id, Shutdown)  # type: ignore[no-untyped-call]
        finally:
            connection.close()
