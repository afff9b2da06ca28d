"""The build sandbox with real processes: runaway builds fail with their limit, and the worker lives on."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from rest_framework.authtoken.models import Token

from publishing.models import Project, Publishing
from publishing.selectors import log_text
from tests.factories import UserFactory
from tests.integration.beacon import processes_with
from tests.support.polling import wait_until, wait_while

pytestmark = pytest.mark.integration

SECRET = "sandbox-test-secret-do-not-leak"

# Each ends on its own within seconds even if no limit held: the fork bomb gives up after 4 s, the
# others meet their limit at once. The process limit is enforced on nobody, never on root.
FORK_BOMB = """\
import os, time
end = time.monotonic() + 4
while time.monotonic() < end:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""
RUNAWAYS = [
    ("fork bomb", FORK_BOMB, "BUILD_PROCESS_LIMIT"),
    ("memory hog", "blob = bytearray(1 << 30)", "BUILD_MEMORY_LIMIT"),
    ("endless loop", "while True: pass", "BUILD_CPU_LIMIT"),
    ("1 GiB of output", "import os\nfor _ in range(16384): os.write(1, b'x' * 65536)", "BUILD_OUTPUT_LIMIT"),
]


def test_runaway_builds_fail_with_their_limit_and_the_worker_lives_on(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path, sandbox_required: None
) -> None:
    # Given a root worker running sandboxed builds, with tiny limits and a secret in its environment
    _, token = owner_token
    stack = make_stack(
        redis_url,
        SECRET_KEY=SECRET,
        PUBLISHING_BUILD_SANDBOX="required",
        PUBLISHING_BUILD_TIMEOUT="10",
        PUBLISHING_BUILD_CPU_LIMIT="1",
        PUBLISHING_BUILD_MEMORY_LIMIT=str(200 * 1024**2),
        PUBLISHING_BUILD_PROCESS_LIMIT="20",
        PUBLISHING_BUILD_OUTPUT_LIMIT=str(64 * 1024),
    )
    api = stack.serve(token)
    project = make_project(f"file://{tmp_path / 'store'}")
    workers = set()

    # When a fork bomb, a memory hog, an endless loop and 1 GiB of output are built in turn
    for name, script, code in RUNAWAYS:
        Project.objects.filter(pk=project.pk).update(build_command=shlex.join(["python3", "-c", script]))
        response = stack.initiate(api, project.pk)
        assert response.status_code == 202, response.text
        done = stack.wait_for(api, response.json()["id"], timeout=30)

        # Then each fails with its limit's code
        assert (done["status"], done["error_code"]) == ("failed", code), f"{name}: {done}\n{stack.all_logs()}"
        workers.add(done["worker"])

    # And then an ordinary build, which also shows its environment and tries the worker's, publishes
    Project.objects.filter(pk=project.pk).update(
        build_command="sh -c 'env; cat /proc/$PPID/environ; python3 build.py'"
    )
    response = stack.initiate(api, project.pk)
    assert response.status_code == 202, response.text
    done = stack.wait_for(api, response.json()["id"], timeout=30)
    assert done["status"] == "published", f"{done}\n{stack.all_logs()}"
    workers.add(done["worker"])

    # on the same worker process, still running
    assert len(workers) == 1
    assert all(workers)
    assert stack.processes["worker"].poll() is None
    # and the build saw none of the worker's secrets
    log = log_text(Publishing.objects.get(pk=done["id"]))
    assert "PATH=" in log
    assert "build done" in log
    for variable in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BROKER_URL"):
        assert f"{variable}=" not in log
    assert SECRET not in log


# --- Attacks: each runs once unsandboxed, to show it works, and once in the sandbox, where it fails ---

# In the argv of every process an attack leaves behind (their sleep), unique to this test process:
# pytest-xdist runs the unsandboxed variants, whose loops do survive, beside the others.
MARKER = f"0.05{os.getpid()}"


def _members(uri: str) -> dict[str, bytes]:
    """The files of a published artifact, by their path inside the artifact folder."""
    with tarfile.open(uri.removeprefix("file://")) as archive:
        return {
            member.name.removeprefix("./"): archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }


def _marked_processes() -> list[int]:
    """Pids of processes anywhere on the host whose command line holds MARKER."""
    return processes_with(MARKER, but=())


def _kill_marked() -> None:
    for pid in _marked_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stack_env(sandboxed: bool) -> dict[str, str]:
    # Unsandboxed, a root worker builds as root (local settings): what a build could do without it.
    return {"PUBLISHING_BUILD_SANDBOX": "required" if sandboxed else "off", "SECRET_KEY": SECRET}


@pytest.mark.parametrize("sandboxed", [False, True], ids=["unsandboxed", "sandboxed"])
def test_a_build_copies_nothing_of_the_service_into_its_artifact(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path, sandbox_required: None, sandboxed: bool
) -> None:
    # Given a build that copies the service's state folder (the SQLite database, the store of every
    # tenant's artifacts) and the environment of every process it can see into its artifact
    _, token = owner_token
    stack = make_stack(redis_url, **_stack_env(sandboxed))
    api = stack.serve(token)
    store = tmp_path / "store"
    earlier = make_project(f"file://{store}", slug="earlier")
    assert stack.wait_for(api, stack.initiate(api, earlier.pk).json()["id"])["status"] == "published"
    var_dir = stack.env["VAR_DIR"]
    steal = (
        f"mkdir -p dist/var dist/store; cp -r {var_dir}/. dist/var/; cp -r {store}/. dist/store/; "
        "cat /proc/[0-9]*/environ > dist/environ; echo page > dist/index.html; true"
    )
    project = make_project(f"file://{store}", build_command=shlex.join(["sh", "-c", steal]))

    # When it is published
    done = stack.wait_for(api, stack.initiate(api, project.pk).json()["id"])
    assert done["status"] == "published", f"{done}\n{stack.all_logs()}"
    files = _members(done["artifact_uri"])

    # Then unsandboxed it carries the worker's secret and every artifact of the store; sandboxed,
    # only its own page and its own environment
    stolen = [name for name in files if name.startswith(("var/", "store/"))]
    if not sandboxed:
        assert SECRET.encode() in files["environ"]
        assert any(name.endswith(".tar.gz") for name in stolen)
        return
    assert stolen == []
    assert SECRET.encode() not in files["environ"]
    assert b"HOME=/build/home" in files["environ"]
    assert files["index.html"] == b"page\n"


@pytest.mark.parametrize("sandboxed", [False, True], ids=["unsandboxed", "sandboxed"])
def test_a_build_can_neither_outlive_itself_nor_touch_another_tenants_checkout(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path, sandbox_required: None, sandboxed: bool
) -> None:
    # Given an attacker's build that, for 4 s and then from a setsid loop that should outlive it,
    # overwrites the page of every other checkout it can find and copies their git configuration
    _, token = owner_token
    stack = make_stack(redis_url, **_stack_env(sandboxed))
    stack.start_web()
    stack.start_worker(threads=2)
    api = stack.api(token)
    store = tmp_path / "store"
    vandal = (
        f"for d in {stack.workspaces}/publishing-*/source; do "
        '[ "$d" = "$(pwd)" ] || { echo PWNED > "$d/site/index.html"; cat "$d/.git/config" >> stolen; }; '
        "done 2>/dev/null"
    )
    attack = (
        f"setsid sh -c 'while :; do {vandal}; sleep {MARKER}; done' >/dev/null 2>&1 & "
        f"end=$(($(date +%s) + 4)); while [ $(date +%s) -lt $end ]; do {vandal}; sleep {MARKER}; done; "
        "mkdir -p dist; touch stolen; cp stolen dist/; echo attacker > dist/index.html"
    )
    attacker = make_project(
        f"file://{store}", slug="attacker", build_command=shlex.join(["sh", "-c", attack])
    )
    victim_owner = UserFactory.create(username="victim")
    victim = make_project(f"file://{store}", slug="victim", build_args="--sleep 3")
    Project.objects.filter(pk=victim.pk).update(owner=victim_owner)
    victim_api = stack.api(Token.objects.create(user=victim_owner).key)

    # When the victim's build runs while the attacker's does, and again after it ended
    try:
        first = stack.initiate(api, attacker.pk).json()["id"]
        stack.wait_until(api, first, lambda body: "build" in body.get("log", ""))
        during = stack.initiate(victim_api, victim.pk).json()["id"]
        attacked = stack.wait_for(api, first)
        concurrent = stack.wait_for(victim_api, during)
        after = stack.wait_for(victim_api, stack.initiate(victim_api, victim.pk).json()["id"])
        left_running = _marked_processes()
    finally:
        _kill_marked()

    # Then unsandboxed the victim's published page is the attacker's text; sandboxed, the
    # attacker's loop died with its build, it found no other checkout, and the victim published
    # its own page both times
    for body in (attacked, concurrent, after):
        assert body["status"] == "published", f"{body}\n{stack.all_logs()}"
    pages = [_members(body["artifact_uri"])["index.html"] for body in (concurrent, after)]
    if not sandboxed:
        assert b"PWNED\n" in pages
        assert left_running
        return
    assert left_running == []
    assert pages == [b"<h1>Built</h1>\n", b"<h1>Built</h1>\n"]
    assert _members(attacked["artifact_uri"])["stolen"] == b""


def test_a_build_killed_with_its_worker_leaves_no_process_and_no_workspace(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path, sandbox_required: None
) -> None:
    # Given a sandboxed build that started a setsid loop and sleeps
    _, token = owner_token
    stack = make_stack(redis_url, **_stack_env(True), PUBLISHING_RECONCILE_INTERVAL="1")
    api = stack.serve(token)
    hang = f"setsid sh -c 'while :; do sleep {MARKER}; done' & sleep 600"
    project = make_project(f"file://{tmp_path / 'store'}", build_command=shlex.join(["sh", "-c", hang]))
    publishing = stack.initiate(api, project.pk).json()["id"]
    try:
        stack.wait_until(api, publishing, lambda body: body.get("status") == "building")
        wait_until(_marked_processes, 10, stack.all_logs)
        assert [p.name for p in stack.workspaces.iterdir()]

        # When its worker (the whole rundramatiq group) is SIGKILLed, and a new one starts
        stack.signal("worker", signal.SIGKILL, group=True)
        stack.wait_exit("worker", timeout=10)
        # Then nothing of the build runs on after its worker
        wait_while(_marked_processes, 10, lambda: f"the build ran on after its worker: {_marked_processes()}")
        stack.start_worker()
        # And the new worker removed its workspace (the log line reaches the file through the worker
        # master's pipe, after the removal)
        swept = "Removed 1 workspace(s) left by a worker that died"
        wait_until(
            lambda: not any(stack.workspaces.iterdir()) and swept in stack.logs("worker", tail=None),
            30,
            stack.all_logs,
            interval=0.1,
        )
    finally:
        _kill_marked()
    assert swept in stack.logs("worker", tail=None)


@pytest.mark.parametrize("network", ["unsandboxed", "none", "public"])
def test_a_build_reaches_nothing_of_the_host_directly_or_through_its_proxy(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path, sandbox_required: None, network: str
) -> None:
    # Given a build that tries the host's Redis, PostgreSQL and web port, directly and, where it
    # has one (`public` network), through its proxy
    _, token = owner_token
    env = _stack_env(network != "unsandboxed")
    stack = make_stack(
        redis_url, **env, PUBLISHING_BUILD_NETWORK="none" if network == "unsandboxed" else network
    )
    api = stack.serve(token)
    redis_port = int(urlsplit(redis_url).port or 6379) if redis_url.startswith("redis") else 6379
    ports = (redis_port, 5432, stack.port)
    probe = (
        "import os, socket, pathlib\n"
        "pathlib.Path('dist').mkdir()\n"
        "lines = []\n"
        f"for port in {ports!r}:\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
        "        lines.append(f'{port} open')\n"
        "    except OSError as exc:\n"
        "        lines.append(f'{port} {exc.strerror}')\n"
        "    if 'HTTP_PROXY' in os.environ:\n"
        "        proxy = socket.create_connection(('127.0.0.1', 3128), timeout=5)\n"
        "        proxy.sendall(f'CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n'.encode())\n"
        "        lines.append(f'{port} proxy ' + proxy.recv(1024).split(b'\\r\\n')[0].decode())\n"
        "pathlib.Path('dist/ports').write_text('\\n'.join(lines))\n"
    )
    project = make_project(f"file://{tmp_path / 'store'}", build_command=shlex.join(["python3", "-c", probe]))

    # When it is published
    done = stack.wait_for(api, stack.initiate(api, project.pk).json()["id"])
    assert done["status"] == "published", f"{done}\n{stack.all_logs()}"
    seen = _members(done["artifact_uri"])["ports"].decode().splitlines()

    # Then unsandboxed the web port answers; sandboxed, nothing does, and the proxy refuses each
    if network == "unsandboxed":
        assert f"{stack.port} open" in seen
        return
    expected = [f"{port} Connection refused" for port in ports]
    if network == "public":
        expected = [
            line
            for port in ports
            for line in (f"{port} Connection refused", f"{port} proxy HTTP/1.1 403 Forbidden")
        ]
    assert seen == expected
