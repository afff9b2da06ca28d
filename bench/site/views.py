"""The baseline of the initiate benchmark: the same request, parsing and auth, one INSERT, no broker."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from publishing.api.auth import caller
from publishing.api.serializers import InitiateSerializer
from publishing.exceptions import NotFound
from publishing.models import Publishing
from publishing.selectors import project_for


class InsertOnlyView(APIView):
    """POST {"project_id"}: records a (cancelled) publishing of the caller's project, queues nothing."""

    permission_classes = [permissions.IsAuthenticated]

    def post(self, request: Request) -> Response:
        data = InitiateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = caller(request)
        project = project_for(user, data.validated_data["project_id"])
        if project is None:
            raise NotFound("Project not found.")
        # Cancelled: a terminal status, so that any number of them may exist per project
        # (and, by publishing_terminal_has_finished_at, one with a finished_at).
        publishing = Publishing.objects.create(
            project=project, requested_by=user, status=Publishing.Status.CANCELLED, finished_at=timezone.now()
        )
        return Response({"id": str(publishing.pk)}, status=status.HTTP_201_CREATED)
