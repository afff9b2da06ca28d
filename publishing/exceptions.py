"""Domain errors. Each carries a stable `code`; the API maps them in one place."""

from __future__ import annotations

import uuid
from typing import Any


class PublishingError(Exception):
    """Base of every domain error; `code` is stable and shown to users."""

    code = "PUBLISHING_ERROR"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


# --- Errors of a request (mapped to HTTP statuses) ----------------------------


class NotFound(PublishingError):
    code = "NOT_FOUND"


class Forbidden(PublishingError):
    """The caller sees the object but lacks the right to do this to it."""

    code = "PERMISSION_DENIED"


class PublishingConflict(PublishingError):
    """Another publishing of the same project is still active."""

    code = "CONFLICT"

    def __init__(self, detail: str, *, active_id: uuid.UUID | None = None) -> None:
        super().__init__(detail)
        self.active_id = active_id

    def extra(self) -> dict[str, Any]:
        return {"active_id": str(self.active_id)} if self.active_id else {}


class InvalidTransition(PublishingConflict):
    """A status change that the status machine does not allow from the current state."""


class BrokerUnavailable(PublishingError):
    code = "SERVICE_UNAVAILABLE"

    def __init__(self, detail: str = "Background job service unavailable") -> None:
        super().__init__(detail)


# --- Errors of a job (recorded on the publishing as error_code) --------------


class JobError(PublishingError):
    """A pipeline failure. Transient ones are retried, permanent ones are not."""

    transient = False
    # Set once a transient failure is recorded for a retry: when the retry is due (the record says so).
    retry_in_ms: int | None = None


class PermanentJobError(JobError):
    code = "PERMANENT_ERROR"


class TransientJobError(JobError):
    code = "TRANSIENT_ERROR"
    transient = True


class StaleAttempt(Exception):
    """This run no longer owns the publishing (a newer attempt, a cancel, a finish)."""
