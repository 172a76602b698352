"""Host workflows outside the join: forgetting a host so that its instance may join again."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.services import record_action
from joins.models import Host


class HostNotFoundError(Exception):
    code = "not_found"


def forget_host(
    host_id: str, *, actor: Any, reason: str, via: str = "console", remote_addr: str = ""
) -> None:
    """Remove a host from the registry so that its instance may join again; recorded.

    A reason is required: forgetting a host re-opens the door for a document of that instance.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required to forget a host")
    with transaction.atomic():
        host = Host.objects.select_for_update().filter(host_id=host_id).first()
        if host is None:
            raise HostNotFoundError(f"no host {host_id!r}")
        before = {
            "host_id": host.host_id,
            "account_id": host.account_id,
            "region": host.region,
            "instance_id": host.instance_id,
            "roles": host.roles,
            "token": host.token,
            "first_joined_at": host.first_joined_at.isoformat(),
            "tls_cert_serial": host.tls_cert_serial,
        }
        host.delete()
        record_action(
            actor=actor,
            action="host.forget",
            object_type="host",
            object_id=host_id,
            before=before,
            reason=reason,
            via=via,
            remote_addr=remote_addr,
        )
