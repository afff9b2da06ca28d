from pathlib import Path

from django.apps import AppConfig


class PublishingConfig(AppConfig):
    name = "publishing"
    verbose_name = "Publishing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from publishing import hygiene, webhooks
        from publishing.signals import publishing_finished

        # Every process of the service (web workers, Dramatiq workers, commands): nothing it holds
        # or writes is readable by another user, or by an unsandboxed build of its own uid.
        hygiene.harden_process()
        database = settings.DATABASES["default"]
        sqlite = database["ENGINE"] == "django.db.backends.sqlite3" and database["NAME"] != ":memory:"
        hygiene.private_state(settings.VAR_DIR, [Path(database["NAME"])] if sqlite else [])

        publishing_finished.connect(webhooks.on_publishing_finished, dispatch_uid="publishing.webhooks")
