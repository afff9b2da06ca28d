"""`VAR_DIR/runlocal.json`: the broker a running `manage.py runlocal` uses, for the other commands to find.

Read by the local settings (which import no product module: this one imports nothing of Publisher's)
and written by runlocal. A record whose process is gone (or is not the one that wrote it) is stale and
read as none; one that is not this user's own, or that others may write, is never trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

FILE_NAME = "runlocal.json"


@dataclass(frozen=True)
class RunlocalRecord:
    pid: int
    broker_url: str
    redis_url: str
    port: int
    # When the process started (clock ticks after boot; None without /proc): a reused pid's differs.
    started: int | None


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot; None when /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        # Field 22; the command name (field 2, in parentheses) may hold spaces and ")".
        return int(stat.rpartition(b")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def record_path(var_dir: Path) -> Path:
    return var_dir / FILE_NAME


def current_record(var_dir: Path) -> RunlocalRecord | None:
    """The record of the runlocal running on `var_dir`; None for none, a stale or an unreadable one."""
    try:
        data = json.loads(_own_file_text(record_path(var_dir)))
        record = RunlocalRecord(
            pid=int(data["pid"]),
            broker_url=str(data["broker_url"]),
            redis_url=str(data["redis_url"]),
            port=int(data["port"]),
            started=None if data.get("started") is None else int(data["started"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if _runs_runlocal(record.pid, record.started) else None


def _own_file_text(path: Path) -> str:
    """The text of `path` if this user owns it and no one else may write it; OSError otherwise.

    Anyone who could write the record could send this user's jobs, and their credentials, to a broker
    of theirs. Checked on the file opened, not on its name, so it cannot be swapped in between.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as opened:
        status = os.fstat(fd)
        if status.st_uid != os.getuid() or status.st_mode & 0o022:
            raise PermissionError(f"{path} is not this user's own")
        return opened.read()


def already_running(record: RunlocalRecord, broker_url: str) -> str:
    """What a second runlocal says before it exits; `broker_url` is the record's, as it may be shown."""
    return (
        f"runlocal already runs (pid {record.pid}) on http://127.0.0.1:{record.port}/ with its broker "
        f"at {broker_url}: stop that one first (Ctrl-C in its terminal)"
    )


def write_record(var_dir: Path, record: RunlocalRecord) -> None:
    """Write the record whole or not at all: a reader never sees half of it."""
    var_dir.mkdir(parents=True, exist_ok=True)
    partial = var_dir / f".{FILE_NAME}.{record.pid}"
    # Created anew, never through a link another user left in its place; a crashed writer's leftover
    # (pids are reused) goes first.
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    # Readable by its owner only: a REDIS_URL may carry a password.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(partial, flags, 0o600), "w") as out:
        out.write(json.dumps(asdict(record)))
    os.replace(partial, record_path(var_dir))


def remove_record(var_dir: Path, pid: int) -> None:
    """Remove the record if it is `pid`'s (a second runlocal's refusal must not remove the first's)."""
    try:
        owner = int(json.loads(record_path(var_dir).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if owner == pid:
        with contextlib.suppress(FileNotFoundError):
            record_path(var_dir).unlink()


def _runs_runlocal(pid: int, started: int | None) -> bool:
    if not Path("/proc/self").exists():
        # No /proc (not Linux): a live pid of this user's is the best sign there is.
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    # The pid alone could be another process's by now (pids are reused after a crash): it must be this
    # user's, have started when the record says, and have `runlocal` an argument of its own
    # (`manage.py runlocal`).
    try:
        if Path(f"/proc/{pid}").stat().st_uid != os.getuid():
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return started is not None and process_start(pid) == started and b"runlocal" in cmdline.split(b"\0")


if __name__ == "__main__":
    # `python -m publisher_project.runlocal_record VAR_DIR`: `make run` asks before it migrates and
    # bootstraps, so that a second one stops before printing a login for a server it will not start.
    running = current_record(Path(sys.argv[1]))
    if running is not None:
        # (publishing.redaction is out of reach here, the settings' side of the import contract.) The
        # query goes: it may carry `password=`, and the scheme, host, port and database say which broker.
        parts = urlsplit(running.broker_url)._replace(query="")
        if "@" in parts.netloc:
            # The host as written: `[::1]` stays bracketed, and no port is added.
            parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
        sys.stderr.write(already_running(running, parts.geturl()) + "\n")
        sys.exit(1)
