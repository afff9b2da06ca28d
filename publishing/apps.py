from importlib import import_module
from pathlib import Path

from django.apps import AppConfig


class PublishingConfig(AppConfig):
    name = "publishing"
    verbose_name = "Publishing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, as Django asks of ready(): these load the models.
        from django.conf import settings
        from django.contrib.auth.signals import user_logged_in

        from publishing import hygiene
        from publishing.api import throttling
        from publishing.services import webhooks
        from publishing.signals import publishing_finished

        # Every process of the service (web workers, Dramatiq workers, commands): nothing it holds
        # or writes is readable by another user, or by an unsandboxed build of its own uid.
        hygiene.harden_process()
        database = settings.DATABASES["default"]
        sqlite = database["ENGINE"] == "django.db.backends.sqlite3" and database["NAME"] != ":memory:"
        hygiene.private_state(settings.VAR_DIR, [Path(database["NAME"])] if sqlite else [])

        # Declares the actors on the broker django-dramatiq has set up, in every process: the web tier
        # sends their messages (built by publishing.jobs, which the broker's queues must know), and
        # rundramatiq runs them.
        import_module("publishing.tasks")
        publishing_finished.connect(webhooks.on_publishing_finished, dispatch_uid="publishing.webhooks")
        # A login page's successful login gives back what its attempt spent of the login budgets.
        user_logged_in.connect(throttling.on_user_logged_in, dispatch_uid="publishing.login-throttle")
