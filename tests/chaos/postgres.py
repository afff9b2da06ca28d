"""A private PostgreSQL server in a temporary folder, free to stop, crash and restart.

Never the machine's shared server: `initdb` makes a cluster of its own on a
free loopback port. PostgreSQL refuses to run as root, so when we are root
the server runs as the `postgres` OS user (which owns the folder).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg

from publishing.redis_server import free_port

DATABASE = "publisher"


class PostgresMissing(RuntimeError):
    """No initdb / pg_ctl on this machine."""


def postgres_bindir() -> Path:
    """Where initdb, pg_ctl and postgres live; raises PostgresMissing when they are nowhere."""
    candidates: list[Path] = []
    try:
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
        )
        candidates.append(Path(found.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    # Debian installs the server binaries off PATH, one folder per major version: newest first.
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    raise PostgresMissing("initdb/pg_ctl not found: install PostgreSQL (apt-get install postgresql)")


class PostgresServer:
    """initdb once, then start, stop (fast or immediate, i.e. a crash) and start again on the same port."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self.port = port or free_port()
        # Its own folder under /tmp, not pytest's (mode 700, root's: the postgres user could not enter it).
        self.root = Path(tempfile.mkdtemp(prefix="publisher-chaos-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        result = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}{result.stdout}"
            )

    def _own(self, path: Path) -> None:
        if self._as_postgres:
            shutil.chown(path, "postgres", "postgres")

    def start(self) -> PostgresServer:
        """Create the cluster and the database on first use; start the server and wait until it answers."""
        first = not self.data.exists()
        if first:
            self._own(self.root)
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
            # Durability against a power cut is not what is tested: a stopped or crashed server,
            # on a machine that stays up, loses nothing with fsync off (each commit still writes
            # its WAL to the kernel). Not synchronous_commit=off: a crash would forget commits.
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        if first:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return self

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self, *, mode: str = "fast") -> None:
        """`fast`: a clean shutdown, clients disconnected; `immediate`: a crash, recovery at next start."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, *, mode: str = "fast", down_for: float = 0.0) -> None:
        self.stop(mode=mode)
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        """Stop the server (if up) and remove its folder."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()
