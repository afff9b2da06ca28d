from django.apps import AppConfig


class PublishingConfig(AppConfig):
    name = "publishing"
    verbose_name = "Publishing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from publishing import webhooks
        from publishing.signals import publishing_finished

        publishing_finished.connect(webhooks.on_publishing_finished, dispatch_uid="publishing.webhooks")
