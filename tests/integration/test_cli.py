"""The publishing commands in a terminal (a pseudo-terminal read through a terminal emulator) and piped,
against `make run`'s service (runlocal): what a person sees, and the exit code of each outcome."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from publishing.models import Publishing
from tests.integration.runlocal import ROOT, Runlocal, manage, start_runlocal, worker_alive
from tests.integration.stack import TEST_SETTINGS
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

COLUMNS, ROWS = 160, 50
# A build that prints numbered lines, `every` seconds apart, then builds the site (or exits `status`).
NUMBERED_BUILD = (
    "python3 -c \"import time, runpy; [print('line', n, flush=True) or time.sleep({every}) for n in "
    "range(1, {lines} + 1)]; runpy.run_path('build.py') if {status} == 0 else exit({status})\""
)
UUID = re.compile(r"Publishing ([0-9a-f-]{36}) of")


def numbered(lines: int, *, every: float = 0.3, status: int = 0) -> str:
    return NUMBERED_BUILD.format(lines=lines, every=every, status=status)


class Terminal:
    """`manage.py ARGS` in a 160x50 pseudo-terminal, its output drawn on a screen as a terminal would."""

    def __init__(self, stack: Runlocal, *args: str) -> None:
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        env = {**stack.newcomer_env, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)}
        self.child = pexpect.spawn(
            sys.executable, ["manage.py", *args], cwd=str(ROOT), env=env, dimensions=(ROWS, COLUMNS)
        )

    def read(self, timeout: float = 0.2) -> bool:
        """Draw what came within `timeout`; False once the command has exited and all is drawn."""
        try:
            chunk = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        self.raw += chunk
        self.stream.feed(chunk)
        return True

    def lines(self) -> list[str]:
        """What the screen shows now, its empty lines left out."""
        return [line.rstrip() for line in self.screen.display if line.strip()]

    def until_exit(self, watch: Callable[[list[str]], None] = lambda lines: None, timeout: float = 60) -> int:
        """Draw until the command exits, showing the screen to `watch` after each read; its exit code."""
        wait_until(lambda: not self._read_and(watch), timeout, lambda: "\n".join(self.lines()), interval=0)
        self.child.close()
        status = self.child.exitstatus
        return int(status if status is not None else 128 + self.child.signalstatus)

    def _read_and(self, watch: Callable[[list[str]], None]) -> bool:
        going = self.read()
        watch(self.lines())
        return going

    def publishing_id(self) -> str:
        found = wait_until(lambda: self.read() and UUID.search(self.raw.decode(errors="replace")), 30)
        return found.group(1)


def run(stack: Runlocal, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` piped, as in a script, in a second terminal beside `stack`."""
    return manage({**stack.newcomer_env, **env}, *args, timeout=90)


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Runlocal]:
    """`make run`'s service (runlocal, on its embedded Redis), once its worker says it is alive; the
    commands run beside it as in a second terminal, naming no broker: they find runlocal's."""
    service = start_runlocal(
        database_url, tmp_path / "var", tmp_path / "runlocal.log", extra_env=TEST_SETTINGS
    )
    family: dict[int, str] = {}
    try:
        service.wait_healthy()
        family = service.family()
        wait_until(lambda: worker_alive(tmp_path / "var"), 60, service.output, interval=0.2)
        yield service
    finally:
        service.kill(family)


def test_publish_wait_on_a_terminal_redraws_one_line_and_follow_prints_the_build_in_order(
    stack: Runlocal, make_project, tmp_path: Path
) -> None:
    # Given a project whose build prints 8 numbered lines, 0.3 s apart
    project = make_project(f"file://{tmp_path / 'store'}", build_command=numbered(8), slug="numbered")

    # When it is published with --wait in a terminal
    terminal = Terminal(stack, "publish", "numbered", "--wait", "--poll", "0.1")
    status_lines: list[list[str]] = []
    terminal.until_exit(lambda lines: status_lines.append([x for x in lines if x.startswith("building")]))

    # Then while it built the screen held one status line, redrawn in place with the newest output,
    # and at the end the report took its place
    assert terminal.child.exitstatus == 0, terminal.raw.decode(errors="replace")
    assert max(len(seen) for seen in status_lines) == 1
    shown = {seen[0] for seen in status_lines if seen}
    assert any("build (2/4)" in line and re.search(r"line [1-8]$", line) for line in shown), shown
    assert all(len(line) <= COLUMNS for line in shown)
    publishing = Publishing.objects.get(project=project)
    final = terminal.lines()
    assert final[0] == f"Publishing {publishing.pk} of numbered is queued."
    assert final[1].startswith(f"Published {publishing.pk} after 1 attempt in 0:")
    assert final[-1] == f"sha256 {publishing.artifact_sha256}"
    assert not any(line.startswith(("queued ", "building ", "submitting ")) for line in final), final

    # And with --follow, the build's lines come above the status line, each once, in order
    followed = Terminal(stack, "publish", "numbered", "--follow", "--poll", "0.1")
    assert followed.until_exit() == 0
    printed = [line.split(" build    ")[1] for line in followed.lines() if " build    line " in line]
    assert printed == [f"line {n}" for n in range(1, 9)]
    assert not any(line.startswith(("queued ", "building ")) for line in followed.lines())


def test_publish_wait_piped_says_each_change_once_in_plain_text(
    stack: Runlocal, make_project, tmp_path: Path
) -> None:
    make_project(f"file://{tmp_path / 'store'}", build_command=numbered(3), slug="piped")

    result = run(stack, "publish", "piped", "--wait", "--poll", "0.1")

    assert result.returncode == 0, result.stdout + result.stderr
    changes = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(changes) == len(set(changes)), result.stdout
    assert "building: build (2/4)" in changes
    assert "\x1b" not in result.stdout
    assert "\r" not in result.stdout
    # No log record below WARNING among what it prints
    assert not re.search(r" (INFO|DEBUG) ", result.stdout + result.stderr), result.stderr


def test_exit_codes_of_failed_cancelled_timed_out_refused_and_interrupted(
    stack: Runlocal, make_project, tmp_path: Path
) -> None:
    store = f"file://{tmp_path / 'store'}"
    make_project(store, build_command=numbered(3, every=0.1, status=2), slug="failing")
    slow = make_project(store, build_command=numbered(200, every=0.2), slug="slow")

    # Failed: 1, with the failing step's last lines
    failed = run(stack, "publish", "failing", "--wait", "--poll", "0.1")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    said = r"Failed at build after 1 attempt in \d+:\d\d: BUILD_FAILED: build command exited with status 2"
    assert re.search(said, failed.stdout), failed.stdout
    assert "  line 3\n" in failed.stdout

    # Timed out: 3, and it goes on
    timed_out = run(stack, "publish", "slow", "--wait", "--timeout", "1", "--poll", "0.1")
    assert timed_out.returncode == 3, timed_out.stdout + timed_out.stderr
    assert "Still " in timed_out.stdout
    running = Publishing.objects.get(project=slow)
    assert not running.is_terminal

    # Interrupted (Ctrl-C while following): 130, and it still goes on
    terminal = Terminal(stack, "publishing_logs", str(running.pk), "--follow", "--poll", "0.1")
    wait_until(lambda: terminal.read() and any(" line " in line for line in terminal.lines()), 30)
    terminal.child.sendintr()
    assert terminal.until_exit() == 130
    assert any("Stopped following" in line and "goes on" in line for line in terminal.lines())
    running.refresh_from_db()
    assert not running.is_terminal

    # Cancelled from a second process while the first follows: 2
    follower = Terminal(stack, "publishing_logs", str(running.pk), "--follow", "--poll", "0.1")
    wait_until(lambda: follower.read() and any(" line " in line for line in follower.lines()), 30)
    cancelled = run(stack, "publishing_cancel", str(running.pk))
    assert cancelled.returncode == 0, cancelled.stderr
    assert follower.until_exit() == 2

    # Refused (no worker on that broker: another namespace, as another Redis would be): 4, nothing queued
    refused = run(stack, "publish", "slow", BROKER_NAMESPACE="nobody-listens-here")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "No worker is alive on the broker at" in refused.stderr
    assert Publishing.objects.filter(project=slow).count() == 1
    # And a usage error is 4 too, not 2 (cancelled)
    assert run(stack, "publish").returncode == 4


def test_publishing_status_names_the_broker_it_found_down_and_exits_1(stack: Runlocal, private_redis) -> None:
    url = private_redis.url
    assert run(stack, "publishing_status", BROKER_URL=url, REDIS_URL=url).returncode == 0
    private_redis.stop()

    result = run(stack, "publishing_status", BROKER_URL=url, REDIS_URL=url)

    assert result.returncode == 1, result.stdout + result.stderr
    assert url in result.stdout
    assert f"The broker ({url}) did not answer." in result.stderr
