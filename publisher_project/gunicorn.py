"""gunicorn's configuration hooks (`gunicorn -c python:publisher_project.gunicorn`)."""

from __future__ import annotations

from typing import Any

from publishing.hygiene import harden_process


def on_starting(server: Any) -> None:
    """The master, before it forks a worker: non-dumpable (its workers inherit it), umask 077."""
    harden_process()
