"""Create a demo user, a demo git repository and a project that publishes it (local use only)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.authtoken.models import Token

from publishing.management.development import refuse_in_production
from publishing.models import Project

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "publish-me"  # noqa: S105 - a documented local demo login

BUILD_SCRIPT = '''\
"""Demo build: renders dist/index.html from site/."""
import pathlib

src = pathlib.Path("site/index.html").read_text()
dist = pathlib.Path("dist")
dist.mkdir(exist_ok=True)
(dist / "index.html").write_text(src.replace("{{ title }}", "Hello from Publisher"))
print("built", dist / "index.html")
'''


class Command(BaseCommand):
    help = "Create (or reuse) the demo user and a demo project publishing a local git repository."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="Port shown in the login hint.")

    def handle(self, *args: Any, port: int, **options: Any) -> None:
        # A superuser with a published password: never on a production database.
        refuse_in_production("bootstrap_demo")
        var = Path(settings.VAR_DIR)
        source = var / "demo-source"
        store = var / "store"
        store.mkdir(parents=True, exist_ok=True)
        if not (source / ".git").exists():
            self._make_repository(source)

        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        token, _ = Token.objects.get_or_create(user=user)
        project, _ = Project.objects.update_or_create(
            owner=user,
            slug="demo-site",
            defaults={
                "name": "Demo site",
                "repository_url": str(source),
                "ref": "main",
                "build_command": "python3 build.py",
                "artifact_path": "dist",
                "target_url": f"file://{store}",
            },
        )
        self.stdout.write(
            self.style.SUCCESS("Demo ready.")
            + f"\n  log in:  http://127.0.0.1:{port}/api/v1/ (or /admin/)"
            + f" as {DEMO_USERNAME} / {DEMO_PASSWORD}"
            + f"\n  token:   {token.key}"
            + f"\n  project: {project.pk} ({project.name}) -> {project.target_url}\n"
        )

    def _make_repository(self, source: Path) -> None:
        (source / "site").mkdir(parents=True, exist_ok=True)
        (source / "site" / "index.html").write_text("<h1>{{ title }}</h1>\n")
        (source / "build.py").write_text(BUILD_SCRIPT)
        git = ["git", "-c", "user.name=Publisher demo", "-c", "user.email=demo@example.invalid"]
        subprocess.run(["git", "init", "--quiet", "-b", "main", str(source)], check=True)
        subprocess.run([*git, "-C", str(source), "add", "."], check=True)
        subprocess.run([*git, "-C", str(source), "commit", "--quiet", "-m", "Demo site"], check=True)
