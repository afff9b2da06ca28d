from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from unittest.mock import Mock

import dramatiq
import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker

from publishing import broker as publishing_broker
from publishing.admin import overview as admin_overview
from publishing.admin import projects as admin_projects
from publishing.admin import publishings as admin_publishings
from publishing.admin import webhooks as admin_webhooks
from publishing.exceptions import PermanentJobError
from publishing.models import Attempt, Project, Publishing, WebhookDelivery
from publishing.selectors import log_text
from publishing.services import dead_letters
from publishing.services.webhooks import delivery_resend
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import broker_refuses, drain, initiate, queued_messages

pytestmark = pytest.mark.django_db


def test_staff_see_the_project_and_publishing_pages(admin_client_: Client) -> None:
    # Given some records
    publishing = PublishingFactory.create(failed=True, error_code="BUILD_FAILED")

    # When staff open the admin pages
    # Then they render, with the columns and filters that matter
    changelist = admin_client_.get("/admin/publishing/publishing/", {"status__exact": "failed"})
    assert changelist.status_code == 200
    assert b"BUILD_<wbr>FAILED" in changelist.content  # (free to wrap after the `_`)
    assert b"/admin/publishing/publishing/overview/" in changelist.content
    assert admin_client_.get(f"/admin/publishing/publishing/{publishing.pk}/change/").status_code == 200
    assert admin_client_.get("/admin/publishing/publishing/", {"q": str(publishing.pk)}).status_code == 200
    assert admin_client_.get("/admin/publishing/project/").status_code == 200
    assert admin_client_.get(f"/admin/publishing/project/{publishing.project_id}/change/").status_code == 200


def test_the_admin_has_one_job_list_and_no_django_dramatiq_tasks(admin_client_: Client) -> None:
    # Given staff with every permission
    # When they open the admin's index and the page django-dramatiq's Task admin would have
    index = admin_client_.get("/admin/")
    tasks = admin_client_.get("/admin/django_dramatiq/task/")

    # Then the publishings are listed, and django-dramatiq's Tasks are not
    assert index.status_code == 200
    assert b"/admin/publishing/publishing/" in index.content
    assert b"django_dramatiq" not in index.content
    assert tasks.status_code == 404


def test_the_admin_cannot_change_a_publishings_status(admin_client_: Client) -> None:
    publishing = PublishingFactory.create(failed=True)
    response = admin_client_.post(
        f"/admin/publishing/publishing/{publishing.pk}/change/", {"status": "published"}
    )
    publishing.refresh_from_db()
    assert publishing.status == "failed"
    assert response.status_code in {200, 302, 403}
    assert admin_client_.get("/admin/publishing/publishing/add/").status_code == 403


def test_the_project_form_applies_the_service_rules(admin_client_: Client, settings) -> None:
    settings.PUBLISHING_ALLOW_LOCAL_SOURCES = False
    owner = UserFactory.create()
    response = admin_client_.post(
        "/admin/publishing/project/add/",
        {
            "owner": owner.pk,
            "name": "Local",
            "slug": "local",
            "repository_url": "/srv/repo",
            "ref": "main",
            "artifact_path": ".",
            "target_url": "https://store.example.com/u",
        },
    )
    assert response.status_code == 200
    assert b"not allowed" in response.content or b"SOURCE_NOT_ALLOWED" in response.content
    assert not owner.projects.exists()


def project_form(owner_pk: int, **fields: Any) -> dict[str, Any]:
    return {
        "owner": owner_pk,
        "name": "Hooked",
        "slug": "hooked",
        "repository_url": "https://git.example.com/a.git",
        "ref": "main",
        "artifact_path": ".",
        "target_url": "https://store.example.com/u",
        **fields,
    }


def test_the_project_form_keeps_the_webhook_secret_unseen(admin_client_: Client) -> None:
    # Given a project with a webhook
    secret = "a-long-enough-secret"
    project = ProjectFactory.create(webhook_url="https://hooks.example.com/x", webhook_secret=secret)
    change = f"/admin/publishing/project/{project.pk}/change/"

    # Then its page never sends the secret to the browser
    assert secret not in admin_client_.get(change).content.decode()

    # When it is saved with the secret left blank, the secret stays
    form = project_form(project.owner_id, webhook_url="https://hooks.example.com/y", webhook_secret="")
    assert admin_client_.post(change, form).status_code == 302
    project.refresh_from_db()
    assert (project.webhook_url, project.webhook_secret) == ("https://hooks.example.com/y", secret)

    # And clearing the URL clears the secret with it
    assert admin_client_.post(change, {**form, "webhook_url": ""}).status_code == 302
    project.refresh_from_db()
    assert (project.webhook_url, project.webhook_secret) == ("", "")


def test_the_project_form_refuses_a_webhook_without_a_secret(admin_client_: Client) -> None:
    owner = UserFactory.create()
    response = admin_client_.post(
        "/admin/publishing/project/add/", project_form(owner.pk, webhook_url="https://hooks.example.com/x")
    )
    assert response.status_code == 200
    assert "Required with a webhook URL" in response.content.decode()
    assert not owner.projects.exists()


def test_non_staff_are_sent_to_the_login_page() -> None:
    client = Client()
    client.force_login(UserFactory.create())
    ProjectFactory.create()
    response = client.get("/admin/publishing/publishing/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_queue_overview_shows_counts_and_latest_failures(admin_client_: Client, stub_broker) -> None:
    failed = PublishingFactory.create(failed=True, error_code="TARGET_REJECTED", error_message="HTTP 400")
    PublishingFactory.create(published=True)

    page = admin_client_.get("/admin/publishing/publishing/overview/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Queue overview" in html
    assert "TARGET_REJECTED" in html
    assert f"/admin/publishing/publishing/{failed.pk}/change/" in html
    assert "?status__exact=published" in html


def test_the_queue_overview_shows_no_credential_of_a_failure(admin_client_: Client, stub_broker) -> None:
    # Given a failure whose message quotes a URL with its credentials
    PublishingFactory.create(
        failed=True, error_code="CHECKOUT_FAILED", error_message="git clone https://bot:s3cret@git.example/x"
    )

    html = admin_client_.get("/admin/publishing/publishing/overview/").content.decode()

    assert "s3cret" not in html
    assert "https://***@git.example/x" in html


def test_a_publishings_admin_page_shows_no_credential_of_its_errors_or_log(admin_client_: Client) -> None:
    # Given a failure whose message, attempt and log quote a URL with its credentials
    leak = "https://bot:s3cret@store.example/upload"
    publishing = PublishingFactory.create(
        failed=True, error_code="TARGET_REJECTED", error_message=f"refused by {leak}", log=f"PUT {leak}"
    )
    Attempt.objects.create(
        publishing=publishing,
        number=1,
        outcome=Attempt.Outcome.FAILED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        error_code="TARGET_REJECTED",
        error_message=f"refused by {leak}",
        log_excerpt=f"PUT {leak}",
    )

    html = admin_client_.get(f"/admin/publishing/publishing/{publishing.pk}/change/").content.decode()

    assert "s3cret" not in html
    assert "https://***@store.example/upload" in html


def test_the_queue_overview_is_drawn_when_redis_is_down_and_says_so(
    admin_client_: Client, settings, monkeypatch
) -> None:
    # Given a Redis broker that does not answer (a closed port, nothing listening)
    from publishing import broker

    settings.BROKER_URL = settings.REDIS_URL = "redis://127.0.0.1:1/0"
    dead = broker.redis_client(settings.REDIS_URL, socket_timeout=0.2)
    monkeypatch.setattr(broker, "web_redis", lambda: dead)
    monkeypatch.setattr(dramatiq, "get_broker", lambda: RedisBroker(client=dead, namespace="x"))

    page = admin_client_.get("/admin/publishing/publishing/overview/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "(broker unavailable)" in html
    assert 'class="down">unavailable' in html


def test_only_staff_see_the_queue_overview(client: Client) -> None:
    client.force_login(UserFactory.create(username="user"))
    response = client.get("/admin/publishing/publishing/overview/")
    assert response.status_code == 302  # to the admin login


# --- The publishing changelist ------------------------------------------------------------------

QUEUE = "publishing-builds"
WEBHOOK_QUEUE = "publishing-builds-webhooks"
CHANGELIST = "/admin/publishing/publishing/"


def change_url(publishing: Publishing) -> str:
    return f"{CHANGELIST}{publishing.pk}/change/"


def row(publishing: Publishing) -> str:
    """How a message names a publishing: its id, linked to its page."""
    return f'<a href="{change_url(publishing)}">{publishing.pk}</a>'


def sent_messages(response) -> list[tuple[str, str]]:
    """(level tag, text) of the messages a response left for the next page."""
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("status", [status for status, _ in Publishing.Status.choices])
def test_the_changelist_shows_a_coloured_badge_and_an_active_ones_progress_for_each_status(
    admin_client_: Client, status: str
) -> None:
    # Given a publishing in this status
    publishing = PublishingFactory.with_status(status)

    # When staff open the changelist
    page = admin_client_.get(CHANGELIST)

    # Then the row has the status badge (its colour is the CSS class), the progress bar while it is
    # active, and the columns
    assert page.status_code == 200
    html = page.content.decode()
    assert f'<span class="pub-badge pub-{status}">{status}</span>' in html
    active = status in Publishing.ACTIVE_STATUSES
    assert (f'<progress value="{publishing.progress}" max="100">' in html) is active
    assert publishing.project is not None
    assert publishing.requested_by is not None
    assert publishing.project.name in html
    assert publishing.requested_by.username in html
    assert "publishing/admin.css" in html


def test_the_changelist_shows_durations_finished_and_running(admin_client_: Client) -> None:
    now = timezone.now()
    PublishingFactory.create(
        published=True, started_at=now - timedelta(seconds=65), finished_at=now, created_at=now
    )
    PublishingFactory.create(
        failed=True,
        started_at=now - timedelta(hours=2, minutes=3, seconds=59),
        finished_at=now,
        created_at=now,
    )
    PublishingFactory.create(building=True, started_at=now - timedelta(minutes=3))

    html = admin_client_.get(CHANGELIST).content.decode()

    assert "1 min 05 s" in html
    assert "2 h 03 min" in html
    # (the running one's duration is counted when the page renders: a slow machine adds seconds)
    running = re.search(r"3 min (\d\d) s so far", html)
    assert running is not None, html
    assert int(running.group(1)) < 30


def test_the_changelist_filters_and_searches(admin_client_: Client) -> None:
    # Given publishings of two projects by two users
    alice, bob = UserFactory.create(username="alice-a"), UserFactory.create(username="bob-b")
    mine = PublishingFactory.create(
        failed=True, project=ProjectFactory.create(owner=alice, name="Alpha site", slug="alpha")
    )
    theirs = PublishingFactory.create(
        published=True, project=ProjectFactory.create(owner=bob, name="Beta site", slug="beta")
    )

    def listed(**query: str) -> set[str]:
        page = admin_client_.get(CHANGELIST, query)
        assert page.status_code == 200, query
        html = page.content.decode()
        return {str(p.pk) for p in (mine, theirs) if change_url(p) in html}

    # Then each filter and search narrows the list
    assert listed() == {str(mine.pk), str(theirs.pk)}
    assert listed(status__exact="failed") == {str(mine.pk)}
    assert listed(project__id__exact=str(theirs.project_id)) == {str(theirs.pk)}
    assert listed(requested_by__id__exact=str(alice.pk)) == {str(mine.pk)}
    assert listed(created_at__gte=(timezone.now() - timedelta(days=1)).isoformat()) == {
        str(mine.pk),
        str(theirs.pk),
    }
    assert listed(q="beta") == {str(theirs.pk)}
    assert listed(q="Alpha site") == {str(mine.pk)}
    assert listed(q="bob-b") == {str(theirs.pk)}
    assert listed(q=str(mine.pk)) == {str(mine.pk)}


def test_project_names_and_logs_cannot_inject_html(admin_client_: Client) -> None:
    # Given a project name and a log with markup in them
    evil = "<script>alert(1)</script>"
    publishing = PublishingFactory.create(
        failed=True,
        project=ProjectFactory.create(name=evil),
        log=f"{evil}\n<img src=x onerror=alert(2)>",
        error_message=evil,
    )
    Attempt.objects.create(
        publishing=publishing,
        number=1,
        outcome="failed",
        finished_at=timezone.now(),
        error_message=evil,
        log_excerpt=evil,
    )

    # Then both pages show them as text
    for url in (CHANGELIST, change_url(publishing)):
        html = admin_client_.get(url).content.decode()
        assert evil not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- The publishing detail page -----------------------------------------------------------------


def test_the_detail_page_shows_the_artifact_the_log_the_attempts_and_the_deliveries(
    admin_client_: Client,
) -> None:
    # Given a publishing published at its second attempt, with a webhook delivery
    now = timezone.now()
    publishing = PublishingFactory.create(
        published=True,
        attempts=2,
        artifact_sha256="ab" * 32,
        artifact_size=2048,
        artifact_uri="file:///srv/store/site/x.tar.gz",
        submission_ref="ref-42",
        worker="host-a:123",
        message_id="msg-2",
        log="line one\nline two\n",
    )
    Attempt.objects.create(
        publishing=publishing,
        number=1,
        message_id="msg-1",
        worker="host-a:123",
        started_at=now - timedelta(seconds=30),
        finished_at=now - timedelta(seconds=20),
        outcome="retrying",
        error_code="TARGET_UNAVAILABLE",
        error_message="store busy",
        log_excerpt="attempt 1: checkout",
    )
    Attempt.objects.create(
        publishing=publishing,
        number=2,
        message_id="msg-2",
        started_at=now - timedelta(seconds=10),
        finished_at=now,
        outcome="published",
    )
    WebhookDelivery.objects.create(
        publishing=publishing,
        url="https://hooks.example.com/in",
        event="publishing.published",
        body="{}",
        state="failed",
        attempts=5,
        response_status=502,
        last_error="Bad gateway",
    )

    # When staff open it
    page = admin_client_.get(change_url(publishing))

    # Then it shows the artifact, timing, worker, the log and both histories, read-only
    assert page.status_code == 200
    html = page.content.decode()
    for text in ("ab" * 32, "2048", "file:///srv/store/site/x.tar.gz", "ref-42", "host-a:123", "msg-2"):
        assert text in html
    assert 'id="publishing-log"' in html
    assert 'data-terminal="true"' in html
    assert re.search(r"Z event    line one\n\S+Z event    line two\n</pre>", html)
    assert 'class="pub-badge pub-retrying">retrying<' in html
    assert 'class="pub-badge pub-published">published<' in html
    assert "TARGET_UNAVAILABLE" in html
    assert "store busy" in html
    assert "attempt 1: checkout" in html
    assert "https://hooks.example.com/in" in html
    assert "Bad gateway" in html
    assert 'class="pub-badge pub-failed">failed<' in html
    assert 'name="_save"' not in html
    assert "publishing/live_log.js" in html


def test_an_active_publishing_page_refreshes_itself_and_offers_cancel(admin_client_: Client) -> None:
    publishing = PublishingFactory.create(building=True, log="checking out\n")

    html = admin_client_.get(change_url(publishing)).content.decode()

    assert 'data-terminal="false"' in html
    assert f'action="{CHANGELIST}{publishing.pk}/cancel/"' in html
    assert "/retry/" not in html


def test_a_failed_publishing_page_offers_retry_not_cancel(admin_client_: Client) -> None:
    publishing = PublishingFactory.create(failed=True)

    html = admin_client_.get(change_url(publishing)).content.decode()

    assert f'action="{CHANGELIST}{publishing.pk}/retry/"' in html
    assert "/cancel/" not in html


# --- Who may see and do what ------------------------------------------------------------------


def admin_urls(publishing: Publishing) -> list[str]:
    return [
        CHANGELIST,
        change_url(publishing),
        f"{CHANGELIST}overview/",
        "/admin/publishing/project/",
        "/admin/publishing/webhookdelivery/",
    ]


def test_non_staff_and_anonymous_are_sent_to_the_login_page_everywhere() -> None:
    publishing = PublishingFactory.create(building=True)
    user_client = Client()
    user_client.force_login(UserFactory.create())
    for client in (Client(), user_client):
        for url in admin_urls(publishing):
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
        for url in (
            f"{CHANGELIST}{publishing.pk}/cancel/",
            f"{CHANGELIST}overview/requeue-dead-letters/",
            f"{CHANGELIST}overview/dead-letters/",
        ):
            response = client.post(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
    publishing.refresh_from_db()
    assert publishing.status == "building"


def test_staff_without_permissions_are_refused_and_change_nothing(stub_broker) -> None:
    # Given a staff member with no model permissions
    client = Client()
    client.force_login(UserFactory.create(is_staff=True))
    publishing = PublishingFactory.create(building=True)

    # Then the pages are forbidden and the writes refused
    for url in admin_urls(publishing):
        assert client.get(url).status_code == 403, url
    assert client.post(f"{CHANGELIST}{publishing.pk}/cancel/").status_code == 403
    assert client.post(f"{CHANGELIST}overview/requeue-dead-letters/").status_code == 403
    assert client.post(f"{CHANGELIST}overview/dead-letters/", {"discard": "x"}).status_code == 403
    response = client.post(CHANGELIST, {"action": "cancel_selected", "_selected_action": [publishing.pk]})
    assert response.status_code == 403
    publishing.refresh_from_db()
    assert publishing.status == "building"


def test_staff_who_may_only_view_see_the_pages_without_actions(stub_broker) -> None:
    # Given a staff member with view permissions only
    user = UserFactory.create(is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_publishing", "view_attempt", "view_webhookdelivery"])
    )
    client = Client()
    client.force_login(user)
    publishing = PublishingFactory.create(building=True)

    # Then they see the pages but no way to change anything
    changelist = client.get(CHANGELIST).content.decode()
    assert "cancel_selected" not in changelist
    detail = client.get(change_url(publishing)).content.decode()
    assert "/cancel/" not in detail
    overview = client.get(f"{CHANGELIST}overview/").content.decode()
    assert "requeue-dead-letters" not in overview
    assert client.post(f"{CHANGELIST}{publishing.pk}/cancel/").status_code == 403
    assert client.post(f"{CHANGELIST}overview/requeue-dead-letters/").status_code == 403
    publishing.refresh_from_db()
    assert publishing.status == "building"


def test_publishings_cannot_be_added_or_deleted_in_the_admin(admin_client_: Client) -> None:
    publishing = PublishingFactory.create(failed=True)
    assert admin_client_.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client_.get(f"{CHANGELIST}{publishing.pk}/delete/").status_code == 403
    response = admin_client_.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [publishing.pk]}
    )
    assert Publishing.objects.filter(pk=publishing.pk).exists()
    assert response.status_code in {200, 302}


# --- Cancel and retry -----------------------------------------------------------------------------


@pytest.fixture
def spy(monkeypatch):
    """Wrap a service function where `caller` (the admin module that calls it) looks it up, so that the
    test sees each call while the real one runs."""

    def wrap(name: str, caller: ModuleType) -> Mock:
        mock = Mock(wraps=getattr(caller, name))
        monkeypatch.setattr(caller, name, mock)
        return mock

    return wrap


def test_cancel_selected_cancels_through_the_service_and_reports_each_row(
    admin_client_: Client, stub_broker, spy
) -> None:
    # Given a running and a published publishing
    running = PublishingFactory.create(building=True, message_id="m1")
    done = PublishingFactory.create(published=True)
    cancel = spy("publishing_cancel", admin_publishings)

    # When staff cancel both
    response = admin_client_.post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": [running.pk, done.pk]}
    )

    # Then the service was called for each, as the staff user
    assert response.status_code == 302
    assert {call.kwargs["publishing"].pk for call in cancel.call_args_list} == {running.pk, done.pk}
    assert all(call.kwargs["by"].username == "admin" for call in cancel.call_args_list)
    # And the running one is cancelled, the published one is not
    running.refresh_from_db()
    done.refresh_from_db()
    assert (running.status, running.error_message) == ("cancelled", "Cancelled by admin.")
    assert done.status == "published"
    # And each row says what happened to it
    reported = sent_messages(response)
    assert ("success", f"{row(running)}: cancelled.") in reported
    assert (
        "warning",
        f"{row(done)}: not cancelled: The publishing is already published; it cannot be cancelled.",
    ) in reported
    assert ("info", "1 cancelled, 1 refused, 0 failed (broker unavailable).") in reported
    # And the changelist now shows it cancelled
    page = admin_client_.get(CHANGELIST).content.decode()
    assert 'class="pub-badge pub-cancelled">cancelled<' in page


def test_retry_selected_queues_through_the_service_and_reports_each_row(
    admin_client_: Client, stub_broker, spy
) -> None:
    # Given a failed and a pending publishing
    failed = PublishingFactory.create(failed=True)
    pending = PublishingFactory.create()
    retry = spy("publishing_retry", admin_publishings)

    # When staff retry both
    response = admin_client_.post(
        CHANGELIST, {"action": "retry_selected", "_selected_action": [failed.pk, pending.pk]}
    )

    # Then the failed one is queued with a message, and the pending one is refused
    assert retry.call_count == 2
    failed.refresh_from_db()
    pending.refresh_from_db()
    assert failed.status == "queued"
    assert [m.message_id for m in queued_messages(stub_broker)] == [failed.message_id]
    assert pending.status == "pending"
    reported = sent_messages(response)
    assert ("success", f"{row(failed)}: retried, now queued.") in reported
    assert any(
        level == "warning" and text.startswith(f"{row(pending)}: not retried") for level, text in reported
    )


def test_retry_selected_with_the_broker_down_is_an_error_row_and_changes_nothing(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    failed = PublishingFactory.create(failed=True, error_code="BUILD_FAILED")

    broker_refuses(monkeypatch, stub_broker)

    response = admin_client_.post(CHANGELIST, {"action": "retry_selected", "_selected_action": [failed.pk]})

    assert response.status_code == 302
    failed.refresh_from_db()
    assert (failed.status, failed.error_code) == ("failed", "BUILD_FAILED")
    assert sent_messages(response) == [
        ("error", f"{row(failed)}: not retried: Background job service unavailable")
    ]


def test_the_detail_buttons_cancel_and_retry_through_the_services(
    admin_client_: Client, stub_broker, spy
) -> None:
    publishing = PublishingFactory.create(queued=True, message_id="m1")
    cancel, retry = spy("publishing_cancel", admin_publishings), spy("publishing_retry", admin_publishings)

    # A GET changes nothing
    assert admin_client_.get(f"{CHANGELIST}{publishing.pk}/cancel/").status_code == 405
    # When staff press Cancel, then Retry
    cancelled = admin_client_.post(f"{CHANGELIST}{publishing.pk}/cancel/")
    publishing.refresh_from_db()
    assert publishing.status == "cancelled"
    retried = admin_client_.post(f"{CHANGELIST}{publishing.pk}/retry/")
    publishing.refresh_from_db()

    # Then each went through its service and came back to the page
    assert (cancel.call_count, retry.call_count) == (1, 1)
    assert publishing.status == "queued"
    assert cancelled["Location"] == retried["Location"] == change_url(publishing)
    assert sent_messages(retried)[-1] == ("success", f"{row(publishing)}: retried, now queued.")
    assert admin_client_.post(f"{CHANGELIST}{uuid.uuid4()}/cancel/").status_code == 404


def test_the_change_form_never_saves(admin_client_: Client) -> None:
    publishing = PublishingFactory.create(building=True, progress=30)
    response = admin_client_.post(change_url(publishing), {"status": "published", "progress": "100"})
    assert response.status_code == 403
    publishing.refresh_from_db()
    assert (publishing.status, publishing.progress) == ("building", 30)


# --- Publish now ---------------------------------------------------------------------------------


def test_publish_now_initiates_through_the_service_as_the_staff_user(
    admin_client_: Client, stub_broker, spy
) -> None:
    # Given a project with nothing running and one with an active publishing
    idle = ProjectFactory.create(name="Idle")
    active = PublishingFactory.create(building=True, project=ProjectFactory.create(name="Busy"))
    initiate = spy("publishing_initiate", admin_projects)

    # When staff publish both now
    response = admin_client_.post(
        "/admin/publishing/project/",
        {"action": "publish_now", "_selected_action": [idle.pk, active.project_id]},
    )

    # Then the service ran for each, as the staff user
    assert response.status_code == 302
    assert initiate.call_count == 2
    assert all(call.kwargs["user"].username == "admin" for call in initiate.call_args_list)
    # And the idle one is queued, with a link to it; the busy one links to its active publishing
    created = Publishing.objects.get(project=idle)
    assert created.status == "queued"
    assert created.requested_by == UserFactory.create(username="admin")
    assert log_text(created).endswith(" event    queued by admin via admin\n")
    assert [m.message_id for m in queued_messages(stub_broker)] == [created.message_id]
    reported = dict((text, level) for level, text in sent_messages(response))
    assert reported[f'Idle: publishing <a href="{change_url(created)}">{created.pk}</a> queued.'] == "success"
    conflict = next(text for text in reported if text.startswith("Busy"))
    assert reported[conflict] == "warning"
    assert change_url(active) in conflict


def test_publish_now_with_the_broker_down_leaves_nothing_behind(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    project = ProjectFactory.create(name="Site")
    monkeypatch.setattr(publishing_broker.breaker, "failures", 1)
    monkeypatch.setattr(publishing_broker.breaker, "_open_until", float("inf"))

    response = admin_client_.post(
        "/admin/publishing/project/", {"action": "publish_now", "_selected_action": [project.pk]}
    )

    assert not Publishing.objects.exists()
    assert sent_messages(response) == [("error", "Site: not published: Background job service unavailable")]


# --- Webhook deliveries -------------------------------------------------------------------------


def test_the_webhook_delivery_pages_render_read_only(admin_client_: Client) -> None:
    delivery = WebhookDelivery.objects.create(
        publishing=PublishingFactory.create(published=True),
        url="https://hooks.example.com/<b>in</b>",
        event="publishing.published",
        body='{"status": "published"}',
        state="delivered",
        attempts=1,
        response_status=204,
        delivered_at=timezone.now(),
    )

    changelist = admin_client_.get("/admin/publishing/webhookdelivery/")
    detail = admin_client_.get(f"/admin/publishing/webhookdelivery/{delivery.pk}/change/")

    assert changelist.status_code == detail.status_code == 200
    assert 'class="pub-badge pub-delivered">delivered<' in changelist.content.decode()
    assert "https://hooks.example.com/&lt;b&gt;in&lt;/b&gt;" in changelist.content.decode()
    assert "{&quot;status&quot;: &quot;published&quot;}" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    assert admin_client_.get("/admin/publishing/webhookdelivery/add/").status_code == 403


def test_resend_selected_resends_through_the_service_and_reports_each_row(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    # Given a failed delivery and a delivered one
    failed = hooked_delivery("failed")
    delivered = hooked_delivery("delivered", delivered_at=timezone.now())
    resend = Mock(wraps=delivery_resend)
    monkeypatch.setattr(admin_webhooks, "delivery_resend", resend)

    # When staff resend both
    response = admin_client_.post(
        "/admin/publishing/webhookdelivery/",
        {"action": "resend_selected", "_selected_action": [failed.pk, delivered.pk]},
    )

    # Then each went through delivery_resend; the failed one is pending again, the delivered one refused
    assert response.status_code == 302
    assert {call.kwargs["delivery"].pk for call in resend.call_args_list} == {failed.pk, delivered.pk}
    failed.refresh_from_db()
    delivered.refresh_from_db()
    assert (failed.state, delivered.state) == ("pending", "delivered")
    reported = sent_messages(response)
    assert ("success", f"publishing.failed of {row(failed.publishing)}: resent.") in reported
    assert (
        "warning",
        f"publishing.failed of {row(delivered.publishing)}: not resent: "
        "This webhook delivery was delivered already; it is not sent again.",
    ) in reported


def test_resend_selected_with_the_broker_down_is_an_error_row(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    failed = hooked_delivery("failed")

    broker_refuses(monkeypatch, stub_broker)

    response = admin_client_.post(
        "/admin/publishing/webhookdelivery/", {"action": "resend_selected", "_selected_action": [failed.pk]}
    )

    failed.refresh_from_db()
    assert (failed.state, failed.message_id) == ("failed", "old-message")
    assert sent_messages(response) == [
        (
            "error",
            f"publishing.failed of {row(failed.publishing)}: not resent: Background job service unavailable",
        )
    ]


# --- Dead letters -------------------------------------------------------------------------------


def dead_letter(
    stub_broker, actor: str = "build_and_submit", *, queue: str = QUEUE, **kwargs: str
) -> dramatiq.Message[None]:
    """Put a message in the stub broker's dead letters, as a worker does when it gives up."""
    message = dramatiq.Message[None](queue_name=queue, actor_name=actor, args=(), kwargs=kwargs, options={})
    stub_broker.dead_letters_by_queue[queue].append(MessageProxy(message))
    return message


def dead_ids(stub_broker, queue: str = QUEUE) -> list[str]:
    return [proxy.message_id for proxy in stub_broker.dead_letters_by_queue[queue]]


def hooked_delivery(state: str, **fields: Any) -> WebhookDelivery:
    """A delivery of a failed publishing whose project has a webhook."""
    project = ProjectFactory.create(webhook_url="https://hooks.example.com/in", webhook_secret="k")
    return WebhookDelivery.objects.create(
        publishing=PublishingFactory.create(failed=True, project=project),
        url=project.webhook_url,
        event="publishing.failed",
        body="{}",
        state=state,
        message_id="old-message",
        **fields,
    )


def test_the_overview_offers_to_requeue_dead_letters(admin_client_: Client, stub_broker) -> None:
    html = admin_client_.get(f"{CHANGELIST}overview/").content.decode()
    assert 'action="/admin/publishing/publishing/overview/requeue-dead-letters/"' in html
    assert "csrfmiddlewaretoken" in html
    assert admin_client_.get(f"{CHANGELIST}overview/requeue-dead-letters/").status_code == 405


def test_requeue_needs_the_csrf_token(stub_broker) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    failed = PublishingFactory.create(failed=True)
    dead_letter(stub_broker, publishing_id=str(failed.pk))

    assert client.post(f"{CHANGELIST}overview/requeue-dead-letters/").status_code == 403
    failed.refresh_from_db()
    assert failed.status == "failed"
    assert len(dead_ids(stub_broker)) == 1


def test_requeue_retries_failed_publishings_and_drops_obsolete_letters(
    admin_client_: Client, stub_broker, spy
) -> None:
    # Given dead letters for: a failed publishing, a published one, one deleted since,
    # a failed one whose project has another publishing running, and another actor's message
    failed = PublishingFactory.create(failed=True)
    published = PublishingFactory.create(published=True)
    blocked = PublishingFactory.create(failed=True)
    PublishingFactory.create(building=True, project=blocked.project)
    dead_letter(stub_broker, publishing_id=str(failed.pk))
    dead_letter(stub_broker, publishing_id=str(published.pk))
    dead_letter(stub_broker, publishing_id=str(uuid.uuid4()))
    kept = [
        dead_letter(stub_broker, publishing_id=str(blocked.pk)).message_id,
        dead_letter(stub_broker, "someone_elses_actor").message_id,
    ]
    requeue, retry = spy("dead_letters_requeue", admin_overview), spy("publishing_retry", dead_letters)

    # When staff requeue the dead letters
    response = admin_client_.post(f"{CHANGELIST}overview/requeue-dead-letters/")

    # Then the service ran as the staff user and retried the failed ones through publishing_retry
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}overview/"
    assert requeue.call_args.kwargs["by"].username == "admin"
    assert {call.kwargs["publishing"].pk for call in retry.call_args_list} == {failed.pk, blocked.pk}
    failed.refresh_from_db()
    assert failed.status == "queued"
    assert [m.message_id for m in queued_messages(stub_broker)] == [failed.message_id]
    published.refresh_from_db()
    assert published.status == "published"
    # And only the letters that still mean something stay
    assert dead_ids(stub_broker) == kept
    reported = sent_messages(response)
    assert reported[0] == ("warning", "Dead letters: 1 requeued, 2 dropped as obsolete, 2 left.")
    assert any(f"Publishing {blocked.pk} not retried" in text for _, text in reported)
    assert any("someone_elses_actor left alone" in text for _, text in reported)


def test_requeue_resends_failed_webhook_deliveries_and_drops_the_rest(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    # Given dead-lettered deliveries: one failed for good, one delivered since, one deleted since
    failed = hooked_delivery("failed", attempts=11, response_status=503)
    delivered = hooked_delivery("delivered", delivered_at=timezone.now())
    for delivery_id in (failed.pk, delivered.pk, uuid.uuid4()):
        dead_letter(stub_broker, "deliver_webhook", queue=WEBHOOK_QUEUE, delivery_id=str(delivery_id))
    resend = Mock(wraps=delivery_resend)
    monkeypatch.setattr(dead_letters, "delivery_resend", resend)

    # When staff requeue the dead letters
    response = admin_client_.post(f"{CHANGELIST}overview/requeue-dead-letters/")

    # Then the failed delivery went through delivery_resend: pending again with a new message
    assert [call.kwargs["delivery"].pk for call in resend.call_args_list] == [failed.pk]
    failed.refresh_from_db()
    assert failed.state == "pending"
    queued = [dramatiq.Message.decode(raw) for raw in stub_broker.queues[WEBHOOK_QUEUE].queue]
    assert [m.message_id for m in queued] == [failed.message_id]
    # And no letter is left
    assert dead_ids(stub_broker, WEBHOOK_QUEUE) == []
    assert sent_messages(response) == [("success", "Dead letters: 1 requeued, 2 dropped as obsolete.")]


def test_requeue_shows_twenty_notes_and_counts_the_rest(admin_client_: Client, stub_broker) -> None:
    # Given 25 dead letters that are not the service's own, each worth a note
    for _ in range(25):
        dead_letter(stub_broker, "someone_elses_actor")

    # When staff requeue the dead letters
    response = admin_client_.post(f"{CHANGELIST}overview/requeue-dead-letters/")

    # Then the page lists 20 of the notes and says how many more there are, rather than 25 lines
    reported = sent_messages(response)
    notes = [text for level, text in reported[1:] if "someone_elses_actor left alone" in text]
    assert len(notes) == 20
    assert reported[-1] == ("warning", "… and 5 more.")
    assert len(dead_ids(stub_broker)) == 25


def test_requeue_twice_does_nothing_the_second_time(admin_client_: Client, stub_broker) -> None:
    failed = PublishingFactory.create(failed=True)
    dead_letter(stub_broker, publishing_id=str(failed.pk))
    url = f"{CHANGELIST}overview/requeue-dead-letters/"

    admin_client_.post(url)
    second = admin_client_.post(url)

    assert sent_messages(second)[-1] == ("info", "No dead letters.")
    assert len(queued_messages(stub_broker)) == 1


def test_requeue_stops_politely_when_the_broker_goes_away_midway(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    # Given two failed publishings dead-lettered, and a broker that refuses new messages
    first, second = PublishingFactory.create(failed=True), PublishingFactory.create(failed=True)
    dead_letter(stub_broker, publishing_id=str(first.pk))
    dead_letter(stub_broker, publishing_id=str(second.pk))

    broker_refuses(monkeypatch, stub_broker)

    # When staff requeue
    response = admin_client_.post(f"{CHANGELIST}overview/requeue-dead-letters/")

    # Then both stay failed and dead-lettered, and the page says why
    for publishing in (first, second):
        publishing.refresh_from_db()
        assert publishing.status == "failed"
    assert len(dead_ids(stub_broker)) == 2
    assert sent_messages(response) == [
        (
            "warning",
            "Dead letters: 0 requeued, 0 dropped as obsolete; the broker went away meanwhile: "
            "2 left for another try.",
        )
    ]


def test_requeue_with_redis_down_says_so_and_changes_nothing(
    admin_client_: Client, settings, monkeypatch
) -> None:
    # Given a Redis broker that does not answer (a closed port, nothing listening)
    from publishing import broker

    failed = PublishingFactory.create(failed=True)
    settings.BROKER_URL = settings.REDIS_URL = "redis://127.0.0.1:1/0"
    dead = broker.redis_client(settings.REDIS_URL, socket_timeout=0.2)
    monkeypatch.setattr(broker, "web_redis", lambda: dead)
    monkeypatch.setattr(dramatiq, "get_broker", lambda: RedisBroker(client=dead, namespace="x"))

    # When staff requeue the dead letters
    response = admin_client_.post(f"{CHANGELIST}overview/requeue-dead-letters/", follow=True)

    # Then the overview is drawn again with a clear message, and nothing changed
    assert response.status_code == 200
    html = response.content.decode()
    assert "The broker is unavailable: the dead letters cannot be read now." in html
    assert "(broker unavailable)" in html
    failed.refresh_from_db()
    assert failed.status == "failed"


@pytest.mark.django_db(transaction=True)
def test_a_job_rejected_for_good_is_dead_lettered_then_requeued_and_published(
    admin_client_: Client, stub_broker, worker
) -> None:
    # Given a publishing the target rejected once: failed, its message dead-lettered by the worker
    ScriptedPipeline.reset(PermanentJobError("rejected by the store", code="TARGET_REJECTED"))
    publishing = initiate()
    drain(stub_broker, worker)
    publishing.refresh_from_db()
    assert publishing.status == "failed"
    assert dead_ids(stub_broker) == [publishing.message_id]

    # When staff requeue the dead letters, and the worker runs again
    response = admin_client_.post(f"{CHANGELIST}overview/requeue-dead-letters/")
    drain(stub_broker, worker)

    # Then the publishing is retried and published, and the dead letter is gone
    assert sent_messages(response) == [("success", "Dead letters: 1 requeued, 0 dropped as obsolete.")]
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == ("published", 2)
    assert dead_ids(stub_broker) == []


# --- Project writes go through the services -------------------------------------------------------


def test_a_project_building_cannot_be_deleted_from_the_admin_by_either_way(
    admin_client_: Client, stub_broker
) -> None:
    # Given a project whose publishing is building, and one with nothing running
    busy = ProjectFactory.create(name="Busy")
    building = PublishingFactory.create(building=True, project=busy)
    idle = ProjectFactory.create(name="Idle")
    busy_url = f"/admin/publishing/project/{busy.pk}/delete/"

    # When a superuser confirms its delete page, and deletes both with the changelist action
    page = admin_client_.get(busy_url)
    confirmed = admin_client_.post(busy_url, {"post": "yes"})
    action = admin_client_.post(
        "/admin/publishing/project/",
        {"action": "delete_selected", "_selected_action": [busy.pk, idle.pk], "post": "yes"},
    )

    # Then the page says why it cannot be deleted and offers no confirmation, and neither POST deleted it:
    # the publishing goes on with its project, as the API's delete would have it
    assert b"has a publishing building" in page.content
    assert b"Yes, I" not in page.content  # the confirmation button that the idle project's page has
    assert b"Yes, I" in admin_client_.get(f"/admin/publishing/project/{idle.pk}/delete/").content
    assert confirmed.status_code == 200
    assert b"has a publishing building" in action.content
    assert Project.objects.filter(pk=busy.pk).exists()
    assert Project.objects.filter(pk=idle.pk).exists()
    building.refresh_from_db()
    assert (building.status, building.project_id is not None) == ("building", True)


def test_a_project_with_nothing_running_is_deleted_from_the_admin_through_project_delete(
    admin_client_: Client, spy
) -> None:
    # Given a project whose publishing has ended
    project = PublishingFactory.create(published=True).project
    assert project is not None
    delete = spy("project_delete", admin_projects)

    # When a superuser deletes it
    response = admin_client_.post(f"/admin/publishing/project/{project.pk}/delete/", {"post": "yes"})

    # Then the service deleted it as that user, and the publishing is kept
    assert response.status_code == 302
    assert delete.call_args.kwargs["by"].username == "admin"
    assert not Project.objects.filter(pk=project.pk).exists()
    assert Publishing.objects.filter(project=None).count() == 1


def test_the_project_form_saves_through_the_services_as_the_staff_user(admin_client_: Client, spy) -> None:
    # Given an owner without the right to set build commands, and a superuser who has it
    owner = UserFactory.create()
    create, update = spy("project_create", admin_projects), spy("project_update", admin_projects)

    # When the superuser adds a project with a build command for the owner, then renames it
    added = admin_client_.post(
        "/admin/publishing/project/add/", project_form(owner.pk, build_command="make site")
    )
    project = Project.objects.get(owner=owner)
    changed = admin_client_.post(
        f"/admin/publishing/project/{project.pk}/change/",
        project_form(owner.pk, build_command="make site", name="Renamed"),
    )

    # Then both went through the services, judged as the superuser (the owner could not have set it)
    assert (added.status_code, changed.status_code) == (302, 302)
    assert create.call_args.kwargs["by"].username == "admin"
    assert update.call_args.kwargs["by"].username == "admin"
    project.refresh_from_db()
    assert (project.name, project.build_command, project.owner) == ("Renamed", "make site", owner)


def test_the_admin_says_publisher_and_its_view_site_link_leads_to_the_projects(admin_client_: Client) -> None:
    index = admin_client_.get("/admin/").content.decode()
    assert "Publisher administration" in index
    assert '<a href="/projects/">View site</a>' in index
    # And the front page is the user's projects, not a debug 404
    front = Client().get("/")
    assert (front.status_code, front["Location"]) == (302, "/projects/")


def test_the_admin_shows_times_to_the_second(admin_client_: Client) -> None:
    # Given a publishing that started at a known second
    started = datetime(2026, 12, 7, 5, 47, 48, tzinfo=UTC)
    publishing = PublishingFactory.create(building=True, started_at=started)

    # Then its page and the list show that second
    assert "2026-12-07 05:47:48" in admin_client_.get(change_url(publishing)).content.decode()
