"""The projects endpoints: list, create, show, change and delete, each write through one service."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.serializers import BaseSerializer

from publishing.api import examples
from publishing.api.auth import caller
from publishing.api.openapi import PROJECT_ID, READ_ERRORS, UNSUPPORTED_MEDIA_TYPE, WRITE_ERRORS
from publishing.api.serializers import ErrorSerializer, ProjectSerializer
from publishing.models import Project
from publishing.selectors import projects_visible_to
from publishing.services.projects import project_create, project_delete, project_update


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
