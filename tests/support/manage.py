"""Running `manage.py` in a process of its own, as a deployment would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What production needs to start at all.
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "publisher_project.settings.production",
    "SECRET_KEY": "x9!" * 20 + "a-long-random-production-secret",
    "METRICS_TOKEN": "a-scrape-token-of-prometheus",
}


def run_manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py *args` with `env` over this environment (less its SECRET_KEY and settings module)."""
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "VAR_DIR": str(tmp_path), "BROKER_URL": "stub://", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
