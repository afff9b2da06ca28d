"""`VAR_DIR/runlocal.json`: the broker a running `manage.py runlocal` uses, for the other commands to find.

Read by the local settings (which import no product module: this one imports nothing of Publisher's)
and written by runlocal. A record whose process is gone is stale and read as none.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

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


def write_record(var_dir: Path, record: RunlocalRecord) -> None:
    """Write the record whole or not at all: a reader never sees half of it."""
    var_dir.mkdir(parents=True, exist_ok=True)
    partial = var_dir / f".{FILE_NAME}.{record.pid}"
    partial.write_text(json.dumps(asdict(record)))
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
