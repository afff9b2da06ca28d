"""The publishing page's header sentence and its steps' states: pure functions over unsaved rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from publishing.models import Attempt, Project, Publishing
from publishing.pages.attempts import attempt_views, step_views
from publishing.pages.headline import headline
from publishing.selectors import Waiting

NOW = datetime(2026, 12, 7, 19, 44, 8, tzinfo=UTC)


def sentence(publishing: Publishing, *, waiting: Waiting | None = None, stopped: str | None = None) -> str:
    return headline(publishing, waiting=waiting, stopped_step=stopped, now=NOW).text(NOW)


def pub(status: str, **fields: object) -> Publishing:
    return Publishing(status=status, **fields)


def test_a_retry_waiting_for_its_backoff_says_which_when_and_why() -> None:
    waiting = Waiting("retry_backoff", NOW + timedelta(seconds=12), attempt=3, max_attempts=5)
    publishing = pub("queued", error_code="CHECKOUT_UNAVAILABLE", queued_at=NOW)
    assert sentence(publishing, waiting=waiting) == (
        "Retry 2 of 4 at 19:44:20 (in 12 s) after CHECKOUT_UNAVAILABLE"
    )


def test_a_retry_whose_time_has_come_is_due_now() -> None:
    waiting = Waiting("retry_backoff", NOW - timedelta(seconds=1), attempt=2, max_attempts=5)
    assert (
        sentence(pub("queued", error_code="X"), waiting=waiting)
        == "Retry 1 of 4 at 19:44:07 (due now) after X"
    )


def test_a_publishing_over_the_rate_limit_says_when_its_slot_is_expected() -> None:
    waiting = Waiting("rate_limit", NOW + timedelta(seconds=55), attempt=1, max_attempts=5)
    assert (
        sentence(pub("queued"), waiting=waiting)
        == "Waiting for a rate-limit slot, expected 19:45:03 (in 55 s)"
    )


def test_a_queued_publishing_waits_for_a_free_worker_and_says_for_how_long() -> None:
    waiting = Waiting("queue", None, attempt=1, max_attempts=5)
    publishing = pub("queued", queued_at=NOW - timedelta(seconds=75))
    assert sentence(publishing, waiting=waiting) == "Waiting for a free worker (queued 1 min 15 s ago)"
    # A retry past its backoff says which retry it is
    retry = Waiting("queue", None, attempt=2, max_attempts=5)
    assert (
        sentence(publishing, waiting=retry)
        == "Waiting for a free worker (retry 1 of 4, queued 1 min 15 s ago)"
    )
    assert sentence(pub("queued"), waiting=waiting) == "Waiting for a free worker"


def test_a_pending_publishing_is_being_queued() -> None:
    assert sentence(pub("pending")) == "Being queued"


def test_a_running_publishing_says_where_and_for_how_long() -> None:
    started = NOW - timedelta(seconds=42)
    assert sentence(pub("building", worker="host:7", started_at=started, attempts=1)) == (
        "Building on host:7 for 42 s"
    )
    assert sentence(pub("submitting", worker="host:7", started_at=started, attempts=2)) == (
        "Submitting to the target on host:7 for 42 s (attempt 2)"
    )


def test_a_published_publishing_says_when_and_what() -> None:
    publishing = pub("published", finished_at=NOW, artifact_sha256="ab" * 32)
    assert sentence(publishing) == "Published 19:44:08 (sha256 abababababab…)"
    # On another day, the date too
    publishing.finished_at = NOW - timedelta(days=2)
    assert sentence(publishing).startswith("Published 2026-12-05 19:44:08")


def test_a_failed_publishing_says_where_and_why_credentials_hidden() -> None:
    publishing = pub(
        "failed",
        attempts=1,
        error_code="BUILD_FAILED",
        error_message="The build exited with 1 fetching https://user:s3cret@git.example.com/x",
    )
    text = sentence(publishing, stopped="build")
    assert (
        text == "Failed at build: BUILD_FAILED The build exited with 1 fetching https://***@git.example.com/x"
    )
    assert "s3cret" not in text
    # After retries, and without a step (it failed before its first)
    publishing.attempts = 4
    assert sentence(publishing).startswith("Failed after 4 attempts: BUILD_FAILED The build")


def test_a_long_error_is_cut_in_the_header() -> None:
    publishing = pub("failed", attempts=1, error_code="E", error_message="x" * 1000)
    assert len(sentence(publishing)) < 200
    assert sentence(publishing).endswith("…")


def test_a_cancelled_publishing_says_by_whom_and_when() -> None:
    publishing = pub("cancelled", error_message="Cancelled by alice.", finished_at=NOW)
    assert sentence(publishing, stopped="build") == "Cancelled by alice during build at 19:44:08"
    assert sentence(pub("cancelled", finished_at=NOW)) == "Cancelled at 19:44:08"


@pytest.mark.parametrize(
    ("state", "outcome", "shown"),
    [
        ("done", "running", "done"),
        ("running", "running", "running"),
        ("stopped", "retrying", "failed"),
        ("stopped", "failed", "failed"),
        ("stopped", "cancelled", "cancelled"),
        # Its worker died mid-step: the record still says running, the attempt is lost
        ("running", "lost", "failed"),
        ("running", "cancelled", "cancelled"),
    ],
)
def test_a_step_state_comes_from_its_record_and_its_attempt(state: str, outcome: str, shown: str) -> None:
    recorded: list[dict[str, Any]] = [
        {"name": "checkout", "state": "done", "started_at": NOW.isoformat(), "finished_at": NOW.isoformat()},
        {"name": "build", "state": state, "started_at": NOW.isoformat(), "finished_at": None},
    ]
    steps = step_views(recorded, outcome)
    assert [(step.name, step.state) for step in steps] == [
        ("checkout", "done"),
        ("build", shown),
        ("package", "pending" if outcome == "running" else "skipped"),
        ("submit", "pending" if outcome == "running" else "skipped"),
    ]


def test_a_queued_retry_shows_the_attempt_it_waits_for_above_the_ones_before() -> None:
    publishing = pub("queued", attempts=1)
    failed = Attempt(
        number=1, outcome="retrying", error_code="TARGET_UNAVAILABLE", started_at=NOW, finished_at=NOW
    )
    views = attempt_views(publishing, [failed])
    assert [(view.number, view.outcome) for view in views] == [(2, "waiting"), (1, "retrying")]
    assert [step.state for step in views[0].steps] == ["pending"] * 4


def test_a_claimed_attempt_without_its_row_yet_shows_as_running() -> None:
    views = attempt_views(pub("building", attempts=1, project=Project()), [])
    assert [(view.number, view.outcome) for view in views] == [(1, "running")]


def test_a_publishing_cancelled_before_any_attempt_shows_why() -> None:
    views = attempt_views(pub("cancelled", attempts=0, error_message="Cancelled by https://a:b@x.org"), [])
    assert [(view.number, view.outcome, view.error_message) for view in views] == [
        (1, "cancelled", "Cancelled by https://***@x.org")
    ]
    assert [step.state for step in views[0].steps] == ["skipped"] * 4


def test_a_step_cut_off_without_its_end_ends_with_its_attempt() -> None:
    # Given a build step still marked running in an attempt cancelled 3 s after it started
    recorded: list[dict[str, Any]] = [
        {"name": "build", "state": "running", "started_at": NOW.isoformat(), "finished_at": None}
    ]
    steps = step_views(recorded, "cancelled", NOW + timedelta(seconds=3))
    # Then its duration is fixed, not counting on
    assert steps[1].took.text == "3 s"
    assert steps[1].took.counts == ""
