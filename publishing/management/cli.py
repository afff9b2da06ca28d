"""What the publishing commands share: their exit codes, look-ups, errors said as sentences, and a quiet log.

`publish`, `publishing_logs`, `publishing_cancel`, `publishing_retry` and `publishing_rerun` derive from
PublishingCommand; `follow.py` follows a publishing for them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, NoReturn, cast

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import Error as DatabaseError
from django.db import connection
from rich.console import Console

from publishing import selectors
from publishing.exceptions import BrokerUnavailable, PublishingConflict, PublishingError
from publishing.models import Project, Publishing
from publishing.redaction import redacted_url

# Exit codes, one meaning each, for every publishing command.
EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_TIMEOUT = 3
EXIT_UNABLE = 4
# The command itself broke (a bug: its traceback is printed), as sysexits.h's EX_SOFTWARE.
EXIT_CRASHED = 70
EXIT_INTERRUPTED = 130
# The reader of the output went away (`| head`): a shell's status for a process SIGPIPE ended.
EXIT_BROKEN_PIPE = 141

EXIT_CODES_HELP = (
    "Exit codes: 0 published (or done), 1 failed, 2 cancelled, 3 still going when --timeout passed, "
    "4 could not act (the broker or the database down, no live worker, a conflict or a move the "
    "publishing's status does not allow, a bad argument, not found), 70 the command itself broke "
    "(a traceback says where), 130 interrupted (Ctrl-C; the publishing goes on), 141 the output's "
    "reader went away. Log records below WARNING are not shown unless -v 2."
)
# How the hints spell a command.
MANAGE = "python manage.py"


def unable(message: str) -> CommandError:
    """The error of a command that could not act: printed to stderr, exit 4."""
    return CommandError(message, returncode=EXIT_UNABLE)


def follow_hint(publishing_id: uuid.UUID | str) -> str:
    return f"Follow it: {MANAGE} publishing_logs {publishing_id} --follow"


def cancel_hint(publishing_id: uuid.UUID | str) -> str:
    return f"Cancel it: {MANAGE} publishing_cancel {publishing_id}"


def seconds(text: str) -> float:
    """A number of seconds above 0, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


class UsageParser(CommandParser):
    """argparse's usage errors exit 4 here: its own 2 means "cancelled" for these commands."""

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            self.print_usage(sys.stderr)
            self.exit(EXIT_UNABLE, f"{self.prog}: error: {message}\n")
        raise unable(f"Error: {message}")


class PublishingCommand(BaseCommand):
    """A command that acts on publishings: usage errors and refusals exit 4, INFO stays out of the output."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds the parser itself; its class is where argparse's exit status comes from.
        parser.__class__ = UsageParser
        return parser

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            with quiet_log(options.get("verbosity", 1)), errors_said():
                return super().execute(*args, **options)
        except KeyboardInterrupt:
            # Outside a follower's loop (which says more): before or while asking the service.
            raise CommandError("Interrupted.", returncode=EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            output_gone()
        except (CommandError, SystemExit):
            raise
        except Exception as exc:
            traceback.print_exc()
            raise CommandError(f"The command broke: {exc!r}", returncode=EXIT_CRASHED) from exc

    def console(self) -> Console:
        """A console on the command's real stdout: OutputWrapper ends every write with a newline, which
        would turn each redraw of a line into a new line."""
        # Soft wrap: a long line is the terminal's to wrap, and a pipe's reader gets it whole.
        return _Console(file=real_stream(self.stdout), highlight=False, soft_wrap=True)

    @staticmethod
    def add_user_argument(parser: CommandParser, default: str) -> None:
        parser.add_argument("--user", help=f"act as this user (default: {default})")

    @staticmethod
    def add_publishing_arguments(parser: CommandParser, what: str = "the publishing's id") -> None:
        """ID, and --user: whom to act as."""
        parser.add_argument("publishing", metavar="ID", help=what)
        PublishingCommand.add_user_argument(parser, "its project's owner")

    @staticmethod
    def add_queueing_arguments(parser: CommandParser) -> None:
        """--no-worker-check, and how to follow what is queued: for the commands that queue a publishing."""
        parser.add_argument(
            "--no-worker-check", action="store_true", help="queue it even when no worker is alive"
        )
        PublishingCommand.add_follow_arguments(parser)

    @staticmethod
    def add_follow_arguments(parser: CommandParser) -> None:
        how = parser.add_mutually_exclusive_group()
        how.add_argument(
            "--wait", action="store_true", help="follow it until it ends, on one line that redraws"
        )
        how.add_argument("--follow", action="store_true", help="as --wait, and print its log as it comes")
        PublishingCommand.add_timing_arguments(parser)

    @staticmethod
    def add_timing_arguments(parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=seconds,
            metavar="S",
            help="stop following after S seconds (exit 3; it goes on)",
        )
        parser.add_argument(
            "--poll", type=seconds, default=0.5, metavar="S", help="seconds between two looks"
        )


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own exits 1, which means "failed" here.
        output_gone()


def output_gone() -> NoReturn:
    """The output's reader went away: stop quietly (later writes, Python's own at exit too, go nowhere)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(EXIT_BROKEN_PIPE)


def real_stream(stdout: OutputWrapper) -> IO[str]:
    return cast("IO[str]", getattr(stdout, "_out", stdout))


@contextmanager
def quiet_log(verbosity: int) -> Iterator[None]:
    """Below WARNING, log records reach no console handler while the command runs, unless verbosity 2+:
    a command's output is for a person, and an INFO line full of ids is the log's."""
    if verbosity >= 2:
        yield
        return
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]
    levels = [handler.level for handler in handlers]
    for handler in handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


@contextmanager
def errors_said() -> Iterator[None]:
    """Domain, validation and database errors as one clear sentence each, exit 4."""
    try:
        yield
    except PublishingConflict as exc:
        raise unable(conflict_message(exc)) from exc
    except BrokerUnavailable as exc:
        raise unable(
            f"{exc.code}: {exc.detail}: the broker at {redacted_url(settings.BROKER_URL)} does not answer. "
            "Nothing was queued or changed; try again once it answers."
        ) from exc
    except PublishingError as exc:
        raise unable(f"{exc.code}: {exc.detail}") from exc
    except ValidationError as exc:
        raise unable(f"VALIDATION_ERROR: {' '.join(exc.messages)}") from exc
    except DatabaseError as exc:
        raise unable(f"The database ({database_label()}) did not answer: {exc}".strip()) from exc


def conflict_message(exc: PublishingConflict) -> str:
    """The conflict, and the active publishing it names (its status and how to follow it), if any."""
    message = f"{exc.code}: {exc.detail}"
    if exc.active_id is None:
        return message
    status = Publishing.objects.filter(pk=exc.active_id).values_list("status", flat=True).first()
    return (
        f"{message}\nThe active one is {exc.active_id} ({status or 'gone meanwhile'}).\n"
        f"{follow_hint(exc.active_id)}\n{cancel_hint(exc.active_id)}"
    )


def database_label() -> str:
    """The database as a person can find it again: engine, name and host, never a password."""
    db = connection.settings_dict
    engine = str(db["ENGINE"]).rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"sqlite3 {db['NAME']}"
    host = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 'default port'}"
    user = f" as {db['USER']}" if db.get("USER") else ""
    return f"{engine} {db['NAME']} on {host}{user}"


def ensure_a_worker_listens(options: dict[str, Any]) -> None:
    """Refuse, exit 4, when no worker is alive on the broker, unless --no-worker-check: a job queued
    there would wait for nobody.

    Presence cannot tell with the stub broker (its workers are in-process) or with its Redis away
    (queueing then answers for itself): those go ahead.
    """
    if options["no_worker_check"] or selectors.live_workers() != []:
        return
    raise unable(
        f"No worker is alive on the broker at {redacted_url(settings.BROKER_URL)} "
        f"(namespace {settings.BROKER_NAMESPACE}, queue {settings.PUBLISHING_QUEUE}), so nothing was "
        f"queued. Start one ({MANAGE} rundramatiq, or make run; a worker just started takes a few "
        "seconds to say it is alive), point BROKER_URL and REDIS_URL at the broker the workers use, or "
        "pass --no-worker-check to queue it anyway."
    )


def find_user(username: str) -> User:
    found = User.objects.filter(username=username).first()
    if found is None:
        raise unable(f"No user {username!r}.")
    return active(found)


def active(user: User) -> User:
    """`user`, unless deactivated: one who may not log in may not act from the shell either."""
    if not user.is_active:
        raise unable(f"User {user.get_username()!r} is inactive: act as another with --user.")
    return user


def find_project(key: str, username: str | None) -> Project:
    try:
        by_id = Project.objects.filter(pk=uuid.UUID(key))
    except ValueError:
        by_id = Project.objects.none()
    candidates = list(by_id.select_related("owner")) or list(
        Project.objects.filter(slug=key).select_related("owner").order_by("owner__username")
    )
    if username and len(candidates) > 1:
        candidates = [p for p in candidates if p.owner.username == username]
    if not candidates:
        raise unable(f"No project {key!r} (give its id or its slug).")
    if len(candidates) > 1:
        owners = ", ".join(p.owner.username for p in candidates)
        raise unable(f"{len(candidates)} projects are called {key!r} (owners: {owners}); pass --user.")
    return candidates[0]


def find_publishing(key: str, username: str | None) -> tuple[Publishing, User]:
    """The publishing `key` names, and who acts on it: `username`, or its project's owner (its
    requester once the project is gone)."""
    try:
        pk = uuid.UUID(key)
    except ValueError:
        raise unable(f"{key!r} is not a publishing id (a UUID, as publish prints it).") from None
    found = Publishing.objects.select_related("project__owner", "requested_by").filter(pk=pk).first()
    if found is None:
        raise unable(f"No publishing {pk}.")
    user = find_user(username) if username else found.project.owner if found.project else found.requested_by
    if user is None:
        raise unable(f"Publishing {pk} has neither project nor requester now: pass --user.")
    active(user)
    if not selectors.publishings_visible_to(user).filter(pk=pk).exists():
        raise unable(f"No publishing {pk} that {user.get_username()} may see.")
    return found, user
