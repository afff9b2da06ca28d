"""Reads shared by the API and the admin."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from publishing.models import Project, Publishing
from publishing.models import PublishingQuerySet as PublishingQuerySet

AnyUser = User | AnonymousUser


def _is_staff(user: AnyUser) -> bool:
    return bool(getattr(user, "is_staff", False))


def projects_visible_to(user: AnyUser) -> QuerySet[Project]:
    """The caller's projects; staff see all."""
    projects = Project.objects.select_related("owner")
    return projects if _is_staff(user) else projects.filter(owner_id=user.pk)


def publishings_visible_to(user: AnyUser) -> PublishingQuerySet:
    """The caller's publishings (requested by them or of their projects); staff see all."""
    publishings = Publishing.objects.select_related("project", "requested_by")
    if _is_staff(user):
        return publishings
    return publishings.filter(requested_by_id=user.pk) | publishings.filter(project__owner_id=user.pk)


def project_for(user: AnyUser, project_id: uuid.UUID | str) -> Project | None:
    return projects_visible_to(user).filter(pk=project_id).first()
