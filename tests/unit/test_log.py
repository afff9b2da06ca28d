"""A publishing's log: lines with their time, attempt, step and stream, Publisher's events among them,
capped, and read from a cursor through GET /api/v1/publishing/{id}/log."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from publishing import tasks
from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.models import LogLine, Publishing
from publishing.selectors import log_page, log_text, publishing_visible_to, waiting_of
from publishing.services import runner
from publishing.services.attempts import LineBuffer
from publishing.services.log import log_event
from publishing.services.maintenance import publishing_defer, publishing_reconcile, publishing_requeue
from publishing.services.publishings import publishing_cancel
from tests.factories import ProjectFactory, PublishingFactory
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain, initiate

pytestmark = pytest.mark.django_db(transaction=True)


def lines_of(publishing: Publishing) -> list[tuple[int, str, str, str]]:
    return [
        (line.attempt, line.step, line.stream, line.text)
        for line in LogLine.objects.filter(publishing=publishing).order_by("id")
    ]


def events_of(publishing: Publishing) -> list[str]:
    return [text for _, step, _, text in lines_of(publishing) if step == "event"]


# --- Lines out of a command's output ----------------------------------------------------------------


def test_output_becomes_lines_and_an_unfinished_one_waits_for_its_end() -> None:
    buffer = LineBuffer()
    assert buffer.feed("one\ntw") == ["one"]
    assert buffer.feed("o\r\nthree") == ["two"]
    assert buffer.drain() == ["three"]
    assert buffer.drain() == []


def test_a_progress_bar_keeps_what_a_terminal_would_show_last() -> None:
    assert LineBuffer().feed("10%\r50%\r100%\rdone\n") == ["done"]
    assert LineBuffer().feed("100%\r\n") == ["100%"]


# --- What a run writes ------------------------------------------------------------------------------


def test_a_published_run_tells_its_story_in_events_and_its_commands_output(stub_broker, worker) -> None:
    # Given a publishing queued through the API's service
    publishing = initiate()

    # When a worker runs it
    drain(stub_broker, worker)

    # Then its log says who queued it, where it ran, each step with its time, and where it went
    events = events_of(publishing)
    assert publishing.requested_by is not None
    assert events[0] == f"queued by {publishing.requested_by.get_username()} via api"
    assert re.fullmatch(r"attempt 1 started on \S+:\d+", events[1])
    expected = [
        r"checkout https://\S+@main",
        r"checkout -> [0-9a-f]{12} The head of main",
        r"checkout done in \d+\.\ds",
        r"build: no build command|build: .+",
        r"build done in \d+\.\ds",
        r"package \S+",
        r"artifact sha256=[0-9a-f]{64} size=\d+",
        r"package done in \d+\.\ds",
        r"submit to \S+",
        r"submit done in \d+\.\ds",
        r"published to memory://\S+ \(sha256 [0-9a-f]{64}, \d+ bytes\)",
    ]
    assert len(events) == 2 + len(expected), events
    for pattern, event in zip(expected, events[2:], strict=True):
        assert re.fullmatch(pattern, event), (pattern, event)
    # And the commands' output is in its own steps, as output
    output = [(step, stream, text) for _, step, stream, text in lines_of(publishing) if step != "event"]
    assert output == [("checkout", "output", "checked out"), ("build", "output", "built")]
    assert {attempt for attempt, *_ in lines_of(publishing)} == {0, 1}


def test_a_retry_says_which_try_failed_why_and_when_the_next_one_runs(settings) -> None:
    # Given a store that fails once, transiently, and retries that wait about a minute
    settings.PUBLISHING_PIPELINE = "tests.fakes.ScriptedPipeline"
    settings.PUBLISHING_MIN_BACKOFF_MS = 60_000
    settings.PUBLISHING_MAX_BACKOFF_MS = 60_000
    ScriptedPipeline.reset(TransientJobError("store busy", code="TARGET_UNAVAILABLE"))
    publishing = initiate()

    # When its first attempt runs
    before = timezone.now()
    with pytest.raises(TransientJobError) as failed:
        runner.publishing_run(
            publishing_id=str(publishing.pk), message_id=publishing.message_id, retries=0, max_retries=3
        )

    # Then the publishing waits for its retry, and says until when: the same moment the log gives
    publishing.refresh_from_db()
    waiting = waiting_of(publishing)
    assert waiting is not None
    assert (waiting.reason, waiting.attempt, waiting.max_attempts) == ("retry_backoff", 2, 4)
    assert waiting.until is not None
    # (Dramatiq's backoff: up to the minute, less a random part of it)
    assert before + timedelta(seconds=29) < waiting.until < timezone.now() + timedelta(seconds=61)
    # And the retry is handed to Dramatiq with the delay the record says
    assert failed.value.retry_in_ms is not None
    retry_at = before + timedelta(milliseconds=failed.value.retry_in_ms)
    assert abs((waiting.until - retry_at).total_seconds()) < 5
    assert events_of(publishing)[-1] == (
        f"attempt 1 failed (TARGET_UNAVAILABLE): store busy Retry 1 of 3 at {waiting.until:%H:%M:%S} UTC."
    )
    # And the API shows it
    body = APIClient()
    body.force_authenticate(publishing.requested_by)
    shown = body.get(f"/api/v1/publishing/{publishing.pk}").json()["waiting"]
    assert shown["reason"] == "retry_backoff"
    assert shown["until"] == waiting.until.isoformat().replace("+00:00", "Z")
    assert (shown["attempt"], shown["max_attempts"]) == (2, 4)


def test_a_failure_for_good_ends_the_log_with_its_code(stub_broker, worker) -> None:
    ScriptedPipeline.reset(PermanentJobError("the store refused it", code="TARGET_REJECTED"))
    publishing = initiate()
    drain(stub_broker, worker)
    assert events_of(publishing)[-3:] == [
        events_of(publishing)[-3],
        events_of(publishing)[-2],
        "attempt 1 failed (TARGET_REJECTED): the store refused it",
    ]
    assert re.fullmatch(r"submit stopped in \d+\.\ds", events_of(publishing)[-2])


def test_a_rate_limit_wait_says_until_when(user) -> None:
    # Given a queued publishing
    publishing = PublishingFactory.create(queued=True, project=ProjectFactory.create(owner=user))

    # When the rate limit defers its message by 30 s
    publishing_defer(publishing_id=str(publishing.pk), delay_ms=30_000)

    # Then it waits for the rate limit until then, and its log says so
    publishing.refresh_from_db()
    waiting = waiting_of(publishing)
    assert waiting is not None
    assert waiting.reason == "rate_limit"
    assert waiting.until == publishing.not_before
    assert events_of(publishing) == [
        f"waiting for a start under the rate limit, until about {publishing.not_before:%H:%M:%S} UTC"
    ]


def test_a_queued_publishing_whose_wait_is_over_waits_for_a_worker(user) -> None:
    publishing = PublishingFactory.create(
        queued=True,
        not_before=timezone.now() - timedelta(seconds=1),
        wait_reason="rate_limit",
    )
    waiting = waiting_of(publishing)
    assert waiting is not None
    assert (waiting.reason, waiting.until) == ("queue", None)
    assert waiting_of(PublishingFactory.create(building=True)) is None


def test_cancel_requeue_and_reconcile_say_who_did_what(user, stub_broker, settings) -> None:
    # A cancel names who cancelled
    running = PublishingFactory.create(building=True, project=ProjectFactory.create(owner=user))
    publishing_cancel(publishing=running, by=user)
    assert events_of(running) == ["cancelled by alice"]
    assert lines_of(running)[0][0] == 1

    # A shutdown's requeue says why
    cut_off = PublishingFactory.create(building=True, message_id="m-1")
    assert publishing_requeue(
        publishing_id=str(cut_off.pk), reason="Cut off by a worker shutdown.", retries=0
    )
    assert events_of(cut_off) == ["attempt 1 stopped: Cut off by a worker shutdown."]

    # And the reconciler says what it found
    settings.PUBLISHING_LEASE_TIMEOUT = 30
    lost = PublishingFactory.create(
        building=True, heartbeat_at=timezone.now() - timedelta(seconds=31), message_id="m-2"
    )
    unsent = PublishingFactory.create(queued=True, message_id="")
    publishing_reconcile()
    assert events_of(lost) == ["attempt 1 stopped: Its worker stopped answering; requeued."]
    assert events_of(unsent) == ["message sent again by the reconciler: its message could not be sent before"]


# --- The cap ----------------------------------------------------------------------------------------


def test_the_newest_lines_are_kept_within_the_cap_and_the_log_counts_the_dropped(user, settings) -> None:
    # Given a cap of 2,000 characters
    settings.PUBLISHING_LOG_LIMIT = 2_000
    publishing = PublishingFactory.create(queued=True, project=ProjectFactory.create(owner=user))

    # When 200 lines of 20 characters are written
    for number in range(200):
        log_event(publishing.pk, f"line {number:04d} ..........")

    # Then the log holds the newest ones, within the cap, and says how many went
    publishing.refresh_from_db()
    kept = [text for *_, text in lines_of(publishing)]
    assert kept[-1] == "line 0199 .........."
    assert kept == [f"line {n:04d} .........." for n in range(200 - len(kept), 200)]
    assert publishing.log_size == sum(len(text) + 1 for text in kept) <= 2_000
    assert publishing.log_dropped == 200 - len(kept) > 0
    assert log_text(publishing).startswith(f"[{publishing.log_dropped} earlier lines dropped]\n")


def test_the_whole_log_says_what_was_dropped_whatever_instance_it_is_given(user, settings) -> None:
    # Given an instance of a publishing read before its log went over the cap
    settings.PUBLISHING_LOG_LIMIT = 200
    publishing = PublishingFactory.create(queued=True, project=ProjectFactory.create(owner=user))
    for number in range(40):
        log_event(publishing.pk, f"line {number:04d} ..........")

    # When the whole log is asked for with it (as the admin does with the row it shows)
    text = log_text(publishing)

    # Then it says how many lines the cap dropped by now, not by the time of that read
    dropped = Publishing.objects.get(pk=publishing.pk).log_dropped
    assert publishing.log_dropped == 0 < dropped
    assert text.startswith(f"[{dropped} earlier lines dropped]\n")


def test_a_long_line_is_split_and_nul_is_replaced(user) -> None:
    publishing = PublishingFactory.create(queued=True)
    log_event(publishing.pk, "a\x00" + "b" * 5000)
    texts = [text for *_, text in lines_of(publishing)]
    assert [len(text) for text in texts] == [4096, 5002 - 4096]
    assert texts[0].startswith("a\ufffdb")


# --- Reading it -------------------------------------------------------------------------------------


@pytest.fixture
def logged(user) -> Publishing:
    """A running publishing of alice's with a line of each kind."""
    publishing = PublishingFactory.create(building=True, project=ProjectFactory.create(owner=user))
    now = timezone.now()
    LogLine.objects.bulk_create(
        [
            LogLine(
                publishing=publishing, attempt=1, time=now, step="event", stream="publisher", text="start"
            ),
            LogLine(
                publishing=publishing, attempt=1, time=now, step="build", stream="output", text="compiling"
            ),
            LogLine(publishing=publishing, attempt=2, time=now, step="build", stream="output", text="again"),
        ]
    )
    return publishing


def test_the_log_is_text_by_default_and_json_on_request(api, logged) -> None:
    url = f"/api/v1/publishing/{logged.pk}/log"

    text = api.get(url)
    assert text["Content-Type"] == "text/plain; charset=utf-8"
    rows = text.content.decode().splitlines()
    assert [row.split(maxsplit=2)[1:] for row in rows] == [
        ["event", "start"],
        ["build", "compiling"],
        ["build", "again"],
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rows[0].split()[0])
    assert text["Log-More"] == "false"
    assert text["Log-Complete"] == "false"

    for answer in (api.get(url, HTTP_ACCEPT="application/json"), api.get(url, {"format": "json"})):
        assert answer["Content-Type"] == "application/json"
        body = answer.json()
        assert [(line["attempt"], line["step"], line["stream"], line["text"]) for line in body["lines"]] == [
            (1, "event", "publisher", "start"),
            (1, "build", "output", "compiling"),
            (2, "build", "output", "again"),
        ]
        assert body["cursor"] == text["Log-Cursor"]
        assert (body["more"], body["complete"], body["dropped"]) == (False, False, 0)


def test_since_gives_only_newer_lines_and_step_and_attempt_filter(api, logged) -> None:
    url = f"/api/v1/publishing/{logged.pk}/log"
    first = api.get(url, {"format": "json"}).json()
    assert api.get(url, {"format": "json", "since": first["cursor"]}).json()["lines"] == []

    log_event(logged.pk, "later")
    newer = api.get(url, {"format": "json", "since": first["cursor"]}).json()
    assert [line["text"] for line in newer["lines"]] == ["later"]
    assert int(newer["cursor"]) > int(first["cursor"])

    assert [line["text"] for line in api.get(url, {"format": "json", "step": "build"}).json()["lines"]] == [
        "compiling",
        "again",
    ]
    assert [line["text"] for line in api.get(url, {"format": "json", "attempt": 2}).json()["lines"]] == [
        "again"
    ]
    # A filter moves the cursor past the lines it leaves out
    only_events = api.get(url, {"format": "json", "step": "event"}).json()
    assert only_events["cursor"] == newer["cursor"]


def test_a_long_log_comes_in_pages_that_say_there_is_more(logged) -> None:
    page = log_page(logged, limit=2)
    assert ([line.text for line in page.lines], page.more, page.complete) == (
        ["start", "compiling"],
        True,
        False,
    )
    rest = log_page(logged, since=page.cursor, limit=2)
    assert ([line.text for line in rest.lines], rest.more) == (["again"], False)


def test_a_finished_publishings_log_says_it_is_complete(api, user) -> None:
    running = PublishingFactory.create(building=True, project=ProjectFactory.create(owner=user))
    publishing_cancel(publishing=running, by=user)
    answer = api.get(f"/api/v1/publishing/{running.pk}/log")
    assert answer["Log-Complete"] == "true"
    assert answer.content.decode().endswith(" event    cancelled by alice\n")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "abc"}, "since"),
        ({"since": "-1"}, "since"),
        ({"since": "9" * 19}, "since"),
        ({"step": "deploy"}, "step"),
        ({"step": ""}, "step"),
        ({"since": ""}, "since"),
        ({"attempt": "x"}, "attempt"),
        ({"attempt": "-2"}, "attempt"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_in_either_format(api, logged, query, field) -> None:
    for accept in ("text/plain", "application/json"):
        answer = api.get(f"/api/v1/publishing/{logged.pk}/log", query, HTTP_ACCEPT=accept)
        assert answer.status_code == 400
        assert answer["Content-Type"] == "application/json"
        body = answer.json()
        assert body["code"] == "VALIDATION_ERROR"
        assert field in body["errors"]


def test_another_users_log_is_not_found_and_an_anonymous_caller_is_refused(
    client_for, other_user, logged
) -> None:
    url = f"/api/v1/publishing/{logged.pk}/log"
    assert client_for(other_user).get(url).status_code == 404
    assert client_for(other_user).get(url).json()["code"] == "NOT_FOUND"
    assert client_for().get(url).status_code == 401
    assert client_for(other_user).get("/api/v1/publishing/not-a-uuid/log").status_code == 404


def test_credentials_in_a_line_are_shown_as_stars(api, logged) -> None:
    log_event(logged.pk, "fatal: could not read from https://alice:hunter2@git.example.com/site.git")
    for answer in (
        api.get(f"/api/v1/publishing/{logged.pk}/log"),
        api.get(f"/api/v1/publishing/{logged.pk}/log", {"format": "json"}),
    ):
        assert "hunter2" not in answer.content.decode()
        assert "https://***@git.example.com/site.git" in answer.content.decode()


def test_a_poll_reads_the_publishing_once_its_new_lines_once_and_no_attempts(user, logged) -> None:
    # Given its owner's page following a running publishing's log (logged in: each request loads
    # the user afresh, as in production), at its cursor, and a line written since
    page = APIClient()
    page.force_login(user)
    url = f"/api/v1/publishing/{logged.pk}/log"
    cursor = page.get(url, {"format": "json"}).json()["cursor"]
    log_event(logged.pk, "later")

    # When it polls with its cursor
    with CaptureQueriesContext(connection) as queries:
        answer = page.get(url, {"format": "json", "since": cursor})

    # Then it got the line from one read of the row and one of the lines: a page polls every 2 s, so
    # a second read of the row, a look-up of the last line or the attempts (which the log does not
    # show) would be paid on every poll of every open page
    assert [line["text"] for line in answer.json()["lines"]] == ["later"]
    statements = [query["sql"] for query in queries.captured_queries]
    assert sum('FROM "publishing_publishing"' in sql for sql in statements) == 1
    assert sum('FROM "publishing_logline"' in sql for sql in statements) == 1
    assert not any('"publishing_attempt"' in sql for sql in statements)
    # nor the owner's permissions, which only decide whether others' publishings are visible too
    assert not any('"auth_permission"' in sql for sql in statements)


def test_staff_who_may_view_publishings_follow_anyones_log_and_staff_who_may_not_do_not(
    client_for, viewer, staff, logged
) -> None:
    url = f"/api/v1/publishing/{logged.pk}/log"
    answer = client_for(viewer).get(url, {"format": "json"})
    assert answer.status_code == 200
    assert [line["text"] for line in answer.json()["lines"]] == ["start", "compiling", "again"]
    assert client_for(staff).get(url).json()["code"] == "NOT_FOUND"


def test_a_publishing_whose_requester_is_gone_is_no_one_elses_to_see(user) -> None:
    # Given a publishing of another owner's project whose requester's account was deleted
    orphan = PublishingFactory.create(building=True, requested_by=None)
    assert orphan.project is not None

    # Then no caller without an account of its own finds it by its id, nor does a stranger
    assert publishing_visible_to(AnonymousUser(), orphan.pk, fields=["id"]) is None
    assert publishing_visible_to(user, orphan.pk, fields=["id"]) is None
    assert publishing_visible_to(orphan.project.owner, orphan.pk, fields=["id"]) == orphan


# --- Following a log while it is written ------------------------------------------------------------


def test_a_reader_following_with_cursors_gets_every_line_once_and_in_order(user) -> None:
    # Given a publishing that three writers log to at once (a run, the reconciler, a cancel...)
    publishing = PublishingFactory.create(building=True, project=ProjectFactory.create(owner=user))
    per_writer = 60

    def write(name: str) -> None:
        try:
            for number in range(per_writer):
                log_event(publishing.pk, f"{name} {number}")
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(name,)) for name in ("a", "b", "c")]
    for writer in writers:
        writer.start()

    # When a reader follows it from cursor to cursor while they write
    seen: list[str] = []
    cursor = 0

    def follow() -> None:
        nonlocal cursor
        page = log_page(publishing, since=cursor)
        seen.extend(line.text for line in page.lines)
        cursor = page.cursor

    while any(writer.is_alive() for writer in writers):
        follow()
    for writer in writers:
        writer.join()
    follow()

    # Then it saw every line exactly once, each writer's in the order written
    assert sorted(seen) == sorted(f"{name} {n}" for name in "abc" for n in range(per_writer))
    for name in "abc":
        assert [text for text in seen if text.startswith(name)] == [f"{name} {n}" for n in range(per_writer)]
    assert seen == [text for *_, text in lines_of(publishing)]


def test_the_schema_documents_the_log_endpoint(api: Any) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/publishing/{id}/log"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"text/plain", "application/json"}
    assert {parameter["name"] for parameter in operation["parameters"]} >= {"id", "since", "step", "attempt"}
    assert "waiting" in schema["components"]["schemas"]["Publishing"]["properties"]


def test_the_actor_hands_dramatiq_the_retry_delay_the_record_says(monkeypatch) -> None:
    # Given a run whose transient failure was recorded with its retry due in 1.234 s
    def failing(**kwargs: Any) -> None:
        error = TransientJobError("store busy", code="TARGET_UNAVAILABLE")
        error.retry_in_ms = 1234
        raise error

    monkeypatch.setattr(runner, "publishing_run", failing)

    # When the actor runs it, Dramatiq is asked to retry after exactly that delay
    with pytest.raises(dramatiq.Retry) as retry:
        tasks.build_and_submit.fn(publishing_id=str(uuid.uuid4()), project_id="p", user_id="u")
    assert retry.value.delay == 1234
