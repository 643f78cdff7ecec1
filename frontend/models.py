"""The labeling tools' own records: the task items the crowd layer hands out, the answers the
tools post back, verification votes and training results.

A ``TaskItem`` is the contract with the crowd layer: it names the tool, the project and exactly
which things a worker works on. ``frontend.services.task_create`` makes one and returns the URL
(with a signed token) that a HIT's ExternalQuestion points at.
"""
from __future__ import annotations

from django.db import models
from django.db.models import Q


class Kind(models.TextChoices):
    CATEGORIES = "categories", "Category labeling"
    SPOTTING = "spotting", "Instance spotting"
    SEGMENTATION = "segmentation", "Segmentation"
    VERIFICATION = "verification", "Verification"
    TRAINING = "training", "Segmentation training"


class TaskItem(models.Model):
    """One unit of work for one tool.

    - categories: ``image_ids`` (a batch of images), every category of the project.
    - spotting: one image (``image_ids[0]``) and ``category``.
    - segmentation: ``point`` (its image and category follow from it).
    - verification: ``polygon_ids`` (outlines to accept or reject).
    - training: ``polygon_ids`` (gold outlines whose parts are never sent to the browser).

    ``assignment_id``, when set, is the only assignment that may answer.
    """

    kind = models.CharField(max_length=16, choices=Kind.choices)
    project = models.ForeignKey("datasets.Project", on_delete=models.CASCADE, related_name="task_items")
    image_ids = models.JSONField(default=list, blank=True)
    category = models.ForeignKey(
        "datasets.Category", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    point = models.ForeignKey(
        "datasets.InstancePoint", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    polygon_ids = models.JSONField(default=list, blank=True)
    assignment_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="segmentation") | Q(point__isnull=False), name="taskitem_segmentation_has_point"
            ),
            models.CheckConstraint(
                condition=~Q(kind="spotting") | Q(category__isnull=False), name="taskitem_spotting_has_category"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} task #{self.pk}"


class TaskAnswer(models.Model):
    """An answer exactly as the tool posted it (after validation), with who sent it.

    One answer per (task, assignment, attempt): a repeated submission returns the stored one.
    Only training allows later attempts (after a failed one and the retry delay).
    """

    task = models.ForeignKey(TaskItem, on_delete=models.CASCADE, related_name="answers")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    schema_version = models.PositiveSmallIntegerField()
    worker_id = models.CharField(max_length=128)
    assignment_id = models.CharField(max_length=128)
    hit_id = models.CharField(max_length=128, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    answer = models.JSONField()
    summary = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "assignment_id", "attempt"], name="taskanswer_once_per_assignment"),
        ]
        indexes = [models.Index(fields=["worker_id"]), models.Index(fields=["assignment_id"])]

    def __str__(self) -> str:
        return f"Answer #{self.pk} to {self.task}"


class VerificationVote(models.Model):
    """One worker's accept/reject of one outline (the crowd layer aggregates these)."""

    answer = models.ForeignKey(TaskAnswer, on_delete=models.CASCADE, related_name="votes")
    polygon = models.ForeignKey("datasets.Polygon", on_delete=models.CASCADE, related_name="votes")
    accept = models.BooleanField()
    made_by = models.CharField(max_length=128)
    assignment_ref = models.CharField(max_length=128, blank=True)
    schema_version = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["answer", "polygon"], name="vote_once_per_answer"),
        ]


class TrainingResult(models.Model):
    """A scored training attempt: IoU of the worker's outline with each known outline."""

    project = models.ForeignKey("datasets.Project", on_delete=models.CASCADE, related_name="training_results")
    worker_id = models.CharField(max_length=128)
    answer = models.OneToOneField(TaskAnswer, on_delete=models.CASCADE, related_name="training_result")
    passed = models.BooleanField()
    min_iou = models.FloatField()
    threshold = models.FloatField()
    ious = models.JSONField(help_text='[{"item": polygon id, "iou": float, "passed": bool}]')
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["worker_id", "project"])]

    def __str__(self) -> str:
        return f"{self.worker_id} {'passed' if self.passed else 'failed'} training ({self.min_iou:.2f})"
