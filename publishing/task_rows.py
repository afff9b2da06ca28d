"""django-dramatiq's task rows (the admin's "Tasks"), written behind the jobs in batches.

django-dramatiq's AdminMiddleware writes a row at each enqueue and updates it
when the job starts and ends: three transactions of their own per message,
on the job's thread. That was nine tenths of a short job's cost
(docs/benchmarks.md). `TaskRows` records the same rows, with the same
statuses, message data and traceback, but keeps them in memory and writes
them from a thread of the process's own every PUBLISHING_TASK_ROWS_INTERVAL
seconds: one transaction and two statements for everything that happened
meanwhile, whichever threads it happened on.

What that trades:

- The rows lag the jobs by up to the interval (and by a database outage:
  what could not be written is kept, up to MAX_PENDING messages, and written
  when the database answers again).
- A process killed with SIGKILL loses the rows of its last interval. They
  are job-level records; the publishing itself is written by the job, at
  once, and is the source of truth. A graceful stop writes them all.
- Rows from several processes meet in the database out of order, so an
  enqueue only ever creates a row, never overwrites one: a web process's
  "enqueued" written after the worker's "done" must not undo it. The
  worker's later states always overwrite.

0 writes each row at once, on the job's thread (the test settings do).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import dramatiq
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

# Messages whose rows wait for a database that does not answer; past this the
# oldest are dropped (and counted in the log), so that an outage cannot grow
# a worker without bound.
MAX_PENDING = 20_000


@dataclass(frozen=True)
class _Row:
    status: str
    message_data: bytes
    actor_name: str
    queue_name: str

    @property
    def creates_only(self) -> bool:
        from django_dramatiq.models import Task

        return self.status in (Task.STATUS_ENQUEUED, Task.STATUS_DELAYED)


class TaskRows(Middleware):
    """Records each message's task row like django-dramatiq's AdminMiddleware, written behind in batches."""

    def __init__(self, interval: float | None = None) -> None:
        self._interval = interval
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pending: dict[str, _Row] = {}
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False
        self._failing = False
        self._dropped = 0

    @property
    def interval(self) -> float:
        return float(settings.PUBLISHING_TASK_ROWS_INTERVAL if self._interval is None else self._interval)

    # --- dramatiq's hooks: the statuses as AdminMiddleware sets them -------------------------------

    def after_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        from django_dramatiq.models import Task

        self.record(message, Task.STATUS_DELAYED if delay else Task.STATUS_ENQUEUED)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        from django_dramatiq.models import Task

        self.record(message, Task.STATUS_RUNNING)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        from django_dramatiq.models import Task

        self.record(message, Task.STATUS_SKIPPED)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        from django_dramatiq.models import Task

        if exception is None:
            self.record(message, Task.STATUS_DONE)
            return
        # The admin shows it from the message data, as django-dramatiq's does.
        message.options["traceback"] = "".join(traceback.format_exception(exception, limit=30))
        self.record(message, Task.STATUS_FAILED)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.close()

    # --- the buffer ------------------------------------------------------------------------------

    def record(self, message: dramatiq.Message[Any] | MessageProxy, status: str) -> None:
        row = _Row(status, message.encode(), message.actor_name, message.queue_name)
        if os.getpid() != self._pid:
            self._reset()  # a forked child: the parent's writer thread and rows are not ours
        if self.interval > 0:
            with self._lock:
                # Closed: a job that ended after its worker began to shut down; written at once.
                if not self._closed:
                    if not (row.creates_only and message.message_id in self._pending):
                        self._pending[message.message_id] = row
                    if self._writer is None:
                        self._writer = threading.Thread(
                            target=self._write_forever, name="task-rows", daemon=True
                        )
                        self._writer.start()
                        atexit.register(self.close)
                    return
        self._write({message.message_id: row})

    def flush(self) -> bool:
        """Write what is pending now, on this thread; False if the database refused (it stays pending)."""
        with self._lock:
            rows, self._pending = self._pending, {}
        if not rows:
            return True
        try:
            self._write(rows)
        except Exception:
            if not self._failing:  # once an outage, not at every batch
                logger.warning("task rows: %d not written yet; retrying", len(rows), exc_info=True)
            self._failing = True
            self._keep(rows)
            return False
        if self._failing:
            logger.info("task rows: written again")
            self._failing = False
        return True

    def close(self) -> None:
        """Stop the writer and write what is left (a graceful stop loses no row)."""
        with self._lock:
            self._closed = True
            writer = self._writer
        if writer is not None:
            self._stopping.set()
            writer.join(timeout=10)
            atexit.unregister(self.close)
        self.flush()

    def _write_forever(self) -> None:
        connection = connections[_database()]
        while not self._stopping.wait(self.interval):
            # The connection is kept for the next batch: dropped when too old, or broken.
            close_old_connections()
            if not self.flush():
                connection.close()
        connection.close()

    def _keep(self, rows: dict[str, _Row]) -> None:
        with self._lock:
            for message_id, row in rows.items():
                newer = self._pending.get(message_id)
                if newer is None or (newer.creates_only and not row.creates_only):
                    self._pending[message_id] = row
            excess = len(self._pending) - MAX_PENDING
            if excess > 0:
                for message_id in list(self._pending)[:excess]:
                    del self._pending[message_id]
                self._dropped += excess
                logger.error("task rows: %d dropped while the database was unavailable", self._dropped)

    @staticmethod
    def _write(rows: dict[str, _Row]) -> None:
        from django_dramatiq.models import Task

        def tasks(creates_only: bool) -> list[Task]:
            return [
                Task(
                    id=message_id,
                    status=row.status,
                    message_data=row.message_data,
                    actor_name=row.actor_name,
                    queue_name=row.queue_name,
                )
                for message_id, row in rows.items()
                if row.creates_only == creates_only
            ]

        database = _database()
        with transaction.atomic(using=database):
            if updates := tasks(creates_only=False):
                Task.tasks.using(database).bulk_create(
                    updates,
                    update_conflicts=True,
                    unique_fields=["id"],
                    update_fields=["status", "message_data", "actor_name", "queue_name", "updated_at"],
                )
            if creates := tasks(creates_only=True):
                Task.tasks.using(database).bulk_create(creates, ignore_conflicts=True)


def _database() -> str:
    from django_dramatiq.models import DATABASE_LABEL

    return str(DATABASE_LABEL)
