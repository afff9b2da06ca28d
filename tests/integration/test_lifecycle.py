"""The job lifecycle with real workers: rate limit, cancel, shutdown, SIGKILL, lost Redis data.

The broker-independent ones run on Redis and again on RabbitMQ (`make_broker_stack`).
"""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from rest_framework.authtoken.models import Token

from publishing.models import Attempt, Publishing
from tests.factories import ProjectFactory, UserFactory
from tests.integration.beacon import BuildBeacon, process_alive
from tests.integration.stack import artifacts
from tests.support.polling import wait_until, wait_while

pytestmark = pytest.mark.integration


@pytest.fixture
def beacon() -> BuildBeacon:
    """Finds the slow build's process on the host."""
    return BuildBeacon()


@pytest.fixture
def make_slow_project(make_project, beacon: BuildBeacon, tmp_path: Path):
    """A project publishing to tmp_path/store whose build takes `seconds`; `beacon` finds it."""

    def make(seconds: int, **fields: str):
        return make_project(
            f"file://{tmp_path / 'store'}", build_args=f"--sleep {seconds} {beacon.args}", **fields
        )

    return make


def test_rate_limit_spreads_starts_across_two_worker_processes_without_using_retries(
    make_broker_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given 10 projects and two worker processes under a limit of 5 starts per 20 s
    store = tmp_path / "store"
    projects = [make_project(f"file://{store}", slug=f"rl-{n}", name=f"RL {n}") for n in range(10)]
    _, token = owner_token
    stack = make_broker_stack(PUBLISHING_RATE_LIMIT="5/20s")
    api = stack.serve(token, worker=False)
    stack.start_worker(processes=2, threads=4)

    # When all 10 are initiated at once
    ids = [stack.initiate(api, project.pk).json()["id"] for project in projects]

    # Then, while some wait, the API says when they are expected to start
    waiting = stack.wait_until(
        api, ids[-1], lambda body: body["status"] == "published" or body["not_before"] is not None, timeout=30
    )
    somebody_waits = waiting["not_before"] is not None or any(stack.get(api, i)["not_before"] for i in ids)
    assert somebody_waits

    # And every one is published, after one attempt each
    done = [stack.wait_for(api, i, timeout=120) for i in ids]
    assert [d["status"] for d in done] == ["published"] * 10
    assert [d["attempts"] for d in done] == [1] * 10
    assert len(artifacts(store)) == 10

    # And no 20 s window held more than 5 starts
    starts = sorted(datetime.fromisoformat(d["started_at"]).timestamp() for d in done)
    worst = max(sum(1 for s in starts if first <= s < first + 20) for first in starts)
    # started_at is written a few ms after the slot is taken on Redis' clock;
    # a window shortened by that slack checks the limiter, not the DB latency.
    strict = max(sum(1 for s in starts if first <= s < first + 19.5) for first in starts)
    assert strict <= 5, (worst, starts)
    assert starts[-1] - starts[0] >= 20, starts
    print(f"\nrate limit 5/20s: worst 20 s window held {worst} starts, span {starts[-1] - starts[0]:.1f}s")  # noqa: T201
    # And being limited was never an error
    logs = stack.logs("worker", tail=None)
    assert "Traceback" not in logs
    assert " ERROR " not in logs
    assert "[ERROR]" not in logs
    assert "rate limit 5/20s reached" in logs


def test_one_owners_backlog_does_not_hold_up_another_owners_publishing(
    make_broker_stack, make_project, owner_token, git_source: Path, tmp_path: Path
) -> None:
    # Given alice with 10 projects, bob with one, and one worker under a limit of 2 starts per 6 s
    store = tmp_path / "store"
    alice_projects = [make_project(f"file://{store}", slug=f"a-{n}", name=f"A {n}") for n in range(10)]
    alice, alice_token = owner_token
    bob = UserFactory.create(username="bob")
    bob_project = ProjectFactory.create(
        owner=bob,
        repository_url=str(git_source),
        artifact_path="dist",
        target_url=f"file://{store}",
        build_command="python3 build.py",
    )
    stack = make_broker_stack(PUBLISHING_RATE_LIMIT="2/6s")
    alice_api = stack.serve(alice_token, worker=False)
    bob_api = stack.api(Token.objects.create(user=bob).key)
    stack.start_worker(threads=4)
    # And alice's window: one start, then 1.5 s later the rest of her backlog (a second start, 8 waiting),
    # so that her starts leave the window one at a time
    first = stack.initiate(alice_api, alice_projects[0].pk).json()["id"]
    stack.wait_until(alice_api, first, lambda body: body["started_at"] is not None)
    time.sleep(1.5)
    backlog = [stack.initiate(alice_api, project.pk).json()["id"] for project in alice_projects[1:]]
    wait_until(
        lambda: (
            Attempt.objects.filter(publishing__project__owner=alice).count() >= 2
            and any(stack.get(alice_api, pid)["not_before"] for pid in backlog)
        ),
        30,
        stack.all_logs,
        interval=0.1,
    )

    # When bob publishes while the window is full
    mine = stack.initiate(bob_api, bob_project.pk).json()["id"]

    # Then his publishing takes the first slot that frees: no start of alice's comes before it
    done = stack.wait_for(bob_api, mine, timeout=60)
    assert done["status"] == "published", done
    queued_at = Publishing.objects.get(pk=mine).queued_at
    assert queued_at is not None
    started_at = datetime.fromisoformat(done["started_at"])
    alice_starts = sorted(
        Attempt.objects.filter(publishing__project__owner=alice).values_list("started_at", flat=True)
    )
    before_bob = [s for s in alice_starts if queued_at < s < started_at]
    assert before_bob == [], (queued_at, started_at, alice_starts)
    # And bob did wait for that slot: the window was full when he asked
    assert started_at - queued_at > timedelta(seconds=1), (queued_at, started_at, alice_starts)
    logs = stack.logs("worker", tail=None)
    assert "Traceback" not in logs
    print(f"\nfairness: bob waited {(started_at - queued_at).total_seconds():.1f}s")  # noqa: T201


def test_cancel_stops_a_running_build_and_the_worker_goes_on(
    make_broker_stack, make_project, owner_token, make_slow_project, beacon, tmp_path: Path
) -> None:
    # Given a build that runs for a minute
    store = tmp_path / "store"
    slow = make_slow_project(60, slug="slow")
    quick = make_project(f"file://{store}", slug="quick")
    _, token = owner_token
    stack = make_broker_stack()
    api = stack.serve(token, worker=False)
    stack.start_worker(threads=1)
    publishing = stack.initiate(api, slow.pk).json()
    build_pid = beacon.wait()

    # When the user cancels it
    response = api.post(f"{stack.base_url}/api/v1/publishing/{publishing['id']}/cancel", timeout=10)

    # Then it is cancelled at once, and the build process is gone within a few seconds
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    wait_while(lambda: process_alive(build_pid), 15, "the build survived its cancellation")

    # And the same (single-threaded) worker goes on serving other jobs
    other = stack.initiate(api, quick.pk).json()
    assert stack.wait_for(api, other["id"])["status"] == "published"
    # And nothing of the cancelled one was submitted
    assert stack.get(api, publishing["id"])["status"] == "cancelled"
    assert [p.name for p in artifacts(store)] == [f"{other['id']}.tar.gz"]


def test_a_queued_publishing_cancelled_before_it_starts_never_runs(
    make_broker_stack, make_project, owner_token, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    project = make_project(f"file://{store}")
    _, token = owner_token
    stack = make_broker_stack()
    api = stack.serve(token, worker=False)
    publishing = stack.initiate(api, project.pk).json()
    assert api.post(f"{stack.base_url}/api/v1/publishing/{publishing['id']}/cancel").status_code == 200

    stack.start_worker()
    marker = make_project(f"file://{store}", slug="marker")
    after = stack.initiate(api, marker.pk).json()
    assert stack.wait_for(api, after["id"])["status"] == "published"

    body = stack.get(api, publishing["id"])
    assert (body["status"], body["attempts"], body["started_at"]) == ("cancelled", 0, None)
    # And cancelling it again is a conflict
    again = api.post(f"{stack.base_url}/api/v1/publishing/{publishing['id']}/cancel")
    assert again.status_code == 409


def test_sigterm_lets_a_short_build_finish_and_the_worker_exits(
    redis_url, make_stack, make_project, owner_token, make_slow_project, beacon, tmp_path: Path
) -> None:
    # Given a worker in the middle of a 5 s build
    store = tmp_path / "store"
    project = make_slow_project(5)
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token)
    publishing = stack.initiate(api, project.pk).json()
    beacon.wait()

    # When the worker gets SIGTERM
    stack.signal("worker", signal.SIGTERM)

    # Then it finishes the build, publishes, and exits well within the 30 s grace
    exit_after = stack.wait_exit("worker", timeout=45)
    assert exit_after < 30
    body = stack.get(api, publishing["id"])
    assert (body["status"], body["attempts"]) == ("published", 1)
    assert len(artifacts(store)) == 1
    print(f"\nSIGTERM during a 5 s build: worker exited after {exit_after:.1f}s")  # noqa: T201 - a figure for the report


def test_sigterm_past_the_deadline_requeues_the_job_for_the_next_worker(
    make_broker_stack, make_project, owner_token, make_slow_project, beacon, tmp_path: Path
) -> None:
    # Given a worker with a 3 s shutdown grace, in the middle of a 10 s build
    store = tmp_path / "store"
    project = make_slow_project(10)
    _, token = owner_token
    stack = make_broker_stack()
    api = stack.serve(token, worker=False)
    stack.start_worker(PUBLISHING_SHUTDOWN_TIMEOUT="3")
    publishing = stack.initiate(api, project.pk).json()
    first_build = beacon.wait()

    # When the worker gets SIGTERM
    stack.signal("worker", signal.SIGTERM)
    exit_after = stack.wait_exit("worker", timeout=30)

    # Then the job was cut off at the deadline: requeued (not failed), its build stopped, and the log says so
    body = stack.get(api, publishing["id"])
    assert body["status"] == "queued", body
    assert "shutdown" in body["error_message"]
    assert not process_alive(first_build)
    assert "requeued, retry count 0 kept" in stack.logs("worker", tail=None)

    # When the next worker starts
    stack.start_worker(name="worker-2")

    # Then it completes the job: one artifact, two attempts, no retry used
    done = stack.wait_for(api, publishing["id"])
    assert (done["status"], done["attempts"]) == ("published", 2)
    assert len(artifacts(store)) == 1
    print(f"\nSIGTERM past a 3 s deadline: worker exited after {exit_after:.1f}s")  # noqa: T201 - a figure for the report


def test_a_job_whose_worker_is_killed_runs_again_on_a_new_worker(
    make_broker_stack, make_project, owner_token, make_slow_project, beacon, tmp_path: Path
) -> None:
    # Given a worker in the middle of an 8 s build, with 10 s leases
    store = tmp_path / "store"
    project = make_slow_project(8)
    _, token = owner_token
    stack = make_broker_stack(PUBLISHING_LEASE_TIMEOUT="10", PUBLISHING_RECONCILE_INTERVAL="2")
    api = stack.serve(token)
    publishing = stack.initiate(api, project.pk).json()
    beacon.wait()

    # When the worker is killed with SIGKILL (master and worker processes) and a new one starts
    stack.signal("worker", signal.SIGKILL, group=True)
    killed_at = time.monotonic()
    stack.start_worker(name="worker-2")

    # Then the publishing runs again within 90 s of the kill
    stack.wait_until(api, publishing["id"], lambda b: b["attempts"] == 2, timeout=90)
    restarted_after = time.monotonic() - killed_at
    assert restarted_after < 90
    # And ends published with exactly one artifact
    done = stack.wait_for(api, publishing["id"])
    assert done["status"] == "published", done
    assert len(artifacts(store)) == 1
    print(f"\nSIGKILL mid-build: running again after {restarted_after:.1f}s")  # noqa: T201 - a figure for the report


def test_a_message_prefetched_by_a_killed_worker_is_run_by_the_next_one(
    make_stack,
    redis_url: str,
    namespace: str,
    make_project,
    owner_token,
    make_slow_project,
    beacon,
    tmp_path: Path,
) -> None:
    # Given a one-thread worker busy with a slow build, which has already fetched the next message
    store = tmp_path / "store"
    slow = make_slow_project(30, slug="slow")
    waiting = make_project(f"file://{store}", slug="waiting")
    _, token = owner_token
    stack = make_stack(
        redis_url,
        PUBLISHING_HEARTBEAT_TIMEOUT_MS="4000",
        PUBLISHING_LEASE_TIMEOUT="60",
        PUBLISHING_RECONCILE_GRACE="1",
        PUBLISHING_RECONCILE_INTERVAL="2",
    )
    api = stack.api(token)
    stack.start_web()
    stack.start_worker(threads=1)
    stack.initiate(api, slow.pk)
    beacon.wait()
    prefetched = stack.initiate(api, waiting.pk).json()
    client = redis.Redis.from_url(redis_url)
    queue = f"{namespace}:publishing-builds"
    wait_until(
        lambda: not client.llen(queue) and client.hlen(f"{queue}.msgs") >= 2,
        30,
        "the worker never prefetched the second message",
    )

    # When the worker dies with it, and another starts
    stack.signal("worker", signal.SIGKILL, group=True)
    stack.start_worker(name="worker-2")

    # Then the prefetched one is published once the dead worker's heartbeat has lapsed, not minutes later
    done = stack.wait_for(api, prefetched["id"], timeout=30)
    assert (done["status"], done["attempts"]) == ("published", 1), done


def test_jobs_lost_with_redis_data_are_sent_again_by_the_reconciler(
    private_redis, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given three queued publishings and no worker yet
    store = tmp_path / "store"
    projects = [make_project(f"file://{store}", slug=f"lost-{n}") for n in range(3)]
    _, token = owner_token
    stack = make_stack(private_redis.url, PUBLISHING_RECONCILE_GRACE="1", PUBLISHING_RECONCILE_INTERVAL="2")
    api = stack.serve(token, worker=False)
    ids = [stack.initiate(api, project.pk).json()["id"] for project in projects]

    # When Redis loses its data (our own server: never the shared one)
    redis.Redis.from_url(private_redis.url).flushall()

    # Then a worker's reconciler sends them again, and each is published once
    stack.start_worker()
    done = [stack.wait_for(api, i, timeout=60) for i in ids]
    assert [d["status"] for d in done] == ["published"] * 3
    assert [d["attempts"] for d in done] == [1] * 3
    assert len(artifacts(store)) == 3
    assert "queued without a message sent again" in stack.logs("worker", tail=None)
    assert not Publishing.objects.exclude(status="published").exists()
