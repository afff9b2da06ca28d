"""Plain Django views: the Prometheus scrape endpoint (text, not JSON, so not a DRF view), the favicon."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.views.decorators.cache import never_cache

from publisher_project.errors import error_response
from publishing import metrics


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The web tier's metrics; a Bearer METRICS_TOKEN is wanted when one is set."""
    if request.method not in {"GET", "HEAD"}:
        return error_response(
            "METHOD_NOT_ALLOWED",
            f'Method "{request.method}" not allowed.',
            status=405,
            headers={"Allow": "GET, HEAD"},
        )
    if settings.METRICS_TOKEN:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {settings.METRICS_TOKEN}".encode()):
            return error_response(
                "NOT_AUTHENTICATED",
                "A valid metrics token is required.",
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Publisher's icon, for the pages that name none (the admin's, the API's): browsers ask here.

    Resolved per request, not at import: the production storage names the file by its hash.
    """
    return HttpResponsePermanentRedirect(static("publishing/favicon.svg"))
