"""The marketplace's data: requesters and their keys, HIT types, HITs, assignments, workers,
qualifications, blocks, bonuses and notifications.

Models hold fields, constraints and small properties. Every change goes through
``crowd.marketplace.services``; reads that are more than a lookup live in ``selectors``.
Money is kept in US dollars as ``Decimal`` with two places, like MTurk's ``CurrencyAmount``.
"""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from crowd.marketplace import ids


class RequesterAccount(models.Model):
    """A requester: a Django user who publishes HITs and pays for them from a prepaid balance."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="requester_account")
    balance = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"),
                                  help_text="Available balance in USD (money on hold for open HITs is not included).")
    is_public = models.BooleanField(default=False,
                                    help_text="Every worker sees this requester's HITs, not only the invited ones.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="mkt_requester_balance_not_negative"),
        ]

    def __str__(self) -> str:
        return f"requester {self.user}"


class LedgerEntry(models.Model):
    """One movement of a requester's money, so that every balance can be explained."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up", "Top-up"
        HOLD = "hold", "Held for a HIT"
        RELEASE = "release", "Released from a HIT"
        REWARD = "reward", "Reward paid"
        BONUS = "bonus", "Bonus paid"

    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="ledger")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2, help_text="Positive adds to the balance.")
    reference = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "created_at"])]


class RequesterKey(models.Model):
    """An AWS-style access key pair. The secret is stored encrypted (``crowd.marketplace.crypto``)."""

    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="keys")
    access_key_id = models.CharField(max_length=32, unique=True, default=ids.access_key_id)
    secret_encrypted = models.TextField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.access_key_id


class WorkerProfile(models.Model):
    """A Django user who works in the marketplace, known to requesters by an MTurk-style id."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="worker_profile")
    worker_id = models.CharField(max_length=14, unique=True, default=ids.worker_id)
    country = models.CharField(max_length=2, default="US", help_text="ISO 3166-1 country, for Worker_Locale.")
    subdivision = models.CharField(max_length=3, blank=True, help_text="ISO 3166-2 subdivision, e.g. CA.")
    requesters = models.ManyToManyField(RequesterAccount, blank=True, related_name="workers",
                                        help_text="The requesters whose crowd this worker joined by invitation.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.worker_id


class WorkerInvite(models.Model):
    """An invitation to join a requester's crowd; ``uses_left`` 0 means spent."""

    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="invites")
    code = models.CharField(max_length=32, unique=True, default=ids.invite_code)
    uses_left = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.code


class HITType(models.Model):
    """The properties shared by HITs of one group. Equal properties give the same HITTypeId."""

    hit_type_id = models.CharField(max_length=30, unique=True, default=ids.entity_id)
    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="hit_types")
    fingerprint = models.CharField(max_length=64)
    title = models.CharField(max_length=128)
    description = models.TextField()
    keywords = models.CharField(max_length=1000, blank=True)
    reward = models.DecimalField(max_digits=10, decimal_places=2)
    assignment_duration = models.PositiveIntegerField(help_text="Seconds a worker has once they accept.")
    auto_approval_delay = models.PositiveIntegerField(help_text="Seconds after submission before approval.")
    qualification_requirements = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "fingerprint"], name="mkt_hittype_unique_properties"),
        ]

    def __str__(self) -> str:
        return f"{self.hit_type_id} {self.title}"


class HIT(models.Model):
    """A task posted to workers. Counters are kept under the HIT row's lock by the services."""

    class Status(models.TextChoices):
        ASSIGNABLE = "Assignable"
        UNASSIGNABLE = "Unassignable"
        REVIEWABLE = "Reviewable"
        REVIEWING = "Reviewing"
        DISPOSED = "Disposed"

    hit_id = models.CharField(max_length=30, unique=True, default=ids.entity_id)
    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="hits")
    hit_type = models.ForeignKey(HITType, on_delete=models.PROTECT, related_name="hits")
    question = models.TextField()
    question_kind = models.CharField(max_length=16)  # ExternalQuestion | HTMLQuestion
    external_url = models.CharField(max_length=2000, blank=True)  # checked by questions.check_external_url
    html_content = models.TextField(blank=True)
    frame_height = models.PositiveIntegerField(default=0)
    requester_annotation = models.CharField(max_length=255, blank=True)
    unique_request_token = models.CharField(max_length=64, blank=True)
    max_assignments = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    expiration = models.DateTimeField()
    # How many assignments are in each state (kept by services.hit_recount under the row lock).
    num_pending = models.PositiveIntegerField(default=0)    # accepted, not yet submitted
    num_submitted = models.PositiveIntegerField(default=0)  # submitted, awaiting review
    num_completed = models.PositiveIntegerField(default=0)  # approved or rejected
    num_available = models.PositiveIntegerField(default=0)
    reviewing = models.BooleanField(default=False)
    disposed = models.BooleanField(default=False)
    # Money held for this HIT's unpaid assignments; released when it expires or is deleted.
    held = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    open_for_work = models.BooleanField(default=True, help_text="Money is held for every slot not yet filled.")

    class Meta:
        indexes = [
            models.Index(fields=["account", "id"]),
            models.Index(fields=["hit_type", "expiration"]),
            models.Index(fields=["open_for_work", "expiration"]),
            models.Index(fields=["account", "unique_request_token"]),
            # A group's HITs with a free slot, in order: an accept reads the first it may take
            # without sorting every HIT the group ever had.
            models.Index(fields=["hit_type", "id"], condition=Q(num_available__gt=0, disposed=False, reviewing=False),
                         name="mkt_hit_open_by_type"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(held__gte=0), name="mkt_hit_held_not_negative"),
        ]

    def __str__(self) -> str:
        return self.hit_id

    def status_at(self, when) -> str:
        if self.disposed:
            return self.Status.DISPOSED
        if self.reviewing:
            return self.Status.REVIEWING
        if self.num_available > 0 and self.expiration > when:
            return self.Status.ASSIGNABLE
        if self.num_pending > 0:
            return self.Status.UNASSIGNABLE
        return self.Status.REVIEWABLE


class Assignment(models.Model):
    """One worker's work on one HIT. Only Submitted, Approved and Rejected are seen by the API."""

    class Status(models.TextChoices):
        ACCEPTED = "Accepted"
        SUBMITTED = "Submitted"
        APPROVED = "Approved"
        REJECTED = "Rejected"
        RETURNED = "Returned"
        ABANDONED = "Abandoned"

    HOLDING = (Status.ACCEPTED, Status.SUBMITTED, Status.APPROVED, Status.REJECTED)
    VISIBLE = (Status.SUBMITTED, Status.APPROVED, Status.REJECTED)

    assignment_id = models.CharField(max_length=30, unique=True, default=ids.entity_id)
    hit = models.ForeignKey(HIT, on_delete=models.CASCADE, related_name="assignments")
    worker = models.ForeignKey(WorkerProfile, on_delete=models.PROTECT, related_name="assignments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    accept_time = models.DateTimeField()
    deadline = models.DateTimeField()
    submit_time = models.DateTimeField(null=True, blank=True)
    auto_approval_time = models.DateTimeField(null=True, blank=True)
    approval_time = models.DateTimeField(null=True, blank=True)
    rejection_time = models.DateTimeField(null=True, blank=True)
    answer = models.TextField(blank=True)
    requester_feedback = models.CharField(max_length=1024, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "deadline"]),
            models.Index(fields=["status", "auto_approval_time"]),
            models.Index(fields=["hit", "id"]),
            models.Index(fields=["worker", "status"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["hit", "worker"],
                condition=Q(status__in=["Accepted", "Submitted", "Approved", "Rejected"]),
                name="mkt_one_assignment_per_worker_per_hit",
            ),
        ]

    def __str__(self) -> str:
        return self.assignment_id


class QualificationType(models.Model):
    """A requester's qualification type. System types (locale, approval rate) are computed."""

    qualification_type_id = models.CharField(max_length=30, unique=True, default=ids.entity_id)
    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="qualification_types")
    name = models.CharField(max_length=255)
    description = models.TextField()
    keywords = models.CharField(max_length=1000, blank=True)
    status = models.CharField(max_length=16, default="Active")  # Active | Inactive
    retry_delay = models.PositiveIntegerField(null=True, blank=True)
    test = models.TextField(blank=True)
    answer_key = models.TextField(blank=True)
    test_duration = models.PositiveIntegerField(null=True, blank=True)
    auto_granted = models.BooleanField(default=False)
    auto_granted_value = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="mkt_qualtype_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Qualification(models.Model):
    """A worker's score for a qualification type, granted by its requester (or automatically)."""

    qualification_type = models.ForeignKey(QualificationType, on_delete=models.CASCADE, related_name="grants")
    worker = models.ForeignKey(WorkerProfile, on_delete=models.CASCADE, related_name="qualifications")
    integer_value = models.IntegerField(default=1)
    status = models.CharField(max_length=16, default="Granted")  # Granted | Revoked
    grant_time = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["qualification_type", "worker"], name="mkt_one_qualification_per_worker"),
        ]


class WorkerBlock(models.Model):
    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="blocks")
    worker = models.ForeignKey(WorkerProfile, on_delete=models.CASCADE, related_name="blocks")
    reason = models.CharField(max_length=1024)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "worker"], name="mkt_one_block_per_worker"),
        ]


class BonusPayment(models.Model):
    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="bonuses")
    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="bonuses")
    worker = models.ForeignKey(WorkerProfile, on_delete=models.PROTECT, related_name="bonuses")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    fee = models.DecimalField(max_digits=10, decimal_places=2)
    reason = models.TextField()
    unique_request_token = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=36)
    grant_time = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "unique_request_token"])]


class WorkerNotification(models.Model):
    """A message a requester sent with NotifyWorkers, shown on the worker's notifications page."""

    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="notifications")
    worker = models.ForeignKey(WorkerProfile, on_delete=models.CASCADE, related_name="notifications")
    subject = models.CharField(max_length=200)
    message = models.TextField()
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["worker", "created_at"])]


class HITExtension(models.Model):
    """One CreateAdditionalAssignmentsForHIT call that raised a HIT's MaxAssignments.

    Kept so that a repeated UniqueRequestToken (within 24 hours) does not extend the HIT again.
    """

    account = models.ForeignKey(RequesterAccount, on_delete=models.CASCADE, related_name="hit_extensions")
    hit = models.ForeignKey(HIT, on_delete=models.CASCADE, related_name="extensions")
    added = models.PositiveIntegerField()
    max_assignments = models.PositiveIntegerField(help_text="The HIT's MaxAssignments after this extension.")
    unique_request_token = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=36)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "unique_request_token"])]
