"""The chaos round's traceback check (tests/chaos/engine.py): outages excused, crashes caught."""

from __future__ import annotations

from tests.chaos.engine import tracebacks_in, unexpected_tracebacks

OUTAGE = """\
2026-01-01 10:00:00,000 ERROR publishing.middleware lifecycle task failed; trying again
Traceback (most recent call last):
  File "psycopg/connection.py", line 126, in connect
    raise last_ex.with_traceback(None)
psycopg.OperationalError: connection failed: FATAL:  the database system is not yet accepting connections
DETAIL:  Consistent recovery state has not been yet reached.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "publishing/middleware.py", line 477, in _guarded
    work()
django.db.utils.OperationalError: connection failed: FATAL:  the database system is starting up
DETAIL:  Consistent recovery state has not been yet reached.
2026-01-01 10:00:01,000 INFO publishing.services publishing 1 published
"""

CRASH = """\
[2026-01-01 10:00:02 +0000] [12] [ERROR] Error handling request /api/v1/publishing/initiate
Traceback (most recent call last):
  File "publishing/services.py", line 10, in publishing_initiate
    return publishing.pk
AttributeError: 'NoneType' object has no attribute 'pk'
"""


def test_a_chained_traceback_counts_once_by_its_final_exception_whatever_its_message_lines() -> None:
    assert tracebacks_in(OUTAGE) == [
        "django.db.utils.OperationalError: connection failed: FATAL:  the database system is starting up"
    ]


def test_the_outages_tracebacks_are_excused_and_a_crash_is_not() -> None:
    assert unexpected_tracebacks(OUTAGE) == []
    assert unexpected_tracebacks(OUTAGE + CRASH) == [
        "AttributeError: 'NoneType' object has no attribute 'pk'"
    ]
