"""Leases: which publishings run in this worker process, and the heartbeats that say they still do.

While a publishing runs, its lease (`heartbeat_at`) is refreshed; the reconciler requeues publishings
whose lease ran out (a dead worker). The worker's own presence (the live-worker count) beats alongside.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware
from dramatiq.threading import raise_thread_exception

from publishing import presence
from publishing.broker import BROKER_ERRORS, operations_for
from publishing.worker.background import guarded
from publishing.worker.messages import actor_option, publishing_id

logger = logging.getLogger(__name__)


class RunningJobs:
    """message id -> (publishing id, worker thread id, retries) of the leased jobs running now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, int, int]] = {}

    def add(self, message_id: str, *, publishing_id: str, retries: int) -> None:
        with self._lock:
            self._running[message_id] = (publishing_id, threading.get_ident(), retries)

    def discard(self, message_id: str) -> None:
        with self._lock:
            self._running.pop(message_id, None)

    def snapshot(self) -> dict[str, tuple[str, int, int]]:
        """message id -> (publishing id, worker thread id, retries), a copy."""
        with self._lock:
            return dict(self._running)

    def interrupt(self, message_id: str, thread_id: int, exception: type[BaseException]) -> None:
        """Raise `exception` in `thread_id` if it is still inside `message_id`."""
        with self._lock:
            # Only a thread still inside that message: an idle one must not be hit.
            if message_id in self._running:
                raise_thread_exception(thread_id, exception)  # type: ignore[no-untyped-call]


class Leases(Middleware):
    """Keeps the leases of the running jobs of actors declared `leased=True`, and this worker's presence.

    Two threads: a Redis stall on the way to saying the worker is alive must
    never delay the heartbeats that keep live attempts' leases. Both beat until
    the worker has shut down, so jobs finishing in the grace period keep theirs.
    """

    def __init__(self, *, beat_every: float, redis_client: redis.Redis, presence_join_timeout: float) -> None:
        """`beat_every` s between heartbeats; presence in the Redis of `redis_client`."""
        self.running = RunningJobs()
        self._beat_every = beat_every
        self._redis = redis_client
        self._presence_join_timeout = presence_join_timeout
        self._shut_down = threading.Event()
        self._presence: threading.Thread | None = None

    @property
    def actor_options(self) -> set[str]:
        return {"leased"}

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        publishing = publishing_id(message)
        if publishing and actor_option(broker, message, "leased", False):
            retries = int(message.options.get("retries", 0))
            self.running.add(message.message_id, publishing_id=publishing, retries=retries)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self.running.discard(message.message_id)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.running.discard(message.message_id)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if operations_for(broker).in_memory:
            return  # the unit tests' stub: they drive these services directly
        threading.Thread(target=self._heartbeat_forever, name="publishing-leases", daemon=True).start()
        self._presence = threading.Thread(
            target=self._presence_forever, name="publishing-presence", daemon=True
        )
        self._presence.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._shut_down.set()
        if self._presence is not None:
            # It says goodbye last: no heartbeat of its can land after the goodbye.
            self._presence.join(timeout=self._presence_join_timeout)

    def _heartbeat_forever(self) -> None:
        # Imported here: the services load the models, not loaded yet when this middleware is built.
        from publishing.services import maintenance

        def heartbeat() -> None:
            running = self.running.snapshot()
            maintenance.publishing_heartbeat(running=[(pid, mid) for mid, (pid, _, _) in running.items()])

        while True:
            guarded(heartbeat)
            if self._shut_down.wait(self._beat_every):
                return

    def _presence_forever(self) -> None:
        name = presence.worker_name()
        # Only what the live-worker count shows: an unreachable Redis is reported elsewhere.
        while True:
            with contextlib.suppress(*BROKER_ERRORS):
                presence.heartbeat(self._redis, name)
            if self._shut_down.wait(self._beat_every):
                break
        with contextlib.suppress(*BROKER_ERRORS):
            presence.leave(self._redis, name)
