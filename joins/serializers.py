"""JSON shapes of join attempts and hosts (CONTRACT section 5)."""

from __future__ import annotations

from rest_framework import serializers

from joins.models import Host, JoinAttempt


class JoinAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = JoinAttempt
        fields = [
            "id",
            "time",
            "token",
            "join_method",
            "remote_addr",
            "user_agent",
            "requested_host_id",
            "host_id",
            "account_id",
            "region",
            "instance_id",
            "pending_time",
            "roles",
            "node_name",
            "outcome",
            "error",
            "message",
            "reason",
            "checks",
            "duration_ms",
            "matched_rule",
            "tls_cert_serial",
            "ssh_cert_serial",
        ]


class JoinAttemptDetailSerializer(JoinAttemptSerializer):
    class Meta(JoinAttemptSerializer.Meta):
        fields = [*JoinAttemptSerializer.Meta.fields, "token_snapshot", "document"]


class HostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Host
        fields = [
            "host_id",
            "account_id",
            "region",
            "instance_id",
            "node_name",
            "roles",
            "token",
            "first_joined_at",
            "last_joined_at",
            "join_count",
            "tls_cert_serial",
            "ssh_cert_serial",
            "cert_expires",
            # Instance lifecycle (docs/extensions.md): set by `manage.py hosts reconcile`.
            "aws_state",
            "aws_state_checked_at",
            "retired_at",
            "revoked_at",
            "revocation_reason",
        ]


class ForgetHostSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True)
