"""Thin views: parse, call one service or selector, serialize."""

from __future__ import annotations

import re
from typing import Any

import django_filters
from django.contrib.auth.models import User
from django.db import DatabaseError, connection
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, permissions, status, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from publishing import broker
from publishing.api import examples, throttling
from publishing.api.parsers import JSONParser as BoundedJSONParser
from publishing.api.parsers import MultiPartParser as BoundedMultiPartParser
from publishing.api.serializers import (
    EmptySerializer,
    ErrorSerializer,
    HealthSerializer,
    InitiateSerializer,
    ProjectSerializer,
    PublishingListSerializer,
    PublishingSerializer,
    TokenRequestSerializer,
    TokenSerializer,
)
from publishing.api.throttling import PublishingStartThrottle
from publishing.exceptions import PublishingError
from publishing.models import Project, Publishing
from publishing.selectors import projects_visible_to, publishings_visible_to
from publishing.services.projects import project_create, project_delete, project_update
from publishing.services.publishings import publishing_cancel, publishing_initiate, publishing_retry

IDEMPOTENCY_KEY_MAX = 255
# Visible ASCII, spaces only inside: HTTP trims a header value's ends, and anything else arrives
# mangled through WSGI's latin-1. The OpenAPI schema states the same pattern.
IDEMPOTENCY_KEY_PATTERN = rf"[!-~](?:[ -~]{{0,{IDEMPOTENCY_KEY_MAX - 2}}}[!-~])?"

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
        description="THROTTLED: over PUBLISHING_INITIATE_RATE (initiate and retry count together)",
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


def caller(request: Request) -> User:
    """The authenticated user of a request that passed IsAuthenticated."""
    if not isinstance(request.user, User):
        raise exceptions.NotAuthenticated()
    return request.user


@extend_schema(exclude=True)
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def api_root(request: Request, format: str | None = None) -> Response:
    return Response(
        {
            "projects": reverse("project-list", request=request, format=format),
            "publishing": reverse("publishing-list", request=request, format=format),
            "initiate": reverse("publishing-initiate", request=request, format=format),
            "health": reverse("health", request=request, format=format),
            "token": reverse("token", request=request, format=format),
            "schema": reverse("schema", request=request),
            "docs": reverse("swagger-ui", request=request),
        }
    )


@extend_schema(tags=["projects"])
@extend_schema_view(
    list=extend_schema(
        summary="List your projects",
        description="Your projects, by name (everyone's with the view_project permission).",
        responses={200: ProjectSerializer, **READ_ERRORS},
        examples=examples.PROJECT_LIST,
    ),
    create=extend_schema(
        summary="Create a project",
        description="Where the source is, how to build it, where to submit the artifact, and optionally "
        "a webhook that hears of every terminal status. The slug defaults to the name, slugified.",
        responses={201: ProjectSerializer, **WRITE_ERRORS, **UNSUPPORTED_MEDIA_TYPE},
        examples=examples.PROJECT_CREATE,
    ),
    retrieve=extend_schema(
        summary="Show a project",
        parameters=[PROJECT_ID],
        responses={200: ProjectSerializer, **READ_ERRORS},
        examples=examples.PROJECT_DETAIL,
    ),
    partial_update=extend_schema(
        summary="Change a project",
        description="Only the fields sent change; no fields (an empty body or form) change nothing. "
        "A multipart body that is no form (no named part) is 400 VALIDATION_ERROR. Publishings already "
        "initiated keep the settings they were initiated with. Setting a build command needs the "
        "set_build_command permission; without it, the repository or ref of a project that has one "
        'change only with `"build_command": ""` in the same request (the command is bound to the code '
        "it was approved for). 403 for a project you may see but not change.",
        parameters=[PROJECT_ID],
        responses={200: ProjectSerializer, **WRITE_ERRORS, **UNSUPPORTED_MEDIA_TYPE},
        examples=examples.PROJECT_UPDATE,
    ),
    destroy=extend_schema(
        summary="Delete a project",
        description="Refused while one of its publishings is active; its publishings are kept.",
        parameters=[PROJECT_ID],
        responses={
            204: None,
            **WRITE_ERRORS,
            409: OpenApiResponse(ErrorSerializer, description="CONFLICT: a publishing is active"),
        },
        examples=examples.PROJECT_DELETE,
    ),
)
class ProjectViewSet(viewsets.ModelViewSet[Project]):
    """Your projects (everyone's with the view_project permission). A project says what to build and
    where to submit it."""

    serializer_class = ProjectSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Project]:
        return projects_visible_to(self.request.user).order_by("name", "id")

    def perform_create(self, serializer: BaseSerializer[Project]) -> None:
        serializer.instance = project_create(owner=caller(self.request), **serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer[Project]) -> None:
        serializer.instance = project_update(
            project=self.get_object(), by=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance: Project) -> None:
        project_delete(project=instance, by=self.request.user)


class PublishingFilter(django_filters.FilterSet):  # type: ignore[misc]
    status = django_filters.ChoiceFilter(choices=Publishing.Status.choices)
    project = django_filters.UUIDFilter(field_name="project_id")

    class Meta:
        model = Publishing
        fields = ["status", "project"]


@extend_schema(tags=["publishing"])
@extend_schema_view(
    list=extend_schema(
        summary="List publishings",
        description="Yours and those of your projects (everyone's with the view_publishing permission), "
        "newest first; filter by `status` "
        "and `project`. The log and the attempts are in the detail.",
        # Stated by hand: an empty filter means "all" (what the browsable API's filter form sends).
        parameters=[
            OpenApiParameter(
                "status",
                enum=[*Publishing.Status.values, ""],
                description="Only publishings in this status; empty: any.",
            ),
            OpenApiParameter(
                "project",
                type={"anyOf": [{"type": "string", "format": "uuid"}, {"type": "string", "maxLength": 0}]},
                description="Only publishings of this project (its id); empty: any.",
            ),
        ],
        responses={200: PublishingListSerializer, **ERRORS},
        examples=examples.PUBLISHING_LIST,
    ),
    retrieve=extend_schema(
        summary="Show a publishing",
        description="Its status and progress, the artifact, the log and every attempt (worker, start, "
        "end, outcome, error). Poll it, or follow `cancel` and `retry`.",
        parameters=[PUBLISHING_ID],
        responses={200: PublishingSerializer, **READ_ERRORS},
        examples=examples.PUBLISHING_DETAIL,
    ),
)
class PublishingViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Publishing]
):
    """Publishings you requested or of your projects (everyone's with the view_publishing permission),
    newest first."""

    filterset_class = PublishingFilter

    def get_queryset(self) -> QuerySet[Publishing]:
        publishings = publishings_visible_to(self.request.user).order_by("-created_at", "id")
        if self.action != "list":
            publishings = publishings.prefetch_related("attempt_history")
        return publishings

    def get_throttles(self) -> list[BaseThrottle]:
        # Here, not in @action(throttle_classes=...): urls.py maps the actions by hand, and only a
        # router applies an action's keyword arguments. Retry shares initiate's budget: it queues a
        # build as well, and a budget of its own would let initiate, cancel, retry loops around it.
        if self.action in ("initiate", "retry"):
            return [PublishingStartThrottle()]
        return super().get_throttles()

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "list":
            return PublishingListSerializer
        if self.action == "initiate":
            return InitiateSerializer
        if self.action in ("cancel", "retry"):
            return EmptySerializer
        return PublishingSerializer

    @extend_schema(
        request=None,
        parameters=[PUBLISHING_ID],
        responses={
            200: PublishingSerializer,
            **WRITE_ERRORS,
            409: OpenApiResponse(ErrorSerializer, description="CONFLICT: the publishing has finished"),
        },
        summary="Cancel a publishing",
        examples=examples.CANCEL,
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        """Cancel a queued, waiting or running publishing; a running build is stopped."""
        publishing = publishing_cancel(publishing=self.get_object(), by=caller(request))
        return Response(PublishingSerializer(publishing, context=self.get_serializer_context()).data)

    @extend_schema(
        request=None,
        parameters=[PUBLISHING_ID, LOCATION, RETRY_AFTER],
        responses={
            202: PublishingSerializer,
            **WRITE_ERRORS,
            409: OpenApiResponse(
                ErrorSerializer, description="CONFLICT: not failed or cancelled, or another one is active"
            ),
            **THROTTLED,
            **UNAVAILABLE,
        },
        summary="Retry a publishing",
        examples=examples.RETRY,
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        """Queue a failed or cancelled publishing again."""
        publishing = publishing_retry(publishing=self.get_object(), by=caller(request))
        return self._accepted(publishing)

    @extend_schema(
        request=InitiateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                pattern=f"^{IDEMPOTENCY_KEY_PATTERN}$",
                description="Repeat a request safely: the same key from the same user returns the same "
                f"publishing. 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters (spaces inside).",
            ),
            LOCATION,
            RETRY_AFTER,
        ],
        responses={
            202: PublishingSerializer,
            **WRITE_ERRORS,
            409: OpenApiResponse(
                ErrorSerializer, description="CONFLICT: the project has an active publishing"
            ),
            **UNSUPPORTED_MEDIA_TYPE,
            **THROTTLED,
            **UNAVAILABLE,
        },
        summary="Publish a project",
        description="At most PUBLISHING_INITIATE_RATE calls per user (60 a minute by default), together "
        "with retry; beyond it, 429 with Retry-After.",
        examples=examples.INITIATE,
    )
    @action(detail=False, methods=["post"], url_path="initiate", url_name="initiate")
    def initiate(self, request: Request) -> Response:
        """Queue a publishing of the project; answers 202 with it and its Location."""
        data = InitiateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        publishing = publishing_initiate(
            user=caller(request),
            project_id=data.validated_data["project_id"],
            idempotency_key=_idempotency_key(request),
        )
        return self._accepted(publishing)

    def _accepted(self, publishing: Publishing) -> Response:
        body = PublishingSerializer(publishing, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": str(body["url"])})


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise PublishingError(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters "
            "(spaces only inside).",
            code="VALIDATION_ERROR",
        )
    return key


class HealthView(APIView):
    """Whether the database and the job broker answer now."""

    authentication_classes: list[type[Any]] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        tags=["health"],
        summary="Check the service",
        description="No authentication: for load balancers and monitors. 503 while either is down.",
        responses={200: HealthSerializer, 503: HealthSerializer},
        examples=examples.HEALTH,
    )
    def get(self, request: Request) -> Response:
        database = _database_ok()
        broker_ok = broker.is_healthy()
        body = {
            "status": "ok" if database and broker_ok else "unavailable",
            "database": "ok" if database else "unavailable",
            "broker": "ok" if broker_ok else "unavailable",
        }
        return Response(body, status=200 if database and broker_ok else 503)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return False
    return True


class TokenView(ObtainAuthToken):
    """Exchange a username and password for an API token (`Authorization: Token …`)."""

    # The credentials are in the body: a stale token or session must not stand in the way of a new token.
    authentication_classes: list[type[Any]] = []
    # ObtainAuthToken names DRF's own parsers; these are the API's (bounded JSON, strict multipart).
    parser_classes = [BoundedJSONParser, FormParser, BoundedMultiPartParser]

    @extend_schema(
        tags=["auth"],
        summary="Get an API token",
        request=TokenRequestSerializer,
        parameters=[RETRY_AFTER],
        responses={
            200: TokenSerializer,
            400: ERRORS[400],
            **UNSUPPORTED_MEDIA_TYPE,
            429: OpenApiResponse(
                ErrorSerializer,
                description="THROTTLED: over LOGIN_FAILURES_PER_USERNAME or LOGIN_FAILURES_PER_ADDRESS "
                "(failed logins); refused until the period ends, right password or not",
            ),
        },
        examples=examples.TOKEN,
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        attempt = throttling.login_attempt(request, throttling.login_username(request.data))
        if attempt.wait is not None:
            raise exceptions.Throttled(wait=attempt.wait, detail=throttling.TOO_MANY_LOGINS)
        response = super().post(request, *args, **kwargs)
        throttling.login_succeeded(attempt)
        return response
