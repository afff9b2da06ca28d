"""How an attempt's end is written: the publishing and its attempt together, before the workspace goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from dramatiq.middleware.time_limit import TimeLimitExceeded

from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.models import Attempt, Publishing
from publishing.pipeline import workspace as workspace_module
from publishing.services import attempts, failures, runner
from publishing.services.publishings import publishing_initiate
from tests.factories import ProjectFactory, UserFactory
from tests.fakes import ScriptedPipeline

pytestmark = pytest.mark.django_db(transaction=True)


def queued() -> Publishing:
    owner = UserFactory.create()
    return publishing_initiate(user=owner, project_id=ProjectFactory.create(owner=owner).pk)


def record_attempt_ends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, str]]:
    """(outcome, inside a transaction, the publishing's status then) of each attempt the runner closes."""
    seen: list[tuple[str, bool, str]] = []
    finish = attempts.finish_attempt

    def finish_attempt(publishing_id: Any, number: int, outcome: str, **kwargs: Any) -> None:
        status = Publishing.objects.values_list("status", flat=True).get(pk=publishing_id)
        seen.append((outcome, connection.in_atomic_block, status))
        finish(publishing_id, number, outcome, **kwargs)

    monkeypatch.setattr(runner, "finish_attempt", finish_attempt)
    monkeypatch.setattr(failures, "finish_attempt", finish_attempt)
    return seen


def test_a_published_attempt_ends_with_its_publishing_in_one_transaction(drain, monkeypatch) -> None:
    # Given a publishing whose attempt ends being closed is watched
    ends = record_attempt_ends(monkeypatch)
    publishing = queued()

    # When the worker publishes it
    drain()

    # Then the attempt was closed in the transaction that published the publishing
    assert ends == [("published", True, "published")]
    assert Attempt.objects.get(publishing=publishing).outcome == "published"


@pytest.mark.parametrize(
    ("error", "outcome", "status"),
    [
        (PermanentJobError("refused", code="TARGET_REJECTED"), "failed", "failed"),
        (TransientJobError("busy", code="TARGET_UNAVAILABLE"), "retrying", "queued"),
    ],
    ids=["permanent", "transient"],
)
def test_a_failed_attempt_ends_with_its_publishing_in_one_transaction(
    drain, monkeypatch, error: Exception, outcome: str, status: str
) -> None:
    # Given a publishing whose first submit fails
    ScriptedPipeline.reset(error, None)
    ends = record_attempt_ends(monkeypatch)
    queued()

    # When the worker runs its first attempt
    drain()

    # Then that attempt was closed in the transaction that moved the publishing on
    assert ends[0] == (outcome, True, status)


def test_the_publishing_is_published_before_its_workspace_is_removed(drain, monkeypatch) -> None:
    # Given the removal of each workspace is watched
    statuses: list[str] = []
    remove = workspace_module.remove_tree

    def remove_tree(path: Path) -> None:
        statuses.append(Publishing.objects.get().status)
        remove(path)

    monkeypatch.setattr(workspace_module, "remove_tree", remove_tree)
    queued()

    # When the worker publishes it
    drain()

    # Then the publishing was already published when its workspace went: nobody waits for the removal
    assert statuses == ["published"]


def test_an_interrupt_as_the_workspace_goes_leaves_the_publishing_published(
    drain, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the actor's time limit strikes while the published attempt's workspace is being removed
    def remove_tree(path: Path) -> None:
        raise TimeLimitExceeded()

    monkeypatch.setattr(workspace_module, "remove_tree", remove_tree)
    publishing = queued()

    # When the worker publishes it
    drain()

    # Then it stays published with its one attempt, no failure is recorded or dead-lettered, and a
    # WARNING says what was cut short
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code) == ("published", "")
    assert list(Attempt.objects.filter(publishing=publishing).values_list("outcome", flat=True)) == [
        "published"
    ]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("removal of its workspace was cut short" in r.getMessage() for r in caplog.records)
