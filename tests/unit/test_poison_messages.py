"""Poison messages: each is dead-lettered at once with one ERROR line; the worker goes on with the next.

A well-formed message for a publishing that no longer exists is no poison: it is dropped quietly.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from publishing.models import Project, Publishing
from publishing.services.dead_letters import dead_letters_requeue
from publishing.services.publishings import publishing_initiate
from publishing.services.runner import publishing_run
from publishing.tasks import build_and_submit, deliver_webhook
from publishing.worker.validation import message_problem
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline
from tests.support.stub_broker import drain

pytestmark = pytest.mark.django_db(transaction=True)

UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"


def initiate() -> Publishing:
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user)
    return publishing_initiate(user=user, project_id=project.pk)


def send_raw(
    stub_broker: StubBroker,
    *,
    args: tuple[Any, ...] = (),
    kwargs: Any = None,
    actor_name: str = build_and_submit.actor_name,
    queue_name: str = build_and_submit.queue_name,
) -> dramatiq.Message[Any]:
    """Put a message on a queue as another producer could: no checks on the way in."""
    message = dramatiq.Message[Any](
        queue_name=queue_name,
        actor_name=actor_name,
        args=args,
        kwargs={} if kwargs is None else kwargs,
        options={},
    )
    stub_broker.enqueue(message)
    return message


def build_kwargs(**changes: Any) -> dict[str, Any]:
    """Valid arguments of `build_and_submit` for a publishing that does not exist, with `changes`."""
    return {"publishing_id": UNKNOWN_ID, "project_id": UNKNOWN_ID, "user_id": "1", **changes}


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def dead_letter_ids(stub_broker: StubBroker) -> list[str]:
    return [message.message_id for message in stub_broker.dead_letters]


def assert_worker_goes_on(stub_broker: StubBroker, worker: dramatiq.Worker) -> None:
    """A good publishing sent after the poison is published, and nothing more is dead-lettered."""
    dead_before = dead_letter_ids(stub_broker)
    publishing = initiate()
    drain(stub_broker, worker)
    publishing.refresh_from_db()
    assert publishing.status == "published", publishing.error_message
    assert dead_letter_ids(stub_broker) == dead_before


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        pytest.param(
            (),
            {"publishing_id": UNKNOWN_ID, "project_id": UNKNOWN_ID},
            "missing a required argument: 'user_id'",
            id="missing-argument",
        ),
        pytest.param(
            (), build_kwargs(priority="high"), "unexpected keyword argument 'priority'", id="extra-kwarg"
        ),
        pytest.param(
            (UNKNOWN_ID, UNKNOWN_ID, "1", "surplus"), {}, "too many positional arguments", id="extra-arg"
        ),
        pytest.param((), build_kwargs(publishing_id=42), "publishing_id must be a str, got int 42", id="int"),
        pytest.param(
            (), build_kwargs(publishing_id=None), "publishing_id must be a str, got NoneType", id="none"
        ),
        pytest.param((), build_kwargs(publishing_id={"id": UNKNOWN_ID}), "got dict", id="dict"),
        pytest.param((), build_kwargs(publishing_id="not-a-uuid"), "must be a UUID string", id="not-a-uuid"),
        pytest.param((), build_kwargs(user_id="u" * 10_000), "at most 64 characters", id="bloated-log-id"),
        pytest.param((), [UNKNOWN_ID], "kwargs is a list, not a mapping", id="kwargs-not-a-mapping"),
    ],
)
def test_a_message_its_actor_cannot_take_is_dead_lettered_at_once(
    stub_broker, worker, caplog, args, kwargs, says
) -> None:
    caplog.set_level(logging.INFO)
    # Given a message for build_and_submit with arguments it cannot take
    sent = send_raw(stub_broker, args=args, kwargs=kwargs)

    # When the worker gets it
    drain(stub_broker, worker)

    # Then it is dead-lettered without a retry, and one ERROR line says what was wrong
    assert dead_letter_ids(stub_broker) == [sent.message_id]
    assert "retries" not in stub_broker.dead_letters[0].options
    (line,) = errors(caplog)
    assert sent.message_id in line
    assert says in line
    # Without the values in full, not even in Dramatiq's own line: a poison message may carry anything
    assert not any("u" * 100 in record.getMessage() for record in caplog.records)
    assert any(
        f"{sent.message_id} (invalid: dead-lettered) was skipped" in r.getMessage() for r in caplog.records
    )
    assert ScriptedPipeline.runs == 0
    # And the worker goes on with the next message
    assert_worker_goes_on(stub_broker, worker)


def test_the_line_naming_a_poison_message_is_cut_short_whatever_it_carries(
    stub_broker, worker, caplog
) -> None:
    # Given a message with an argument whose very name is huge
    sent = send_raw(stub_broker, kwargs=build_kwargs(**{"k" * 10_000: 1}))

    # When the worker gets it
    drain(stub_broker, worker)

    # Then it is dead-lettered, and the ERROR line says what is wrong in 200 characters and an ellipsis
    assert dead_letter_ids(stub_broker) == [sent.message_id]
    (line,) = errors(caplog)
    problem = line.rpartition("dead-lettered without running: ")[2]
    assert problem.startswith("got an unexpected keyword argument 'kkk")
    assert problem.endswith("...")
    assert len(problem) == 203


def test_a_message_for_a_publishing_that_no_longer_exists_is_dropped_quietly(
    stub_broker, worker, caplog
) -> None:
    caplog.set_level(logging.INFO)
    # Given a ghost message: initiate sent it, the send timed out (a hung Redis) and initiate deleted
    # the row, but the message had reached the broker all the same
    user = UserFactory.create()
    project = ProjectFactory.create(owner=user)
    publishing = PublishingFactory.create(project=project, queued=True)
    publishing_id = str(publishing.pk)
    message = build_and_submit.message(publishing_id, str(project.pk), str(user.pk))
    publishing.delete()

    # When the worker gets it
    stub_broker.enqueue(message)
    drain(stub_broker, worker)

    # Then it is acked and dropped: no dead letter, no retry, no ERROR or WARNING line, nothing run;
    # one INFO line names the message and the publishing
    assert not stub_broker.dead_letters
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    (line,) = [r.getMessage() for r in caplog.records if "no longer exists" in r.getMessage()]
    assert message.message_id in line
    assert publishing_id in line
    assert ScriptedPipeline.runs == 0
    assert_worker_goes_on(stub_broker, worker)


def test_running_a_publishing_that_no_longer_exists_does_nothing() -> None:
    publishing_run(publishing_id=UNKNOWN_ID, message_id="m-1", retries=0, max_retries=3)
    assert not Publishing.objects.exists()


def test_a_message_for_a_publishing_of_a_deleted_project_fails_it_and_is_dead_lettered(
    stub_broker, worker, caplog
) -> None:
    caplog.set_level(logging.INFO)
    # Given a queued publishing whose project was deleted meanwhile, and its message
    publishing = PublishingFactory.create(queued=True)
    message = build_and_submit.message_with_options(
        kwargs={
            "publishing_id": str(publishing.pk),
            "project_id": str(publishing.project_id),
            "user_id": str(publishing.requested_by_id),
        }
    )
    Publishing.objects.filter(pk=publishing.pk).update(message_id=message.message_id)
    Project.objects.filter(publishings=publishing).delete()

    # When the worker gets it
    stub_broker.enqueue(message)
    drain(stub_broker, worker)

    # Then the publishing failed for good, the message is dead-lettered, and one ERROR line says why
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code, publishing.attempts) == ("failed", "PROJECT_DELETED", 1)
    assert dead_letter_ids(stub_broker) == [message.message_id]
    (line,) = errors(caplog)
    assert "PROJECT_DELETED" in line
    assert ScriptedPipeline.runs == 0
    assert_worker_goes_on(stub_broker, worker)


def test_a_message_for_a_finished_publishing_is_still_acked_not_dead_lettered(
    stub_broker, worker, caplog
) -> None:
    caplog.set_level(logging.INFO)
    # Given a published publishing and a late duplicate of its message
    publishing = PublishingFactory.create(published=True, message_id="m-1")

    # When the duplicate arrives
    build_and_submit.send(str(publishing.pk), str(publishing.project_id), str(publishing.requested_by_id))
    drain(stub_broker, worker)

    # Then it is a logged no-op: safe to run twice, nothing dead-lettered
    assert not stub_broker.dead_letters
    assert not errors(caplog)
    assert any("already published" in record.getMessage() for record in caplog.records)


def test_a_message_for_an_unknown_actor_is_dead_lettered_by_dramatiq(stub_broker, worker, caplog) -> None:
    caplog.set_level(logging.INFO)
    # Given a message on the builds queue for an actor that no worker defines
    sent = send_raw(stub_broker, kwargs={"publishing_id": UNKNOWN_ID}, actor_name="no_such_actor")

    # When the worker's consumer gets it
    drain(stub_broker, worker)

    # Then Dramatiq dead-letters it on arrival, with one ERROR line naming the actor
    assert dead_letter_ids(stub_broker) == [sent.message_id]
    (line,) = errors(caplog)
    assert "undefined actor 'no_such_actor'" in line
    assert_worker_goes_on(stub_broker, worker)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        pytest.param({"delivery_id": UNKNOWN_ID}, "webhook delivery", id="unknown-delivery"),
        pytest.param({"delivery_id": 7}, "delivery_id must be a str", id="int"),
        pytest.param({"delivery_id": "7"}, "must be a UUID string", id="not-a-uuid"),
        pytest.param({}, "missing a required argument: 'delivery_id'", id="missing-argument"),
    ],
)
def test_a_bad_webhook_delivery_message_is_dead_lettered_at_once(
    stub_broker, worker, caplog, kwargs, says
) -> None:
    caplog.set_level(logging.INFO)
    # Given a deliver_webhook message that can never be delivered
    sent = send_raw(
        stub_broker,
        kwargs=kwargs,
        actor_name=deliver_webhook.actor_name,
        queue_name=deliver_webhook.queue_name,
    )

    # When the worker gets it
    drain(stub_broker, worker)

    # Then it is dead-lettered without a retry, with one ERROR line
    assert dead_letter_ids(stub_broker) == [sent.message_id]
    assert "retries" not in stub_broker.dead_letters[0].options
    (line,) = errors(caplog)
    assert says in line
    assert_worker_goes_on(stub_broker, worker)


def test_message_problem_names_what_is_wrong_in_a_short_line() -> None:
    # Dramatiq decodes any JSON as kwargs, even what Message.__str__ cannot print
    for kwargs in ([UNKNOWN_ID], None, "publishing_id"):
        assert (message_problem(build_and_submit.fn, (), kwargs) or "").startswith("kwargs is a ")
    # A bloated value shows as a short repr
    problem = message_problem(build_and_submit.fn, (), build_kwargs(publishing_id="x" * 10_000)) or ""
    assert problem.startswith("publishing_id must be a UUID string, got 'xxx")
    assert len(problem) < 100
    # And a well-formed call has none, by keyword or by position
    assert message_problem(build_and_submit.fn, (), build_kwargs()) is None
    assert message_problem(build_and_submit.fn, (UNKNOWN_ID, UNKNOWN_ID, "None"), {}) is None


def test_requeueing_dead_letters_never_sends_a_poison_message_again(stub_broker, worker, operator) -> None:
    # Given poison messages dead-lettered by the worker: one for a failed publishing (with an extra
    # argument), one for no publishing (with a wrong-typed argument), one for no delivery...
    failed = PublishingFactory.create(failed=True)
    send_raw(stub_broker, kwargs=build_kwargs(publishing_id=str(failed.pk), priority="high"))
    send_raw(stub_broker, kwargs=build_kwargs(user_id=1))
    send_raw(stub_broker, kwargs=build_kwargs(publishing_id=42))
    send_raw(
        stub_broker,
        kwargs={"delivery_id": UNKNOWN_ID},
        actor_name=deliver_webhook.actor_name,
        queue_name=deliver_webhook.queue_name,
    )
    # ...and one whose kwargs are not even a mapping
    send_raw(stub_broker, kwargs=[UNKNOWN_ID])
    drain(stub_broker, worker)
    assert len(stub_broker.dead_letters) == 5

    # When an operator requeues the dead letters
    report = dead_letters_requeue(by=operator)
    drain(stub_broker, worker)

    # Then the failed publishing is retried with a new message built from its row, and runs;
    # the others are dropped as obsolete; no poison message was sent again
    assert (report.requeued, report.dropped, report.left) == (1, 4, 0)
    failed.refresh_from_db()
    assert failed.status == "published"
    assert not stub_broker.dead_letters
