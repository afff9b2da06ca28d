"""Typed factory_boy factories, with a trait per publishing status."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from publishing.models import Project, Publishing
from publishing.services.log import log_event


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw")
    is_staff = False


def grant(user: User, *codenames: str) -> User:
    """`user`, with these permissions of the publishing app."""
    granted = Permission.objects.filter(content_type__app_label="publishing", codename__in=codenames)
    assert granted.count() == len(codenames), codenames
    user.user_permissions.add(*granted)
    return user


# Every permission of the publishing app's projects and publishings: what an operator holds.
OPERATOR_PERMISSIONS = [
    "view_project", "change_project", "delete_project", "set_build_command",
    "view_publishing", "add_publishing", "change_publishing",
]  # fmt: skip


class ProjectFactory(factory.django.DjangoModelFactory[Project]):
    class Meta:
        model = Project

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    repository_url = "https://git.example.com/acme/site.git"
    ref = "main"
    build_command = ""
    artifact_path = "."
    target_url = "https://store.example.com/upload"


def _write_log(publishing: Publishing, text: str | None) -> None:
    """`log="..."`: its lines, as events of its last attempt, written as the services write them."""
    for line in (text or "").splitlines():
        log_event(publishing.pk, line, attempt=publishing.attempts)


class PublishingFactory(factory.django.DjangoModelFactory[Publishing]):
    class Meta:
        model = Publishing
        # The `log` hook writes rows of its own, not fields of the publishing.
        skip_postgeneration_save = True

    project = factory.SubFactory(ProjectFactory)
    requested_by = factory.LazyAttribute(lambda o: o.project.owner)
    status = Publishing.Status.PENDING
    # The project's settings as initiating copies them.
    repository_url = factory.LazyAttribute(lambda o: o.project.repository_url if o.project else "")
    ref = factory.LazyAttribute(lambda o: o.project.ref if o.project else "")
    build_command = factory.LazyAttribute(lambda o: o.project.build_command if o.project else "")
    artifact_path = factory.LazyAttribute(lambda o: o.project.artifact_path if o.project else "")
    target_url = factory.LazyAttribute(lambda o: o.project.target_url if o.project else "")

    class Params:
        queued = factory.Trait(status=Publishing.Status.QUEUED, queued_at=factory.LazyFunction(timezone.now))
        building = factory.Trait(status=Publishing.Status.BUILDING, attempts=1, progress=30)
        submitting = factory.Trait(status=Publishing.Status.SUBMITTING, attempts=1, progress=75)
        published = factory.Trait(
            status=Publishing.Status.PUBLISHED,
            attempts=1,
            progress=100,
            artifact_sha256="0" * 64,
            artifact_size=10,
            finished_at=factory.LazyFunction(timezone.now),
        )
        failed = factory.Trait(
            status=Publishing.Status.FAILED,
            attempts=1,
            error_code="BUILD_FAILED",
            finished_at=factory.LazyFunction(timezone.now),
        )
        cancelled = factory.Trait(
            status=Publishing.Status.CANCELLED, finished_at=factory.LazyFunction(timezone.now)
        )

    log = factory.PostGeneration(lambda publishing, create, extracted, **_: _write_log(publishing, extracted))

    @classmethod
    def with_status(cls, status: str, **kwargs: Any) -> Publishing:
        """A publishing in `status`, built with that status's trait."""
        traits: dict[str, Any] = {} if status == "pending" else {status: True}
        return cls.create(**traits, **kwargs)
