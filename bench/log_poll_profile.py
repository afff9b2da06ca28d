"""A page's log poll profiled in one process: where `bench watchers`' web CPU per poll goes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/pytest -p no:cacheprovider -n 0 -s bench/log_poll_profile.py

(pytest makes and drops its test database beside DATABASE_URL's.) The owner of a running publishing,
logged in as a page is (each request loads the session and the user afresh), polls its log with
its cursor after each 4 new lines of build output, as in the benchmark: the queries of one poll,
the process CPU per poll (three runs of POLLS; the writes are not counted) and, with PROFILE=1, a
cProfile of the polls on CPU time, the functions sorted by cumulative time (PROFILE_TOP of them).
Django's test client stands in for gunicorn: the middleware, DRF and the queries are the same.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from publishing.models import LogLine, Publishing
from publishing.services.log import log_event
from tests.factories import ProjectFactory, PublishingFactory, UserFactory

POLLS = int(os.environ.get("POLLS", "400"))


@pytest.mark.django_db
def test_profile_a_log_poll() -> None:
    owner = UserFactory.create(username="watcher")
    running: Publishing = PublishingFactory.create(building=True, project=ProjectFactory.create(owner=owner))
    for number in range(50):
        log_event(running.pk, f"event {number}")
    page = APIClient()
    page.force_login(owner)
    url = f"/api/v1/publishing/{running.pk}/log"
    cursor = page.get(url, HTTP_ACCEPT="application/json").json()["cursor"]

    def write() -> None:
        LogLine.objects.bulk_create(
            LogLine(publishing_id=running.pk, attempt=1, step="build", stream="output", text=f"page {n}: ok")
            for n in range(4)
        )

    def poll() -> None:
        nonlocal cursor
        answer = page.get(url, {"since": cursor}, HTTP_ACCEPT="application/json").json()
        assert len(answer["lines"]) == 4
        cursor = answer["cursor"]

    for _ in range(50):  # warm: the first requests build what Django and DRF keep
        write()
        poll()
    write()
    with CaptureQueriesContext(connection) as queries:
        poll()
    print(f"\n{len(queries.captured_queries)} queries per poll:")
    for query in queries.captured_queries:
        print("  " + query["sql"][:160])
    runs = []
    for _ in range(3):
        spent = 0.0
        for _ in range(POLLS):
            write()
            started = time.process_time()
            poll()
            spent += time.process_time() - started
        runs.append(spent * 1000 / POLLS)
    print("CPU ms per poll, three runs: " + ", ".join(f"{ms:.2f}" for ms in runs))
    if os.environ.get("PROFILE"):
        profile = cProfile.Profile(time.process_time)
        for _ in range(POLLS):
            write()
            profile.enable()
            poll()
            profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(
            int(os.environ.get("PROFILE_TOP", "60"))
        )
        print(out.getvalue())
