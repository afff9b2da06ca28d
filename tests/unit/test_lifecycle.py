"""Cancel, retry, leases, reconciliation and retention, on the stub broker."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import pytest
import redis
from django.utils import timezone
from dramatiq.broker import MessageProxy

from publishing.models import Publishing
from publishing.services.maintenance import (
    publishing_heartbeat,
    publishing_reconcile,
    publishing_requeue,
)
from publishing.services.publishings import publishing_initiate
from publishing.worker import messages
from tests.factories import ProjectFactory, PublishingFactory
from tests.support.stub_broker import broker_refuses, queued_messages

pytestmark = pytest.mark.django_db
QUEUE = "publishing-builds"


# --- cancel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "queued", "building"])
def test_cancel_of_an_active_publishing_answers_200_cancelled(api, user, status, stub_broker) -> None:
    # Given an active publishing
    publishing = PublishingFactory.with_status(
        status, project=ProjectFactory.create(owner=user), message_id="m"
    )

    # When it is cancelled
    response = api.post(f"/api/v1/publishing/{publishing.pk}/cancel")

    # Then it is cancelled at once, saying by whom
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["error_code"] == "CANCELLED"
    assert "alice" in body["error_message"]
    assert body["finished_at"]


@pytest.mark.parametrize("status", ["submitting", "published", "failed", "cancelled"])
def test_cancel_once_submitting_or_finished_answers_409(api, user, status) -> None:
    publishing = PublishingFactory.with_status(status, project=ProjectFactory.create(owner=user))
    response = api.post(f"/api/v1/publishing/{publishing.pk}/cancel")
    assert response.status_code == 409
    assert response.json()["code"] == "CONFLICT"
    publishing.refresh_from_db()
    assert publishing.status == status


def test_cancel_of_another_users_publishing_answers_404(api, other_user) -> None:
    theirs = PublishingFactory.create(queued=True, project=ProjectFactory.create(owner=other_user))
    assert api.post(f"/api/v1/publishing/{theirs.pk}/cancel").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "queued"


def test_cancel_still_works_when_the_abort_signal_cannot_be_sent(api, user, monkeypatch) -> None:
    # Given a Redis that is away for the abort signal
    import dramatiq_abort

    aborted: list[str] = []

    def refuse(message_id: str, *args, **kwargs):
        aborted.append(message_id)
        raise redis.exceptions.ConnectionError("refused")

    monkeypatch.setattr(dramatiq_abort, "abort", refuse)
    publishing = PublishingFactory.create(
        queued=True, project=ProjectFactory.create(owner=user), message_id="m"
    )

    # When / Then: the database says cancelled; the worker stops at its next step
    assert api.post(f"/api/v1/publishing/{publishing.pk}/cancel").status_code == 200
    publishing.refresh_from_db()
    assert publishing.status == "cancelled"
    # And the abort of its message was attempted (and refused), not skipped
    assert aborted == ["m"]


# --- retry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_retry_of_a_failed_or_cancelled_publishing_queues_it_again(api, user, status, stub_broker) -> None:
    # Given a failed publishing
    publishing = PublishingFactory.with_status(
        status, project=ProjectFactory.create(owner=user), message_id="old"
    )

    # When it is retried
    response = api.post(f"/api/v1/publishing/{publishing.pk}/retry")

    # Then it is queued again with a new message, its error cleared
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["error_code"] == ""
    assert body["finished_at"] is None
    assert response["Location"] == body["url"]
    (message,) = queued_messages(stub_broker)
    assert message.message_id == body["message_id"] != "old"
    assert message.kwargs["publishing_id"] == str(publishing.pk)


@pytest.mark.parametrize("status", ["pending", "queued", "building", "published"])
def test_retry_of_a_publishing_that_is_not_failed_or_cancelled_answers_409(api, user, status) -> None:
    publishing = PublishingFactory.with_status(status, project=ProjectFactory.create(owner=user))
    response = api.post(f"/api/v1/publishing/{publishing.pk}/retry")
    assert response.status_code == 409
    assert response.json()["code"] == "CONFLICT"


def test_retry_while_another_publishing_of_the_project_is_active_answers_409(api, user, stub_broker) -> None:
    project = ProjectFactory.create(owner=user)
    failed = PublishingFactory.create(failed=True, project=project)
    active = PublishingFactory.create(queued=True, project=project)
    response = api.post(f"/api/v1/publishing/{failed.pk}/retry")
    assert response.status_code == 409
    assert response.json()["active_id"] == str(active.pk)
    failed.refresh_from_db()
    assert failed.status == "failed"
    assert not stub_broker.queues[QUEUE].qsize()


def test_retry_with_the_broker_down_answers_503_and_restores_the_failure(
    api, user, stub_broker, monkeypatch
) -> None:
    # Given a failed publishing and a broker that refuses
    publishing = PublishingFactory.create(
        failed=True, project=ProjectFactory.create(owner=user), error_code="BUILD_FAILED"
    )

    broker_refuses(monkeypatch, stub_broker)

    # When it is retried
    response = api.post(f"/api/v1/publishing/{publishing.pk}/retry")

    # Then 503, and the publishing is as it was
    assert response.status_code == 503
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code) == ("failed", "BUILD_FAILED")


# --- leases and reconciliation ------------------------------------------------------------------


def test_heartbeat_renews_only_the_leases_of_runs_that_own_their_publishing() -> None:
    # Given a running publishing, a queued one, and one requeued away from the run that beats for it
    running = PublishingFactory.create(building=True, message_id="m1")
    queued = PublishingFactory.create(queued=True, message_id="m2")
    taken_over = PublishingFactory.create(building=True, message_id="new")

    # When this worker beats for all three
    publishing_heartbeat(
        running=[(str(running.pk), "m1"), (str(queued.pk), "m2"), (str(taken_over.pk), "old")]
    )

    # Then only the owner's lease is renewed
    for publishing in (running, queued, taken_over):
        publishing.refresh_from_db()
    assert running.heartbeat_at is not None
    assert queued.heartbeat_at is None
    assert taken_over.heartbeat_at is None


def test_a_requeued_attempt_can_no_longer_write_to_its_publishing() -> None:
    # Given attempt 1 (message m1) was requeued: same attempt count, new message
    from publishing.exceptions import InvalidTransition

    publishing = PublishingFactory.create(building=True, attempts=1, message_id="m1")
    assert publishing_requeue(publishing_id=str(publishing.pk), reason="test", retries=0)
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == ("queued", 1)

    # When the straggling run of m1 tries to fail the publishing or move it on
    # Then it is refused: the message fence, not only the attempt count
    for target in ("failed", "submitting", "building"):
        with pytest.raises(InvalidTransition):
            Publishing.objects.transition(publishing.pk, target, attempt=1, message_id="m1")
    publishing.refresh_from_db()
    assert publishing.status == "queued"


def test_reconcile_sends_a_queued_publishing_whose_enqueue_failed(stub_broker) -> None:
    # Given a publishing requeued during an outage: queued, with no message
    publishing = PublishingFactory.create(queued=True, message_id="")

    # When the reconciler runs (on any broker: this needs no inspection)
    assert publishing_reconcile().resent_queued == 1

    # Then it has a message again
    publishing.refresh_from_db()
    assert [m.message_id for m in queued_messages(stub_broker)] == [publishing.message_id]


def test_reconcile_requeues_a_publishing_whose_worker_died(stub_broker, settings) -> None:
    # Given a publishing whose lease ran out at its second attempt
    settings.PUBLISHING_LEASE_TIMEOUT = 30
    stale = timezone.now() - timedelta(seconds=31)
    lost = PublishingFactory.create(
        building=True, attempts=2, retries=1, heartbeat_at=stale, message_id="old"
    )
    alive = PublishingFactory.create(building=True, heartbeat_at=timezone.now(), message_id="alive")

    # When the reconciler runs
    report = publishing_reconcile()

    # Then the lost one is queued again with a new message that keeps its retry count
    assert report.requeued_lost == 1
    lost.refresh_from_db()
    assert lost.status == "queued"
    assert "stopped answering" in lost.error_message
    (message,) = queued_messages(stub_broker)
    assert message.message_id == lost.message_id != "old"
    assert message.options["retries"] == 1
    # And the live one is left alone
    alive.refresh_from_db()
    assert (alive.status, alive.message_id) == ("building", "alive")


def test_reconcile_queues_a_pending_publishing_left_by_a_crash(stub_broker, settings) -> None:
    settings.PUBLISHING_RECONCILE_GRACE = 60
    old = PublishingFactory.create(created_at=timezone.now() - timedelta(minutes=5))
    fresh = PublishingFactory.create()
    report = publishing_reconcile()
    assert report.sent_pending == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.status, fresh.status) == ("queued", "pending")
    assert [m.message_id for m in queued_messages(stub_broker)] == [old.message_id]


def test_reconcile_twice_at_once_requeues_once(stub_broker) -> None:
    stale = timezone.now() - timedelta(minutes=5)
    PublishingFactory.create(building=True, heartbeat_at=stale)
    assert publishing_reconcile().requeued_lost == 1
    assert publishing_reconcile().requeued_lost == 0
    assert len(queued_messages(stub_broker)) == 1


@pytest.mark.parametrize(
    ("attempt", "owns_message"),
    [
        pytest.param(1, False, id="the-stale-run-itself"),
        pytest.param(1, True, id="an-attempt-no-longer-current"),
        pytest.param(2, False, id="a-message-no-longer-current"),
    ],
)
def test_requeue_fences_out_the_attempt_that_was_running(
    stub_broker, attempt: int, owns_message: bool
) -> None:
    # Given attempt 1 (message m1) was requeued with a new message, and attempt 2 has claimed the
    # publishing with it: building again, so the state machine alone would let building -> submitting by
    from publishing.exceptions import InvalidTransition

    publishing = PublishingFactory.create(building=True, attempts=1, message_id="m1")
    assert publishing_requeue(publishing_id=str(publishing.pk), reason="test", retries=0)
    publishing.refresh_from_db()
    current = publishing.message_id
    assert current not in ("", "m1")
    Publishing.objects.transition(publishing.pk, "building", attempt=1, message_id=current, attempts=2)

    # When a run whose attempt or message is no longer the publishing's tries to move on to submitting
    # Then the fence refuses it, and the publishing stays with attempt 2
    with pytest.raises(InvalidTransition):
        Publishing.objects.transition(
            publishing.pk, "submitting", attempt=attempt, message_id=current if owns_message else "m1"
        )
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts, publishing.message_id) == ("building", 2, current)
    # And the run that owns it may
    Publishing.objects.transition(publishing.pk, "submitting", attempt=2, message_id=current)


def test_a_message_names_the_projects_owner_for_the_rate_limit(stub_broker, user, operator) -> None:
    # Given alice's project
    project = ProjectFactory.create(owner=user)

    # When an operator publishes it for her
    publishing = publishing_initiate(user=operator, project_id=project.pk)

    # Then the message counts against alice's share of the rate limit, and still names its requester
    (message,) = queued_messages(stub_broker)
    assert message.message_id == publishing.message_id
    assert message.options["owner_id"] == str(user.pk)
    assert message.kwargs["user_id"] == str(operator.pk)


@pytest.mark.parametrize(
    ("options", "kwargs", "owner"),
    [
        ({"owner_id": "7"}, {"user_id": "3"}, "7"),
        ({}, {"user_id": "3"}, "3"),  # sent before messages named the owner
        ({}, {}, "unknown"),
    ],
)
def test_the_rate_limit_falls_back_to_the_requester_for_older_messages(
    options: dict[str, str], kwargs: dict[str, str], owner: str
) -> None:
    message = MessageProxy(
        dramatiq.Message(
            queue_name=QUEUE, actor_name="build_and_submit", args=(), kwargs=kwargs, options=options
        )
    )
    assert messages.owner(message) == owner


def test_the_reconcile_command_runs_it_once(stub_broker) -> None:
    from io import StringIO

    from django.core.management import call_command

    PublishingFactory.create(building=True, heartbeat_at=timezone.now() - timedelta(minutes=5))
    out = StringIO()
    call_command("reconcile_publishings", stdout=out)
    assert "1 lost attempts requeued" in out.getvalue()
    assert Publishing.objects.get().status == "queued"
