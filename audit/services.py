"""Recording administrative actions, from any entry point."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from audit.models import AdminAction


def record_action(
    *,
    actor: Any,
    action: str,
    object_type: str,
    object_id: str,
    before: Any = None,
    after: Any = None,
    reason: str = "",
    remote_addr: str = "",
    via: str = "console",
) -> AdminAction:
    """Append one row to the admin action log. Call inside the transaction of the change itself,
    so that a change and its record commit or roll back together."""
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    return AdminAction.objects.create(
        time=timezone.now(),
        actor=actor if is_user else None,
        actor_name=actor.get_username() if is_user else (str(actor) if actor else "system"),
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        reason=reason,
        remote_addr=remote_addr,
        via=via,
    )
