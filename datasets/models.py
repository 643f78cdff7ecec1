"""The dataset side of Annotator: projects, their people, categories, images, imports, and the
records that the labeling stages write (image-level labels, points, polygons).

Models hold fields, constraints and small properties; everything that changes them lives in
``datasets.services`` and every read query that is more than a lookup in ``datasets.selectors``.
Geometry is in image pixels of the image as displayed (after EXIF orientation).
"""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class Project(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        FINISHED = "finished", "Finished"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_projects"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects", blank=True
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    budget_usd = models.DecimalField(
        "budget (USD)",
        max_digits=12,
        decimal_places=2,
        default=Decimal("0.00"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="The most the crowd stages may spend, commission included.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(budget_usd__gte=0), name="project_budget_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A person's role in a project. The owner holds every right without a membership row."""

    class Role(models.TextChoices):
        REQUESTER = "requester", "Requester"
        RESEARCHER = "researcher", "Researcher"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} of {self.project}"


def category_example_path(instance: "Category", filename: str) -> str:
    return f"projects/{instance.project_id}/categories/{instance.coco_id}-{filename}"


class Category(models.Model):
    """One category of a project, with a stable COCO-compatible id (COCO's 1..90 for its 80)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="categories")
    coco_id = models.PositiveIntegerField("COCO id", validators=[MinValueValidator(1)])
    name = models.CharField(max_length=100)
    supercategory = models.CharField(max_length=100, blank=True)
    example_image = models.ImageField(upload_to=category_example_path, blank=True)

    class Meta:
        ordering = ["project", "coco_id"]
        verbose_name_plural = "categories"
        constraints = [
            models.UniqueConstraint(fields=["project", "coco_id"], name="category_unique_coco_id"),
            models.UniqueConstraint(fields=["project", "name"], name="category_unique_name"),
            models.CheckConstraint(condition=Q(coco_id__gte=1), name="category_coco_id_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.supercategory})" if self.supercategory else self.name


def image_upload_path(instance: "Image", filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"projects/{instance.project_id}/images/{instance.sha256[:2]}/{instance.sha256}.{ext}"


class ImageImport(models.Model):
    """One run of the ingestion service, with a report line for every file it saw."""

    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded files"
        ARCHIVE = "archive", "Archive (zip or tar)"
        FOLDER = "folder", "Server folder"
        URLS = "urls", "List of URLs"
        S3 = "s3", "S3 prefix"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    source_detail = models.CharField(max_length=1000, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    total = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # [{"name": ..., "status": "imported" | "duplicate" | "failed", "reason": ..., "image": id}]
    report = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Import #{self.pk} into {self.project}"


class Image(models.Model):
    """An image as COCO's ``images`` entry describes it, with its stored original bytes."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to=image_upload_path, max_length=300)
    width = models.PositiveIntegerField(help_text="Pixels, after EXIF orientation.")
    height = models.PositiveIntegerField(help_text="Pixels, after EXIF orientation.")
    exif_orientation = models.PositiveSmallIntegerField(
        default=1, help_text="The EXIF orientation tag of the stored bytes (1 = upright)."
    )
    format = models.CharField(max_length=8)
    file_size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    original_name = models.CharField(max_length=500)
    source_url = models.URLField(max_length=2000, blank=True)
    license = models.CharField(max_length=200, blank=True)
    attribution = models.CharField(max_length=500, blank=True)
    imported_by = models.ForeignKey(
        ImageImport, on_delete=models.SET_NULL, null=True, blank=True, related_name="images"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="image_unique_content"),
            models.CheckConstraint(condition=Q(width__gt=0, height__gt=0), name="image_has_size"),
        ]

    def __str__(self) -> str:
        return self.original_name


class Stage(models.TextChoices):
    """Where a record came from: one of COCO's stages, or outside the crowd."""

    CATEGORIES = "categories", "Category labeling"
    SPOTTING = "spotting", "Instance spotting"
    SEGMENTATION = "segmentation", "Segmentation"
    VERIFICATION = "verification", "Verification"
    AGGREGATE = "aggregate", "Aggregated result"
    REQUESTER = "requester", "Requester"
    IMPORT = "import", "Imported"


class AnnotationRecord(models.Model):
    """Fields every stage record shares: what, who made it, in which stage, when, which schema."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="%(class)ss")
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="%(class)ss")
    stage = models.CharField(max_length=16, choices=Stage.choices)
    made_by = models.CharField(
        max_length=128, help_text="Worker id, username, or 'aggregate' for a computed result."
    )
    assignment_ref = models.CharField(max_length=128, blank=True)
    schema_version = models.PositiveSmallIntegerField(default=1)
    confidence = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        abstract = True


class ImageLabel(AnnotationRecord):
    """Whether a category is present in an image (category labeling)."""

    present = models.BooleanField()

    class Meta:
        indexes = [models.Index(fields=["image", "category"])]


class InstancePoint(AnnotationRecord):
    """One click on one instance (instance spotting); ``is_crowd`` marks 'too many to count'."""

    x = models.FloatField()
    y = models.FloatField()
    is_crowd = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["image", "category"])]
        constraints = [
            models.CheckConstraint(condition=Q(x__gte=0, y__gte=0), name="point_not_negative"),
        ]


class Polygon(AnnotationRecord):
    """An outline of one instance: one or more parts, each a flat [x1, y1, x2, y2, ...] list."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for verification"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    point = models.ForeignKey(
        InstancePoint, on_delete=models.SET_NULL, null=True, blank=True, related_name="polygons"
    )
    parts = models.JSONField()
    area = models.FloatField()
    bbox = models.JSONField(help_text="[x, y, width, height] in image pixels, as in COCO.")
    is_crowd = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)

    class Meta:
        indexes = [models.Index(fields=["image", "category"]), models.Index(fields=["status"])]
        constraints = [
            models.CheckConstraint(condition=Q(area__gt=0), name="polygon_area_positive"),
        ]


# --- Exports and API tokens (datasets.exports, datasets.api) ---------------------------------


def default_split_ratios() -> dict[str, float]:
    return {"train": 0.8, "val": 0.1, "test": 0.1}


def default_export_formats() -> list[str]:
    return ["coco", "shards"]


class Export(models.Model):
    """One numbered, immutable snapshot of a project's dataset, built by ``datasets.exports``.

    Its files appear in ``files`` (name, size, sha256) only once every one of them is written;
    the manifest is written last and ``status`` turns to done after it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    number = models.PositiveIntegerField(help_text="1, 2, 3... within the project.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="exports"
    )
    formats = models.JSONField(default=default_export_formats, help_text="coco, shards, imagefolder")
    # {"complete_stages": [...], "min_confidence": float | None, "categories": [coco ids]}
    filters = models.JSONField(default=dict, blank=True)
    split_ratios = models.JSONField(default=default_split_ratios)
    seed = models.BigIntegerField(default=0)
    shard_size = models.PositiveBigIntegerField(default=512 * 1024 * 1024, help_text="Bytes per shard, at most.")
    min_shards = models.PositiveIntegerField(default=8, help_text="At least this many shards per split (readers).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    progress_done = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    storage_prefix = models.CharField(max_length=300, blank=True)
    # [{"name": "coco/train.json", "size": 123, "sha256": "..."}], manifest.json last.
    files = models.JSONField(default=list, blank=True)
    counts = models.JSONField(default=dict, blank=True, help_text="Images and annotations per split.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The building worker's lease: renewed while it works; a running export whose lease ran out
    # lost its worker and is started again (datasets.exports.service.export_recover).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, db_default=0, help_text="Builds started, counting restarts.")

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="export_unique_number"),
            models.CheckConstraint(condition=Q(number__gte=1), name="export_number_positive"),
        ]

    def __str__(self) -> str:
        return f"Export {self.number} of {self.project}"

    @property
    def percent(self) -> float:
        if self.status == self.Status.DONE:
            return 100.0
        return round(100.0 * self.progress_done / self.progress_total, 1) if self.progress_total else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far, while running."""
        if self.status != self.Status.RUNNING or not self.started_at or not self.progress_done:
            return None
        from django.utils import timezone

        elapsed = (timezone.now() - self.started_at).total_seconds()
        left = max(self.progress_total - self.progress_done, 0)
        return round(elapsed / self.progress_done * left, 1)

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED, self.Status.CANCELLED)

    def file_entry(self, name: str) -> dict | None:
        return next((f for f in self.files if f["name"] == name), None)


class ApiToken(models.Model):
    """A token for scripts. Only its sha256 is stored; the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'training cluster'.")
    prefix = models.CharField(max_length=12, help_text="The token's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        from django.utils import timezone

        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()
