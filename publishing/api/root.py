"""The API's root (its links) and the health check."""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError, connection
from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from publishing import broker
from publishing.api import examples
from publishing.api.bodies import HealthSerializer


class ApiRootView(APIView):
    """Where to go from here: your projects, your publishings, and the form that publishes a project.
    Each link leads to a page with its own form; the API docs describe every call."""

    # The page's heading and the first breadcrumb of every page.
    name = "Publisher API"
    permission_classes = [permissions.AllowAny]

    @extend_schema(exclude=True)
    def get(self, request: Request, format: str | None = None) -> Response:
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
