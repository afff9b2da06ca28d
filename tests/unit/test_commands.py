"""The operators' `publishing_status`; the developers' commands refuse production (the publishing commands:
test_cli.py)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from publishing import selectors
from publishing.broker import QueueStats
from publishing.management.cli import database_label
from tests.factories import PublishingFactory
from tests.support.manage import PRODUCTION_ENV, run_manage

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def exit_of(*args: str) -> tuple[int, str, str]:
    """The exit code a command ended with (0 when it returned), its stdout and its stderr."""
    out, err = StringIO(), StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except SystemExit as stop:
        return int(stop.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_publishing_status_shows_counts_and_the_latest_failures(stub_broker) -> None:
    PublishingFactory.with_status("published")
    PublishingFactory.with_status("failed", error_code="TARGET_REJECTED", error_message="HTTP 400")

    code, output, _ = exit_of("publishing_status")

    assert code == 0
    assert _row(output, "broker") == ["broker", "ok", "stub://"]
    assert _row(output, "database")[:2] == ["database", "ok"]
    assert "Publishings" in output
    assert "published" in output
    assert "TARGET_REJECTED: HTTP 400" in output
    # The stub broker has no queue to read: said, not failed
    assert "(not readable)" in output


def test_runlocal_counts_only_the_jobs_whose_lease_its_worker_still_holds(settings) -> None:
    # Given two jobs running on this machine's worker, and two a crashed earlier run left behind
    now = timezone.now()
    lease_over = now - timedelta(seconds=settings.PUBLISHING_LEASE_TIMEOUT + 1)
    PublishingFactory.with_status("building", worker="laptop:4242", heartbeat_at=now)
    PublishingFactory.with_status("submitting", worker="laptop:4242", heartbeat_at=now)
    PublishingFactory.with_status("building", worker="laptop:1717", heartbeat_at=lease_over)
    PublishingFactory.with_status("submitting", worker="laptop:1717", heartbeat_at=None)
    # and one of another machine's
    PublishingFactory.with_status("building", worker="desktop:99", heartbeat_at=now)

    # When runlocal counts the jobs it waits for at Ctrl-C, then it counts its own running two
    assert selectors.running_on("laptop") == 2


def _row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row that starts with `first_cell`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def _overview(*, database_ok: bool = True, broker_ok: bool = True) -> selectors.SystemOverview:
    """Two live workers and a queue, or the broker's parts unread when it is down."""
    return selectors.SystemOverview(
        database_ok=database_ok,
        broker_ok=broker_ok,
        publishings={},
        oldest_queued_seconds=0.0,
        queue=QueueStats(name="publishing-builds", ready=3, delayed=2, dead=1) if broker_ok else None,
        workers=["worker-a", "worker-b"] if broker_ok else None,
        rate_limit=selectors.RateLimitUsage(used=4, limit=5, window_seconds=60) if broker_ok else None,
    )


def test_publishing_status_without_a_database_says_so_still_shows_the_queue_and_workers_and_exits_1(
    monkeypatch,
) -> None:
    # Given the database away, a queue and two live workers
    monkeypatch.setattr(selectors, "system_overview", lambda: _overview(database_ok=False))

    # When
    code, output, errors = exit_of("publishing_status")

    # Then the database is said to be down, named, with no tables read from it, and the rest is there
    assert code == 1
    assert _row(output, "database") == ["database", "unavailable", database_label()]
    assert f"The database ({database_label()}) did not answer." in errors
    assert "Publishings" not in output
    assert "failures" not in output
    assert _row(output, "publishing-builds") == ["publishing-builds", "3", "2", "1", "2", "4/5 per 60s"]
    assert "workers: worker-a, worker-b" in output


def test_publishing_status_names_the_broker_that_is_down_without_its_password_and_exits_1(
    monkeypatch, settings
) -> None:
    settings.BROKER_URL = "redis://:s3cret@10.0.0.9:6390/0"
    monkeypatch.setattr(selectors, "system_overview", lambda: _overview(broker_ok=False))

    code, output, errors = exit_of("publishing_status")

    assert code == 1
    assert _row(output, "broker") == ["broker", "unavailable", "redis://***@10.0.0.9:6390/0"]
    assert "The broker (redis://***@10.0.0.9:6390/0) did not answer." in errors
    assert "s3cret" not in output + errors


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
