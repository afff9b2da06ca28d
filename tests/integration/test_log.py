"""A publishing's log and its waits, with real processes: a reader follows a running build through the
API's cursor; a queued publishing says why it waits (a retry's backoff, the rate limit) and until when."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.factories import ProjectFactory
from tests.fakes import git_repository
from tests.support.http import ScriptedReceiver
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

LINES = 80
# Prints numbered lines over about 4 s, every fifth on stderr, then builds the site.
SLOW_BUILD = textwrap.dedent(
    f"""
    import pathlib, sys, time
    for number in range({LINES}):
        stream = sys.stderr if number % 5 == 4 else sys.stdout
        stream.write(f"line {{number}}\\n")
        stream.flush()
        time.sleep(0.05)
    pathlib.Path("dist").mkdir()
    pathlib.Path("dist/index.html").write_text("<h1>slow</h1>")
    """
)


def _follow(api: requests.Session, url: str, *, timeout: float = 90) -> tuple[list[dict[str, Any]], int]:
    """Every line of the log at `url`, asked for from cursor to cursor until it is complete; the calls."""
    lines: list[dict[str, Any]] = []
    cursor = "0"
    calls = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = api.get(url, params={"since": cursor}, headers={"Accept": "application/json"}, timeout=10)
        answer.raise_for_status()
        page = answer.json()
        calls += 1
        lines.extend(page["lines"])
        cursor = page["cursor"]
        if page["complete"]:
            return lines, calls
        if not page["more"]:
            time.sleep(0.2)
    raise AssertionError(f"the log never completed: {lines[-5:]}")


def test_a_reader_following_a_running_build_gets_every_line_once_in_order(
    redis_url, make_stack, owner_token, tmp_path: Path
) -> None:
    # Given a project whose build prints 80 numbered lines over about 4 s
    user, token = owner_token
    source = git_repository(tmp_path / "slow", {"build.py": SLOW_BUILD})
    project = ProjectFactory.create(
        owner=user,
        repository_url=str(source),
        build_command="python3 build.py",
        artifact_path="dist",
        target_url=f"file://{tmp_path / 'store'}",
    )
    stack = make_stack(redis_url)
    api = stack.serve(token)

    # When it is published and a reader follows its log from the start, as a page or a terminal would
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text
    lines, calls = _follow(api, response.json()["log_url"])

    # Then the reader got the build's lines exactly once each, in the order printed, stdout and
    # stderr together, while it ran (in many calls, not one at the end)
    built = [line["text"] for line in lines if line["step"] == "build"]
    assert built == [f"line {number}" for number in range(LINES)]
    assert calls > 5
    # And the events tell the story from queued to published, the last one its end
    events = [line["text"] for line in lines if line["step"] == "event"]
    assert events[0] == "queued by integration via api"
    assert events[1].startswith("attempt 1 started on ")
    assert events[-1].startswith("published to file://")
    assert stack.get(api, response.json()["id"])["status"] == "published"
    # And the text form is the same log, line for line
    text = api.get(response.json()["log_url"], timeout=10).text.splitlines()
    assert [row.split(maxsplit=2)[2] for row in text] == [line["text"] for line in lines]


@pytest.fixture
def busy_store() -> Iterator[ScriptedReceiver]:
    with ScriptedReceiver(path="/upload", statuses=[503], status=201) as store:
        yield store


def _until(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(body["waiting"]["until"].replace("Z", "+00:00"))


def test_a_publishing_waiting_for_its_retry_says_so_and_until_when(
    redis_url, make_stack, make_project, owner_token, busy_store
) -> None:
    # Given a store that is busy once, and retries that wait 6 s
    project = make_project(busy_store.url)
    _, token = owner_token
    stack = make_stack(redis_url, PUBLISHING_MIN_BACKOFF_MS="6000", PUBLISHING_MAX_BACKOFF_MS="6000")
    api = stack.serve(token)

    # When its first attempt fails
    failed_at = datetime.now(UTC)
    publishing = stack.initiate(api, project.pk).json()
    waiting = stack.wait_until(api, publishing["id"], lambda body: body["waiting"] and body["error_code"])

    # Then it says it waits for its retry, 2 of 4, until a moment within the backoff
    assert waiting["waiting"]["reason"] == "retry_backoff"
    assert (waiting["waiting"]["attempt"], waiting["waiting"]["max_attempts"]) == (2, 4)
    assert failed_at + timedelta(seconds=2) < _until(waiting) < datetime.now(UTC) + timedelta(seconds=7)
    # And the retry runs then, and publishes
    done = stack.wait_for(api, publishing["id"])
    assert done["status"] == "published", done
    assert done["waiting"] is None
    started = datetime.fromisoformat(done["attempt_history"][1]["started_at"].replace("Z", "+00:00"))
    assert started >= _until(waiting) - timedelta(seconds=1)


def test_a_publishing_waiting_for_the_rate_limit_says_so_and_until_when(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a limit of one start every 30 s, and two projects
    first, second = (make_project(f"file://{tmp_path / name}", slug=name) for name in ("one", "two"))
    _, token = owner_token
    stack = make_stack(redis_url, PUBLISHING_RATE_LIMIT="1/30s")
    api = stack.serve(token)

    # When both are published at once
    stack.wait_for(api, stack.initiate(api, first.pk).json()["id"])
    second_id = stack.initiate(api, second.pk).json()["id"]

    # Then the second waits for the rate limit, until the first's start is out of the window
    body = stack.wait_until(
        api, second_id, lambda body: (body["waiting"] or {}).get("reason") == "rate_limit"
    )
    assert datetime.now(UTC) < _until(body) < datetime.now(UTC) + timedelta(seconds=31)
    log = api.get(body["log_url"], timeout=10).text
    assert "waiting for a start under the rate limit, until about " in log
    wait_until(lambda: api.post(body["cancel"], timeout=10).status_code == 200, 10, "the cancel failed")


def test_a_refused_checkout_has_gits_own_words_in_the_error_and_the_log(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a project whose repository is a folder that holds no repository
    empty = tmp_path / "not-a-repository"
    empty.mkdir()
    project = make_project(f"file://{tmp_path / 'store'}")
    type(project).objects.filter(pk=project.pk).update(repository_url=str(empty))
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token)

    # When it is published
    done = stack.wait_for(api, stack.initiate(api, project.pk).json()["id"])

    # Then it failed for good, and both its error and its log say what git said
    assert (done["status"], done["error_code"]) == ("failed", "CHECKOUT_FAILED"), done
    assert "does not appear to be a git repository" in done["error_message"]
    log = api.get(done["log_url"], timeout=10).text
    assert "checkout fatal: " in log
    assert "does not appear to be a git repository" in log
    assert log.rstrip().endswith("attempt 1 failed (CHECKOUT_FAILED): " + done["error_message"])
