"""Every API error in the one envelope (`publisher_project.errors`): DRF's, the domain's and Django's own."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import DisallowedHost, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.views import csrf, defaults
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import exception_handler

from publisher_project.errors import error_body, error_response
from publisher_project.middleware import (
    DATABASE_UNAVAILABLE_ERRORS,
    RETRY_AFTER_SECONDS,
    database_unavailable,
)
from publishing.exceptions import BrokerUnavailable, Forbidden, NotFound, PublishingConflict, PublishingError

logger = logging.getLogger(__name__)

_CODES: dict[type[exceptions.APIException], tuple[str, int]] = {
    exceptions.NotAuthenticated: ("NOT_AUTHENTICATED", status.HTTP_401_UNAUTHORIZED),
    exceptions.AuthenticationFailed: ("NOT_AUTHENTICATED", status.HTTP_401_UNAUTHORIZED),
    exceptions.PermissionDenied: ("PERMISSION_DENIED", status.HTTP_403_FORBIDDEN),
    exceptions.NotFound: ("NOT_FOUND", status.HTTP_404_NOT_FOUND),
    exceptions.MethodNotAllowed: ("METHOD_NOT_ALLOWED", status.HTTP_405_METHOD_NOT_ALLOWED),
    exceptions.NotAcceptable: ("NOT_ACCEPTABLE", status.HTTP_406_NOT_ACCEPTABLE),
    exceptions.UnsupportedMediaType: ("UNSUPPORTED_MEDIA_TYPE", status.HTTP_415_UNSUPPORTED_MEDIA_TYPE),
    exceptions.Throttled: ("THROTTLED", status.HTTP_429_TOO_MANY_REQUESTS),
    exceptions.ValidationError: ("VALIDATION_ERROR", status.HTTP_400_BAD_REQUEST),
    exceptions.ParseError: ("VALIDATION_ERROR", status.HTTP_400_BAD_REQUEST),
}


def _domain_error(exc: PublishingError, request: Request | None) -> Response:
    if isinstance(exc, BrokerUnavailable):
        return Response(
            error_body(exc.code, exc.detail),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if isinstance(exc, PublishingConflict):
        body = error_body("CONFLICT", exc.detail, **exc.extra())
        if exc.active_id:
            # Beside the id, where to read it: a client (or a person) follows the link.
            url = reverse("publishing-detail", kwargs={"pk": str(exc.active_id)}, request=request)
            body["active_url"] = str(url)
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, NotFound):
        return Response(error_body("NOT_FOUND", exc.detail), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, Forbidden):
        return Response(error_body(exc.code, exc.detail), status=status.HTTP_403_FORBIDDEN)
    return Response(error_body(exc.code, exc.detail), status=status.HTTP_400_BAD_REQUEST)


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map any error to `{"code", "detail"}` (plus `errors` per field for validation, `active_id` and
    `active_url` for a conflict with an active publishing)."""
    if isinstance(exc, PublishingError):
        return _domain_error(exc, context.get("request"))
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        # For instance RequestDataTooBig: a body over DATA_UPLOAD_MAX_MEMORY_SIZE.
        exc = exceptions.ValidationError({"non_field_errors": [str(exc) or "Malformed request."]})
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code, status_code = next(
        ((code, st) for cls, (code, st) in _CODES.items() if isinstance(exc, cls)),
        (str(exc.default_code).upper(), response.status_code),
    )
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(code, _flatten(exc.detail), errors=exc.detail)
    else:
        response.data = error_body(code, str(exc.detail))
    response.status_code = status_code
    return response


def _speaks_json(request: HttpRequest) -> bool:
    """Whether `request` is for the API or the metrics, which answer errors in the JSON envelope."""
    return request.path.startswith("/api/") or request.path == "/metrics"


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """JSON 400 under /api/ and /metrics (a Host not in ALLOWED_HOSTS, say), Django's page elsewhere."""
    if _speaks_json(request):
        detail = "Bad request: the Host header is not one this service answers to."
        if not isinstance(exception, DisallowedHost):
            detail = "Bad request."
        return error_response("VALIDATION_ERROR", detail, status=400)
    return defaults.bad_request(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """JSON 403 under /api/ and /metrics when Django's CSRF check refuses a request, its page elsewhere."""
    if _speaks_json(request):
        detail = f"CSRF verification failed: {reason}" if reason else "CSRF verification failed."
        return error_response("PERMISSION_DENIED", detail, status=403)
    return csrf.csrf_failure(request, reason=reason)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """JSON 404 under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response("NOT_FOUND", "Not found.", status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """JSON 500 under /api/ (a bug, never bad input), Django's page elsewhere.

    A lost database connection raised outside a view (a middleware saving the session) is a 503,
    as DatabaseUnavailableMiddleware answers for the views.
    """
    if isinstance(sys.exc_info()[1], DATABASE_UNAVAILABLE_ERRORS):
        return database_unavailable(request)
    if request.path.startswith("/api/"):
        return error_response("INTERNAL_ERROR", "Internal server error.", status=500)
    return defaults.server_error(request)
