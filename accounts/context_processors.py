"""Template flags for the signed-in user's role."""

from django.http import HttpRequest

from accounts.roles import can_manage, can_view


def roles(request: HttpRequest) -> dict[str, bool]:
    user = getattr(request, "user", None)
    return {"can_manage": can_manage(user), "can_view": can_view(user)}
