"""The worker's periodic work (leases, reconciliation, sweeps) runs guarded: it logs, and tries again."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import close_old_connections

from publishing.log_context import outage_errors

logger = logging.getLogger(__name__)


def guarded(work: Callable[[], object]) -> None:
    """Run one pass of `work`; an outage is one WARNING line, a bug an ERROR with its traceback."""
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
