"""A worker host started exactly as docs/deployment.md says: `python manage.py rundramatiq`, production
environment variables only (no DJANGO_SETTINGS_MODULE)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_LINE = "Worker settings: "


def test_a_worker_started_as_the_deployment_guide_says_runs_the_production_settings(
    database_url: str, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    # Given only what docs/deployment.md lists for a worker host: no DJANGO_SETTINGS_MODULE
    env = {
        "PATH": os.environ["PATH"],
        "SECRET_KEY": "a-production-secret-" * 3,
        "METRICS_TOKEN": "a-scrape-token-of-prometheus",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BROKER_NAMESPACE": namespace,
        "PUBLISHING_WORKER_NAME": "deployment-guide",
        "WORKER_METRICS_PORT": "0",
        "VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "worker.log"

    # When the worker starts the way the guide says
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "1"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: SETTINGS_LINE in log.read_text(errors="replace") or worker.poll() is not None,
            60,
            lambda: log.read_text(errors="replace"),
            interval=0.1,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    # Then it says at boot that it runs the production settings, DEBUG off
    text = log.read_text(errors="replace")
    line = next((line for line in text.splitlines() if SETTINGS_LINE in line), text)
    assert "Worker settings: publisher_project.settings.production (DEBUG off)" in line, text
