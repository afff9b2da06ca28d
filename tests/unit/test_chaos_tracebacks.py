"""The chaos round's traceback check (tests/chaos/engine.py): every traceback in a log is found, once."""

from __future__ import annotations

from tests.chaos.engine import tracebacks_in

CHAINED = """\
2026-01-01 10:00:00,000 ERROR publishing.services publishing 1: could not record the failure of attempt 1
Traceback (most recent call last):
  File "psycopg/connection.py", line 126, in connect
    raise last_ex.with_traceback(None)
psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "one_attempt"
DETAIL:  Key (publishing_id, number)=(1, 1) already exists.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "publishing/services.py", line 477, in _record_failure
    _finish_attempt()
django.db.utils.IntegrityError: duplicate key value violates unique constraint "one_attempt"
DETAIL:  Key (publishing_id, number)=(1, 1) already exists.
2026-01-01 10:00:01,000 INFO publishing.services publishing 1 published
"""

CRASH = """\
[2026-01-01 10:00:02 +0000] [12] [ERROR] Error handling request /api/v1/publishing/initiate
Traceback (most recent call last):
  File "publishing/services.py", line 10, in publishing_initiate
    return publishing.pk
AttributeError: 'NoneType' object has no attribute 'pk'
"""

OUTAGE_IN_ONE_LINE = """\
2026-01-01 10:00:03,000 WARNING publishing.tasks publishing 1: database unavailable (refused); will retry
2026-01-01 10:00:04,000 WARNING dramatiq_abort.middleware.Abortable Unhandled error while running the abort \
watcher.: redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.
"""


def test_a_chained_traceback_counts_once_by_its_final_exception_whatever_its_message_lines() -> None:
    assert tracebacks_in(CHAINED) == [
        'django.db.utils.IntegrityError: duplicate key value violates unique constraint "one_attempt"'
    ]


def test_each_traceback_is_found_among_other_records_and_an_outage_logged_in_one_line_is_none() -> None:
    assert tracebacks_in(OUTAGE_IN_ONE_LINE) == []
    assert tracebacks_in(OUTAGE_IN_ONE_LINE + CHAINED + CRASH) == [
        'django.db.utils.IntegrityError: duplicate key value violates unique constraint "one_attempt"',
        "AttributeError: 'NoneType' object has no attribute 'pk'",
    ]
