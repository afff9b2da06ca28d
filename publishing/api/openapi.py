"""The OpenAPI declarations the views share: error responses, headers and path parameters."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from publishing.api import examples
from publishing.api.bodies import ErrorSerializer

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="VALIDATION_ERROR"),
    401: OpenApiResponse(ErrorSerializer, description="NOT_AUTHENTICATED"),
    404: OpenApiResponse(ErrorSerializer, description="NOT_FOUND"),
}
# Reads: no body to refuse; 404 also for a page number past the end.
READ_ERRORS = {code: ERRORS[code] for code in (401, 404)}
# Writes with a session cookie need the CSRF token (token authentication does not).
WRITE_ERRORS = {
    **ERRORS,
    403: OpenApiResponse(ErrorSerializer, description="PERMISSION_DENIED: a session without its CSRF token"),
}
# Operations that read a body: one in a media type they do not parse (JSON, form, multipart) is refused.
UNSUPPORTED_MEDIA_TYPE = {
    415: OpenApiResponse(
        ErrorSerializer, description="UNSUPPORTED_MEDIA_TYPE: a body that is not JSON, a form or multipart"
    ),
}
THROTTLED = {
    429: OpenApiResponse(
        ErrorSerializer,
        description="THROTTLED: over PUBLISHING_INITIATE_RATE (initiate, retry and re-run count together)",
    )
}
UNAVAILABLE = {
    503: OpenApiResponse(ErrorSerializer, description="SERVICE_UNAVAILABLE: the job service is down"),
}
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    type=int,
    location=OpenApiParameter.HEADER,
    response=[429, 503],
    description="Seconds to wait before trying again.",
)
PROJECT_ID = OpenApiParameter(
    "id",
    type=OpenApiTypes.UUID,
    location=OpenApiParameter.PATH,
    description="The project's id.",
    examples=[OpenApiExample("Marketing site", value=examples.PROJECT_ID)],
)
PUBLISHING_ID = OpenApiParameter(
    "id",
    type=OpenApiTypes.UUID,
    location=OpenApiParameter.PATH,
    description="The publishing's id.",
    examples=[OpenApiExample("A publishing of the marketing site", value=examples.PUBLISHING_ID)],
)
LOCATION = OpenApiParameter(
    "Location", location=OpenApiParameter.HEADER, response=[202], description="The publishing's URL."
)
