"""The publishing commands as a person at a shell meets them: publish (--wait, --follow, --commit),
publishing_logs, publishing_cancel, publishing_retry, publishing_rerun; their messages and exit codes."""

from __future__ import annotations

import logging
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command, load_command_class

from publishing import selectors
from publishing.exceptions import PermanentJobError
from publishing.models import Publishing
from publishing.pipeline.base import Job
from publishing.selectors import log_text
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def exit_of(*args: str) -> tuple[int, str]:
    """The exit code a command ended with (0 when it returned) and what it printed."""
    out = StringIO()
    try:
        call_command(*args, stdout=out)
    except SystemExit as stop:
        return int(stop.code or 0), out.getvalue()
    return 0, out.getvalue()


def refusal(*args: str) -> str:
    """The message of a command that could not act; it must exit 4."""
    with pytest.raises(CommandError) as error:
        run(*args)
    assert error.value.returncode == 4, error.value
    return str(error.value)


class FailingBuild(ScriptedPipeline):
    """A build that prints 20 numbered lines, then exits with status 2."""

    def build(self, job: Job, source: Path) -> None:
        for number in range(1, 21):
            job.log(f"build line {number}\n")
        raise PermanentJobError("build command exited with status 2", code="BUILD_FAILED")


# --- publish ----------------------------------------------------------------------------------------


def test_publish_by_slug_queues_it_as_the_owner_and_says_how_to_follow_it(stub_broker) -> None:
    project = ProjectFactory.create(slug="site")

    output = run("publish", "site")

    publishing = Publishing.objects.get(project=project)
    assert (publishing.status, publishing.requested_by) == ("queued", project.owner)
    assert log_text(publishing).endswith(f" event    queued by {project.owner.get_username()} via cli\n")
    assert f"Publishing {publishing.pk} of site is queued." in output
    assert f"publishing_logs {publishing.pk} --follow" in output
    assert len(stub_broker.queues["publishing-builds"].queue) == 1


def test_publish_wait_follows_it_to_published_and_exits_0(stub_broker, worker) -> None:
    project = ProjectFactory.create()

    code, output = exit_of("publish", str(project.pk), "--wait", "--poll", "0.05")

    publishing = Publishing.objects.get(project=project)
    assert (code, publishing.status) == (0, "published")
    assert f"Published {publishing.pk} after 1 attempt" in output
    assert publishing.artifact_sha256 in output
    # Not a terminal: one line per change, each said once
    assert output.count("building: checkout (1/4)") <= 1


def test_publish_wait_exits_1_with_the_failing_steps_last_lines(stub_broker, worker, settings) -> None:
    # Given a build that prints 20 lines and fails
    settings.PUBLISHING_PIPELINE = "tests.unit.test_cli.FailingBuild"
    project = ProjectFactory.create()

    # When
    code, output = exit_of("publish", str(project.pk), "--wait", "--poll", "0.05")

    # Then it says where and why, with the step's last 15 lines, and what to do next
    publishing = Publishing.objects.get(project=project)
    assert code == 1
    assert "Failed at build after 1 attempt" in output
    assert "BUILD_FAILED: build command exited with status 2" in output
    assert "The last 15 lines of build:" in output
    assert "  build line 6\n" in output
    assert "  build line 20\n" in output
    assert "build line 5\n" not in output
    assert f"publishing_retry {publishing.pk}" in output


def test_publish_follow_prints_the_log_in_order_once(stub_broker, worker, settings) -> None:
    settings.PUBLISHING_PIPELINE = "tests.unit.test_cli.FailingBuild"
    project = ProjectFactory.create()

    code, output = exit_of("publish", str(project.pk), "--follow", "--poll", "0.05")

    printed = [line.split(" build    ")[1] for line in output.splitlines() if " build    build line" in line]
    assert code == 1
    assert printed == [f"build line {number}" for number in range(1, 21)]
    # The lines were on screen already: no tail printed again below them, and no change line beside
    # the log's own events
    assert "The last 15 lines" not in output
    assert not [line for line in output.splitlines() if line.startswith("[0:")]


def test_publish_wait_gives_up_at_its_timeout_with_exit_3(stub_broker) -> None:
    project = ProjectFactory.create()  # and no worker: it stays queued

    code, output = exit_of("publish", str(project.pk), "--wait", "--timeout", "0.2", "--poll", "0.05")

    publishing = Publishing.objects.get(project=project)
    assert (code, publishing.status) == (3, "queued")
    assert f"Still queued after 0.2 s: publishing {publishing.pk} is queued and goes on." in output
    assert f"publishing_cancel {publishing.pk}" in output


def test_ctrl_c_while_following_says_it_goes_on_and_exits_130(stub_broker, monkeypatch) -> None:
    project = ProjectFactory.create()

    sleep = time.sleep

    def interrupted(seconds: float) -> None:
        # The command's own wait only: time.sleep is the process's, and other threads (dramatiq-abort's
        # watcher) sleep too.
        if threading.current_thread() is not threading.main_thread():
            sleep(seconds)
            return
        raise KeyboardInterrupt

    monkeypatch.setattr("publishing.management.follow.time.sleep", interrupted)
    code, output = exit_of("publish", str(project.pk), "--wait")

    publishing = Publishing.objects.get(project=project)
    assert code == 130
    assert f"Stopped following: publishing {publishing.pk} is queued and goes on." in output
    assert f"publishing_logs {publishing.pk} --follow" in output


def test_publish_refuses_when_no_worker_is_alive_and_writes_nothing(
    stub_broker, monkeypatch, settings
) -> None:
    # Given a broker that no worker listens on
    settings.BROKER_URL = "redis://:s3cret@elsewhere.example:6379/0"
    monkeypatch.setattr(selectors, "live_workers", lambda: [])
    project = ProjectFactory.create(slug="site")

    # When / Then it refuses, naming the broker (not its password), and nothing is queued
    message = refusal("publish", "site")
    assert "No worker is alive on the broker at redis://***@elsewhere.example:6379/0" in message
    assert "--no-worker-check" in message
    assert not Publishing.objects.filter(project=project).exists()
    assert not stub_broker.queues["publishing-builds"].queue

    # And --no-worker-check queues it anyway
    run("publish", "site", "--no-worker-check")
    assert Publishing.objects.get(project=project).status == "queued"


def test_publish_with_a_live_worker_queues(stub_broker, monkeypatch) -> None:
    monkeypatch.setattr(selectors, "live_workers", lambda: ["host:42"])
    project = ProjectFactory.create(slug="site")

    run("publish", "site")

    assert Publishing.objects.get(project=project).status == "queued"


def test_publish_while_another_is_active_names_it_and_how_to_follow_it(stub_broker) -> None:
    project = ProjectFactory.create(slug="site")
    run("publish", "site")
    active = Publishing.objects.get(project=project)

    message = refusal("publish", "site")

    assert "CONFLICT: This project already has a publishing in progress." in message
    assert f"The active one is {active.pk} (queued)." in message
    assert f"publishing_logs {active.pk} --follow" in message
    assert Publishing.objects.filter(project=project).count() == 1


def test_publish_a_given_commit_asks_for_it_and_refuses_a_malformed_one(stub_broker) -> None:
    project = ProjectFactory.create(slug="site")

    malformed = refusal("publish", "site", "--commit", "abc1234")
    output = run("publish", "site", "--commit", "v1.4.0")

    assert "VALIDATION_ERROR: a commit id has 40 hex digits" in malformed
    assert Publishing.objects.get(project=project).requested_commit == "v1.4.0"
    assert "of site at v1.4.0 is queued." in output


def test_publish_needs_user_when_a_slug_is_ambiguous(stub_broker) -> None:
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    ProjectFactory.create(slug="site", owner=alice)
    bobs = ProjectFactory.create(slug="site", owner=bob)

    assert "owners: alice, bob); pass --user" in refusal("publish", "site")
    run("publish", "site", "--user", "bob")

    assert Publishing.objects.get().project == bobs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "no-such-project"), "No project 'no-such-project'"),
        (("publish", "site", "--user", "nobody"), "No user 'nobody'"),
        (("publish", "site", "--user", "mallory"), "NOT_FOUND: Project not found."),
    ],
)
def test_publish_errors_are_clear_and_exit_4(stub_broker, args, message) -> None:
    ProjectFactory.create(slug="site")
    UserFactory.create(username="mallory")
    assert message in refusal(*args)


@pytest.mark.parametrize(
    "argv",
    [
        ["publish"],
        ["publish", "site", "--wait", "--follow"],
        ["publishing_logs", "x", "--step", "nonsense"],
        ["publishing_cancel"],
        ["publish", "site", "--wait", "--poll", "0"],
        ["publish", "site", "--wait", "--timeout", "-1"],
    ],
)
def test_usage_errors_exit_4_not_2_which_means_cancelled(argv, capsys) -> None:
    command = load_command_class("publishing", argv[0])

    with pytest.raises(SystemExit) as stop:
        command.run_from_argv(["manage.py", *argv])

    assert stop.value.code == 4
    assert "usage: manage.py" in capsys.readouterr().err


def test_info_log_lines_stay_out_of_the_output_unless_verbosity_2(stub_broker) -> None:
    # Given a console handler on the root logger, as the settings' own
    shown = StringIO()
    console = logging.StreamHandler(shown)
    logging.getLogger().addHandler(console)
    ProjectFactory.create(slug="site")
    try:
        # When publish runs, then at verbosity 2 again (after cancelling the first)
        run("publish", "site")
        first = Publishing.objects.get()
        run("publishing_cancel", str(first.pk))
        quiet = shown.getvalue()
        call_command("publish", "site", verbosity=2, stdout=StringIO())
    finally:
        logging.getLogger().removeHandler(console)

    # Then the INFO line of the queueing showed only with -v 2
    assert f"publishing {first.pk} queued for project" not in quiet
    assert "queued for project" in shown.getvalue()
    assert console.level == logging.NOTSET


# --- publishing_logs, publishing_cancel, publishing_retry, publishing_rerun -------------------------


def test_logs_prints_the_log_as_text_and_one_step_with_step(stub_broker, worker, settings) -> None:
    settings.PUBLISHING_PIPELINE = "tests.unit.test_cli.FailingBuild"
    project = ProjectFactory.create()
    exit_of("publish", str(project.pk), "--wait", "--poll", "0.05")
    publishing = Publishing.objects.get(project=project)

    whole = run("publishing_logs", str(publishing.pk))
    build = run("publishing_logs", str(publishing.pk), "--step", "build")

    assert whole == log_text(publishing)
    assert build.count("\n") == 20
    assert all(" build    " in line for line in build.splitlines())


@pytest.mark.parametrize(
    ("key", "message"),
    [("not-a-uuid", "'not-a-uuid' is not a publishing id"), ("0" * 32, "No publishing 00000000-0000")],
)
@pytest.mark.parametrize(
    "command", ["publishing_logs", "publishing_cancel", "publishing_retry", "publishing_rerun"]
)
def test_an_id_that_is_no_publishing_is_a_clear_error_and_exit_4(command, key, message) -> None:
    assert message in refusal(command, key)


def test_another_users_publishing_is_not_found(stub_broker) -> None:
    publishing = PublishingFactory.with_status("failed")
    UserFactory.create(username="mallory")

    assert "that mallory may see" in refusal("publishing_retry", str(publishing.pk), "--user", "mallory")


def test_cancel_then_following_it_exits_2(stub_broker) -> None:
    # Given a queued publishing
    project = ProjectFactory.create(slug="site")
    run("publish", "site")
    publishing = Publishing.objects.get(project=project)

    # When it is cancelled from the shell
    output = run("publishing_cancel", str(publishing.pk))

    # Then it says so; following it now ends at once with exit 2; cancelling again is refused
    assert output == f"Publishing {publishing.pk} is cancelled (it was queued).\n"
    code, followed = exit_of("publishing_logs", str(publishing.pk), "--follow")
    assert code == 2
    assert f"cancelled by {project.owner.get_username()}" in followed
    assert "Cancelled after 0 attempts" in followed
    assert "CONFLICT: The publishing is already cancelled" in refusal("publishing_cancel", str(publishing.pk))


def test_retry_queues_it_again_and_follows_only_what_comes_next(stub_broker, worker, settings) -> None:
    # Given a publishing whose build failed
    settings.PUBLISHING_PIPELINE = "tests.unit.test_cli.FailingBuild"
    project = ProjectFactory.create()
    exit_of("publish", str(project.pk), "--wait", "--poll", "0.05")
    publishing = Publishing.objects.get(project=project)

    # When it is retried with --follow, the build fixed meanwhile
    settings.PUBLISHING_PIPELINE = "tests.fakes.ScriptedPipeline"
    code, output = exit_of("publishing_retry", str(publishing.pk), "--follow", "--poll", "0.05")

    # Then it published, and the earlier attempt's lines were not printed again
    assert code == 0
    assert output.startswith(f"Publishing {publishing.pk} is queued again.\n")
    assert "queued again by" in output
    assert "build line" not in output
    assert f"Published {publishing.pk} after 2 attempts" in output


def test_retry_of_a_published_one_is_refused(stub_broker) -> None:
    publishing = PublishingFactory.with_status("published")

    message = refusal("publishing_retry", str(publishing.pk))

    assert "CONFLICT: Only failed or cancelled publishings can be retried, not published." in message


def test_rerun_queues_a_new_publishing_of_the_same_commit(stub_broker) -> None:
    publishing = PublishingFactory.with_status("published", commit_sha="c0ffee" * 6 + "c0ff")

    output = run("publishing_rerun", str(publishing.pk))

    rerun = Publishing.objects.exclude(pk=publishing.pk).get()
    assert rerun.requested_commit == publishing.commit_sha
    assert f"Re-run of {publishing.pk}: publishing {rerun.pk} at {publishing.commit_sha} is queued." in output
    assert f"publishing_logs {rerun.pk} --follow" in output


def test_an_inactive_user_may_not_act_from_the_shell(stub_broker) -> None:
    project = ProjectFactory.create(owner__is_active=False)

    assert "is inactive" in refusal("publish", str(project.pk))
    assert not Publishing.objects.filter(project=project).exists()


def test_a_command_that_breaks_exits_70_not_1_which_means_failed(stub_broker, monkeypatch, capsys) -> None:
    # Given a service call that raises what nobody expected
    def broken(**kwargs: object) -> Publishing:
        raise RuntimeError("a bug")

    monkeypatch.setattr("publishing.management.commands.publish.publishing_initiate", broken)
    project = ProjectFactory.create()

    # When / Then: the traceback, and an exit of its own
    with pytest.raises(CommandError) as error:
        run("publish", str(project.pk))
    assert error.value.returncode == 70
    assert "RuntimeError: a bug" in capsys.readouterr().err


def test_ctrl_c_before_following_exits_130(stub_broker, monkeypatch) -> None:
    def interrupted(**kwargs: object) -> Publishing:
        raise KeyboardInterrupt

    monkeypatch.setattr("publishing.management.commands.publish.publishing_initiate", interrupted)

    with pytest.raises(CommandError) as error:
        run("publish", str(ProjectFactory.create().pk))
    assert error.value.returncode == 130


def test_a_reader_gone_away_ends_it_quietly_with_141(stub_broker, monkeypatch) -> None:
    # Given an output whose reader went away (`publishing_logs ID | head -1`)
    class Gone(StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    redirected: list[tuple[int, int]] = []
    monkeypatch.setattr("publishing.management.cli.os.dup2", lambda fd, to: redirected.append((fd, to)))
    publishing = PublishingFactory.create()

    # When the command writes
    with pytest.raises(SystemExit) as stop:
        call_command("publishing_cancel", str(publishing.pk), stdout=Gone())

    # Then it stops with the shell's status for it, its later output sent nowhere
    assert stop.value.code == 141
    assert redirected
