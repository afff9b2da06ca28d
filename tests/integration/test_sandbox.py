"""The build sandbox with real processes: runaway builds fail with their limit, and the worker lives on."""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from publishing.models import Project, Publishing

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


@pytest.fixture
def workspaces() -> Iterator[Path]:
    """A workspace folder the build user can reach (pytest's own temporary folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="publisher-sandbox-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(shutil.which("python3") is None, reason="the builds run python3 from PATH")
def test_runaway_builds_fail_with_their_limit_and_the_worker_lives_on(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path, workspaces: Path, builds_as_nobody: None
) -> None:
    # Given a root worker running builds as nobody, with tiny limits and a secret in its environment
    _, token = owner_token
    stack = make_stack(
        redis_url,
        SECRET_KEY=SECRET,
        PUBLISHING_BUILD_USER="nobody",
        PUBLISHING_WORKSPACE_DIR=str(workspaces),
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
    log = Publishing.objects.get(pk=done["id"]).log
    assert "PATH=" in log
    assert "build done" in log
    assert "Permission denied" in log
    for variable in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BROKER_URL"):
        assert f"{variable}=" not in log
    assert SECRET not in log
