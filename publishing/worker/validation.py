"""Message validation: a message its actor cannot take is dead-lettered before it runs.

`UuidStr` and `LogIdStr` annotate the actors' parameters (publishing.tasks); MessageValidation checks
every message against its actor function's signature and those annotations.
"""

from __future__ import annotations

import functools
import inspect
import logging
import reprlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage

from publishing import jobs
from publishing.log_context import job_context

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrFormat:
    """`Annotated` metadata of an actor's `str` parameter: which values MessageValidation lets through."""

    description: str
    accepts: Callable[[str], bool]


# What Django's UUIDField takes too: a value accepted here never fails the row lookup.
UuidStr = Annotated[str, StrFormat("a UUID string", lambda value: jobs.as_uuid(value) is not None)]
# Ids that actors only put on log lines: capped, so a bloated one cannot flood every line of its job.
LogIdStr = Annotated[str, StrFormat("a string of at most 64 characters", lambda value: len(value) <= 64)]


@dataclass(frozen=True)
class _Parameter:
    type: type
    format: StrFormat | None


@dataclass(frozen=True)
class _Contract:
    signature: inspect.Signature
    parameters: dict[str, _Parameter]


@functools.cache
def _contract(fn: Callable[..., Any]) -> _Contract:
    """An actor function's signature and the types (and formats) its annotations ask for."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # Annotations that cannot be resolved (another app's actor): the signature alone still binds.
        hints = {}
    parameters: dict[str, _Parameter] = {}
    for name, hint in hints.items():
        base: object = hint
        metadata: tuple[object, ...] = ()
        if typing.get_origin(hint) is Annotated:
            base, *rest = typing.get_args(hint)
            metadata = tuple(rest)
        if name != "return" and isinstance(base, type):
            found = next((m for m in metadata if isinstance(m, StrFormat)), None)
            parameters[name] = _Parameter(type=base, format=found)
    return _Contract(signature=inspect.signature(fn), parameters=parameters)


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_short.maxlist = _short.maxtuple = _short.maxdict = 3
_short.maxlevel = 2


def message_problem(fn: Callable[..., Any], args: object, kwargs: object) -> str | None:
    """Why `fn(*args, **kwargs)` would not be a valid call, per its signature and annotations; None if it is.

    Values show up only as a short repr: a poison message may carry anything.
    """
    if not isinstance(kwargs, dict):
        return f"kwargs is a {type(kwargs).__name__}, not a mapping"
    if not isinstance(args, list | tuple):
        return f"args is a {type(args).__name__}, not a list"
    contract = _contract(fn)
    try:
        bound = contract.signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    for name, value in bound.arguments.items():
        parameter = contract.parameters.get(name)
        if parameter is None:
            continue
        expected = parameter.type
        # bool is an int to isinstance, never to an actor that asked for an int.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            return f"{name} must be a {expected.__name__}, got {type(value).__name__} {_short.repr(value)}"
        if parameter.format is not None and isinstance(value, str) and not parameter.format.accepts(value):
            return f"{name} must be {parameter.format.description}, got {_short.repr(value)}"
    return None


class _ShortSkipLines(logging.Filter):
    """Shortens Dramatiq's "Message %s was skipped." line for the invalid messages being skipped now.

    That line prints the whole message: all of a poison message's payload,
    however large, and a logging error instead when its kwargs are not a
    mapping (Message.__str__ calls .items()). It comes after
    before_process_message and before after_skip_message, hence the ids.
    """

    def __init__(self) -> None:
        super().__init__()
        self.message_ids: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], MessageProxy):
            message = args[0]
            if message.message_id in self.message_ids:
                record.args = (f"{message.actor_name} {message.message_id} (invalid: dead-lettered)",)
        return True


_short_skip_lines = _ShortSkipLines()


class MessageValidation(Middleware):
    """Dead-letter at once a message its actor cannot take: missing, extra or wrong-typed arguments.

    Such a message fails the same way on every run, so Retries would only
    repeat its traceback. It is checked against the actor function's
    signature and annotations (`UuidStr`, `LogIdStr`, plain types) before any
    other of our middleware sees it: it takes no rate-limit slot, no lease and
    no abort lookup. One ERROR line says what is wrong; the message itself
    waits in the dead-letter queue. Messages for an actor no worker knows are
    Dramatiq's own: its consumer dead-letters them before they get here.
    """

    # Long enough to say what is wrong, short enough that a poison message cannot flood the log.
    MAX_PROBLEM_LENGTH = 200

    def __init__(self) -> None:
        # The logger of dramatiq.worker's WorkerThread; adding the same filter again is a no-op.
        logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_short_skip_lines)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        try:
            actor = broker.get_actor(message.actor_name)
        except ActorNotFound:
            return  # Dramatiq's consumer dead-letters these on arrival
        problem = message_problem(actor.fn, message.args, message.kwargs)
        if problem is None:
            return
        if len(problem) > self.MAX_PROBLEM_LENGTH:
            problem = problem[: self.MAX_PROBLEM_LENGTH] + "..."
        # Only the message id is trusted enough for the log context: the arguments are what is wrong.
        with job_context(job_id=message.message_id, message_id=message.message_id):
            logger.error(
                "invalid message %s for %s dead-lettered without running: %s",
                message.message_id,
                message.actor_name,
                problem,
            )
        # Failed, then skipped: the worker rejects it, which dead-letters it, and Retries never sees it.
        message.fail()
        _short_skip_lines.message_ids.add(message.message_id)
        raise SkipMessage(problem)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        _short_skip_lines.message_ids.discard(message.message_id)
