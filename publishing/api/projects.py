"""The projects endpoints: list, create, show, change and delete, each write through one service."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.serializers import BaseSerializer

from publishing.api import examples
from publishing.api.auth import caller
from publishing.api.bodies import ErrorSerializer
from publishing.api.browsable import DescribedViewSet
from publishing.api.openapi import PROJECT_ID, READ_ERRORS, UNSUPPORTED_MEDIA_TYPE, WRITE_ERRORS
from publishing.api.operations import PROJECT_OPERATIONS as OPERATIONS
from publishing.api.serializers import ProjectSerializer
from publishing.models import Project
from publishing.selectors import projects_visible_to
from publishing.services.projects import project_create, project_delete, project_update


@extend_schema(tags=["projects"])
@extend_schema_view(
    list=extend_schema(
        summary=OPERATIONS["list"].summary,
        description=OPERATIONS["list"].description,
        responses={200: ProjectSerializer, **READ_ERRORS},
        examples=examples.PROJECT_LIST,
    ),
    create=extend_schema(
        summary=OPERATIONS["create"].summary,
        description=OPERATIONS["create"].description,
        responses={201: ProjectSerializer, **WRITE_ERRORS, **UNSUPPORTED_MEDIA_TYPE},
        examples=examples.PROJECT_CREATE,
    ),
    retrieve=extend_schema(
        summary=OPERATIONS["retrieve"].summary,
        description=OPERATIONS["retrieve"].description,
        parameters=[PROJECT_ID],
        responses={200: ProjectSerializer, **READ_ERRORS},
        examples=examples.PROJECT_DETAIL,
    ),
    partial_update=extend_schema(
        summary=OPERATIONS["partial_update"].summary,
        description=OPERATIONS["partial_update"].description,
        parameters=[PROJECT_ID],
        responses={200: ProjectSerializer, **WRITE_ERRORS, **UNSUPPORTED_MEDIA_TYPE},
        examples=examples.PROJECT_UPDATE,
    ),
    destroy=extend_schema(
        summary=OPERATIONS["destroy"].summary,
        description=OPERATIONS["destroy"].description,
        parameters=[PROJECT_ID],
        responses={
            204: None,
            **WRITE_ERRORS,
            409: OpenApiResponse(ErrorSerializer, description="CONFLICT: a publishing is active"),
        },
        examples=examples.PROJECT_DELETE,
    ),
)
class ProjectViewSet(DescribedViewSet, viewsets.ModelViewSet[Project]):
    """Your projects (everyone's with the view_project permission). A project says what to build and
    where to submit it."""

    serializer_class = ProjectSerializer
    operations = OPERATIONS
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
