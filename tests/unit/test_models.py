from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from publishing.exceptions import InvalidTransition
from publishing.models import Publishing
from tests.factories import ProjectFactory, PublishingFactory

Status = Publishing.Status
ALLOWED = {
    ("pending", "queued"),
    ("queued", "building"),
    ("building", "submitting"),
    ("submitting", "published"),
    # any non-terminal -> failed
    *((source, "failed") for source in ("pending", "queued", "building", "submitting")),
    # cancel, until the artifact is on its way to the target
    *((source, "cancelled") for source in ("pending", "queued", "building")),
    # retry
    ("failed", "queued"),
    ("cancelled", "queued"),
    # requeue: a transient failure waiting for its retry, or a lost attempt
    ("building", "queued"),
    ("submitting", "queued"),
    # a new message for a queued publishing whose send failed or whose message was lost
    ("queued", "queued"),
}


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), list(itertools.product(Status.values, Status.values)))
def test_transition_allows_exactly_the_status_machine(source: str, target: str) -> None:
    # Given a publishing in `source`
    publishing = PublishingFactory.with_status(source)
    extra: dict[str, Any] = {"artifact_sha256": "a" * 64, "progress": 100} if target == "published" else {}

    # When it is moved to `target`
    if (source, target) in ALLOWED:
        Publishing.objects.transition(publishing.pk, target, **extra)
        # Then it moved
        publishing.refresh_from_db()
        assert publishing.status == target
        assert (publishing.finished_at is not None) == (target in Publishing.TERMINAL_STATUSES)
    else:
        # Then it is refused and untouched
        with pytest.raises(InvalidTransition):
            Publishing.objects.transition(publishing.pk, target, **extra)
        publishing.refresh_from_db()
        assert publishing.status == source


@pytest.mark.django_db
def test_transition_with_attempt_refuses_a_stale_attempt() -> None:
    # Given a publishing whose second attempt is building
    publishing = PublishingFactory.create(building=True, attempts=2)

    # When the first attempt tries to move it on
    # Then it is refused: only the current attempt owns the publishing
    with pytest.raises(InvalidTransition):
        Publishing.objects.transition(publishing.pk, Status.SUBMITTING, attempt=1)
    Publishing.objects.transition(publishing.pk, Status.SUBMITTING, attempt=2)


@pytest.mark.django_db
def test_one_active_publishing_per_project_is_a_database_constraint() -> None:
    # Given a project with a queued publishing
    project = ProjectFactory.create()
    PublishingFactory.create(project=project, queued=True)

    # When a second active one is written directly, bypassing the services
    # Then the database refuses it
    with pytest.raises(IntegrityError), transaction.atomic():
        PublishingFactory.create(project=project, status=Status.PENDING)
    # while finished ones may pile up
    PublishingFactory.create(project=project, failed=True)
    PublishingFactory.create(project=project, published=True)


@pytest.mark.django_db
def test_published_without_artifact_is_refused_by_a_check_constraint() -> None:
    publishing = PublishingFactory.create(submitting=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        Publishing.objects.filter(pk=publishing.pk).update(status=Status.PUBLISHED)


@pytest.mark.django_db
def test_unknown_status_and_out_of_range_progress_are_refused() -> None:
    publishing = PublishingFactory.create()
    with pytest.raises(IntegrityError), transaction.atomic():
        Publishing.objects.filter(pk=publishing.pk).update(status="exploded")
    with pytest.raises(IntegrityError), transaction.atomic():
        Publishing.objects.filter(pk=publishing.pk).update(progress=101)
