"""The publishing endpoints: list, show, initiate, cancel, retry, re-run; each write through one service."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.utils.safestring import SafeString
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import BaseThrottle

from publishing.api import examples
from publishing.api.auth import caller
from publishing.api.bodies import EmptySerializer, ErrorSerializer
from publishing.api.browsable import BrowsableAPIRenderer, DescribedViewSet, notice_with_link
from publishing.api.logs import LogPageSerializer, LogQuerySerializer, errors_as_json, log_response
from publishing.api.openapi import (
    ERRORS,
    LOCATION,
    PUBLISHING_ID,
    READ_ERRORS,
    RETRY_AFTER,
    THROTTLED,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    WRITE_ERRORS,
)
from publishing.api.operations import PUBLISHING_OPERATIONS as OPERATIONS
from publishing.api.serializers import (
    InitiateSerializer,
    PublishingListSerializer,
    PublishingSerializer,
)
from publishing.api.throttling import PublishingStartThrottle
from publishing.exceptions import PublishingError
from publishing.models import Publishing
from publishing.selectors import (
    LOG_PAGE_FIELDS,
    log_page,
    projects_owned_by,
    publishing_visible_to,
    publishings_visible_to,
)
from publishing.services.publishings import (
    publishing_cancel,
    publishing_initiate,
    publishing_rerun,
    publishing_retry,
)

IDEMPOTENCY_KEY_MAX = 255
# Visible ASCII, spaces only inside: HTTP trims a header value's ends, and anything else arrives
# mangled through WSGI's latin-1. The OpenAPI schema states the same pattern.
IDEMPOTENCY_KEY_PATTERN = rf"[!-~](?:[ -~]{{0,{IDEMPOTENCY_KEY_MAX - 2}}}[!-~])?"


class PublishingFilter(django_filters.FilterSet):  # type: ignore[misc]
    status = django_filters.ChoiceFilter(choices=Publishing.Status.choices)
    project = django_filters.UUIDFilter(field_name="project_id")

    class Meta:
        model = Publishing
        fields = ["status", "project"]


@extend_schema(tags=["publishing"])
@extend_schema_view(
    list=extend_schema(
        summary=OPERATIONS["list"].summary,
        description=OPERATIONS["list"].description,
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
        summary=OPERATIONS["retrieve"].summary,
        description=OPERATIONS["retrieve"].description,
        parameters=[PUBLISHING_ID],
        responses={200: PublishingSerializer, **READ_ERRORS},
        examples=examples.PUBLISHING_DETAIL,
    ),
)
class PublishingViewSet(
    DescribedViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Publishing]
):
    """Publishings you requested or of your projects (everyone's with the view_publishing permission),
    newest first."""

    filterset_class = PublishingFilter
    operations = OPERATIONS

    def get_queryset(self) -> QuerySet[Publishing]:
        publishings = publishings_visible_to(self.request.user).order_by("-created_at", "id")
        if self.action != "list":
            publishings = publishings.prefetch_related("attempt_history")
        return publishings

    def get_throttles(self) -> list[BaseThrottle]:
        # Here, not in @action(throttle_classes=...): urls.py maps the actions by hand, and only a
        # router applies an action's keyword arguments. Retry and re-run share initiate's budget: they
        # queue a build as well, and a budget of their own would let initiate, cancel, retry loops around it.
        if self.action in ("initiate", "retry", "rerun"):
            return [PublishingStartThrottle()]
        return super().get_throttles()

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "list":
            return PublishingListSerializer
        if self.action == "initiate":
            return InitiateSerializer
        if self.action in ("cancel", "retry", "rerun"):
            return EmptySerializer
        if self.action == "log":
            return LogPageSerializer
        return PublishingSerializer

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # (Also given the log's plain HttpResponse, which it passes through.)
        if isinstance(response, Response):
            errors_as_json(request, response)
        return super().finalize_response(request, response, *args, **kwargs)

    def _visible(self, pk: str, *, fields: Sequence[str]) -> Publishing:
        """get_object's answer (404 for one the caller may not see, or not an id), loading only
        `fields` and the caller's permissions only for another's publishing."""
        try:
            publishing = publishing_visible_to(self.request.user, pk, fields=fields)
        except (ValueError, DjangoValidationError):
            publishing = None
        if publishing is None:
            raise Http404
        self.check_object_permissions(self.request, publishing)
        return publishing

    @extend_schema(
        parameters=[PUBLISHING_ID, LogQuerySerializer],
        responses={
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR,
                description="One line each: its time (UTC), its step and its text. The headers Log-Cursor, "
                "Log-More and Log-Complete say where to ask from next, and whether to.",
            ),
            (200, "application/json"): LogPageSerializer,
            **READ_ERRORS,
            400: OpenApiResponse(
                ErrorSerializer, description="VALIDATION_ERROR: a bad since, step or attempt"
            ),
        },
        summary=OPERATIONS["log"].summary,
        description=OPERATIONS["log"].description,
        examples=examples.LOG,
    )
    def log(self, request: Request, pk: str) -> HttpResponse | Response:
        """The log as text or JSON, from a cursor on."""
        # Read now, before the lines: log_page takes whether it has finished from this read.
        publishing = self._visible(pk, fields=LOG_PAGE_FIELDS)
        # A plain dict, not the QueryDict: DRF reads an empty form value as absent, `?step=` as no filter.
        query = LogQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        since = int(query.validated_data.get("since", 0))
        page = log_page(
            publishing,
            since=since,
            step=query.validated_data.get("step"),
            attempt=query.validated_data.get("attempt"),
        )
        return log_response(request, page, since=since)

    @extend_schema(
        request=None,
        parameters=[PUBLISHING_ID],
        responses={
            200: PublishingSerializer,
            **WRITE_ERRORS,
            409: OpenApiResponse(ErrorSerializer, description="CONFLICT: the publishing has finished"),
        },
        summary=OPERATIONS["cancel"].summary,
        description=OPERATIONS["cancel"].description,
        examples=examples.CANCEL,
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        """Cancels it; 200 with it."""
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
        summary=OPERATIONS["retry"].summary,
        description=OPERATIONS["retry"].description,
        examples=examples.RETRY,
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        """Queues it again; 202 with it."""
        publishing = publishing_retry(publishing=self.get_object(), by=caller(request))
        return self._accepted(publishing)

    @extend_schema(
        request=None,
        parameters=[PUBLISHING_ID, LOCATION, RETRY_AFTER],
        responses={
            202: PublishingSerializer,
            **WRITE_ERRORS,
            409: OpenApiResponse(
                ErrorSerializer, description="CONFLICT: not finished, or another one of its project is active"
            ),
            **THROTTLED,
            **UNAVAILABLE,
        },
        summary=OPERATIONS["rerun"].summary,
        description=OPERATIONS["rerun"].description,
        examples=examples.RERUN,
    )
    @action(detail=True, methods=["post"])
    def rerun(self, request: Request, pk: str) -> Response:
        """Queues a new publishing of its commit; 202 with the new one."""
        publishing = publishing_rerun(publishing=self.get_object(), by=caller(request))
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
        summary=OPERATIONS["initiate"].summary,
        description=OPERATIONS["initiate"].description,
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
            commit=data.validated_data.get("commit", ""),
        )
        return self._accepted(publishing)

    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        """A browser that opens an action's URL gets the page with its button (opening it does nothing);
        anyone else the 405 of a URL that only takes POST."""
        post = self.action_map.get("post")
        if (
            request.method != "GET"
            or post is None
            or not isinstance(getattr(request, "accepted_renderer", None), BrowsableAPIRenderer)
        ):
            return super().http_method_not_allowed(request, *args, **kwargs)
        self.action = post
        if "pk" not in kwargs:
            return Response({"projects": reverse("project-list", request=request)})
        publishing = self.get_object()
        project = publishing.project.name if publishing.project else "a deleted project"
        self.confirm_question = f"{OPERATIONS[post].button} {str(publishing.pk)[:8]} of {project}?"
        return Response(PublishingSerializer(publishing, context=self.get_serializer_context()).data)

    def browsable_notice(self) -> SafeString | None:
        if self.action_map.get("post") != "initiate" or projects_owned_by(self.request.user).exists():
            return None
        return notice_with_link(
            "You have no project to publish. Create a project first:",
            reverse("project-list"),
            "the projects form",
        )

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
