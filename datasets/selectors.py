"""Read queries of the datasets app."""
from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from datasets.models import Membership, Project


def project_list_for_user(*, user) -> QuerySet[Project]:
    """Projects a user may see: owned, or shared through a membership. Staff see all."""
    if not getattr(user, "is_authenticated", False):
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(Q(owner=user) | Q(memberships__user=user)).distinct()


def project_role(*, project: Project, user) -> str | None:
    """'owner', 'requester', 'researcher', or None when the user has no part in the project."""
    if not getattr(user, "is_authenticated", False):
        return None
    if project.owner_id == user.pk:
        return "owner"
    membership = Membership.objects.filter(project=project, user=user).only("role").first()
    return membership.role if membership else None


def project_summaries(*, user) -> QuerySet[Project]:
    return project_list_for_user(user=user).annotate(
        image_count=Count("images", distinct=True),
        category_count=Count("categories", distinct=True),
    )
