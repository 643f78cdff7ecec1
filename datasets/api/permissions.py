"""Who may reach what. Every object is reached through its project, and a project the caller
has no part in does not exist for them: 404, never 403, so ids of other projects leak nothing.
Inside a project, an action the caller's role does not allow is a 403.

Roles (``datasets.selectors.project_role``): owner, requester, researcher; superusers act as
staff with every right. Plain ``is_staff`` without a membership gives nothing here.
"""
from __future__ import annotations

from rest_framework.exceptions import NotFound, PermissionDenied

from datasets.models import Project
from datasets.selectors import project_role

READ = frozenset({"owner", "requester", "researcher", "staff"})
EXPORT = frozenset({"owner", "requester", "researcher", "staff"})
MANAGE = frozenset({"owner", "requester", "staff"})

ACTIONS = {READ: "read", EXPORT: "make exports", MANAGE: "add images"}


def role_of(*, project: Project, user) -> str | None:
    if getattr(user, "is_superuser", False) and user.is_active:
        return "staff"
    return project_role(project=project, user=user)


def project_for(*, user, project_id: int, allowed: frozenset[str] = READ) -> tuple[Project, str]:
    """The project if the user has a part in it, else NotFound; PermissionDenied for the role."""
    project = Project.objects.select_related("owner").filter(pk=project_id).first()
    role = role_of(project=project, user=user) if project is not None else None
    if role is None:
        raise NotFound("No such project.")
    if role not in allowed:
        raise PermissionDenied(f"As {role} of this project you cannot {ACTIONS.get(allowed, 'do this')}.")
    return project, role
