"""The tools' records in the requester console: read-only, since answers come from workers."""
from django.contrib import admin
from django.utils.html import format_html

from frontend.models import TaskAnswer, TaskItem, TrainingResult, VerificationVote
from frontend.services import task_path


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TaskItem)
class TaskItemAdmin(ReadOnly):
    list_display = ["id", "kind", "project", "assignment_id", "created_at", "link"]
    list_filter = ["kind", "project"]
    search_fields = ["assignment_id"]

    @admin.display(description="page")
    def link(self, obj):
        return format_html('<a href="{}">open</a>', task_path(task=obj))


@admin.register(TaskAnswer)
class TaskAnswerAdmin(ReadOnly):
    list_display = ["id", "kind", "task", "worker_id", "assignment_id", "attempt", "summary", "created_at"]
    list_filter = ["kind"]
    search_fields = ["worker_id", "assignment_id", "hit_id"]
    list_select_related = ["task"]


@admin.register(TrainingResult)
class TrainingResultAdmin(ReadOnly):
    list_display = ["id", "project", "worker_id", "passed", "min_iou", "threshold", "created_at"]
    list_filter = ["passed", "project"]
    search_fields = ["worker_id"]


@admin.register(VerificationVote)
class VerificationVoteAdmin(ReadOnly):
    list_display = ["id", "polygon", "accept", "made_by", "assignment_ref", "created_at"]
    list_filter = ["accept"]
    search_fields = ["made_by", "assignment_ref"]
