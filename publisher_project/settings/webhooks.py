"""Webhook deliveries: their queue, retries and timeout."""

from __future__ import annotations

from .jobs import PUBLISHING_QUEUE
from .validation import read_int, read_str

__all__ = [
    "PUBLISHING_WEBHOOK_MAX_BACKOFF_MS",
    "PUBLISHING_WEBHOOK_MAX_RETRIES",
    "PUBLISHING_WEBHOOK_MIN_BACKOFF_MS",
    "PUBLISHING_WEBHOOK_QUEUE",
    "PUBLISHING_WEBHOOK_TIMEOUT",
]

# Its own queue: a delivery never waits behind a backlog of build messages.
PUBLISHING_WEBHOOK_QUEUE: str = read_str("PUBLISHING_WEBHOOK_QUEUE", f"{PUBLISHING_QUEUE}-webhooks")
# Retries of a delivery the receiver did not take (timeouts, 408, 429, 5xx). 10 retries from 10 s
# doubling (with jitter) up to 1 h: 11 POSTs over about 1.7 to 3.4 hours.
PUBLISHING_WEBHOOK_MAX_RETRIES: int = read_int("PUBLISHING_WEBHOOK_MAX_RETRIES", 10)
# The first retry's delay, doubling with jitter...
PUBLISHING_WEBHOOK_MIN_BACKOFF_MS: int = read_int("PUBLISHING_WEBHOOK_MIN_BACKOFF_MS", 10_000)
# ...up to this.
PUBLISHING_WEBHOOK_MAX_BACKOFF_MS: int = read_int("PUBLISHING_WEBHOOK_MAX_BACKOFF_MS", 3_600_000)
# Seconds to connect, and then to wait for each part of the answer.
PUBLISHING_WEBHOOK_TIMEOUT: int = read_int("PUBLISHING_WEBHOOK_TIMEOUT", 10)
