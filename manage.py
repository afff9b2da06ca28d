#!/usr/bin/env python
"""Django's command-line utility; defaults to the production settings.

A worker or web process started on a server without DJANGO_SETTINGS_MODULE must never run the
local settings (DEBUG, private targets allowed). `make run`, `make migrate` and `make demo` pick
the local settings themselves; the tests pick `test`.
"""

import os
import sys

PRODUCTION = "publisher_project.settings.production"
LOCAL = "publisher_project.settings.local"


def main() -> None:
    # `--settings` wins over the environment, as in Django's own parsing (which comes later).
    option = _settings_option(sys.argv[1:])
    if option:
        os.environ["DJANGO_SETTINGS_MODULE"] = option
    chosen = "DJANGO_SETTINGS_MODULE" in os.environ
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", PRODUCTION)
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        # Loaded here rather than inside Django's command lookup, which turns a refusal of the
        # settings into a traceback (or an "Unknown command").
        settings.INSTALLED_APPS  # noqa: B018
    except ImproperlyConfigured as exc:
        sys.exit(f"manage.py: {exc}\n{_hint(os.environ['DJANGO_SETTINGS_MODULE'], chosen=chosen)}")
    execute_from_command_line(sys.argv)


def _settings_option(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg.startswith("--settings="):
            return arg.partition("=")[2]
        if arg == "--settings" and index + 1 < len(args):
            return args[index + 1]
    return None


def _hint(module: str, *, chosen: bool) -> str:
    which = f"DJANGO_SETTINGS_MODULE={module}" if chosen else f"DJANGO_SETTINGS_MODULE is not set: {module}"
    if module != PRODUCTION:
        return f"({which})"
    return (
        f"({which}.)\n"
        f"  On a development machine: export DJANGO_SETTINGS_MODULE={LOCAL}\n"
        "    (`make run`, `make migrate` and `make demo` do it for you).\n"
        "  In production: set SECRET_KEY, METRICS_TOKEN and the rest of the production environment\n"
        "    (README.md, Configuration)."
    )


if __name__ == "__main__":
    main()
