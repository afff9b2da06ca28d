"""Webhooks: the outbox row written with a terminal status, the signed POST, retries, reconcile and resend.

HTTP answers come from a real server on loopback; the broker is the stub.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import transaction
from django.utils import timezone

from publishing import broker as publishing_broker
from publishing.exceptions import (
    BrokerUnavailable,
    PermanentJobError,
    PublishingConflict,
    TransientJobError,
)
from publishing.models import Publishing, WebhookDelivery
from publishing.services import webhooks
from publishing.services.publishings import publishing_initiate, publishing_retry
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import rebinding_resolver
from tests.support.http import Request, ScriptedReceiver
from tests.support.stub_broker import broker_refuses, drain, queued_messages

SECRET = "s3cret-signing-key"
WEBHOOK_QUEUE = "publishing-builds-webhooks"


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    # requests honours proxy variables; the local receiver must be reached directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    """A webhook receiver on loopback: answers `statuses` in turn (then 200), records what it got."""
    with ScriptedReceiver(path="/hooks/publisher", error_body=b"receiver says no") as fake:
        yield fake


def hooked_project(url: str = "https://hooks.example.com/publisher", **fields: Any) -> Any:
    return ProjectFactory.create(webhook_url=url, webhook_secret=SECRET, **fields)


def finish(publishing: Publishing, status: str) -> None:
    """Move a publishing to a terminal status the way the code does (through `transition`)."""
    if status == "published":
        Publishing.objects.filter(pk=publishing.pk).update(
            status="submitting", attempts=1, artifact_sha256="a" * 64, artifact_size=123
        )
        Publishing.objects.transition(
            publishing.pk, status, progress=100, artifact_uri="file:///store/x.tar.gz", submission_ref="x"
        )
    else:
        Publishing.objects.transition(publishing.pk, status, error_code="BUILD_FAILED", error_message="boom")


def recorded(publishing: Publishing, url: str, *, message_id: str = "m-1", **fields: Any) -> WebhookDelivery:
    """A delivery as the receiver of publishing_finished writes it."""
    delivery_id = uuid.uuid4()
    event = f"publishing.{publishing.status}"
    return WebhookDelivery.objects.create(
        id=delivery_id,
        publishing=publishing,
        url=url,
        event=event,
        body=webhooks.delivery_body(publishing, delivery_id=delivery_id, event=event),
        message_id=message_id,
        **fields,
    )


def run(
    delivery: WebhookDelivery, *, message_id: str = "m-1", retries: int = 0, max_retries: int = 3
) -> None:
    webhooks.delivery_run(
        delivery_id=str(delivery.pk), message_id=message_id, retries=retries, max_retries=max_retries
    )


def verify(received: Request, secret: str) -> bool:
    """What a receiver does: recompute the signature over the raw body and compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received.headers.get("X-Publisher-Signature", ""))


# --- Recording ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["published", "failed", "cancelled"])
def test_a_terminal_status_records_one_delivery_and_sends_it_after_commit(
    db, stub_broker, django_capture_on_commit_callbacks, status
) -> None:
    # Given a running publishing of a project with a webhook
    publishing = PublishingFactory.create(queued=True, project=hooked_project())

    # When it reaches a terminal status
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        finish(publishing, status)

        # Then one pending delivery is recorded with the transition, but nothing is sent before commit
        delivery = WebhookDelivery.objects.get()
        assert queued_messages(stub_broker, WEBHOOK_QUEUE) == []

    for callback in callbacks:
        callback()
    assert (delivery.publishing_id, delivery.event, delivery.state) == (
        publishing.pk,
        f"publishing.{status}",
        "pending",
    )
    assert delivery.url == "https://hooks.example.com/publisher"
    # And after commit exactly its message is in the webhooks queue, not behind the builds
    (message,) = queued_messages(stub_broker, WEBHOOK_QUEUE)
    assert message.actor_name == "deliver_webhook"
    assert message.kwargs == {"delivery_id": str(delivery.pk)}
    assert message.message_id == delivery.message_id
    assert queued_messages(stub_broker, "publishing-builds") == []


def test_no_webhook_url_records_nothing(db, stub_broker, django_capture_on_commit_callbacks) -> None:
    publishing = PublishingFactory.create(queued=True)

    with django_capture_on_commit_callbacks(execute=True):
        finish(publishing, "failed")

    assert not WebhookDelivery.objects.exists()
    assert queued_messages(stub_broker, WEBHOOK_QUEUE) == []


def test_a_rolled_back_transition_records_and_sends_nothing(
    db, stub_broker, django_capture_on_commit_callbacks
) -> None:
    # Given a publishing of a project with a webhook
    publishing = PublishingFactory.create(queued=True, project=hooked_project())

    # When its terminal transition is rolled back by the enclosing transaction
    def fail_then_roll_back() -> None:
        with transaction.atomic():
            finish(publishing, "failed")
            raise RuntimeError("a later step failed")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        fail_then_roll_back()

    # Then there is neither a delivery nor a message
    assert not WebhookDelivery.objects.exists()
    assert queued_messages(stub_broker, WEBHOOK_QUEUE) == []
    assert Publishing.objects.get().status == "queued"


def test_the_body_describes_the_outcome_without_log_or_secrets(
    db, stub_broker, django_capture_on_commit_callbacks
) -> None:
    # Given a published publishing with a log, built from a commit whose subject is not ASCII
    project = hooked_project()
    publishing = PublishingFactory.create(
        queued=True,
        project=project,
        log="secret build output",
        commit_sha="c" * 40,
        commit_subject="Café menu",
        commit_author="Zoë <zoe@example.com>",
    )

    with django_capture_on_commit_callbacks(execute=True):
        finish(publishing, "published")

    # Then the body is compact ASCII JSON naming the delivery, the event, the project and the outcome
    delivery = WebhookDelivery.objects.get()
    publishing.refresh_from_db()
    assert delivery.body.isascii()
    payload = json.loads(delivery.body)
    assert payload == {
        "delivery": str(delivery.pk),
        "event": "publishing.published",
        "project": {"id": str(project.pk), "slug": project.slug},
        "publishing": {
            "id": str(publishing.pk),
            "status": "published",
            "attempts": 1,
            "error_code": "",
            "error_message": "",
            "commit_sha": "c" * 40,
            "commit_subject": "Café menu",
            "commit_author": "Zoë <zoe@example.com>",
            "artifact_sha256": "a" * 64,
            "artifact_size": 123,
            "artifact_uri": "file:///store/x.tar.gz",
            "submission_ref": "x",
            "created_at": publishing.created_at.isoformat().replace("+00:00", "Z"),
            "finished_at": publishing.finished_at.isoformat().replace("+00:00", "Z"),  # type: ignore[union-attr]
        },
    }
    # And neither the log nor the signing key is in it
    assert "secret build output" not in delivery.body
    assert SECRET not in delivery.body


def test_a_broker_outage_never_fails_the_transition_and_the_reconciler_sends_it_later(
    db, stub_broker, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # Given a broker that refuses connections
    publishing = PublishingFactory.create(queued=True, project=hooked_project())
    broker_refuses(monkeypatch, stub_broker)

    # When the publishing fails
    with django_capture_on_commit_callbacks(execute=True):
        finish(publishing, "failed")

    # Then the transition stands and the delivery waits, saying plainly that it has no message
    assert Publishing.objects.get().status == "failed"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.message_id) == ("pending", "")

    # When the broker is back (and the breaker's cool-down over) and the reconciler runs
    monkeypatch.undo()
    publishing_broker.breaker.reset()
    assert webhooks.deliveries_reconcile() == 1

    # Then the delivery has a message in the queue
    delivery.refresh_from_db()
    (message,) = queued_messages(stub_broker, WEBHOOK_QUEUE)
    assert message.message_id == delivery.message_id != ""


def test_a_retry_the_broker_refused_does_not_announce_the_old_status_again(
    db, stub_broker, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # Given a failed publishing whose failure was already announced
    owner = UserFactory.create()
    publishing = PublishingFactory.create(queued=True, project=hooked_project(owner=owner))
    with django_capture_on_commit_callbacks(execute=True):
        finish(publishing, "failed")
    assert WebhookDelivery.objects.count() == 1

    # When a retry cannot reach the broker and puts the publishing back as it was
    broker_refuses(monkeypatch, stub_broker)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(BrokerUnavailable):
        publishing_retry(publishing=Publishing.objects.get(), by=owner)

    # Then it is failed again, and the receiver hears of it only once
    assert Publishing.objects.get().status == "failed"
    assert WebhookDelivery.objects.count() == 1


# --- Delivering -------------------------------------------------------------------------------


def test_a_delivery_posts_the_stored_body_signed_with_the_projects_secret(db, receiver) -> None:
    # Given a pending delivery
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)

    # When it runs
    run(delivery)

    # Then the receiver got exactly the stored bytes, signed, with the event and delivery headers
    (request,) = receiver.requests
    assert request.body == delivery.body.encode()
    assert verify(request, SECRET)
    assert not verify(request, "another key")
    assert request.headers["X-Publisher-Signature"] == webhooks.sign(request.body, SECRET)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Publisher-Event"] == "publishing.failed"
    assert request.headers["X-Publisher-Delivery"] == str(delivery.pk)
    assert request.headers["User-Agent"].startswith("Publisher-Webhooks/")
    # And the row says delivered
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None
    assert delivery.last_error == ""


def test_the_signature_is_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"event":"publishing.published"}'
    assert webhooks.sign(body, "key") == "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()


def test_a_project_without_a_secret_gets_unsigned_deliveries(db, receiver) -> None:
    project = ProjectFactory.create(webhook_url=receiver.url, webhook_secret="")
    run(recorded(PublishingFactory.create(failed=True, project=project), receiver.url))
    (request,) = receiver.requests
    assert "X-Publisher-Signature" not in request.headers


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_overload_and_server_errors_are_recorded_and_retried(db, receiver, status) -> None:
    # Given a receiver answering with a retryable status
    receiver.statuses = [status]
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)

    # When the delivery runs with retries left
    with pytest.raises(TransientJobError):
        run(delivery, retries=0, max_retries=3)

    # Then it stays pending with the attempt, the status and why recorded
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("pending", 1, status)
    assert str(status) in delivery.last_error
    assert "receiver says no" in delivery.last_error


def test_the_last_retry_of_a_server_error_fails_the_delivery(db, receiver) -> None:
    receiver.statuses = [503]
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()), receiver.url, attempts=3
    )

    with pytest.raises(TransientJobError):
        run(delivery, retries=3, max_retries=3)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("failed", 4, 503)


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
def test_other_answers_fail_at_once(db, receiver, status) -> None:
    # Given a receiver refusing the delivery (a redirect too: it is not followed)
    receiver.statuses = [status]
    receiver.headers = {"Location": f"{receiver.url}/elsewhere"}
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)

    # When it runs with retries left
    with pytest.raises(PermanentJobError) as excinfo:
        run(delivery, retries=0, max_retries=3)

    # Then it failed for good after one POST
    assert excinfo.value.code == "WEBHOOK_REJECTED"
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("failed", 1, status)


def test_a_refused_connection_is_retried(db) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), url)

    with pytest.raises(TransientJobError):
        run(delivery)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("pending", 1, None)
    assert "unreachable" in delivery.last_error


def test_a_slow_receiver_times_out_and_is_retried(db, receiver, settings) -> None:
    settings.PUBLISHING_WEBHOOK_TIMEOUT = 1
    receiver.delay = 1.5
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)

    with pytest.raises(TransientJobError):
        run(delivery)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("pending", 1)


def test_a_host_on_the_private_network_is_refused_without_a_request(db, receiver, settings) -> None:
    # Given private targets are not allowed and the webhook points at loopback
    settings.PUBLISHING_ALLOW_PRIVATE_TARGETS = False
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)

    # When it runs
    with pytest.raises(PermanentJobError) as excinfo:
        run(delivery)

    # Then it failed at once, and nothing was sent
    assert excinfo.value.code == "WEBHOOK_NOT_ALLOWED"
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("failed", 0)
    assert "not allowed" in delivery.last_error


def test_a_name_that_resolves_to_loopback_by_the_time_it_connects_gets_no_request(
    db, receiver, settings, monkeypatch
) -> None:
    # Given a public-looking receiver name that resolves to the local receiver once checked (DNS rebinding)
    settings.PUBLISHING_ALLOW_PRIVATE_TARGETS = False
    port = receiver.url.split(":")[2].split("/")[0]
    monkeypatch.setattr(socket, "getaddrinfo", rebinding_resolver("93.184.216.34", "127.0.0.1"))
    url = f"http://hooks.example.com:{port}/hooks/publisher"
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project(url)), url)

    # When it runs
    with pytest.raises(PermanentJobError) as excinfo:
        run(delivery)

    # Then the connection was refused where it would have opened: nothing sent, no retry
    assert excinfo.value.code == "WEBHOOK_NOT_ALLOWED"
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("failed", 0)


@pytest.mark.parametrize("state", ["delivered", "failed"])
def test_a_finished_delivery_is_not_sent_again_by_a_duplicate_message(db, receiver, state) -> None:
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()), receiver.url, state=state, attempts=1
    )

    run(delivery)

    assert receiver.requests == []
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (state, 1)


def test_a_stale_message_is_skipped(db, receiver) -> None:
    # Given a delivery that was resent: it belongs to a newer message
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()), receiver.url, message_id="new"
    )

    # When the older message comes
    run(delivery, message_id="old")

    # Then nothing is sent
    assert receiver.requests == []
    assert WebhookDelivery.objects.get().state == "pending"


def resent_during_post(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staff resend each delivery (a new message id) while its POST runs."""
    attempt = webhooks._attempt

    def resent_meanwhile(target: WebhookDelivery) -> Any:
        outcome = attempt(target)
        WebhookDelivery.objects.filter(pk=target.pk).update(message_id="resent")
        return outcome

    monkeypatch.setattr(webhooks, "_attempt", resent_meanwhile)


def test_an_outcome_that_comes_back_after_a_resend_leaves_the_resent_delivery_alone(
    db, receiver, monkeypatch, caplog
) -> None:
    # Given a delivery whose receiver refuses it for good, and staff resending it while the POST runs
    receiver.statuses = [400]
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)
    resent_during_post(monkeypatch)

    # When the first message's POST comes back refused
    with pytest.raises(PermanentJobError):
        run(delivery, message_id="m-1")

    # Then the resent delivery is still pending for its new message, its try not counted as failed
    delivery.refresh_from_db()
    assert (delivery.state, delivery.message_id, delivery.attempts) == ("pending", "resent", 0)
    assert f"webhook delivery {delivery.pk} was resent meanwhile; this outcome is not recorded" in caplog.text
    assert "failed for good" not in caplog.text


def test_a_success_that_comes_back_after_a_resend_is_not_logged_as_delivered(
    db, receiver, monkeypatch, caplog
) -> None:
    # Given a delivery that staff resend while its POST runs, and a receiver that takes it
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)
    resent_during_post(monkeypatch)
    caplog.set_level(logging.INFO)

    # When the first message's POST comes back accepted
    run(delivery, message_id="m-1")

    # Then the log says its outcome was not recorded, not that the delivery was delivered
    assert f"webhook delivery {delivery.pk} was resent meanwhile; this outcome is not recorded" in caplog.text
    assert " delivered: " not in caplog.text
    assert WebhookDelivery.objects.get().state == "pending"


def test_a_delivery_whose_project_was_deleted_fails(db, receiver) -> None:
    publishing = PublishingFactory.create(failed=True, project=hooked_project())
    delivery = recorded(publishing, receiver.url)
    Publishing.objects.filter(pk=publishing.pk).update(project=None)

    with pytest.raises(PermanentJobError):
        run(delivery)

    assert receiver.requests == []
    assert WebhookDelivery.objects.get().state == "failed"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://hooks.example.com/x", "WEBHOOK_INVALID"),
        ("https:///no-host", "WEBHOOK_INVALID"),
        ("https://hooks.example.com/a b", "WEBHOOK_INVALID"),
        ("http://127.0.0.1:8000/hook", "WEBHOOK_NOT_ALLOWED"),
        ("http://169.254.169.254/latest", "WEBHOOK_NOT_ALLOWED"),
        ("http://localhost/hook", "WEBHOOK_NOT_ALLOWED"),
    ],
)
def test_validate_webhook_url_refuses_bad_and_private_urls(url, code) -> None:
    with pytest.raises(PermanentJobError) as excinfo:
        webhooks.validate_webhook_url(url, allow_private=False)
    assert excinfo.value.code == code


def test_validate_webhook_url_accepts_public_urls_without_resolving(monkeypatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("resolved"))
    webhooks.validate_webhook_url("https://hooks.example.com/publisher?x=1", allow_private=False)
    webhooks.validate_webhook_url("http://127.0.0.1:9000/hook", allow_private=True)


# --- Through a worker -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_published_publishing_is_delivered_once_by_the_worker(stub_broker, worker, receiver) -> None:
    # Given a project with a webhook
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user, webhook_url=receiver.url, webhook_secret=SECRET)

    # When a publishing runs to the end
    publishing = publishing_initiate(user=user, project_id=project.pk)
    drain(stub_broker, worker)

    # Then the receiver got one signed delivery saying published
    assert Publishing.objects.get().status == "published"
    (request,) = receiver.requests
    assert verify(request, SECRET)
    payload = json.loads(request.body)
    assert (payload["event"], payload["publishing"]["id"]) == ("publishing.published", str(publishing.pk))
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("delivered", 1)


@pytest.mark.django_db(transaction=True)
def test_a_receiver_answering_500_is_retried_until_delivered(stub_broker, worker, receiver) -> None:
    # Given a receiver that answers 500 twice, then 200
    receiver.statuses = [500, 500]
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)
    message = webhooks._message(delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(message_id=message.message_id)

    # When its message is processed
    stub_broker.enqueue(message)
    drain(stub_broker, worker)

    # Then the third POST delivered it: the same body, the same signature each time
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("delivered", 3, 200)
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1
    assert len({r.headers["X-Publisher-Signature"] for r in receiver.requests}) == 1
    assert not stub_broker.dead_letters


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_never_recovers_fails_after_the_last_retry(
    stub_broker, worker, receiver, settings
) -> None:
    from publishing.tasks import deliver_webhook

    max_retries = deliver_webhook.options["max_retries"]
    receiver.statuses = [503] * (max_retries + 5)
    delivery = recorded(PublishingFactory.create(failed=True, project=hooked_project()), receiver.url)
    message = webhooks._message(delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(message_id=message.message_id)

    stub_broker.enqueue(message)
    drain(stub_broker, worker)

    # Then one POST a run (1 + retries), failed, and the message dead-lettered
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("failed", max_retries + 1, 503)
    assert len(receiver.requests) == max_retries + 1
    assert len(stub_broker.dead_letters) == 1


# --- Reconciling and resending ----------------------------------------------------------------


def aged(delivery: WebhookDelivery, seconds: int = 3600) -> WebhookDelivery:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )
    delivery.refresh_from_db()
    return delivery


def test_reconcile_sends_again_only_pending_deliveries_whose_message_is_gone(
    db, stub_broker, monkeypatch
) -> None:
    # Given deliveries in every situation, and a broker holding only the message "live"
    publishing = PublishingFactory.create(failed=True, project=hooked_project())
    url = "https://hooks.example.com/publisher"
    lost = aged(recorded(publishing, url, message_id="lost"))
    waiting = aged(recorded(publishing, url, message_id="live"))
    young = recorded(publishing, url, message_id="also-lost")
    delivered = aged(recorded(publishing, url, message_id="gone", state="delivered"))
    monkeypatch.setattr(publishing_broker, "live_message_ids", lambda queue_name=None: {"live"})

    # When the reconciler runs
    assert webhooks.deliveries_reconcile() == 1

    # Then only the old pending one whose message is gone got a new message
    (message,) = queued_messages(stub_broker, WEBHOOK_QUEUE)
    assert WebhookDelivery.objects.get(pk=lost.pk).message_id == message.message_id
    assert message.kwargs == {"delivery_id": str(lost.pk)}
    for untouched, message_id in ((waiting, "live"), (young, "also-lost"), (delivered, "gone")):
        assert WebhookDelivery.objects.get(pk=untouched.pk).message_id == message_id
    # And the message it replaced is stale from now on
    run(lost, message_id="lost")
    assert WebhookDelivery.objects.get(pk=lost.pk).attempts == 0


def test_reconcile_leaves_stale_deliveries_alone_when_the_broker_cannot_be_inspected(db, stub_broker) -> None:
    # The stub (like RabbitMQ) cannot list its messages: a delivery may be waiting for its retry.
    aged(recorded(PublishingFactory.create(failed=True, project=hooked_project()), "https://h.example.com/"))
    assert webhooks.deliveries_reconcile() == 0
    assert queued_messages(stub_broker, WEBHOOK_QUEUE) == []


def test_reconcile_keeps_a_delivery_without_message_while_the_broker_is_down(
    db, stub_broker, monkeypatch
) -> None:
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()),
        "https://h.example.com/",
        message_id="",
    )
    broker_refuses(monkeypatch, stub_broker)

    assert webhooks.deliveries_reconcile() == 0

    delivery.refresh_from_db()
    assert (delivery.state, delivery.message_id) == ("pending", "")


def test_a_send_that_times_out_after_the_delivery_was_made_leaves_its_message_id(
    db, stub_broker, monkeypatch
) -> None:
    # Given a delivery without a message, and a broker whose send times out although the message
    # arrived and a worker delivered it
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()),
        "https://h.example.com/",
        message_id="",
    )

    def deliver_then_time_out(message, *, delay=None):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(state="delivered")
        raise redis.exceptions.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(stub_broker, "enqueue", deliver_then_time_out)

    # When the reconciler sends it
    assert webhooks.deliveries_reconcile() == 0

    # Then the delivered row keeps the message that delivered it
    delivery.refresh_from_db()
    assert delivery.state == "delivered"
    assert delivery.message_id


def test_the_reconcile_command_reports_webhook_deliveries(db, stub_broker) -> None:
    from io import StringIO

    from django.core.management import call_command

    recorded(
        PublishingFactory.create(failed=True, project=hooked_project()),
        "https://h.example.com/",
        message_id="",
    )
    out = StringIO()
    call_command("reconcile_publishings", stdout=out)
    assert "1 webhook deliveries sent again" in out.getvalue()


def test_resend_puts_a_failed_delivery_back_with_a_new_message_to_the_current_url(db, stub_broker) -> None:
    # Given a delivery that failed, and a project whose webhook URL was fixed since
    project = hooked_project()
    delivery = recorded(
        PublishingFactory.create(failed=True, project=project),
        "https://old.example.com/hook",
        state="failed",
        attempts=11,
        response_status=404,
    )
    project.webhook_url = "https://new.example.com/hook"
    project.save()

    # When it is resent
    resent = webhooks.delivery_resend(delivery=delivery)

    # Then it is pending with a new message in the queue, its history kept
    (message,) = queued_messages(stub_broker, WEBHOOK_QUEUE)
    assert (resent.state, resent.message_id, resent.url) == (
        "pending",
        message.message_id,
        "https://new.example.com/hook",
    )
    assert resent.attempts == 11
    assert resent.body == delivery.body
    # And the message it replaced is stale
    run(resent, message_id="m-1")
    assert WebhookDelivery.objects.get().attempts == 11


def test_resend_refuses_a_delivered_delivery(db, stub_broker) -> None:
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()),
        "https://h.example.com/",
        state="delivered",
    )

    with pytest.raises(PublishingConflict):
        webhooks.delivery_resend(delivery=delivery)

    assert queued_messages(stub_broker, WEBHOOK_QUEUE) == []


def test_resend_refuses_when_the_project_has_no_webhook_any_more(db, stub_broker) -> None:
    project = hooked_project()
    delivery = recorded(PublishingFactory.create(failed=True, project=project), "https://h.example.com/")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(state="failed")
    delivery.refresh_from_db()
    project.webhook_url = ""
    project.save()

    with pytest.raises(PublishingConflict):
        webhooks.delivery_resend(delivery=delivery)


def test_resend_refuses_a_delivery_that_changed_meanwhile(db, stub_broker) -> None:
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()),
        "https://h.example.com/",
        state="failed",
    )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(message_id="someone-else-resent-it")

    with pytest.raises(PublishingConflict):
        webhooks.delivery_resend(delivery=delivery)


def test_resend_with_the_broker_down_leaves_the_delivery_as_it_was(db, stub_broker, monkeypatch) -> None:
    # Given a failed delivery and a broker that refuses
    delivery = recorded(
        PublishingFactory.create(failed=True, project=hooked_project()),
        "https://h.example.com/",
        state="failed",
    )
    broker_refuses(monkeypatch, stub_broker)

    # When it is resent, then the caller hears the broker is unavailable
    with pytest.raises(BrokerUnavailable):
        webhooks.delivery_resend(delivery=delivery)

    # And the delivery is as it was; with the circuit open the next try fails fast, untouched
    delivery.refresh_from_db()
    assert (delivery.state, delivery.message_id) == ("failed", "m-1")
    with pytest.raises(BrokerUnavailable):
        webhooks.delivery_resend(delivery=delivery)
    assert WebhookDelivery.objects.get().message_id == "m-1"
