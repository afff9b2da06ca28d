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
  enqueue by a process that has not run the message (the web's, a delayed
  message moved to its queue) only ever creates a row: written after the
  worker's "done", it must not undo it. In the process that ran it, the
  order is known, and an enqueue overwrites as any other state: a retry's
  "delayed" follows the "failed" of the attempt before it, as with
  django-dramatiq.
- Within a process, the last state of each message in a batch is the one
  written; across processes, the last batch written wins.

0 writes each row at once, on the job's thread (the test settings do).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

import dramatiq
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections, transaction
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

# Messages whose rows wait for a database that does not answer (or a writer
# that is stuck); past this the oldest are dropped, and counted in the log,
# so that an outage cannot grow a process without bound.
MAX_PENDING = 20_000
# Ids of messages this process ran lately: an enqueue of one of them is its
# retry or deferral, whose order after the attempt's end is known here.
SEEN = 10_000
# The database does not answer: the batch is kept. Any other error is the
# rows' own, and only the rows that cause it are dropped.
UNAVAILABLE = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class _Row:
    status: str
    message_data: bytes
    actor_name: str
    queue_name: str
    overwrites: bool  # False: only creates the row if there is none


class TaskRows(Middleware):
    """Records each message's task row like django-dramatiq's AdminMiddleware, written behind in batches."""

    def __init__(self, interval: float | None = None) -> None:
        self._interval = interval
        self._reset()
        # A forked child (dramatiq's and gunicorn's workers) starts empty, with locks of its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # guards what follows
        self._pending: dict[str, _Row] = {}
        self._seen: dict[str, None] = {}  # insertion-ordered: the oldest go first
        self._writer: threading.Thread | None = None
        self._closed = False
        self._dropped = 0
        self._failing = False
        # One batch in the database at a time, so that an older batch never lands after a newer one.
        self._writing = threading.Lock()
        self._stopping = threading.Event()

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
        from django_dramatiq.models import Task

        message_id = message.message_id
        if not _is_uuid(message_id):
            # The table's key is a UUID: such a row could never be written (nor block the others).
            logger.warning("task rows: message id %r is no UUID; no row for it", message_id[:100])
            return
        enqueued = status in (Task.STATUS_ENQUEUED, Task.STATUS_DELAYED)
        data = message.encode()
        with self._lock:
            if not enqueued:
                self._seen[message_id] = None
                if len(self._seen) > SEEN:
                    del self._seen[next(iter(self._seen))]
            row = _Row(
                status, data, message.actor_name, message.queue_name, not enqueued or message_id in self._seen
            )
            if row.overwrites or message_id not in self._pending:
                self._pending[message_id] = row
            self._trim()
            batched = self.interval > 0 and not self._closed
            if batched and self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, name="task-rows", daemon=True)
                self._writer.start()
                atexit.register(self.close)
        if not batched:
            # Closed: a job that ended after its worker began to shut down; written at once.
            self.flush()

    def flush(self) -> bool:
        """Write what is pending now, on this thread; False if the database refused (it stays pending)."""
        with self._writing:
            with self._lock:
                rows, self._pending = self._pending, {}
            if not rows:
                return True
            try:
                self._write_each_that_can_be(rows)
            except UNAVAILABLE as exc:
                if not self._failing:  # once an outage, not at every batch
                    logger.warning("task rows: %d not written yet (%s); retrying", len(rows), exc)
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
        if not self.flush():
            logger.error("task rows: %d lost: the database was unavailable at the stop", len(self._pending))

    def _write_forever(self) -> None:
        connection = connections[_database()]
        while not self._stopping.wait(self.interval):
            try:
                # The connection is kept for the next batch: dropped when too old, or broken.
                close_old_connections()
                if not self.flush():
                    connection.close()
            except Exception:
                # Never the end of the writer: the rows would pile up unwritten.
                logger.exception("task rows: the writer failed; going on")
        connection.close()

    def _keep(self, rows: dict[str, _Row]) -> None:
        """Put back a batch the database refused; what was recorded meanwhile is newer."""
        with self._lock:
            for message_id, row in rows.items():
                newer = self._pending.get(message_id)
                if newer is None or (row.overwrites and not newer.overwrites):
                    self._pending[message_id] = row
            self._trim()

    def _trim(self) -> None:
        excess = len(self._pending) - MAX_PENDING
        if excess > 0:
            for message_id in list(self._pending)[:excess]:
                del self._pending[message_id]
            if not self._dropped:
                logger.error("task rows: over %d waiting to be written; dropping the oldest", MAX_PENDING)
            self._dropped += excess

    @classmethod
    def _write_each_that_can_be(cls, rows: dict[str, _Row]) -> None:
        """Write the batch; if a row of it is refused for itself, write the others and drop that one."""
        try:
            cls._write(rows)
        except UNAVAILABLE:
            raise
        except Exception:
            for message_id, row in rows.items():
                try:
                    cls._write({message_id: row})
                except UNAVAILABLE:
                    raise
                except Exception:
                    logger.exception("task rows: the row of message %s was refused; dropped", message_id)

    @staticmethod
    def _write(rows: dict[str, _Row]) -> None:
        from django_dramatiq.models import Task

        def tasks(overwrites: bool) -> list[Task]:
            return [
                Task(
                    id=message_id,
                    status=row.status,
                    message_data=row.message_data,
                    actor_name=row.actor_name,
                    queue_name=row.queue_name,
                )
                for message_id, row in rows.items()
                if row.overwrites == overwrites
            ]

        database = _database()
        # Checked before the transaction: a connection that a database restart broke is
        # replaced here, rather than failing the batch inside it.
        connections[database].close_if_health_check_failed()
        with transaction.atomic(using=database):
            if updates := tasks(overwrites=True):
                Task.tasks.using(database).bulk_create(
                    updates,
                    update_conflicts=True,
                    unique_fields=["id"],
                    update_fields=["status", "message_data", "actor_name", "queue_name", "updated_at"],
                )
            if creates := tasks(overwrites=False):
                Task.tasks.using(database).bulk_create(creates, ignore_conflicts=True)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _database() -> str:
    from django_dramatiq.models import DATABASE_LABEL

    return str(DATABASE_LABEL)
