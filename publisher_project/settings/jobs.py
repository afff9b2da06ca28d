"""The build jobs: their queue, retries, time limits, start rate, leases, reconciliation and retention."""

from __future__ import annotations

from .validation import RATE_EXPECTED, parse_rate, read_bool, read_int, read_parsed, read_str

__all__ = [
    "PUBLISHING_ABORT_TTL_MS",
    "PUBLISHING_ATTEMPT_LOG_EXCERPT",
    "PUBLISHING_CHECKOUT_TIMEOUT",
    "PUBLISHING_LEASE_TIMEOUT",
    "PUBLISHING_LOG_LIMIT",
    "PUBLISHING_MAX_BACKOFF_MS",
    "PUBLISHING_MAX_RETRIES",
    "PUBLISHING_MIN_BACKOFF_MS",
    "PUBLISHING_PIPELINE",
    "PUBLISHING_QUEUE",
    "PUBLISHING_RATE_LIMIT",
    "PUBLISHING_RATE_LIMIT_FAIR",
    "PUBLISHING_RECONCILE_GRACE",
    "PUBLISHING_RECONCILE_INTERVAL",
    "PUBLISHING_RETENTION_FAILED",
    "PUBLISHING_SHUTDOWN_TIMEOUT",
    "PUBLISHING_SUBMIT_TIMEOUT",
    "PUBLISHING_TIME_LIMIT_MS",
]

# The build actor's queue; configurable so that deployments (and test runs) can share one RabbitMQ.
PUBLISHING_QUEUE: str = read_str("PUBLISHING_QUEUE", "publishing-builds")
# Retries of a transient failure (so up to 4 runs).
PUBLISHING_MAX_RETRIES: int = read_int("PUBLISHING_MAX_RETRIES", 3)
# The first retry's delay; it doubles each retry, with jitter...
PUBLISHING_MIN_BACKOFF_MS: int = read_int("PUBLISHING_MIN_BACKOFF_MS", 2_000)
# ...up to this.
PUBLISHING_MAX_BACKOFF_MS: int = read_int("PUBLISHING_MAX_BACKOFF_MS", 300_000)
# A job running longer fails with TIME_LIMIT_EXCEEDED.
PUBLISHING_TIME_LIMIT_MS: int = read_int("PUBLISHING_TIME_LIMIT_MS", 30 * 60_000)
# N job starts per rolling D seconds across all workers ("5/60s", or "300/hour"); "0" is off.
PUBLISHING_RATE_LIMIT: tuple[int, float] | None = read_parsed(
    "PUBLISHING_RATE_LIMIT", "5/60s", parse_rate, RATE_EXPECTED
)
# While the limit is reached, a free slot goes to the waiting project owner with the fewest starts in
# the window; off, to whichever deferred message asks first.
PUBLISHING_RATE_LIMIT_FAIR: bool = read_bool("PUBLISHING_RATE_LIMIT_FAIR", True)
# Cancellations must outlive any queue wait, backoff or rate-limit delay.
PUBLISHING_ABORT_TTL_MS: int = read_int("PUBLISHING_ABORT_TTL_MS", 24 * 3600 * 1000)
# A running attempt refreshes its lease every LEASE_TIMEOUT/6 s; one silent
# for LEASE_TIMEOUT s belongs to a dead worker and is requeued. Together with
# the interval they bound how long a killed worker's job waits (15-20 s):
# a lease that runs out under a live attempt costs wasted work, never a second
# publication (the old attempt is fenced out), so they can be short.
PUBLISHING_LEASE_TIMEOUT: int = read_int("PUBLISHING_LEASE_TIMEOUT", 15, minimum=1)
# Seconds between two reconciliations by each worker (0 would never pause).
PUBLISHING_RECONCILE_INTERVAL: int = read_int("PUBLISHING_RECONCILE_INTERVAL", 5, minimum=1)
# Rows younger than this are left alone (their message may be on its way).
PUBLISHING_RECONCILE_GRACE: int = read_int("PUBLISHING_RECONCILE_GRACE", 60)
# On SIGTERM, running jobs get this many seconds, then are requeued.
PUBLISHING_SHUTDOWN_TIMEOUT: int = read_int("PUBLISHING_SHUTDOWN_TIMEOUT", 30)
# Dead-lettered messages kept (the newest): the only job records beside the publishings, whose
# attempts record every run (a completed job leaves no record to keep).
PUBLISHING_RETENTION_FAILED: int = read_int("PUBLISHING_RETENTION_FAILED", 500)

# Dotted path of the pipeline class (tests and other pipelines plug theirs in).
PUBLISHING_PIPELINE: str = read_str("PUBLISHING_PIPELINE", "publishing.pipeline.DefaultPipeline")
# Seconds the checkout step may take.
PUBLISHING_CHECKOUT_TIMEOUT: int = read_int("PUBLISHING_CHECKOUT_TIMEOUT", 300)
# Seconds the submit step may take.
PUBLISHING_SUBMIT_TIMEOUT: int = read_int("PUBLISHING_SUBMIT_TIMEOUT", 60)
# Characters of log kept per publishing (the newest).
PUBLISHING_LOG_LIMIT: int = read_int("PUBLISHING_LOG_LIMIT", 64 * 1024)
# The end of each attempt's own log, kept with its record (API detail, admin).
PUBLISHING_ATTEMPT_LOG_EXCERPT: int = read_int("PUBLISHING_ATTEMPT_LOG_EXCERPT", 4 * 1024)
