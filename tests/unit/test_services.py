from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis
from django.core.exceptions import ValidationError
from django.db import connection

from publishing import broker
from publishing.exceptions import BrokerUnavailable, Forbidden, NotFound, PublishingConflict
from publishing.models import Publishing
from publishing.services import runner
from publishing.services.projects import project_create, project_delete, project_update
from publishing.services.publishings import publishing_initiate
from publishing.services.runner import publishing_run
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.support.stub_broker import broker_refuses, queued_messages

QUEUE = "publishing-builds"


@pytest.mark.django_db
def test_initiate_records_a_queued_publishing_and_sends_its_ids(stub_broker, project, user) -> None:
    # When
    publishing = publishing_initiate(user=user, project_id=project.pk)

    # Then the record is queued, and one message names it
    assert publishing.status == Publishing.Status.QUEUED
    assert publishing.queued_at is not None
    (message,) = queued_messages(stub_broker)
    assert message.message_id == publishing.message_id
    assert message.kwargs == {
        "publishing_id": str(publishing.pk),
        "project_id": str(project.pk),
        "user_id": str(user.pk),
    }


@pytest.mark.django_db
def test_initiate_with_the_same_idempotency_key_returns_the_same_publishing(
    stub_broker, project, user
) -> None:
    # Given a first request with a key
    first = publishing_initiate(user=user, project_id=project.pk, idempotency_key="k-1")

    # When the same request comes again
    again = publishing_initiate(user=user, project_id=project.pk, idempotency_key="k-1")

    # Then it is the same publishing and only one message was sent
    assert again.pk == first.pk
    assert len(queued_messages(stub_broker)) == 1


@pytest.mark.django_db
def test_idempotency_keys_are_per_user(stub_broker, user, other_user) -> None:
    mine, theirs = ProjectFactory.create(owner=user), ProjectFactory.create(owner=other_user)
    a = publishing_initiate(user=user, project_id=mine.pk, idempotency_key="same")
    b = publishing_initiate(user=other_user, project_id=theirs.pk, idempotency_key="same")
    assert a.pk != b.pk


@pytest.mark.django_db
def test_reusing_an_idempotency_key_for_another_project_is_a_conflict(stub_broker, user) -> None:
    first, second = ProjectFactory.create(owner=user), ProjectFactory.create(owner=user)
    publishing_initiate(user=user, project_id=first.pk, idempotency_key="k")
    with pytest.raises(PublishingConflict):
        publishing_initiate(user=user, project_id=second.pk, idempotency_key="k")


@pytest.mark.django_db
def test_initiate_while_another_is_active_is_a_conflict_naming_it(stub_broker, project, user) -> None:
    # Given an active publishing
    active = publishing_initiate(user=user, project_id=project.pk)

    # When another is asked for
    with pytest.raises(PublishingConflict) as raised:
        publishing_initiate(user=user, project_id=project.pk)

    # Then the conflict names the active one, and nothing more was sent
    assert raised.value.active_id == active.pk
    assert len(queued_messages(stub_broker)) == 1


@pytest.mark.django_db
def test_initiate_after_a_finished_publishing_is_allowed(stub_broker, project, user) -> None:
    PublishingFactory.create(project=project, published=True)
    PublishingFactory.create(project=project, failed=True)
    assert publishing_initiate(user=user, project_id=project.pk).status == "queued"


@pytest.mark.django_db
def test_initiate_for_another_users_project_is_not_found(stub_broker, other_user, user) -> None:
    theirs = ProjectFactory.create(owner=other_user)
    with pytest.raises(NotFound):
        publishing_initiate(user=user, project_id=theirs.pk)
    with pytest.raises(NotFound):
        publishing_initiate(user=user, project_id=uuid.uuid4())
    assert not Publishing.objects.exists()


@pytest.mark.django_db
def test_initiate_for_another_users_project_needs_the_view_and_add_permissions(
    stub_broker, staff, viewer, operator, other_user
) -> None:
    theirs = ProjectFactory.create(owner=other_user)
    # Staff alone do not see it; seeing it is not publishing it
    with pytest.raises(NotFound):
        publishing_initiate(user=staff, project_id=theirs.pk)
    with pytest.raises(Forbidden):
        publishing_initiate(user=viewer, project_id=theirs.pk)
    assert not Publishing.objects.exists()
    assert publishing_initiate(user=operator, project_id=theirs.pk).requested_by == operator


@pytest.mark.django_db(transaction=True)
def test_the_message_is_sent_only_once_the_queued_row_is_committed(stub_broker, monkeypatch) -> None:
    # Given a broker that, when handed the message, looks for the row from another connection
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user)
    seen: list[str | None] = []
    real_enqueue = stub_broker.enqueue

    def enqueue_and_look(message, *, delay=None):
        def look() -> None:
            try:
                row = Publishing.objects.filter(pk=message.kwargs["publishing_id"]).first()
                seen.append(row.status if row else None)
            finally:
                connection.close()  # this thread's own connection

        worker_thread = threading.Thread(target=look)
        worker_thread.start()
        worker_thread.join()
        return real_enqueue(message, delay=delay)

    monkeypatch.setattr(stub_broker, "enqueue", enqueue_and_look)

    # When
    publishing_initiate(user=user, project_id=project.pk)

    # Then a worker would have found the row, committed and queued
    assert seen == ["queued"]


@pytest.mark.django_db
def test_broker_down_leaves_nothing_behind_and_then_fails_fast(
    stub_broker, project, user, monkeypatch
) -> None:
    # Given a broker that refuses connections
    calls = broker_refuses(monkeypatch, stub_broker)

    # When a publishing is initiated
    with pytest.raises(BrokerUnavailable):
        publishing_initiate(user=user, project_id=project.pk, idempotency_key="k")

    # Then no row is left pending or queued, and the key is free to retry
    assert not Publishing.objects.exists()
    # And the next request fails fast without touching the broker
    with pytest.raises(BrokerUnavailable):
        publishing_initiate(user=user, project_id=project.pk, idempotency_key="k")
    assert len(calls) == 1
    assert not Publishing.objects.exists()

    # When the broker is back after the cool-down
    monkeypatch.undo()
    broker.breaker.reset()
    publishing = publishing_initiate(user=user, project_id=project.pk, idempotency_key="k")
    # Then the same request succeeds
    assert publishing.status == "queued"


@pytest.mark.django_db
def test_a_send_that_times_out_after_a_worker_took_its_message_leaves_the_running_row_alone(
    stub_broker, project, user, monkeypatch
) -> None:
    # Given a broker whose send times out although the message arrived, and a worker took it
    def deliver_then_time_out(message, *, delay=None):
        kwargs = message.kwargs
        runner._claim(kwargs["publishing_id"], message.message_id, retries=0, max_retries=3)
        raise redis.exceptions.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(stub_broker, "enqueue", deliver_then_time_out)

    # When a publishing is initiated
    with pytest.raises(BrokerUnavailable):
        publishing_initiate(user=user, project_id=project.pk)

    # Then the row the worker runs keeps its message id, so the worker's own writes still go through
    (row,) = Publishing.objects.all()
    assert (row.status, row.attempts) == (Publishing.Status.BUILDING, 1)
    assert row.message_id
    assert Publishing.objects.transition(
        row.pk, Publishing.Status.SUBMITTING, attempt=1, message_id=row.message_id, progress=60
    )


@pytest.mark.django_db
def test_after_the_cooldown_initiate_pings_the_broker_before_writing(
    stub_broker, project, user, monkeypatch
) -> None:
    # Given a circuit opened by a failure, its cool-down over, and a broker that still refuses
    broker.breaker.failures = 1
    pings = []

    def refuse() -> None:
        pings.append(1)
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(broker, "_ping", refuse)

    # When a publishing is initiated
    with pytest.raises(BrokerUnavailable):
        publishing_initiate(user=user, project_id=project.pk)

    # Then the probe was one ping: nothing was written, nothing sent, and the circuit is open again
    assert pings == [1]
    assert not Publishing.objects.exists()
    assert queued_messages(stub_broker) == []
    assert broker.breaker.is_open


@pytest.mark.django_db
def test_setting_a_build_command_needs_its_permission_not_the_staff_flag(
    user, staff, operator, settings
) -> None:
    settings.PUBLISHING_ALLOW_USER_BUILD_COMMANDS = False
    data: dict[str, Any] = {
        "name": "Site",
        "repository_url": "https://git.example.com/a.git",
        "target_url": "https://store.example.com/x",
        "build_command": "make",
    }
    for refused in (user, staff):
        with pytest.raises(ValidationError) as raised:
            project_create(owner=refused, **data)
        assert "build_command" in raised.value.message_dict
    assert project_create(owner=operator, **data).build_command == "make"


@pytest.mark.django_db
def test_project_with_local_source_or_private_target_is_refused_unless_allowed(user, settings) -> None:
    settings.PUBLISHING_ALLOW_LOCAL_SOURCES = False
    settings.PUBLISHING_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(ValidationError) as raised:
        project_create(owner=user, name="x", repository_url="/srv/repo", target_url="http://10.0.0.5/upload")
    assert set(raised.value.message_dict) == {"repository_url", "target_url"}


@pytest.mark.django_db
def test_project_delete_is_refused_while_a_publishing_is_active(project) -> None:
    PublishingFactory.create(project=project, building=True)
    with pytest.raises(PublishingConflict):
        project_delete(project=project, by=project.owner)


@pytest.mark.django_db
def test_project_delete_keeps_its_publishings(project) -> None:
    done = PublishingFactory.create(project=project, published=True)
    project_delete(project=project, by=project.owner)
    done.refresh_from_db()
    assert done.project is None


@pytest.mark.django_db
def test_a_name_without_ascii_letters_gets_a_usable_slug(user) -> None:
    first = project_create(
        owner=user,
        name="日本語",
        repository_url="https://git.example.com/a.git",
        target_url="https://store.example.com/u",
    )
    second = project_create(
        owner=user,
        name="日本語",
        repository_url="https://git.example.com/a.git",
        target_url="https://store.example.com/u",
    )
    assert first.slug.startswith("project-")
    assert first.slug != second.slug


@pytest.mark.django_db
def test_a_ref_that_git_would_read_as_an_option_is_refused_on_save(project) -> None:
    with pytest.raises(ValidationError) as raised:
        project_update(project=project, by=project.owner, ref="--upload-pack=touch /tmp/x")
    assert "ref" in raised.value.message_dict


@pytest.mark.django_db
@pytest.mark.parametrize("artifact_path", [".git", ".git/", "site/.git", ".git/objects", "./.git"])
def test_an_artifact_path_that_is_or_lies_in_git_is_refused_on_save(project, artifact_path) -> None:
    # When / Then: git's folder holds the remote's configuration, never published
    with pytest.raises(ValidationError) as raised:
        project_update(project=project, by=project.owner, artifact_path=artifact_path)
    assert raised.value.message_dict["artifact_path"] == [
        "Cannot be or lie inside .git: git's folder is never published."
    ]
    project.refresh_from_db()
    assert project.artifact_path != artifact_path


@pytest.mark.django_db
def test_renaming_a_project_to_a_slug_its_owner_already_uses_is_refused(project) -> None:
    # Given another project of the same owner
    other = ProjectFactory.create(owner=project.owner, slug="taken")

    # When / Then
    with pytest.raises(ValidationError) as raised:
        project_update(project=project, by=project.owner, slug="taken")
    assert raised.value.message_dict == {"slug": ["You already have a project with this slug."]}
    project.refresh_from_db()
    assert project.slug != other.slug


@pytest.mark.django_db
def test_a_message_for_a_publishing_not_yet_queued_runs_nothing(caplog) -> None:
    # Given a publishing still pending (its queued row not written), and a message naming it
    publishing = PublishingFactory.create()

    # When a worker gets the message
    publishing_run(publishing_id=str(publishing.pk), message_id="m-1", retries=0, max_retries=3)

    # Then it is skipped, saying why, and the publishing is untouched
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == (Publishing.Status.PENDING, 0)
    assert f"publishing {publishing.pk} is pending, not queued; message skipped" in caplog.text
