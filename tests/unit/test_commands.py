"""The operators' commands: `publish` (with --wait) and `publishing_status`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from publishing.exceptions import PermanentJobError
from publishing.models import Publishing
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_publish_by_slug_queues_it_as_the_owner(stub_broker) -> None:
    project = ProjectFactory.create(slug="site")

    output = run("publish", "site")

    publishing = Publishing.objects.get(project=project)
    assert (publishing.status, publishing.requested_by) == ("queued", project.owner)
    assert f"Publishing {publishing.pk} of site is queued." in output
    assert len(stub_broker.queues["publishing-builds"].queue) == 1


def test_publish_wait_follows_it_to_published_and_exits_0(stub_broker, worker) -> None:
    project = ProjectFactory.create()

    output = run("publish", str(project.pk), "--wait", "--poll", "0.05")

    publishing = Publishing.objects.get(project=project)
    assert publishing.status == "published"
    assert "published after 1 attempt" in output
    assert publishing.artifact_sha256 in output


def test_publish_wait_exits_1_when_it_fails(stub_broker, worker) -> None:
    ScriptedPipeline.reset(PermanentJobError("HTTP 400", code="TARGET_REJECTED"))
    project = ProjectFactory.create()

    with pytest.raises(SystemExit) as exit_:
        run("publish", str(project.pk), "--wait", "--poll", "0.05")

    assert exit_.value.code == 1


def test_publish_wait_gives_up_at_its_timeout_with_exit_3(stub_broker) -> None:
    project = ProjectFactory.create()  # and no worker: it stays queued

    with pytest.raises(SystemExit) as exit_:
        run("publish", str(project.pk), "--wait", "--timeout", "0.2", "--poll", "0.05")

    assert exit_.value.code == 3
    assert Publishing.objects.get(project=project).status == "queued"


def test_publish_needs_user_when_a_slug_is_ambiguous(stub_broker) -> None:
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    ProjectFactory.create(slug="site", owner=alice)
    bobs = ProjectFactory.create(slug="site", owner=bob)

    with pytest.raises(CommandError, match=r"owners: alice, bob.*--user"):
        run("publish", "site")
    run("publish", "site", "--user", "bob")

    assert Publishing.objects.get().project == bobs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "no-such-project"), "No project 'no-such-project'"),
        (("publish", "site", "--user", "nobody"), "No user 'nobody'"),
    ],
)
def test_publish_errors_are_clear(stub_broker, args, message) -> None:
    ProjectFactory.create(slug="site")
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_publish_while_another_is_active_is_a_conflict(stub_broker) -> None:
    project = ProjectFactory.create(slug="site")
    run("publish", "site")
    with pytest.raises(CommandError, match="CONFLICT"):
        run("publish", "site")
    assert Publishing.objects.filter(project=project).count() == 1


def test_a_user_who_cannot_see_the_project_cannot_publish_it(stub_broker) -> None:
    ProjectFactory.create(slug="site")
    UserFactory.create(username="mallory")
    with pytest.raises(CommandError, match="NOT_FOUND"):
        run("publish", "site", "--user", "mallory")


def test_publishing_status_shows_counts_and_the_latest_failures(stub_broker) -> None:
    PublishingFactory.with_status("published")
    PublishingFactory.with_status("failed", error_code="TARGET_REJECTED", error_message="HTTP 400")

    output = run("publishing_status")

    assert "Publishings" in output
    assert "published" in output
    assert "TARGET_REJECTED: HTTP 400" in output
    # The stub broker has no queue to read: said, not failed
    assert "(not readable)" in output
