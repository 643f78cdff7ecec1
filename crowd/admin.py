"""The requester console for the crowd: stages (launch with a cost confirmation), HITs,
assignments (approve, reject, bonus), workers (block, notify), payments, credentials, and each
project's pipeline page (progress, workers, review queue: ``crowd.admin_pipeline``).

Every action calls one service; provider errors are shown as messages, never as a 500.
"""
from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from crowd import crypto, selectors, services
from crowd.admin_pipeline import PipelineAdminMixin
from crowd.models import HIT, Assignment, CrowdStage, Payment, ProviderCredentials, TrainingQualification, Worker
from crowd.providers import provider_for
from crowd.providers.base import ProviderError


def _form_step(modeladmin, request, queryset, form_class, title: str, action: str, extra: dict | None = None):
    """Show ``form_class`` for the selected rows; return the bound valid form once posted."""
    if "apply" in request.POST:
        form = form_class(request.POST)
        if form.is_valid():
            return form
    else:
        form = form_class()
    context = {
        **modeladmin.admin_site.each_context(request), "title": title, "form": form, "queryset": queryset,
        "action": action, "opts": modeladmin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, **(extra or {}),
    }
    return TemplateResponse(request, "admin/crowd/action_form.html", context)


def _each(modeladmin, request, queryset, fn, done: str) -> None:
    ok = 0
    for obj in queryset:
        try:
            fn(obj)
            ok += 1
        except (ProviderError, services.CrowdError, ValueError) as exc:
            modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
    if ok:
        modeladmin.message_user(request, f"{done}: {ok}.", messages.SUCCESS)


class CredentialsForm(forms.ModelForm):
    endpoint_url = forms.URLField(required=False, assume_scheme="https", max_length=500,
                                  help_text="Blank: MTURK_ENDPOINT_URL (our marketplace by default).")
    secret_access_key = forms.CharField(
        widget=forms.PasswordInput(render_value=False), required=False,
        help_text="Stored encrypted; leave blank to keep the current secret.")

    class Meta:
        model = ProviderCredentials
        fields = ["project", "endpoint_url", "access_key_id"]

    def clean(self):
        data = super().clean()
        if not self.instance.pk and not data.get("secret_access_key"):
            self.add_error("secret_access_key", "The secret access key is required.")
        return data

    def save(self, commit=True):
        obj = super().save(commit=False)
        if self.cleaned_data.get("secret_access_key"):
            obj.secret_encrypted = crypto.encrypt(self.cleaned_data["secret_access_key"])
        if commit:
            obj.save()
        from crowd.providers.mturk import reset_clients

        reset_clients()
        return obj


@admin.register(ProviderCredentials)
class ProviderCredentialsAdmin(admin.ModelAdmin):
    form = CredentialsForm
    list_display = ["project", "access_key_id", "endpoint_url", "updated_at"]


@admin.register(TrainingQualification)
class TrainingQualificationAdmin(admin.ModelAdmin):
    list_display = ["project", "name", "qualification_type_id", "created_at"]
    readonly_fields = ["qualification_type_id"]


@admin.register(CrowdStage)
class CrowdStageAdmin(PipelineAdminMixin, admin.ModelAdmin):
    """Crowd stages, and (``crowd.admin_pipeline``) each project's pipeline page."""

    list_display = ["name", "project", "kind", "status", "reward", "max_assignments", "items_per_hit", "hit_type_id",
                    "pipeline_link"]
    list_filter = ["status", "kind", "project"]
    readonly_fields = ["hit_type_id", "status_reason", "costs", "progress"]
    actions = ["launch_stage", "sync_now"]

    @admin.display(description="Costs (USD)")
    def costs(self, obj: CrowdStage) -> str:
        if not obj.pk:
            return "-"
        c = selectors.project_costs(obj.project_id)
        return (f"budget {obj.project.budget_usd}; reserved {c['reserved']}; paid rewards {c['rewards']}, "
                f"bonuses {c['bonuses']}, commission {c['commission']}")

    @admin.display(description="Progress")
    def progress(self, obj: CrowdStage) -> str:
        return ", ".join(f"{k}: {v}" for k, v in selectors.stage_progress(obj.pk).items()) if obj.pk else "-"

    @admin.action(description="Launch stage (shows the cost first)")
    def launch_stage(self, request, queryset):
        if "apply" in request.POST:
            from crowd import tasks

            for stage in queryset:
                try:
                    plan = services.stage_plan(stage_id=stage.pk)
                except (ProviderError, services.CrowdError, ValueError) as exc:
                    self.message_user(request, f"{stage}: {exc}", messages.ERROR)
                    continue
                # Publishing (one CreateHIT per HIT, up to the balance) runs in a worker.
                tasks.stage_publish.delay_on_commit(stage.pk)
                stage.refresh_from_db()
                level = messages.WARNING if stage.status == CrowdStage.Status.PAUSED else messages.SUCCESS
                self.message_user(request, f"{stage}: {len(plan.created)} HITs planned; publishing them in the "
                                           f"background (see HITs). {stage.status_reason}", level)
            return None
        rows = []
        for stage in queryset.select_related("project"):
            est = services.stage_estimate(stage=stage)
            try:
                balance: Decimal | str = provider_for(stage.project_id).balance()
            except ProviderError as exc:
                balance = f"unknown ({exc})"
            rows.append({"stage": stage, "estimate": est, "balance": balance,
                         "per_hit": services.hit_cost(reward=stage.reward, max_assignments=stage.max_assignments,
                                                      bonus=stage.bonus),
                         "rate": services.commission_rate(stage.max_assignments) * 100})
        context = {**self.admin_site.each_context(request), "title": "Launch crowd stages?", "rows": rows,
                   "queryset": queryset, "opts": self.model._meta,
                   "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME}
        return TemplateResponse(request, "admin/crowd/launch_confirm.html", context)

    @admin.action(description="Sync now (review and pay what was submitted)")
    def sync_now(self, request, queryset):
        _each(self, request, queryset, lambda s: services.stage_sync(stage_id=s.pk), "Stages synced")


class ExtendForm(forms.Form):
    hours = forms.IntegerField(min_value=1, max_value=24 * 30, initial=24)


@admin.register(HIT)
class HITAdmin(admin.ModelAdmin):
    list_display = ["__str__", "stage", "status", "max_assignments", "reward", "cost_reserved", "published_at",
                    "expires_at"]
    list_filter = ["status", "stage__project", "stage"]
    search_fields = ["provider_hit_id", "unique_request_token"]
    readonly_fields = [f.name for f in HIT._meta.fields]
    actions = ["publish", "sync_now", "extend", "expire"]

    @admin.action(description="Publish (if not yet)")
    def publish(self, request, queryset):
        _each(self, request, queryset, lambda h: services.hit_publish(hit_id=h.pk), "Published")

    @admin.action(description="Sync now")
    def sync_now(self, request, queryset):
        _each(self, request, queryset, lambda h: services.hit_sync(hit_id=h.pk), "Synced")

    @admin.action(description="Extend the lifetime")
    def extend(self, request, queryset):
        form = _form_step(self, request, queryset, ExtendForm, "Extend HITs", "extend")
        if isinstance(form, ExtendForm):
            hours = form.cleaned_data["hours"]
            _each(self, request, queryset, lambda h: services.hit_extend(hit_id=h.pk, seconds=hours * 3600),
                  "Extended")
            return None
        return form

    @admin.action(description="Expire now (no new workers)")
    def expire(self, request, queryset):
        _each(self, request, queryset, lambda h: services.hit_expire(hit_id=h.pk), "Expired")


class FeedbackForm(forms.Form):
    feedback = forms.CharField(max_length=1024, widget=forms.Textarea(attrs={"rows": 3}),
                               help_text="The worker reads this.")


class BonusForm(forms.Form):
    amount = forms.DecimalField(min_value=Decimal("0.01"), max_digits=8, decimal_places=2)
    reason = forms.CharField(max_length=1024, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="The worker reads this.")


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["provider_assignment_id", "hit", "worker", "state", "provider_status", "answer_source",
                    "submitted_at"]
    list_filter = ["state", "answer_source", "hit__stage"]
    search_fields = ["provider_assignment_id", "worker__provider_worker_id", "claimed_worker_id"]
    readonly_fields = [f.name for f in Assignment._meta.fields]
    list_select_related = ["hit", "worker"]
    actions = ["approve", "reject", "bonus"]

    @admin.action(description="Approve (pays the reward)")
    def approve(self, request, queryset):
        _each(self, request, queryset, lambda a: services.assignment_review(assignment_id=a.pk, approve=True),
              "Approved")

    @admin.action(description="Reject (with feedback)")
    def reject(self, request, queryset):
        form = _form_step(self, request, queryset, FeedbackForm, "Reject assignments", "reject")
        if isinstance(form, FeedbackForm):
            fb = form.cleaned_data["feedback"]
            _each(self, request, queryset,
                  lambda a: services.assignment_review(assignment_id=a.pk, approve=False, feedback=fb), "Rejected")
            return None
        return form

    @admin.action(description="Pay a bonus")
    def bonus(self, request, queryset):
        form = _form_step(self, request, queryset, BonusForm, "Pay a bonus", "bonus")
        if isinstance(form, BonusForm):
            def pay(a):
                payment = services.bonus_grant(assignment_id=a.pk, amount=form.cleaned_data["amount"],
                                               reason=form.cleaned_data["reason"])
                services.bonus_pay(payment_id=payment.pk)
            _each(self, request, queryset, pay, "Bonuses paid")
            return None
        return form


class BlockForm(forms.Form):
    reason = forms.CharField(max_length=300, help_text="The worker reads this.")


class NotifyForm(forms.Form):
    subject = forms.CharField(max_length=200)
    text = forms.CharField(max_length=4096, widget=forms.Textarea(attrs={"rows": 6}))


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["provider_worker_id", "approved", "rejected", "gold_seen", "gold_correct", "blocked"]
    list_filter = ["blocked"]
    search_fields = ["provider_worker_id"]
    actions = ["block", "notify"]

    @admin.action(description="Block")
    def block(self, request, queryset):
        form = _form_step(self, request, queryset, BlockForm, "Block workers", "block")
        if isinstance(form, BlockForm):
            _each(self, request, queryset,
                  lambda w: services.worker_block(worker_id=w.pk, reason=form.cleaned_data["reason"]), "Blocked")
            return None
        return form

    @admin.action(description="Send a message")
    def notify(self, request, queryset):
        form = _form_step(self, request, queryset, NotifyForm, "Message workers", "notify")
        if isinstance(form, NotifyForm):
            try:
                failed = services.workers_notify(worker_ids=list(queryset.values_list("pk", flat=True)),
                                                 subject=form.cleaned_data["subject"], text=form.cleaned_data["text"])
            except (ProviderError, services.CrowdError) as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            sent = queryset.count() - len(failed)
            self.message_user(request, f"Sent to {sent} workers.", messages.SUCCESS)
            for worker_id, why in failed.items():
                self.message_user(request, f"{worker_id}: {why}", messages.WARNING)
            return None
        return form


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["kind", "amount", "commission", "worker", "assignment", "status", "paid_at"]
    list_filter = ["kind", "status", "project"]
    readonly_fields = [f.name for f in Payment._meta.fields]

    def has_add_permission(self, request):
        return False
