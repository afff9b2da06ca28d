"""What the worker middleware reads off a message: its actor's options, its publishing, its owner."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.errors import ActorNotFound

from publishing import jobs


def actor_option(broker: dramatiq.Broker, message: MessageProxy, name: str, default: Any = None) -> Any:
    """The option `name` its actor was declared with (as Dramatiq's AgeLimit reads `max_age`).

    A message for an actor this process does not know has none: Dramatiq's consumer dead-letters it.
    """
    try:
        actor = broker.get_actor(message.actor_name)
    except ActorNotFound:
        return default
    return actor.options.get(name, default)


def publishing_id(message: MessageProxy) -> str | None:
    """The id of the publishing a build message is for, None if it names none."""
    value = jobs.argument(message.args, message.kwargs, "publishing_id")
    return str(value) if value else None


def owner(message: MessageProxy) -> str:
    """Whose share of the rate limit a start counts against: the project's owner (the `owner_id` option
    services put on the message), or the requester for messages sent before that option existed."""
    kwargs = message.kwargs if isinstance(message.kwargs, dict) else {}
    options = message.options if isinstance(message.options, dict) else {}
    value = options.get("owner_id") or kwargs.get("user_id")
    return str(value) if value else "unknown"
