"""The bodies that are no model: the error envelope, the token, the health check, and none at all."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


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
    code = serializers.CharField(help_text="Stable, for programs: VALIDATION_ERROR, NOT_FOUND, CONFLICT, …")
    detail = serializers.CharField(help_text="For people: what went wrong, in one sentence.")
    active_id = serializers.UUIDField(
        required=False, help_text="CONFLICT only, when another publishing is active: its id."
    )
    active_url = serializers.URLField(
        required=False, help_text="With `active_id`: the active publishing's URL in this API."
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # Added here: as a class attribute it would hide Serializer.errors.
        fields = super().get_fields()
        fields["errors"] = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            required=False,
            help_text="VALIDATION_ERROR only: the messages of each field.",
        )
        return fields


class EmptySerializer(serializers.Serializer[None]):
    """No body: the browsable API's form is its button alone."""
