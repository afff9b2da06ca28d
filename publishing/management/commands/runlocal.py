"""Run the whole service locally: Redis (the configured or an embedded one), a worker, the web server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from publishing.broker import redis_client
from publishing.broker.redis_backend import RedisOperations
from publishing.management.development import refuse_in_production
from publishing.redaction import redacted_url
from publishing.redis_server import RedisServer


class Command(BaseCommand):
    help = "Run web server and worker (and an embedded Redis when REDIS_URL does not answer)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--processes", type=int, default=1)
        parser.add_argument("--threads", type=int, default=2)

    def handle(self, *args: Any, port: int, processes: int, threads: int, **options: Any) -> None:
        refuse_in_production("runlocal")
        # DJANGO_SETTINGS_MODULE is in it (manage.py sets it, from `--settings` too): the children run
        # the settings this command runs.
        env = dict(os.environ)
        embedded: RedisServer | None = None
        if RedisOperations.serves(settings.BROKER_URL) and not _answers(settings.BROKER_URL):
            embedded = RedisServer(Path(settings.VAR_DIR) / "redis").start()
            env["REDIS_URL"] = env["BROKER_URL"] = embedded.url
            self.stdout.write(
                f"Redis at {redacted_url(settings.BROKER_URL)} does not answer: "
                f"started an embedded one at {embedded.url}"
            )
        else:
            self.stdout.write(f"Using the broker at {redacted_url(settings.BROKER_URL)}")

        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        worker = [*manage, "rundramatiq", "--processes", str(processes), "--threads", str(threads)]
        web = [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"]
        # Own sessions: a terminal's Ctrl-C reaches only this process, which
        # then signals each child exactly once (a second signal makes
        # Dramatiq kill its workers instead of letting them finish).
        names = ["worker", "web server"]
        children = [subprocess.Popen(argv, env=env, start_new_session=True) for argv in (worker, web)]
        self.stdout.write(f"Publisher on http://127.0.0.1:{port}/api/v1/ (Ctrl-C stops everything)")

        stop_requested = False

        def request_stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stop_requested
            stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            while not stop_requested and all(child.poll() is None for child in children):
                time.sleep(0.2)
            died = [name for name, child in zip(names, children, strict=True) if child.poll() is not None]
            self.stdout.write("Stopping: the worker finishes its running jobs first...")
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + settings.PUBLISHING_SHUTDOWN_TIMEOUT + 15
            for child in children:
                try:
                    child.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        finally:
            if embedded is not None:
                embedded.stop()
        if died and not stop_requested:
            raise CommandError(f"{', '.join(died)} exited unexpectedly; stopped everything")
        self.stdout.write("Stopped.")


def _answers(url: str) -> bool:
    client = redis_client(url, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()
