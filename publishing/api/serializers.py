from __future__ import annotations

import uuid

from rest_framework import serializers

from publishing.models import Project, Publishing


class ProjectSerializer(serializers.HyperlinkedModelSerializer[Project]):
    url = serializers.HyperlinkedIdentityField(view_name="project-detail")
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    slug = serializers.SlugField(max_length=100, required=False, help_text="Defaults to the name, slugified.")

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
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "owner", "created_at", "updated_at"]


class PublishingSerializer(serializers.HyperlinkedModelSerializer[Publishing]):
    url = serializers.HyperlinkedIdentityField(view_name="publishing-detail")
    project: serializers.HyperlinkedRelatedField[Project] = serializers.HyperlinkedRelatedField(
        view_name="project-detail", read_only=True
    )
    project_id = serializers.UUIDField(read_only=True, allow_null=True)
    requested_by = serializers.CharField(source="requested_by.get_username", read_only=True, default=None)

    class Meta:
        model = Publishing
        fields = [
            "id",
            "url",
            "project",
            "project_id",
            "requested_by",
            "status",
            "progress",
            "attempts",
            "error_code",
            "error_message",
            "artifact_sha256",
            "artifact_size",
            "artifact_uri",
            "submission_ref",
            "message_id",
            "worker",
            "created_at",
            "queued_at",
            "not_before",
            "started_at",
            "finished_at",
            "log",
        ]
        read_only_fields = fields


class PublishingListSerializer(PublishingSerializer):
    """The list leaves the log out: it can be large."""

    class Meta(PublishingSerializer.Meta):
        fields = [field for field in PublishingSerializer.Meta.fields if field != "log"]
        read_only_fields = fields


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a string (DRF's own field also takes integers)."""

    def to_internal_value(self, data: object) -> uuid.UUID:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        value: uuid.UUID = super().to_internal_value(data)
        return value


class InitiateSerializer(serializers.Serializer[None]):
    project_id = StrictUUIDField(help_text="The project to publish.")


class TokenRequestSerializer(serializers.Serializer[None]):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenSerializer(serializers.Serializer[None]):
    token = serializers.CharField()


HEALTH_STATES = ["ok", "unavailable"]


class HealthSerializer(serializers.Serializer[None]):
    status = serializers.ChoiceField(choices=HEALTH_STATES)
    database = serializers.ChoiceField(choices=HEALTH_STATES)
    broker = serializers.ChoiceField(choices=HEALTH_STATES)


class ErrorSerializer(serializers.Serializer[None]):
    code = serializers.CharField()
    detail = serializers.CharField()


class EmptySerializer(serializers.Serializer[None]):
    """No body: the browsable API shows a bare POST button."""
