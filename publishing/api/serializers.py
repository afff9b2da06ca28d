from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any, ClassVar, cast

from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.relations import Hyperlink, PKOnlyObject

from publishing.api.links import Links
from publishing.models import CREDENTIAL_URL_FIELDS, SNAPSHOT_FIELDS, Attempt, Project, Publishing
from publishing.pipeline.stores import target_url_help
from publishing.redaction import redact_credentials, redacted_url, restore_credentials
from publishing.selectors import Waiting, projects_owned_by, waiting_of

# Text a job writes, which may quote such a URL.
JOB_TEXT_FIELDS = ("error_message", "artifact_uri", "log_excerpt")


def redacted(data: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """`data` (a serializer's output) with the credentials of every URL in `fields` shown as `***`."""
    for field in fields:
        if isinstance(data.get(field), str):
            data[field] = redact_credentials(data[field])
    return data


def urls_redacted(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the credentials of each URL a user may write them into shown as `***`."""
    for field in CREDENTIAL_URL_FIELDS:
        if data.get(field):
            data[field] = redacted_url(data[field])
    return data


class StrictCharField(serializers.CharField):
    """Takes only strings: DRF's CharField also turns numbers into text, which `type: string` forbids."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField, StrictCharField):
    """A slug given as a string."""


class ProjectSerializer(serializers.HyperlinkedModelSerializer[Project]):
    """A project. Credentials in its URLs (`https://user:token@host/…`) are kept but shown as `***`;
    a URL sent back as shown keeps them."""

    serializer_field_mapping = {
        **serializers.HyperlinkedModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.SlugField: StrictSlugField,
    }

    url = serializers.HyperlinkedIdentityField(view_name="project-detail")
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    slug = StrictSlugField(max_length=100, required=False, help_text="Defaults to the name, slugified.")
    webhook_secret = StrictCharField(
        max_length=128,
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Key of the HMAC-SHA256 `X-Publisher-Signature` of each delivery (16+ characters); "
        "required with a webhook URL, never shown back.",
    )
    webhook_secret_set = serializers.SerializerMethodField(
        help_text="Whether a webhook signing secret is stored (the secret itself is never shown)."
    )

    class Meta:
        model = Project
        fields = [
            "id",
            "url",
            "name",
            "slug",
            "owner",
            "repository_url",
            "ref",
            "build_command",
            "artifact_path",
            "target_url",
            "webhook_url",
            "webhook_secret",
            "webhook_secret_set",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "owner", "created_at", "updated_at"]
        # The model's defaults as the form's first values: a browser's form shows what an empty field means.
        extra_kwargs = {
            "target_url": {"help_text": target_url_help()},
            "ref": {"initial": Project._meta.get_field("ref").default},
            "artifact_path": {"initial": Project._meta.get_field("artifact_path").default},
        }

    def get_webhook_secret_set(self, project: Project) -> bool:
        return bool(project.webhook_secret)

    def to_representation(self, instance: Project) -> dict[str, Any]:
        return urls_redacted(super().to_representation(instance))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A client that sends back a URL as it read it (`https://***@host/...`), or edited but for
        # the stars, keeps the stored credentials rather than overwriting them with the stars.
        if self.instance is not None:
            for field in CREDENTIAL_URL_FIELDS:
                if field in attrs:
                    try:
                        attrs[field] = restore_credentials(attrs[field], getattr(self.instance, field))
                    except ValueError as exc:
                        raise serializers.ValidationError({field: str(exc)}) from exc
        return attrs


class FieldsBuiltOnce:
    """A model serializer whose fields are built once per class, then copied for each instance.

    ModelSerializer builds every field from the model's meta for each
    serializer it makes: half of rendering a publishing (docs/benchmarks.md).
    Each instance still gets fields of its own, deep copies, as DRF gives it
    its declared fields. For read-only serializers whose fields depend on the
    class alone, not on the instance or its context.
    """

    _built_fields: ClassVar[dict[str, serializers.Field[Any, Any, Any, Any]]]

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        built = type(self).__dict__.get("_built_fields")
        if built is None:
            # Two threads may both build them the first time: the same fields either way.
            built = super().get_fields()  # type: ignore[misc]
            type(self)._built_fields = built
        return copy.deepcopy(built)


class AttemptSerializer(FieldsBuiltOnce, serializers.ModelSerializer[Attempt]):
    """One run of the pipeline: who ran it, when, how it ended, and the end of its own log."""

    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Attempt
        fields = [
            "number",
            "worker",
            "started_at",
            "finished_at",
            "duration_seconds",
            "outcome",
            "error_code",
            "error_message",
            "commit_sha",
            "log_excerpt",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Attempt) -> dict[str, Any]:
        return redacted(super().to_representation(instance), JOB_TEXT_FIELDS)


class PublishingSettingsSerializer(serializers.ModelSerializer[Publishing]):
    """The project's settings a publishing runs with, copied when it was initiated."""

    class Meta:
        model = Publishing
        fields = list(SNAPSHOT_FIELDS)
        read_only_fields = fields

    def to_representation(self, instance: Publishing) -> dict[str, Any]:
        return urls_redacted(super().to_representation(instance))


class WaitingSerializer(serializers.Serializer[Waiting]):
    reason = serializers.ChoiceField(choices=["retry_backoff", "rate_limit", "queue"])
    until = serializers.DateTimeField(
        allow_null=True, help_text="The expected start; null: when a worker is free."
    )
    attempt = serializers.IntegerField(help_text="The try it waits for: 1, or a retry's.")
    max_attempts = serializers.IntegerField(help_text="Tries before a transient failure fails it for good.")


# DRF's own date-time field, unbound: the hand-rendered publishing formats them as its fields do.
DATETIME = serializers.DateTimeField()


class PublishingSerializer(FieldsBuiltOnce, serializers.HyperlinkedModelSerializer[Publishing]):
    url = serializers.HyperlinkedIdentityField(view_name="publishing-detail")
    # Null once the project is deleted: publishings outlive their project (SET_NULL).
    project: serializers.HyperlinkedRelatedField[Project] = serializers.HyperlinkedRelatedField(
        view_name="project-detail", read_only=True, allow_null=True
    )
    project_id = serializers.UUIDField(read_only=True, allow_null=True)
    requested_by = serializers.CharField(source="requested_by.get_username", read_only=True, default=None)
    cancel = serializers.HyperlinkedIdentityField(
        view_name="publishing-cancel", help_text="POST here to cancel (until it submits)."
    )
    retry = serializers.HyperlinkedIdentityField(
        view_name="publishing-retry", help_text="POST here to queue a failed or cancelled one again."
    )
    rerun = serializers.HyperlinkedIdentityField(
        view_name="publishing-rerun",
        help_text="POST here, once it has finished, to queue a new publishing of the commit it checked out.",
    )
    log_url = serializers.HyperlinkedIdentityField(
        view_name="publishing-log", help_text="GET its log here, and follow it with `?since=`."
    )
    waiting = serializers.SerializerMethodField(
        help_text="While queued, why it waits and until when: `retry_backoff` (a transient failure's retry), "
        "`rate_limit` (the limit on starts is reached) or `queue` (for a free worker; `until` null). "
        "`attempt` of `max_attempts` is the try it waits for. Null unless queued."
    )

    class Meta:
        model = Publishing
        fields = [
            "id",
            "url",
            "cancel",
            "retry",
            "rerun",
            "log_url",
            "project",
            "project_id",
            "requested_by",
            "status",
            "progress",
            "attempts",
            "error_code",
            "error_message",
            "requested_commit",
            "commit_sha",
            "commit_subject",
            "commit_author",
            "artifact_sha256",
            "artifact_size",
            "artifact_uri",
            "submission_ref",
            "message_id",
            "worker",
            "created_at",
            "queued_at",
            "not_before",
            "waiting",
            "started_at",
            "finished_at",
            "project_settings",
            "attempt_history",
        ]
        read_only_fields = fields

    project_settings = PublishingSettingsSerializer(
        source="*",
        read_only=True,
        help_text="What it builds and where it submits: the project's settings when it was initiated "
        "(a later change to the project applies to the next publishing). Credentials in URLs show as `***`.",
    )
    attempt_history = AttemptSerializer(many=True, read_only=True, help_text="Every run, oldest first.")

    def to_representation(self, instance: Publishing) -> dict[str, Any]:
        # By hand, not through the declared fields: DRF copying and running ~35 of them for each
        # publishing was a third of initiate's CPU. The fields still describe it (the OpenAPI schema,
        # the browsable API); tests/unit/test_serializers.py holds the two to the same output.
        links = Links(self.context["request"], self.context.get("format"))
        data = {name: self._value(instance, name, links) for name in self.Meta.fields}
        return redacted(data, JOB_TEXT_FIELDS)

    def drf_representation(self, instance: Publishing) -> dict[str, Any]:
        """What DRF renders from the declared fields: what to_representation must say."""
        return redacted(super().to_representation(instance), JOB_TEXT_FIELDS)

    def _value(self, publishing: Publishing, name: str, links: Links) -> Any:
        """The value of field `name` as its declared field renders it."""
        declared = self._declared_fields.get(name)
        if isinstance(declared, serializers.HyperlinkedIdentityField):
            return Hyperlink(links(cast(str, declared.view_name), publishing.pk), publishing)
        match name:
            case "id":
                return str(publishing.pk)
            case "project" | "project_id" if publishing.project_id is None:
                return None
            case "project":
                project = PKOnlyObject(publishing.project_id)
                return Hyperlink(links("project-detail", project.pk), project)
            case "project_id":
                return str(publishing.project_id)
            case "requested_by":
                user = publishing.requested_by
                return None if user is None else str(user.get_username())
            case "waiting":
                return self.get_waiting(publishing)
            case "project_settings":
                return urls_redacted({field: getattr(publishing, field) for field in SNAPSHOT_FIELDS})
            case "attempt_history":
                return list(AttemptSerializer(publishing.attempt_history.all(), many=True).data)
        value = getattr(publishing, name)
        if isinstance(value, datetime):
            return DATETIME.to_representation(value)
        # CharField renders str(value) (a status is a str enum); a null is null; integers are ints.
        return str(value) if isinstance(value, str) else value

    @extend_schema_field(WaitingSerializer(allow_null=True))
    def get_waiting(self, publishing: Publishing) -> dict[str, Any] | None:
        waiting = waiting_of(publishing)
        if waiting is None:
            return None
        # WaitingSerializer's fields, rendered by hand as to_representation does.
        return {
            "reason": waiting.reason,
            "until": None if waiting.until is None else DATETIME.to_representation(waiting.until),
            "attempt": waiting.attempt,
            "max_attempts": waiting.max_attempts,
        }


class PublishingListSerializer(PublishingSerializer):
    """The list leaves the settings and the attempts out: they can be large."""

    class Meta(PublishingSerializer.Meta):
        fields = [
            field
            for field in PublishingSerializer.Meta.fields
            if field not in ("project_settings", "attempt_history")
        ]
        read_only_fields = fields


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a string (DRF's own field also takes integers)."""

    def to_internal_value(self, data: object) -> uuid.UUID:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        value: uuid.UUID = super().to_internal_value(data)
        return value


@extend_schema_field(OpenApiTypes.UUID)
class ProjectChoiceField(serializers.ChoiceField):
    """A project id, strictly a UUID string; in the browsable API a list of the caller's projects.

    The choices only draw the form: any id is accepted here, and whether the
    caller may publish it is the service's answer (404 when not).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[], **kwargs)

    # The stubs type a ChoiceField's value as str; this one parses to a UUID like a UUIDField.
    def to_internal_value(self, data: Any) -> uuid.UUID:  # type: ignore[override]
        value: uuid.UUID = StrictUUIDField().run_validation(data)
        return value

    def to_representation(self, value: Any) -> str:
        return str(value)


class InitiateSerializer(serializers.Serializer[None]):
    project_id = ProjectChoiceField(label="Project", help_text="The project to publish (its id).")
    # Judged by the service (`pipeline.commits.parse_commit`), the one home of the rule.
    commit = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=255,
        trim_whitespace=False,
        help_text="Publish this commit instead of the head of the project's ref: a full commit id (40 hex "
        "digits) or a tag, in the history of the ref (else the publishing fails with COMMIT_NOT_FOUND). "
        "Publishing an earlier commit again gives the same artifact: a rollback.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            field = cast(ProjectChoiceField, self.fields["project_id"])
            field.choices = [(str(p.pk), f"{p.name} ({p.slug})") for p in projects_owned_by(user)]
