"""Project writes: validation against the rules of who may set what, create, update and delete."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from publishing import authorization
from publishing.authorization import AnyUser
from publishing.exceptions import Forbidden, JobError, PublishingConflict
from publishing.models import Project, Publishing
from publishing.pipeline.checkout import validate_source_url
from publishing.pipeline.commits import validate_ref
from publishing.pipeline.package import EXCLUDED_NAMES
from publishing.pipeline.stores import validate_target_url
from publishing.services.webhooks import validate_webhook_url

logger = logging.getLogger(__name__)


PROJECT_FIELDS = (
    "name", "slug", "repository_url", "ref", "build_command", "artifact_path", "target_url",
    "webhook_url", "webhook_secret",
)  # fmt: skip
# Long enough that guessing it is out of reach; what GitHub and Stripe hand out is longer.
WEBHOOK_SECRET_MIN_LENGTH = 16


# --- Projects ---------------------------------------------------------------------


def project_validate(*, user: AnyUser, data: dict[str, Any], instance: Project | None = None) -> None:
    """Raise ValidationError (per field) for project settings this user may not use."""
    errors = _build_command_errors(user, data, instance)
    if "repository_url" in data:
        try:
            validate_source_url(
                data["repository_url"],
                allow_local=settings.PUBLISHING_ALLOW_LOCAL_SOURCES,
                allow_private=settings.PUBLISHING_ALLOW_PRIVATE_TARGETS,
            )
        except JobError as exc:
            errors["repository_url"] = exc.detail
    if "target_url" in data:
        try:
            validate_target_url(data["target_url"])
        except JobError as exc:
            errors["target_url"] = exc.detail
    if "ref" in data:
        try:
            validate_ref(data["ref"])
        except JobError as exc:
            errors["ref"] = exc.detail
    artifact_path = data.get("artifact_path")
    if artifact_path is not None and (artifact_path.startswith("/") or ".." in Path(artifact_path).parts):
        errors["artifact_path"] = "Must be a relative path inside the checkout."
    elif artifact_path is not None and EXCLUDED_NAMES.intersection(Path(artifact_path).parts):
        errors["artifact_path"] = "Cannot be or lie inside .git: git's folder is never published."
    errors.update(_webhook_errors(data, instance))
    if errors:
        raise ValidationError(errors)


# What decides the code a build command runs: changing either lets other code run under an approved command.
CODE_FIELDS = ("repository_url", "ref")


def _build_command_errors(user: AnyUser, data: dict[str, Any], instance: Project | None) -> dict[str, str]:
    """A build command runs on the workers: setting one, or changing the code it runs, is a right.

    Without it (`publishing.set_build_command`), an owner may clear the command, and may change
    the repository or ref only by clearing it in the same request: an approved command is bound
    to the code it was approved for.
    """
    if authorization.may_set_build_command(user):
        return {}
    current = instance.build_command if instance else ""
    command = data.get("build_command", current)
    if command and command != current:
        return {"build_command": "Setting a build command needs the permission to set build commands."}
    if not (command and instance):
        return {}
    return {
        field: (
            f"This project's build command was approved for its repository and ref; changing the "
            f"{field} needs the permission to set build commands. To change it yourself, send "
            '"build_command": "" with it: the project then publishes its files without a build.'
        )
        for field in CODE_FIELDS
        if field in data and data[field] != getattr(instance, field)
    }


def _webhook_errors(data: dict[str, Any], instance: Project | None) -> dict[str, str]:
    """A webhook URL must be allowed and come with a signing secret: receivers verify every delivery."""
    errors: dict[str, str] = {}
    url = data.get("webhook_url", instance.webhook_url if instance else "")
    secret = data.get("webhook_secret", instance.webhook_secret if instance else "")
    if data.get("webhook_url"):
        try:
            validate_webhook_url(url, allow_private=settings.PUBLISHING_ALLOW_PRIVATE_TARGETS)
        except JobError as exc:
            errors["webhook_url"] = exc.detail
    if secret and len(secret) < WEBHOOK_SECRET_MIN_LENGTH:
        errors["webhook_secret"] = f"Must be at least {WEBHOOK_SECRET_MIN_LENGTH} characters."
    elif url and not secret:
        errors["webhook_secret"] = "Required with a webhook URL: every delivery is signed with it."  # noqa: S105
    return errors


def project_create(*, owner: User, by: AnyUser | None = None, **data: Any) -> Project:
    """Create a project for `owner`, judged as `by` (the owner unless staff create it for them).

    The slug defaults to the slugified name.
    """
    project_validate(user=by or owner, data=data)
    fields = {key: value for key, value in data.items() if key in PROJECT_FIELDS}
    # A name without ASCII letters or digits slugifies to "": fall back to a unique one.
    fields["slug"] = fields.get("slug") or slugify(fields["name"])[:100] or f"project-{uuid.uuid4().hex[:8]}"
    if Project.objects.filter(owner=owner, slug=fields["slug"]).exists():
        raise ValidationError({"slug": "You already have a project with this slug."})
    try:
        with transaction.atomic():
            return Project.objects.create(owner=owner, **fields)
    except IntegrityError as exc:
        raise ValidationError({"slug": "You already have a project with this slug."}) from exc


def project_update(*, project: Project, by: AnyUser, owner: User | None = None, **data: Any) -> Project:
    """Change a project's settings as `by`; `owner` hands it to another user (the admin's form)."""
    if not authorization.may_change_project(by, project):
        raise Forbidden(
            "You may see this project but not change it: that needs the change_project permission."
        )
    project_validate(user=by, data=data, instance=project)
    for key, value in data.items():
        if key in PROJECT_FIELDS:
            setattr(project, key, value)
    if owner is not None:
        project.owner = owner
    duplicate = ValidationError({"slug": "You already have a project with this slug."})
    if ("slug" in data or owner is not None) and Project.objects.filter(
        owner=project.owner, slug=project.slug
    ).exclude(pk=project.pk).exists():
        raise duplicate
    try:
        with transaction.atomic():
            project.save()
    except IntegrityError as exc:
        raise duplicate from exc
    return project


def project_delete(*, project: Project, by: AnyUser) -> None:
    """Delete a project; refused while one of its publishings is active. Publishings are kept."""
    if not authorization.may_delete_project(by, project):
        raise Forbidden(
            "You may see this project but not delete it: that needs the delete_project permission."
        )
    active = project.publishings.active().first()
    if active is not None:
        raise PublishingConflict(deletion_refused(active), active_id=active.pk)
    project.delete()


def deletion_refused(active: Publishing) -> str:
    """Why a project with an active publishing is not deleted, and what to do."""
    return (
        f"The project has a publishing {active.status} ({active.pk}): cancel it or let it end, "
        "then delete the project."
    )
