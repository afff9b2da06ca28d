"""Who may do what with projects and publishings.

Owners act on their own projects, and on the publishings of those projects or that they
requested. Anyone else, staff included, acts only through a Django permission of the model:

- `view_project` / `view_publishing`: see everyone's;
- `change_project` / `delete_project`: change or delete someone else's project;
- `add_publishing`: publish someone else's project;
- `change_publishing`: cancel, retry or re-run someone else's publishing;
- `set_build_command`: set or change a build command, on any project one may change (a build
  command runs on the workers; without this right only PUBLISHING_ALLOW_USER_BUILD_COMMANDS
  lets owners set theirs).

`is_staff` alone grants nothing here: it opens the admin, whose pages ask the same permissions.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User

from publishing.models import Project, Publishing

AnyUser = User | AnonymousUser

VIEW_PROJECTS = "publishing.view_project"
CHANGE_PROJECTS = "publishing.change_project"
DELETE_PROJECTS = "publishing.delete_project"
VIEW_PUBLISHINGS = "publishing.view_publishing"
PUBLISH_PROJECTS = "publishing.add_publishing"
CHANGE_PUBLISHINGS = "publishing.change_publishing"
SET_BUILD_COMMANDS = "publishing.set_build_command"


def sees_all_projects(user: AnyUser) -> bool:
    return user.has_perm(VIEW_PROJECTS)


def sees_all_publishings(user: AnyUser) -> bool:
    return user.has_perm(VIEW_PUBLISHINGS)


def _owns(user: AnyUser, project: Project | None) -> bool:
    return project is not None and user.pk is not None and project.owner_id == user.pk


def may_change_project(user: AnyUser, project: Project) -> bool:
    return _owns(user, project) or user.has_perm(CHANGE_PROJECTS)


def may_delete_project(user: AnyUser, project: Project) -> bool:
    return _owns(user, project) or user.has_perm(DELETE_PROJECTS)


def may_publish(user: AnyUser, project: Project) -> bool:
    return _owns(user, project) or user.has_perm(PUBLISH_PROJECTS)


def may_act_on(user: AnyUser, publishing: Publishing) -> bool:
    """Cancel, retry or re-run: who asked for it, the project's owner, or a holder of change_publishing."""
    mine = user.pk is not None and publishing.requested_by_id == user.pk
    return mine or _owns(user, publishing.project) or user.has_perm(CHANGE_PUBLISHINGS)


def may_set_build_command(user: AnyUser) -> bool:
    return bool(settings.PUBLISHING_ALLOW_USER_BUILD_COMMANDS) or user.has_perm(SET_BUILD_COMMANDS)
