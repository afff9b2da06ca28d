"""The error envelope every JSON error answer has: `{"code", "detail"}`, plus any keys of its own.

`code` is a stable, machine-readable name (`VALIDATION_ERROR`, `CONFLICT`...); `detail` says in
words what went wrong and what to do. Validation errors add `errors` (per field), conflicts with
an active publishing `active_id` and `active_url` (its API URL).
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "detail": detail, **extra}


def error_response(
    code: str, detail: str, *, status: int, headers: dict[str, str] | None = None, **extra: Any
) -> JsonResponse:
    """A plain Django answer in the envelope (outside DRF: error handlers, middleware, plain views)."""
    return JsonResponse(error_body(code, detail, **extra), status=status, headers=headers)
