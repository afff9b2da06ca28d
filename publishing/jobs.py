"""The jobs' messages: which actor, on which queue, with which arguments.

The actors (`publishing.tasks`) are declared with these names and queues, and the services build their
messages here: so the services never import the actors, which call the services. Every process declares
the actors when Django loads (`PublishingConfig.ready`). A message that does not fit its actor's
signature is dead-lettered by the worker before it runs (`publishing.worker.validation`);
`tests/unit/test_tasks.py` checks each message built here against its actor.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import dramatiq
from django.conf import settings

BUILD_ACTOR = "build_and_submit"
WEBHOOK_ACTOR = "deliver_webhook"


def build_queue() -> str:
    return settings.PUBLISHING_QUEUE


def webhook_queue() -> str:
    return settings.PUBLISHING_WEBHOOK_QUEUE


def build_message(
    *, publishing_id: str, project_id: str, user_id: str, owner_id: str, retries: int = 0
) -> dramatiq.Message[Any]:
    """A build of one publishing. `retries` carries a retry count over from the message it replaces."""
    options: dict[str, Any] = {
        # An option, not an argument: whose share of the rate limit its start counts against, for
        # publishing.worker.rate_limit; workers of any version take the message.
        "owner_id": owner_id,
    }
    if retries:
        options["retries"] = retries
    return dramatiq.Message(
        queue_name=build_queue(),
        actor_name=BUILD_ACTOR,
        args=(),
        kwargs={"publishing_id": publishing_id, "project_id": project_id, "user_id": user_id},
        options=options,
    )


def webhook_message(*, delivery_id: str) -> dramatiq.Message[Any]:
    """One delivery of a webhook."""
    return dramatiq.Message(
        queue_name=webhook_queue(),
        actor_name=WEBHOOK_ACTOR,
        args=(),
        kwargs={"delivery_id": delivery_id},
        options={},
    )


def argument(args: Sequence[Any], kwargs: object, name: str) -> Any:
    """What a message was sent as `name`: by keyword, else as its first argument; None if neither.

    Never raises: a poison message's kwargs may be anything JSON holds.
    """
    by_name = kwargs if isinstance(kwargs, dict) else {}
    return by_name.get(name, args[0] if args else None)


def as_uuid(value: object) -> uuid.UUID | None:
    """`value` as a UUID (what Django's UUIDField takes), None if it is not one."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
