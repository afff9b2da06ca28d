"""The running publishings of the watchers benchmark: builds that print a line every 0.5 s, no worker.

`python -m bench.watch_feeder REPORT PROJECT_ID ...`, with DJANGO_SETTINGS_MODULE=bench.settings and the
site's environment, gives the projects to a user of their own ("watcher", no staff rights: it sees
them as an owner does), initiates one publishing of each as that user (`publishing_initiate`), claims
each as the worker does (`runner._claim`, then its Attempt row) and prints one line,
`READY {"session": ..., "publishings": [...]}`: a session of the watcher's, for the page's cookie.

Then each publishing's `AttemptLog`, the one a build's output goes through, gets one line of output
every LINE_INTERVAL seconds (and flushes it as a build's does, at most twice a second) and an event
every EVENT_INTERVAL seconds, from a few threads with a database connection each, until SIGTERM. At
exit it writes what it wrote, and how late it was, to REPORT as JSON.

A real worker is not run: it would also take the queued messages of the initiate load, thousands of
them, and build each one.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import django

LINE_INTERVAL = 0.5
EVENT_INTERVAL = 10.0
THREADS = 4
USERNAME = "watcher"


def prepare(project_ids: list[str]) -> tuple[str, list[Any]]:
    """The watcher's session key and, per project, (publishing, AttemptLog) of a running attempt."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User

    from publishing import presence
    from publishing.models import Attempt, Project
    from publishing.services.attempts import AttemptLog
    from publishing.services.publishings import publishing_initiate

    # The worker's claim, as publishing_run makes it: bench code, so the private name is fair game.
    from publishing.services.runner import _claim

    user, _ = User.objects.get_or_create(username=USERNAME)
    Project.objects.filter(pk__in=project_ids).update(owner=user)
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    running = []
    for project_id in project_ids:
        queued = publishing_initiate(user=user, project_id=project_id, via="cli")
        publishing = _claim(str(queued.pk), queued.message_id, retries=0, max_retries=0)
        if publishing is None:
            raise RuntimeError(f"publishing {queued.pk} could not be claimed")
        Attempt.objects.create(
            publishing_id=publishing.pk,
            number=publishing.attempts,
            message_id=queued.message_id,
            worker=presence.worker_name(),
        )
        log = AttemptLog(publishing, publishing.attempts, queued.message_id)
        log.step("build", "build: bench watchers' feeder", progress=30)
        running.append((publishing, log))
    return str(session.session_key), running


class Feeder:
    """Threads that write each publishing's build output on a fixed schedule, staggered."""

    def __init__(self, running: list[Any]) -> None:
        self.running = running
        self.stop = threading.Event()
        self.lines = 0
        self.events = 0
        self.lateness: list[float] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._feed, args=(self.running[n::THREADS],), name=f"feeder-{n}")
            for n in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _feed(self, mine: list[Any]) -> None:
        from django.db import connection

        start = time.monotonic()
        count = max(len(mine), 1)
        # (due time, index): each publishing's next line, spread over the interval.
        due = [start + LINE_INTERVAL * n / count for n in range(len(mine))]
        next_event = [start + EVENT_INTERVAL * n / count for n in range(len(mine))]
        lines = events = 0
        late: list[float] = []
        try:
            while not self.stop.is_set() and mine:
                index = min(range(len(mine)), key=due.__getitem__)
                wait = due[index] - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    break
                late.append(max(0.0, time.monotonic() - due[index]))
                publishing, log = mine[index]
                log.append(f"compiling page {lines} of {publishing.pk}: ok\n")
                lines += 1
                if time.monotonic() >= next_event[index]:
                    log.event(f"build still running: {lines} lines")
                    log.flush()
                    events += 1
                    next_event[index] += EVENT_INTERVAL
                due[index] += LINE_INTERVAL
        finally:
            connection.close()
            with self._lock:
                self.lines += lines
                self.events += events
                self.lateness.extend(late)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.exit("usage: python -m bench.watch_feeder REPORT PROJECT_ID ...")
    report, project_ids = Path(argv[0]), argv[1:]
    django.setup()
    session, running = prepare(project_ids)
    feeder = Feeder(running)

    def stop(signum: int, frame: FrameType | None) -> None:
        feeder.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY " + json.dumps({"session": session, "publishings": [str(p.pk) for p, _ in running]}))
    sys.stdout.flush()
    started = time.monotonic()
    feeder.run()
    seconds = time.monotonic() - started
    late = sorted(feeder.lateness)
    report.write_text(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "publishings": len(running),
                "lines": feeder.lines,
                "events": feeder.events,
                "lines_per_s": round(feeder.lines / seconds, 1) if seconds else 0,
                "late_p50_s": round(late[len(late) // 2], 3) if late else 0,
                "late_p99_s": round(late[int(len(late) * 0.99)], 3) if late else 0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
