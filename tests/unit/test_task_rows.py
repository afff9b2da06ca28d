"""Task rows written behind the jobs (publishing/task_rows.py): same rows as django-dramatiq's, in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from django.db import OperationalError
from django_dramatiq.models import Task
from dramatiq.broker import MessageProxy

from publishing import task_rows
from publishing.task_rows import TaskRows
from tests.support.polling import wait_until

pytestmark = pytest.mark.django_db

BROKER: Any = None  # the hooks ignore it


def message(actor: str = "build_and_submit", queue: str = "publishing-builds") -> MessageProxy:
    return MessageProxy(
        dramatiq.Message(queue_name=queue, actor_name=actor, args=("a",), kwargs={}, options={})
    )


@pytest.fixture
def recorder() -> Iterator[Callable[[float], TaskRows]]:
    """TaskRows made by a test; each is closed after it, with what the test left unwritten discarded."""
    made: list[TaskRows] = []

    def make(interval: float) -> TaskRows:
        made.append(TaskRows(interval=interval))
        return made[-1]

    yield make
    for rows in made:
        rows._pending.clear()
        rows.close()


def status(proxy: MessageProxy) -> str | None:
    row = Task.tasks.filter(pk=proxy.message_id).first()
    return None if row is None else row.status


def test_a_jobs_rows_wait_for_the_batch_and_then_say_what_happened(recorder) -> None:
    # Given a recorder that writes only when told (an hour between batches)
    rows = recorder(3600)
    done, failed, skipped = message(), message(), message()

    # When three jobs are enqueued and run: one succeeds, one fails, one is skipped
    for proxy in (done, failed, skipped):
        rows.after_enqueue(BROKER, proxy, None)
        rows.before_process_message(BROKER, proxy)
    rows.after_process_message(BROKER, done, result=None)
    try:
        raise RuntimeError("checkout failed")
    except RuntimeError as exc:
        rows.after_process_message(BROKER, failed, exception=exc)
    rows.after_skip_message(BROKER, skipped)

    # Then nothing is written until the batch, which writes each message's last state
    assert Task.tasks.count() == 0
    assert rows.flush() is True
    assert (status(done), status(failed), status(skipped)) == ("done", "failed", "skipped")
    task = Task.tasks.get(pk=failed.message_id)
    assert (task.actor_name, task.queue_name) == ("build_and_submit", "publishing-builds")
    # The admin shows the failure's traceback from the message data, as with django-dramatiq.
    assert "RuntimeError: checkout failed" in task.message.options["traceback"]


def test_a_delayed_enqueue_is_recorded_as_delayed(recorder) -> None:
    rows = recorder(3600)
    proxy = message()

    rows.after_enqueue(BROKER, proxy, 2000)
    rows.flush()

    assert status(proxy) == "delayed"


def test_an_enqueue_written_late_by_another_process_does_not_undo_a_finished_job(recorder) -> None:
    # Given a web process that enqueued a message and has not written its row yet
    web, worker = recorder(3600), recorder(3600)
    proxy = message()
    web.after_enqueue(BROKER, proxy, None)

    # When a worker runs it and writes first, and the web's batch comes after
    worker.before_process_message(BROKER, proxy)
    worker.after_process_message(BROKER, proxy, result=None)
    worker.flush()
    web.flush()

    # Then the row still says done
    assert status(proxy) == "done"


def test_a_retry_after_a_failure_leaves_the_row_delayed_with_the_retry_count_as_django_dramatiq_does(
    recorder,
) -> None:
    # Dramatiq calls the row's hook (last middleware) before Retries, which then enqueues the retry.
    rows = recorder(3600)
    proxy = message()
    rows.before_process_message(BROKER, proxy)
    rows.after_process_message(BROKER, proxy, exception=RuntimeError("boom"))
    proxy.options["retries"] = 1
    rows.after_enqueue(BROKER, proxy, 2000)

    rows.flush()

    assert status(proxy) == "delayed"
    assert Task.tasks.get(pk=proxy.message_id).message.options["retries"] == 1


def test_an_enqueue_by_a_process_that_did_not_run_the_message_never_overwrites(recorder) -> None:
    # A worker wrote "done"; another process moves a (stale) copy of the message to its queue.
    worker, mover = recorder(3600), recorder(3600)
    proxy = message()
    worker.before_process_message(BROKER, proxy)
    worker.after_process_message(BROKER, proxy, result=None)
    worker.flush()

    mover.after_enqueue(BROKER, proxy, None)
    mover.flush()

    assert status(proxy) == "done"


def test_a_row_that_can_never_be_written_does_not_hold_up_the_others(recorder, caplog) -> None:
    # Given a message whose id is no UUID (anyone who can write to the broker can send one)
    rows = recorder(3600)
    good = message()
    rows.before_process_message(BROKER, MessageProxy(good._message.copy(message_id="not-a-uuid")))
    rows.before_process_message(BROKER, good)

    # Then the others are written, and the log says why that one is not
    assert rows.flush() is True
    assert status(good) == "running"
    assert Task.tasks.count() == 1
    assert "message id 'not-a-uuid' is no UUID" in caplog.text


def test_a_row_refused_for_itself_is_dropped_and_the_rest_of_its_batch_written(monkeypatch, caplog, recorder):
    rows = recorder(3600)
    bad, good = message(), message()
    rows.before_process_message(BROKER, bad)
    rows.before_process_message(BROKER, good)
    write = TaskRows._write

    def refuse_bad(batch: dict[str, Any]) -> None:
        if bad.message_id in batch:
            raise ValueError("a value the column refuses")
        write(batch)

    monkeypatch.setattr(TaskRows, "_write", staticmethod(refuse_bad))

    assert rows.flush() is True
    assert (status(bad), status(good)) == (None, "running")
    assert rows._pending == {}
    assert f"the row of message {bad.message_id} was refused; dropped" in caplog.text


def test_a_job_that_ends_while_the_worker_stops_is_not_overwritten_by_its_older_state(recorder) -> None:
    # Given a job whose "running" waits in the buffer when the worker begins to shut down
    rows = recorder(3600)
    proxy = message()
    rows.before_process_message(BROKER, proxy)
    rows._closed = True  # what close() sets first, before it waits for the writer

    # When the job ends then (written at once), and close() writes what was left
    rows.after_process_message(BROKER, proxy, result=None)
    rows.close()

    # Then the row says done
    assert status(proxy) == "done"


def test_rows_the_database_refused_are_kept_and_written_when_it_answers(
    monkeypatch, caplog, recorder
) -> None:
    # Given a batch that the database refuses once
    rows = recorder(3600)
    first, second = message(), message()
    rows.before_process_message(BROKER, first)
    write = TaskRows._write
    calls: list[int] = []

    def refuse_once(batch: dict[str, Any]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise OperationalError("database went away")
        write(batch)

    monkeypatch.setattr(TaskRows, "_write", staticmethod(refuse_once))
    assert rows.flush() is False
    assert status(first) is None

    # When the job ends meanwhile and another starts, and the next batch goes through
    rows.after_process_message(BROKER, first, result=None)
    rows.before_process_message(BROKER, second)
    assert rows.flush() is True

    # Then the newest state of each is written, nothing is lost; the log said so once each way
    assert (status(first), status(second)) == ("done", "running")
    assert calls == [1, 2]
    assert caplog.text.count("task rows: 1 not written yet (database went away); retrying") == 1
    assert "task rows: written again" in caplog.text


def test_an_outage_cannot_grow_the_buffer_without_bound(monkeypatch, caplog, recorder) -> None:
    monkeypatch.setattr(task_rows, "MAX_PENDING", 3)
    monkeypatch.setattr(
        TaskRows, "_write", staticmethod(lambda batch: (_ for _ in ()).throw(OperationalError("down")))
    )
    rows = recorder(3600)
    for _ in range(5):
        rows.before_process_message(BROKER, message())

    assert rows.flush() is False

    assert len(rows._pending) == 3
    assert "task rows: over 3 waiting to be written; dropping the oldest" in caplog.text
    assert rows._dropped == 2


def test_close_writes_what_is_left_and_later_rows_are_written_at_once(recorder) -> None:
    rows = recorder(3600)
    running, late = message(), message()
    rows.before_process_message(BROKER, running)

    rows.close()
    assert status(running) == "running"

    # A job that ends after its worker began to shut down.
    rows.before_process_message(BROKER, late)
    assert status(late) == "running"


def test_interval_zero_writes_each_row_at_once(recorder) -> None:
    rows = recorder(0)
    proxy = message()

    rows.after_enqueue(BROKER, proxy, None)

    assert status(proxy) == "enqueued"


@pytest.mark.django_db(transaction=True)
def test_the_writer_thread_writes_batches_on_its_own(recorder) -> None:
    # Given a recorder with a short interval
    rows = recorder(0.05)
    proxies = [message() for _ in range(50)]

    # When jobs run, from this thread
    for proxy in proxies:
        rows.before_process_message(BROKER, proxy)
        rows.after_process_message(BROKER, proxy, result=None)

    # Then its thread writes them without being asked
    wait_until(
        lambda: Task.tasks.filter(status="done").count() >= len(proxies),
        30,
        lambda: f"{Task.tasks.filter(status='done').count()} of {len(proxies)} rows written",
    )
    assert Task.tasks.filter(status="done").count() == len(proxies)


def test_an_outage_is_logged_once_not_at_every_batch(monkeypatch, caplog, recorder) -> None:
    # Given a database that refuses every batch
    monkeypatch.setattr(
        TaskRows, "_write", staticmethod(lambda batch: (_ for _ in ()).throw(OperationalError("down")))
    )
    rows = recorder(3600)
    rows.before_process_message(BROKER, message())

    # When three batches are tried
    outcomes = [rows.flush() for _ in range(3)]

    # Then each says so, and the log once
    assert outcomes == [False, False, False]
    assert caplog.text.count("not written yet (down); retrying") == 1


def test_a_job_that_ends_while_its_batch_is_refused_keeps_its_newer_state(monkeypatch, recorder) -> None:
    # Given a job whose "running" is in the batch being written when the database refuses it, and
    # which ends during that write (another worker thread)
    rows = recorder(3600)
    proxy = message()
    rows.before_process_message(BROKER, proxy)
    write = TaskRows._write
    calls: list[int] = []

    def end_the_job_then_refuse_once(batch: dict[str, Any]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            rows.after_process_message(BROKER, proxy, result=None)
            raise OperationalError("database went away")
        write(batch)

    monkeypatch.setattr(TaskRows, "_write", staticmethod(end_the_job_then_refuse_once))
    assert rows.flush() is False

    # When the next batch goes through
    assert rows.flush() is True

    # Then the row says done: the refused "running" did not come back over it
    assert status(proxy) == "done"


def test_rows_still_unwritten_when_the_worker_stops_are_reported_lost(monkeypatch, caplog, recorder) -> None:
    # Given two jobs' rows waiting, and a database that is away
    rows = recorder(3600)
    rows.before_process_message(BROKER, message())
    rows.before_process_message(BROKER, message())
    monkeypatch.setattr(
        TaskRows, "_write", staticmethod(lambda batch: (_ for _ in ()).throw(OperationalError("down")))
    )

    # When the worker stops
    rows.close()

    # Then the log says how many rows were lost, and why
    assert "task rows: 2 lost: the database was unavailable at the stop" in caplog.text
