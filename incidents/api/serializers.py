"""Request and response bodies of the agent API.

Unknown fields in a request are ignored, not refused: an agent newer than the portal may send fields this version
does not know yet, and free-form data belongs in a heartbeat's `details`. A misspelt required field is still caught,
because the field it was meant to be is then missing.
"""

from __future__ import annotations

from rest_framework import serializers

from incidents.models import Agent, Command, CommandStatus, Heartbeat, HeartbeatStatus

# --- errors --------------------------------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What was wrong, naming the field or the state when there is one.")


class ValidationErrorSerializer(ErrorSerializer):
    field = serializers.CharField(required=False, help_text="Dotted path of the first bad field.")
    errors = serializers.JSONField(required=False, help_text="Every problem, by field.")


class ConflictSerializer(ErrorSerializer):
    current = serializers.CharField(allow_null=True, help_text="The command's status now.")


class RateLimitedSerializer(ErrorSerializer):
    retry_after = serializers.IntegerField(help_text="Seconds to wait; the Retry-After header says the same.")


# --- enrollment ----------------------------------------------------------------------------------------------------


class EnrollRequestSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200, help_text="The enrollment token, tfe_<prefix>_<secret>.")
    name = serializers.CharField(max_length=100, help_text="Unique across the portal.")
    hostname = serializers.CharField(max_length=255)
    version = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    region = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    pop = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    services = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list, max_length=200
    )


class AgentSerializer(serializers.ModelSerializer):
    environment = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Agent
        fields = ["id", "name", "environment", "hostname", "version", "region", "pop", "services", "enabled",
                  "created_at"]
        read_only_fields = fields


class EnrollResponseSerializer(serializers.Serializer):
    agent = AgentSerializer()
    key = serializers.CharField(help_text="The agent key, tfk_<prefix>_<secret>. Shown once; only its HMAC is kept.")
    scopes = serializers.ListField(child=serializers.CharField())


# --- heartbeats ----------------------------------------------------------------------------------------------------


class HeartbeatRequestSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=HeartbeatStatus.choices)
    version = serializers.CharField(
        max_length=50, required=False, allow_blank=True, default="", help_text="Blank leaves the version unchanged."
    )
    deployment = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, help_text="The deployment the agent runs."
    )
    details = serializers.DictField(required=False, default=dict, help_text="Any JSON object.")
    agent = serializers.CharField(
        required=False, max_length=100, help_text="Optional. When given, it must be the key's own agent (else 403)."
    )
    environment = serializers.CharField(
        required=False, max_length=64, help_text="Optional. When given, it must be the key's environment (else 403)."
    )


class HeartbeatSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Heartbeat
        fields = ["id", "agent", "status", "version", "deployment", "details", "received_at"]
        read_only_fields = fields


# --- commands ------------------------------------------------------------------------------------------------------


class CommandSerializer(serializers.ModelSerializer):
    class Meta:
        model = Command
        fields = ["id", "kind", "payload", "idempotency_key", "status", "created_at", "deadline", "delivered_at",
                  "lease_until", "delivery_count", "acknowledged_at", "output"]
        read_only_fields = fields
        extra_kwargs = {
            "idempotency_key": {"help_text": "Unique per command; a signed credential in the payload names it as "
                                             "its command_key, and the agent checks that they match."},
        }


class CommandListSerializer(serializers.Serializer):
    commands = CommandSerializer(many=True)
    lease_seconds = serializers.IntegerField(help_text="How long each returned command stays leased to this agent.")


class AckRequestSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[CommandStatus.SUCCEEDED, CommandStatus.FAILED])
    output = serializers.JSONField(required=False, default=dict, help_text="Any JSON value; kept with the command.")


# --- signing keys --------------------------------------------------------------------------------------------------


class SigningKeySerializer(serializers.Serializer):
    key_id = serializers.CharField(help_text='"ed25519:" and the first 16 hex digits of SHA-256(raw public key).')
    algorithm = serializers.ChoiceField(choices=["Ed25519"])
    public_key = serializers.CharField(help_text="The raw 32-byte Ed25519 public key, standard base64.")
    active = serializers.BooleanField(
        help_text="True for the key that signs new credentials; the others verify credentials signed before a rotation."
    )


class SigningKeyListSerializer(serializers.Serializer):
    keys = SigningKeySerializer(many=True, help_text="Every key a credential may be signed with, the active one first.")
