"""Finding a build's processes from outside its sandbox, by a token in their command line.

A sandboxed build can write nothing outside its checkout, and the pids it sees are its own PID
namespace's; the host's /proc still lists its processes with their command lines.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from tests.support.polling import wait_until


def processes_with(token: str, *, but: tuple[str, ...] = ("bwrap",)) -> list[int]:
    """Host pids of the live processes whose command line holds `token`, except those of the
    programs named in `but` (bwrap's command line repeats the build's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            program = Path(cmdline.split(b"\0")[0].decode()).name
            if token.encode() in cmdline and state != "Z" and program not in but:
                found.append(int(entry.name))
    return found


class BuildBeacon:
    """`--beacon <token>` for a build's arguments; `wait()` gives the host pid of each new build using it."""

    def __init__(self) -> None:
        self.token = f"beacon-{uuid.uuid4().hex}"
        self._seen: set[int] = set()

    @property
    def args(self) -> str:
        return f"--beacon {self.token}"

    def wait(self, timeout: float = 30) -> int:
        """The host pid of a build that started since the last call."""
        fresh = wait_until(
            lambda: [pid for pid in processes_with(self.token) if pid not in self._seen],
            timeout,
            f"no build with {self.token} started",
        )
        self._seen.update(fresh)
        return fresh[0]


def process_alive(pid: int) -> bool:
    """True while a process `pid` exists (a zombie included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
