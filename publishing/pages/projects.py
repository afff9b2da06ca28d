"""The projects page (the user's projects, each with its last publishing) and a project's history."""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from publishing.selectors import project_for, projects_visible_to, publishings_visible_to


@login_required
def projects_page(request: HttpRequest) -> HttpResponse:
    projects = projects_visible_to(request.user).order_by("name", "id")
    return render(request, "publishing/pages/projects.html", {"projects": projects})


@login_required
def project_page(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    project = project_for(request.user, pk)
    if project is None:
        raise Http404("No such project.")
    history = publishings_visible_to(request.user).filter(project_id=project.pk).order_by("-created_at", "id")
    return render(request, "publishing/pages/project.html", {"project": project, "history": history})
