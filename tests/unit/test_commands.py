"""The operators' commands: `publish` (with --wait) and `publishing_status`; the developers' ones refuse
production."""

from __future__ import annotations

import sqlite3
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from publishing import selectors
from publishing.broker import QueueStats
from publishing.exceptions import PermanentJobError
from publishing.models import Publishing
from publishing.selectors import log_text
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline
from tests.support.manage import PRODUCTION_ENV, run_manage

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
    assert log_text(publishing).endswith(f" event    queued by {project.owner.get_username()} via cli\n")
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


def test_publish_a_given_commit_asks_for_it_and_refuses_a_malformed_one(stub_broker) -> None:
    project = ProjectFactory.create(slug="site")

    with pytest.raises(CommandError, match="VALIDATION_ERROR: a commit id has 40 hex digits"):
        run("publish", "site", "--commit", "abc1234")
    run("publish", "site", "--commit", "v1.4.0")

    assert Publishing.objects.get(project=project).requested_commit == "v1.4.0"


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


def _row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row that starts with `first_cell`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_publishing_status_without_a_database_says_so_and_still_shows_the_queue_and_workers(
    monkeypatch,
) -> None:
    # Given the database away, a queue and two live workers
    overview = selectors.SystemOverview(
        database_ok=False,
        broker_ok=True,
        publishings={},
        oldest_queued_seconds=0.0,
        queue=QueueStats(name="publishing-builds", ready=3, delayed=2, dead=1),
        workers=["worker-a", "worker-b"],
        rate_limit=selectors.RateLimitUsage(used=4, limit=5, window_seconds=60),
    )
    monkeypatch.setattr(selectors, "system_overview", lambda: overview)

    # When
    output = run("publishing_status")

    # Then the database is said to be down, with no tables read from it, and the rest is there
    assert _row(output, "database") == ["database", "unavailable"]
    assert "Publishings" not in output
    assert "failures" not in output
    assert _row(output, "publishing-builds") == ["publishing-builds", "3", "2", "1", "2", "4/5 per 60s"]
    assert "workers: worker-a, worker-b" in output


def test_bootstrap_demo_refuses_under_production_settings(tmp_path: Path) -> None:
    # Given a migrated database under the production settings
    env = {**PRODUCTION_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    migrated = run_manage(tmp_path, "migrate", "--no-input", **env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    # When someone runs the demo bootstrap there
    result = run_manage(tmp_path, "bootstrap_demo", **env)

    # Then it refuses, saying why and what to run instead, and no demo/publish-me superuser exists
    assert result.returncode != 0, result.stdout + result.stderr
    assert "CommandError: bootstrap_demo is for a development machine" in result.stderr
    assert "DJANGO_SETTINGS_MODULE=publisher_project.settings.local" in result.stderr
    assert "Traceback" not in result.stderr
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM auth_user").fetchone() == (0,)


@pytest.mark.parametrize("command", ["bootstrap_demo", "runlocal"])
def test_the_development_commands_refuse_any_settings_built_on_production(settings, command: str) -> None:
    # Given settings derived from the production ones (bench.settings is)
    settings.PRODUCTION = True

    # When / Then
    with pytest.raises(CommandError, match=f"{command} is for a development machine"):
        run(command)
