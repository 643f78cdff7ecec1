"""The crowd side of Annotator: what a project asks of the crowd and what the crowd did.

- ``ProviderCredentials``: the requester keys (and endpoint) a project pays with.
- ``CrowdStage``: one stage of a project put to the crowd, i.e. an MTurk HIT type (title,
  reward, durations, redundancy, qualification requirements) plus our review rules.
- ``HIT``: our record of one published HIT, made before the provider is called, so that the
  ``unique_request_token`` is fixed once and a retried publish can never make a second HIT.
- ``Worker`` / ``WorkerQualification``: the people, their quality and what we granted them.
- ``Assignment``: one worker's answer to one HIT, with our reconciled state.
- ``Payment``: a reward (paid by approving) or a bonus (SendBonus), each with its own token.

Models hold fields and constraints; every change goes through ``crowd.services``. Money is USD
``Decimal`` with two places, like MTurk's ``CurrencyAmount`` strings.
"""
from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from datasets.models import Stage

# MTurk's system qualification types (the same ids on the sandbox and on our marketplace).
QUAL_APPROVAL_RATE = "000000000000000000L0"  # Worker_PercentAssignmentsApproved
QUAL_APPROVED_HITS = "00000000000000000040"  # Worker_NumberHITsApproved
QUAL_LOCALE = "00000000000000000071"  # Worker_Locale


class ProviderCredentials(models.Model):
    """The requester account a project publishes and pays with; without one, the settings' keys.

    The secret is stored encrypted (``crowd.crypto``, Fernet keyed from SECRET_KEY).
    """

    project = models.OneToOneField("datasets.Project", on_delete=models.CASCADE, related_name="crowd_credentials")
    endpoint_url = models.URLField(
        max_length=500, blank=True, help_text="Blank: MTURK_ENDPOINT_URL (our marketplace by default)."
    )
    access_key_id = models.CharField(max_length=128)
    secret_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "provider credentials"

    def __str__(self) -> str:
        return f"{self.access_key_id} for {self.project}"


class CrowdStage(models.Model):
    """A stage of a project on the crowd: the HIT type and the rules its answers are judged by."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        LAUNCHED = "launched", "Launched"
        PAUSED = "paused", "Paused (budget or balance reached)"
        FINISHED = "finished", "Finished"

    project = models.ForeignKey("datasets.Project", on_delete=models.CASCADE, related_name="crowd_stages")
    name = models.CharField(max_length=100)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.CATEGORIES)
    kind = models.CharField(
        max_length=16, default="categories",
        help_text="The labeling tool (frontend Kind): categories, spotting, segmentation, verification, training.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    status_reason = models.CharField(max_length=300, blank=True)
    # --- the HIT type ---
    title = models.CharField(max_length=128)
    description = models.TextField(max_length=2000)
    keywords = models.CharField(max_length=1000, blank=True)
    reward = models.DecimalField(max_digits=8, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))])
    assignment_duration_s = models.PositiveIntegerField(
        default=1800, validators=[MinValueValidator(30), MaxValueValidator(365 * 86400)]
    )
    lifetime_s = models.PositiveIntegerField(default=3 * 86400, validators=[MinValueValidator(30)])
    auto_approval_delay_s = models.PositiveIntegerField(default=3 * 86400, validators=[MaxValueValidator(30 * 86400)])
    max_assignments = models.PositiveSmallIntegerField(
        "redundancy", default=3, validators=[MinValueValidator(1)], help_text="MaxAssignments: answers per HIT."
    )
    items_per_hit = models.PositiveSmallIntegerField(default=5, validators=[MinValueValidator(1)])
    frame_height = models.PositiveIntegerField(default=0, help_text="ExternalQuestion FrameHeight; 0 = full window.")
    # --- qualification requirements ---
    min_approval_rate = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(100)], help_text="Approval rate >= N %."
    )
    min_approved_hits = models.PositiveIntegerField(null=True, blank=True, help_text="Approved HITs >= N.")
    locales = models.JSONField(default=list, blank=True, help_text='Countries allowed, e.g. ["US", "CA"].')
    require_training = models.BooleanField(
        default=False, help_text="Only workers holding the project's training qualification."
    )
    # --- review rules ---
    gold = models.JSONField(
        default=dict, blank=True,
        help_text='Known answers by item, e.g. {"<image id>": [category ids present]} or {"<polygon id>": true}.',
    )
    min_gold_accuracy = models.FloatField(
        default=0.0, validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Reject work below this share of gold items right (0 = never on gold alone).",
    )
    bonus = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0.00"))
    bonus_min_gold_accuracy = models.FloatField(default=1.0, validators=[MinValueValidator(0), MaxValueValidator(1)])
    bonus_reason = models.CharField(max_length=300, default="Thank you for careful, accurate work.")
    # --- the pipeline (stages as data: what feeds what, how answers are judged) ---
    in_pipeline = models.BooleanField(
        "part of the pipeline", default=False,
        help_text="Items move through this stage by themselves (crowd.pipeline); off: a stage launched by hand.")
    feeds = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="fed_by",
        help_text="The stage this stage's results go to (categories -> spotting -> segmentation -> "
                  "verification). Empty: results are final.",
    )
    aggregation = models.CharField(
        max_length=16, choices=[("any", "Any worker (COCO, for recall)"), ("majority", "Majority"),
                                ("ds", "Dawid-Skene posterior")], default="any",
        help_text="Category labeling: how votes become 'present'. Other stages: clustering (spotting) "
                  "or reliability-weighted majority (verification).",
    )
    adaptive = models.BooleanField(
        default=False, help_text="Ask for another answer only while an item is uncertain (redundancy is the cap).")
    min_answers = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1)], help_text="Adaptive: answers every item gets at least.")
    confidence = models.FloatField(
        default=0.95, validators=[MinValueValidator(0.5), MaxValueValidator(0.9999)],
        help_text="Adaptive: stop once every decision of the item is at least this sure.")
    max_retries = models.PositiveSmallIntegerField(
        default=2, help_text="Verification: times a rejected outline is redrawn before it goes to review (K).")
    cluster_min_workers = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1)], help_text="Spotting: workers a click cluster needs.")
    # --- what the provider told us ---
    hit_type_id = models.CharField(max_length=64, blank=True)
    hit_type_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="crowdstage_unique_name"),
            models.CheckConstraint(condition=Q(reward__gt=0), name="crowdstage_reward_positive"),
            models.CheckConstraint(condition=Q(bonus__gte=0), name="crowdstage_bonus_not_negative"),
            models.CheckConstraint(condition=Q(max_assignments__gte=1), name="crowdstage_redundancy_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.name}"


class TrainingQualification(models.Model):
    """The project's own qualification type, created once at the provider (CreateQualificationType)."""

    project = models.OneToOneField("datasets.Project", on_delete=models.CASCADE, related_name="training_qualification")
    name = models.CharField(max_length=200)
    qualification_type_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.qualification_type_id})"


class HIT(models.Model):
    """Our record of a HIT. It exists before the provider's does: PENDING until CreateHIT answers."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be published"
        PUBLISHED = "published", "Published"
        REVIEWABLE = "reviewable", "Reviewable"
        DONE = "done", "All answers reviewed"
        DISPOSED = "disposed", "Deleted at the provider"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Not published (budget, balance or error)"

    stage = models.ForeignKey(CrowdStage, on_delete=models.CASCADE, related_name="hits")
    project = models.ForeignKey("datasets.Project", on_delete=models.CASCADE, related_name="crowd_hits")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    status_reason = models.CharField(max_length=300, blank=True)
    provider_hit_id = models.CharField(max_length=64, null=True, blank=True)
    hit_type_id = models.CharField(max_length=64, blank=True)
    unique_request_token = models.CharField(max_length=64)
    items = models.JSONField(help_text="The ids of the things this HIT carries (images, outlines...).")
    item_key = models.CharField(max_length=200, help_text="Sorted item ids, so no item set is put up twice.")
    task_url = models.URLField(max_length=2000, blank=True)
    task_ref = models.PositiveBigIntegerField(null=True, blank=True, help_text="The frontend TaskItem id, if any.")
    max_assignments = models.PositiveSmallIntegerField()
    reward = models.DecimalField(max_digits=8, decimal_places=2)
    cost_reserved = models.DecimalField(max_digits=12, decimal_places=2)
    publish_attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    disposed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "HIT"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["unique_request_token"], name="hit_unique_request_token"),
            models.UniqueConstraint(
                fields=["provider_hit_id"], condition=Q(provider_hit_id__isnull=False), name="hit_unique_provider_id"
            ),
            models.UniqueConstraint(
                fields=["stage", "item_key"], condition=~Q(status="cancelled"), name="hit_items_once_per_stage"
            ),
            models.CheckConstraint(condition=Q(cost_reserved__gte=0), name="hit_cost_not_negative"),
        ]
        indexes = [models.Index(fields=["stage", "status"])]

    def __str__(self) -> str:
        return self.provider_hit_id or f"HIT #{self.pk} (unpublished)"


class Worker(models.Model):
    """A crowd worker as the provider names them, with what we learned about their work."""

    provider_worker_id = models.CharField(max_length=128, unique=True)
    approved = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    gold_seen = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    blocked = models.BooleanField(default=False)
    block_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider_worker_id"]

    def __str__(self) -> str:
        return self.provider_worker_id

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


class WorkerQualification(models.Model):
    """A qualification we granted a worker (AssociateQualificationWithWorker), recorded once."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="qualifications")
    qualification = models.ForeignKey(TrainingQualification, on_delete=models.CASCADE, related_name="grants")
    value = models.IntegerField(default=1)
    granted_at = models.DateTimeField(null=True, blank=True, help_text="Empty until the provider confirmed.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["worker", "qualification"], name="workerqual_once"),
        ]


class Assignment(models.Model):
    """One worker's work on one HIT.

    ``state`` is ours: PENDING (we heard of it only from a browser, unconfirmed), CONFIRMED (the
    provider says it exists and was submitted), APPROVED / REJECTED (the provider confirmed our
    decision), INVALID (the provider does not know it: a forged or stale id; never counted).
    ``decision`` is the intent, written before the provider is called, so a crash in between
    re-sends the same decision instead of judging again.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending confirmation"
        CONFIRMED = "confirmed", "Confirmed by the provider"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        INVALID = "invalid", "Unknown to the provider"

    class Decision(models.TextChoices):
        NONE = "", "Not decided"
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    provider_assignment_id = models.CharField(max_length=128, unique=True)
    hit = models.ForeignKey(HIT, on_delete=models.CASCADE, null=True, blank=True, related_name="assignments")
    worker = models.ForeignKey(Worker, on_delete=models.PROTECT, null=True, blank=True, related_name="assignments")
    claimed_worker_id = models.CharField(max_length=128, blank=True, help_text="What the browser said; not trusted.")
    claimed_hit_id = models.CharField(max_length=128, blank=True, help_text="What the browser said; not trusted.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    provider_status = models.CharField(max_length=16, blank=True, help_text="Submitted, Approved or Rejected.")
    answer_xml = models.TextField(blank=True)
    answer = models.JSONField(null=True, blank=True, help_text="The answer as judged (ours, else the form's).")
    answer_source = models.CharField(max_length=16, blank=True, help_text="server, form or none.")
    task_answer_ref = models.PositiveBigIntegerField(null=True, blank=True, help_text="frontend TaskAnswer id.")
    gold_seen = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    decision = models.CharField(max_length=8, choices=Decision.choices, blank=True, default="")
    feedback = models.CharField(max_length=1024, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    confirm_attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["hit", "state"])]

    def __str__(self) -> str:
        return self.provider_assignment_id


class Payment(models.Model):
    """Money to a worker: the reward (paid by ApproveAssignment) or a bonus (SendBonus).

    One of each kind per assignment; the token is fixed when the row is made, so a retried
    SendBonus is recognised by the provider and never pays twice.
    """

    class Kind(models.TextChoices):
        REWARD = "reward", "Reward"
        BONUS = "bonus", "Bonus"

    class Status(models.TextChoices):
        PENDING = "pending", "To be paid"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"

    assignment = models.ForeignKey(Assignment, on_delete=models.PROTECT, related_name="payments")
    worker = models.ForeignKey(Worker, on_delete=models.PROTECT, related_name="payments")
    project = models.ForeignKey("datasets.Project", on_delete=models.PROTECT, related_name="crowd_payments")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    commission = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0.00"))
    reason = models.CharField(max_length=1024, blank=True)
    unique_request_token = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["assignment", "kind"], name="payment_once_per_kind"),
            models.UniqueConstraint(fields=["unique_request_token"], name="payment_unique_token"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} ${self.amount} to {self.worker_id}"


class PipelineItem(models.Model):
    """One thing one stage works on: an image, an image and category, a spotted instance (with
    its attempt), or an outline. Made once per stage and key (a unique constraint), it moves from
    ACTIVE to a final state by one conditional update, so answers arriving together move it on
    exactly once and its results feed the next stage once.
    """

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting for a HIT (budget or balance)"
        ACTIVE = "active", "Collecting answers"
        DONE = "done", "Done"
        REJECTED = "rejected", "Rejected, sent back to be redrawn"
        REVIEW = "review", "In the requester's review queue"
        REVIEWED = "reviewed", "Reviewed by the requester"

    stage = models.ForeignKey(CrowdStage, on_delete=models.CASCADE, related_name="items")
    project = models.ForeignKey("datasets.Project", on_delete=models.CASCADE, related_name="pipeline_items")
    key = models.CharField(max_length=64, help_text="The item as the stage's HITs carry it, e.g. '12' or '12-3'.")
    item = models.JSONField(help_text="The HIT item: an id, [image, category] or [point, attempt].")
    image = models.ForeignKey("datasets.Image", on_delete=models.CASCADE, related_name="+")
    category = models.ForeignKey("datasets.Category", on_delete=models.CASCADE, null=True, blank=True,
                                 related_name="+")
    point = models.ForeignKey("datasets.InstancePoint", on_delete=models.CASCADE, null=True, blank=True,
                              related_name="+")
    polygon = models.ForeignKey("datasets.Polygon", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="+")
    attempt = models.PositiveSmallIntegerField(default=1, help_text="Segmentation: 1, then 2... after rejections.")
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING, db_index=True)
    hit = models.ForeignKey(HIT, on_delete=models.SET_NULL, null=True, blank=True, related_name="pipeline_items")
    answers = models.PositiveSmallIntegerField(default=0, help_text="Answers counted when it moved on.")
    answer_ids = models.JSONField(default=list, blank=True, help_text="The stored answers it was decided on.")
    result = models.JSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["stage", "key"], name="pipelineitem_once_per_stage")]
        indexes = [models.Index(fields=["stage", "state"]), models.Index(fields=["project", "state"])]

    def __str__(self) -> str:
        return f"{self.stage.kind} item {self.key}"
