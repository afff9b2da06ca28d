"""The queue overview's dead letters, one by one: listed with what the message and the database tell,
requeued or discarded each or by selection, through publishing.services.dead_letters."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from unittest.mock import Mock

import dramatiq
import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from dramatiq.broker import MessageProxy

from publishing import broker as publishing_broker
from publishing.admin import overview as admin_overview
from publishing.services import dead_letters
from tests.factories import PublishingFactory, UserFactory
from tests.support.stub_broker import broker_refuses, queued_messages
from tests.unit.test_admin import CHANGELIST, QUEUE, WEBHOOK_QUEUE, dead_ids, hooked_delivery, sent_messages

pytestmark = pytest.mark.django_db

OVERVIEW = f"{CHANGELIST}overview/"
ACT = f"{CHANGELIST}overview/dead-letters/"


def dead_letter(
    stub_broker,
    actor: str = "build_and_submit",
    *,
    queue: str = QUEUE,
    traceback: str | None = None,
    **kwargs: str,
) -> dramatiq.Message[None]:
    """A dead letter as a worker leaves it: Dramatiq's Retries adds the traceback and when it last failed."""
    options: dict[str, object] = {}
    if traceback is not None:
        options = {"traceback": traceback, "requeue_timestamp": 1_796_000_000_000, "retries": 3}
    message = dramatiq.Message[None](
        queue_name=queue, actor_name=actor, args=(), kwargs=kwargs, options=options
    )
    stub_broker.dead_letters_by_queue[queue].append(MessageProxy(message))
    return message


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "tasks.py", line 3, in build_and_submit\n'
    "publishing.exceptions.TransientJobError: store https://bob:hunter2@store.example.com refused\n"
)


def test_the_overview_lists_each_dead_letter_with_what_it_tells(admin_client_: Client, stub_broker) -> None:
    # Given a failed publishing's letter (with Dramatiq's traceback), and a failed delivery's
    failed = PublishingFactory.create(failed=True)
    build = dead_letter(stub_broker, publishing_id=str(failed.pk), traceback=TRACEBACK)
    delivery = hooked_delivery("failed", attempts=11)
    hook = dead_letter(stub_broker, "deliver_webhook", queue=WEBHOOK_QUEUE, delivery_id=str(delivery.pk))

    # When staff open the overview
    html = admin_client_.get(OVERVIEW).content.decode()

    # Then each letter is a row: a checkbox, its actor, its publishing or delivery linked, its reason
    # (credentials redacted), when it last failed, and the publishing's status now
    assert f'name="message_id" value="{build.message_id}"' in html
    assert f'name="message_id" value="{hook.message_id}"' in html
    assert f'href="{CHANGELIST}{failed.pk}/change/"' in html
    assert f'href="/admin/publishing/webhookdelivery/{delivery.pk}/change/"' in html
    assert "TransientJobError: store https://***@store.example.com refused" in html
    assert "hunter2" not in html
    assert "2026-11-30 00:53:20" in html  # 1_796_000_000 s, to the second
    assert 'class="pub-badge pub-failed"' in html
    # And a requeue and a discard button for each, and for the selection
    assert f'name="requeue" value="{build.message_id}"' in html
    assert f'name="discard" value="{hook.message_id}"' in html
    assert 'value="requeue_selected"' in html
    assert 'value="discard_selected"' in html


def test_requeue_one_retries_only_its_publishing(admin_client_: Client, stub_broker, monkeypatch) -> None:
    # Given two failed publishings dead-lettered
    first, second = PublishingFactory.create(failed=True), PublishingFactory.create(failed=True)
    one = dead_letter(stub_broker, publishing_id=str(first.pk))
    other = dead_letter(stub_broker, publishing_id=str(second.pk))
    requeue = Mock(wraps=dead_letters.dead_letters_requeue)
    monkeypatch.setattr(admin_overview, "dead_letters_requeue", requeue)

    # When staff requeue the first one
    response = admin_client_.post(ACT, {"requeue": one.message_id})

    # Then only it is retried, through the same service as requeue-all, and its letter is gone
    assert response.status_code == 302
    assert response["Location"] == OVERVIEW
    assert requeue.call_args.kwargs["message_ids"] == [one.message_id]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("queued", "failed")
    assert dead_ids(stub_broker) == [other.message_id]
    assert [m.message_id for m in queued_messages(stub_broker)] == [first.message_id]
    assert sent_messages(response) == [("success", "Dead letters: 1 requeued, 0 dropped as obsolete.")]


def test_requeue_selected_does_the_ticked_ones(admin_client_: Client, stub_broker) -> None:
    publishings = [PublishingFactory.create(failed=True) for _ in range(3)]
    letters = [dead_letter(stub_broker, publishing_id=str(p.pk)) for p in publishings]

    admin_client_.post(
        ACT, {"action": "requeue_selected", "message_id": [letters[0].message_id, letters[2].message_id]}
    )

    for publishing in publishings:
        publishing.refresh_from_db()
    statuses = [publishing.status for publishing in publishings]
    assert statuses == ["queued", "failed", "queued"]
    assert dead_ids(stub_broker) == [letters[1].message_id]


def test_discard_removes_only_that_letter_says_what_it_did_and_logs_it(
    admin_client_: Client, stub_broker, caplog
) -> None:
    # Given a failed publishing's letter and another
    failed = PublishingFactory.create(failed=True)
    letter = dead_letter(stub_broker, publishing_id=str(failed.pk))
    other = dead_letter(stub_broker, publishing_id=str(PublishingFactory.create(failed=True).pk))

    # When staff discard it
    with caplog.at_level(logging.INFO, logger="publishing.services.dead_letters"):
        response = admin_client_.post(ACT, {"discard": letter.message_id})

    # Then the letter is gone, the publishing stays failed (nothing ran), and the page and the log say so
    assert dead_ids(stub_broker) == [other.message_id]
    failed.refresh_from_db()
    assert failed.status == "failed"
    assert queued_messages(stub_broker) == []
    (level, text), *_ = sent_messages(response)
    assert level == "warning"
    assert f"Discarded the dead letter of build_and_submit for publishing {failed.pk}" in text
    assert "it stays failed" in text
    logged = [r.getMessage() for r in caplog.records if "discarded" in r.getMessage()]
    assert any(letter.message_id in line and str(failed.pk) in line and "admin" in line for line in logged)


def test_discard_selected_counts_and_names_each(admin_client_: Client, stub_broker) -> None:
    delivery = hooked_delivery("failed")
    hook = dead_letter(stub_broker, "deliver_webhook", queue=WEBHOOK_QUEUE, delivery_id=str(delivery.pk))
    stray = dead_letter(stub_broker, "someone_elses_actor")

    response = admin_client_.post(
        ACT, {"action": "discard_selected", "message_id": [hook.message_id, stray.message_id]}
    )

    assert dead_ids(stub_broker) == []
    assert dead_ids(stub_broker, WEBHOOK_QUEUE) == []
    texts = [text for _, text in sent_messages(response)]
    assert any(f"webhook delivery {delivery.pk}" in text and "it stays failed" in text for text in texts)
    assert any(f"message {stray.message_id} of someone_elses_actor" in text for text in texts)


# --- Attacks and bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"discard": "not-a-message-id"},
        {"discard": str(uuid.uuid4())},
        {"requeue": "x" * 5000},
        {"action": "discard_selected"},
        {"action": "discard_selected", "message_id": ["' OR 1=1 --"]},
        {"action": "drop_tables", "message_id": ["whatever"]},
        {},
    ],
)
def test_unknown_ids_or_actions_change_nothing_and_say_so(admin_client_: Client, stub_broker, data) -> None:
    # Given one dead letter
    failed = PublishingFactory.create(failed=True)
    letter = dead_letter(stub_broker, publishing_id=str(failed.pk))

    # When staff post something that names no letter of the broker
    response = admin_client_.post(ACT, data)

    # Then the answer is the overview with a clear message, never a 500, and the letter stays
    assert response.status_code == 302
    assert dead_ids(stub_broker) == [letter.message_id]
    (level, text), *_ = sent_messages(response)
    assert level in {"warning", "error"}
    assert text


def test_acting_on_dead_letters_needs_post_csrf_and_the_change_permission(stub_broker) -> None:
    failed = PublishingFactory.create(failed=True)
    letter = dead_letter(stub_broker, publishing_id=str(failed.pk))
    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_publishing"]))
    view_only = Client()
    view_only.force_login(viewer)
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))

    # A viewer sees the overview without the letters' buttons, and is refused the action
    overview = view_only.get(OVERVIEW).content.decode()
    assert letter.message_id not in overview
    assert view_only.post(ACT, {"discard": letter.message_id}).status_code == 403
    # Anonymous: the login page; no CSRF token: refused; GET: not allowed
    assert Client().post(ACT, {"discard": letter.message_id})["Location"].startswith("/admin/login/")
    assert csrf.post(ACT, {"discard": letter.message_id}).status_code == 403
    assert csrf.get(ACT).status_code == 405
    assert dead_ids(stub_broker) == [letter.message_id]


def test_with_the_broker_down_the_overview_says_the_letters_cannot_be_read(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        from publishing.exceptions import BrokerUnavailable

        raise BrokerUnavailable()

    monkeypatch.setattr(publishing_broker, "sweep_dead_letters", unreadable)

    html = admin_client_.get(OVERVIEW).content.decode()
    assert "The dead letters cannot be read now" in html

    response = admin_client_.post(ACT, {"discard": "some-id"})
    assert sent_messages(response)[0][0] == "error"


def test_a_requeue_of_one_with_the_broker_refusing_keeps_its_letter(
    admin_client_: Client, stub_broker, monkeypatch
) -> None:
    failed = PublishingFactory.create(failed=True)
    letter = dead_letter(stub_broker, publishing_id=str(failed.pk))
    broker_refuses(monkeypatch, stub_broker)

    admin_client_.post(ACT, {"requeue": letter.message_id})

    failed.refresh_from_db()
    assert failed.status == "failed"
    assert dead_ids(stub_broker) == [letter.message_id]


def test_a_letter_without_a_traceback_shows_its_publishings_own_error(
    admin_client_: Client, stub_broker
) -> None:
    # Given a publishing failed for good by a permanent error (Retries keeps no traceback for those)
    finished = datetime(2026, 12, 7, 5, 47, 48, tzinfo=UTC)
    failed = PublishingFactory.create(
        failed=True,
        finished_at=finished,
        error_code="TARGET_REJECTED",
        error_message="rejected by https://u:secret@store.example.com",
    )
    dead_letter(stub_broker, publishing_id=str(failed.pk))

    html = admin_client_.get(OVERVIEW).content.decode()
    letters = html[
        html.index('id="dead-letter-list"') : html.index("</table>", html.index('id="dead-letter-list"'))
    ]

    assert "TARGET_REJECTED: rejected by https://***@store.example.com" in letters
    assert "secret" not in letters
    # And it failed when its publishing finished
    assert "2026-12-07 05:47:48" in letters
