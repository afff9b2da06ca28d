"""Run the whole service locally: Redis (the configured or an embedded one), a worker, the web server.

Each process's lines come out under its name. Ctrl-C stops it all: running jobs get
PUBLISHING_SHUTDOWN_TIMEOUT s to finish, then are requeued; a second Ctrl-C requeues them at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection

from publisher_project.runlocal_record import (
    RunlocalRecord,
    already_running,
    current_record,
    process_start,
    remove_record,
    write_record,
)
from publishing import selectors
from publishing.broker import redis_client
from publishing.broker.redis_backend import RedisOperations
from publishing.management.development import refuse_in_production
from publishing.management.runlocal_console import Console
from publishing.redaction import redacted_url
from publishing.redis_server import RedisServer
from publishing.worker_master import CUT_SHORT_SIGNAL

# Dramatiq's worker and consumer threads wait this long (ms) for work between looks at whether to
# stop: its default of 1 s makes an idle worker take about 4 s to exit, a Ctrl-C that seems to hang.
WORKER_POLL_MS = "200"
# prctl(2)'s option: the signal a child gets when its parent dies.
PR_SET_PDEATHSIG = 1
# After a second Ctrl-C: the interrupted jobs unwind and the worker exits well within this (s).
CUT_SHORT_SECONDS = 10


@dataclass
class Stops:
    """The Ctrl-Cs (SIGINT) and SIGTERMs received so far."""

    count: int = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1


class Command(BaseCommand):
    help = "Run web server and worker (and an embedded Redis when REDIS_URL does not answer)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--processes", type=int, default=1)
        parser.add_argument("--threads", type=int, default=2)

    def handle(self, *args: Any, port: int, processes: int, threads: int, **options: Any) -> None:
        refuse_in_production("runlocal")
        var_dir = Path(settings.VAR_DIR)
        other = current_record(var_dir)
        if other is not None and other.pid != os.getpid():
            raise CommandError(already_running(other, redacted_url(other.broker_url)))
        console = Console(sys.stdout)
        # Before anything starts: a Ctrl-C, a SIGTERM or the terminal closing (SIGHUP) is counted from
        # here on, and stops whatever has started by then.
        stops = Stops()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stops)
        # DJANGO_SETTINGS_MODULE is in it (manage.py sets it, from `--settings` too): the children run
        # the settings this command runs.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "dramatiq_worker_timeout": WORKER_POLL_MS}
        embedded: RedisServer | None = None
        try:
            if RedisOperations.serves(settings.BROKER_URL) and not _answers(settings.BROKER_URL):
                # Its data kept on disk: a job that a Ctrl-C requeued is still queued at the next start.
                embedded = RedisServer(var_dir / "redis", appendonly=True).start()
                env["REDIS_URL"] = env["BROKER_URL"] = embedded.url
                console.say(
                    f"{redacted_url(settings.BROKER_URL)} does not answer: started an embedded Redis at "
                    f"{embedded.url} (data in {embedded.directory})",
                    name="redis",
                )
            else:
                console.say(f"Using the broker at {redacted_url(settings.BROKER_URL)}", name="redis")
            broker_url = env.get("BROKER_URL", settings.BROKER_URL)
            redis_url = env.get("REDIS_URL", settings.REDIS_URL)
            write_record(
                var_dir, RunlocalRecord(os.getpid(), broker_url, redis_url, port, process_start(os.getpid()))
            )
            if not stops.count:
                self._run(console, env, stops, port=port, processes=processes, threads=threads)
        finally:
            if embedded is not None:
                embedded.stop()
            remove_record(var_dir, os.getpid())
        console.say("Stopped.")

    def _run(
        self, console: Console, env: dict[str, str], stops: Stops, *, port: int, processes: int, threads: int
    ) -> None:
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        worker_argv = [*manage, "rundramatiq", "--processes", str(processes), "--threads", str(threads)]
        web_argv = [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"]
        # Own sessions: a terminal's Ctrl-C reaches only this process, which then signals each child
        # exactly once (a second SIGTERM makes Dramatiq kill its workers instead of letting them finish).
        # Should runlocal itself be killed, each child gets a SIGTERM from the kernel all the same.
        worker, web = (
            subprocess.Popen(
                argv,
                env=env,
                start_new_session=True,
                preexec_fn=_terminate_with_parent,  # (no thread of runlocal's runs yet)
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for argv in (worker_argv, web_argv)
        )
        relays = [console.relay("worker", worker.stdout), console.relay("web", web.stdout)]  # type: ignore[arg-type]
        console.say(f"Publisher on http://127.0.0.1:{port}/ (Ctrl-C stops everything)")

        try:
            # A reader gone away (the terminal closed, `| head` done) stops it all as a Ctrl-C does.
            while not stops.count and not console.closed and worker.poll() is None and web.poll() is None:
                time.sleep(0.2)
            died = [
                name for name, child in (("worker", worker), ("web server", web)) if child.poll() is not None
            ]
            if web.poll() is None:
                web.terminate()
            lost_jobs = worker.poll() is None and not self._stop_worker(console, worker, stops)
            web.wait()
        finally:
            # Whatever went wrong here, no child outlives runlocal: each is in a session of its own.
            for child in (web, worker):
                if child.poll() is None:
                    child.terminate()
        for relay in relays:
            relay.join(timeout=2)
        connection.close()
        if died and not stops.count:
            raise CommandError(f"{', '.join(died)} exited unexpectedly; stopped everything")
        if lost_jobs:
            raise CommandError("the worker was killed before its jobs were done; stopped everything")

    def _stop_worker(self, console: Console, worker: subprocess.Popen[bytes], stops: Stops) -> bool:
        """SIGTERM, and say what becomes of the running jobs while they get their grace period; False when
        something else killed the worker meanwhile, its jobs left to their leases."""
        grace = settings.PUBLISHING_SHUTDOWN_TIMEOUT
        running = _running_jobs()
        if running:
            they, get, be = ("it", "gets", "is") if running == 1 else ("they", "get", "are")
            console.say(
                f"Stopping: {_jobs(running)} running; {they} {get} up to {grace} s to finish, "
                f"then {they} {be} requeued. Ctrl-C again to requeue now."
            )
        else:
            console.say("Stopping...")
        worker.terminate()
        started = time.monotonic()
        cut_at: float | None = None
        killed = False
        shown = -1
        while worker.poll() is None:
            now = time.monotonic()
            if stops.count >= 2 and cut_at is None:
                cut_at = now
                console.end_status()
                console.say("Requeueing the running jobs now...")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, CUT_SHORT_SIGNAL)
            if (cut_at is not None and now - cut_at > CUT_SHORT_SECONDS) or stops.count >= 3:
                console.end_status()
                console.say("The worker did not stop: killed. Its jobs are requeued when their lease ends.")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                killed = True
                break
            left = math.ceil(started + grace - now)
            # A terminal's line is redrawn every second; a pipe or a log gets a line every 5 s.
            if running and cut_at is None and left != shown and left >= 0 and (console.tty or left % 5 == 0):
                shown = left
                counted = _running_jobs()  # None: the database did not answer, the count stands
                if counted == 0 and left > 0:
                    console.end_status()
                    console.say("The running jobs ended; the worker stops.")
                running = running if counted is None else counted
                if running:
                    console.status(f"  {_jobs(running)} running: requeued in {left} s (Ctrl-C: now)")
            time.sleep(0.1)
        worker.wait()
        console.end_status()
        if killed or worker.returncode >= 0 or not running:
            return True
        console.say(
            f"The worker was killed (signal {-worker.returncode}) with {_jobs(running)} running: "
            "they are requeued once their lease runs out."
        )
        return False


def _terminate_with_parent() -> None:
    """In a child, before it runs: a SIGTERM from the kernel when runlocal dies (Linux; elsewhere
    nothing), so that not even a SIGKILLed runlocal leaves its worker and web server behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _running_jobs() -> int | None:
    """The jobs this machine's worker runs now, from the database; None when it does not answer."""
    try:
        return selectors.running_on(settings.PUBLISHING_WORKER_NAME)
    except DatabaseError:
        return None


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _answers(url: str) -> bool:
    client = redis_client(url, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()
