"""Signals of the publishing domain."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside the transaction that moved a publishing to a terminal status,
# with `publishing_id` and `status`. A receiver's writes commit with it.
publishing_finished = Signal()
