"""`VAR_DIR/runlocal.json`: the broker a running `manage.py runlocal` uses, for the other commands to find.

Read by the local settings (which import no product module: this one imports nothing of Publisher's)
and written by runlocal. A record whose process is gone is stale and read as none.
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


def record_path(var_dir: Path) -> Path:
    return var_dir / FILE_NAME


def current_record(var_dir: Path) -> RunlocalRecord | None:
    """The record of the runlocal running on `var_dir`; None for none, a stale or an unreadable one."""
    try:
        data = json.loads(record_path(var_dir).read_text())
        record = RunlocalRecord(
            pid=int(data["pid"]),
            broker_url=str(data["broker_url"]),
            redis_url=str(data["redis_url"]),
            port=int(data["port"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if _runs_runlocal(record.pid) else None


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
    # Readable by its owner only: a REDIS_URL may carry a password.
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
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


def _runs_runlocal(pid: int) -> bool:
    if not Path("/proc/self").exists():
        # No /proc (not Linux): a live pid is the best sign there is.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The pid alone could be another process's by now (pids are reused after a crash): its command line
    # says, `runlocal` an argument of its own (`manage.py runlocal`).
    try:
        return b"runlocal" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


if __name__ == "__main__":
    # `python -m publisher_project.runlocal_record VAR_DIR`: `make run` asks before it migrates and
    # bootstraps, so that a second one stops before printing a login for a server it will not start.
    running = current_record(Path(sys.argv[1]))
    if running is not None:
        # (publishing.redaction is out of reach here, the settings' side of the import contract.)
        parts = urlsplit(running.broker_url)
        if parts.password:
            parts = parts._replace(netloc=f"***@{parts.hostname}:{parts.port}")
        sys.stderr.write(already_running(running, parts.geturl()) + "\n")
        sys.exit(1)
