"""The requester console's marketplace pages: accounts (balance top-ups), keys, workers, HITs."""
from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin, messages

from crowd.marketplace import services
from crowd.marketplace.models import (
    HIT,
    Assignment,
    HITType,
    LedgerEntry,
    QualificationType,
    RequesterAccount,
    RequesterKey,
    WorkerBlock,
    WorkerInvite,
    WorkerProfile,
)


class RequesterAccountForm(forms.ModelForm):
    top_up = forms.DecimalField(label="Add to balance (USD)", required=False, min_value=Decimal("0.01"),
                                max_digits=10, decimal_places=2)

    class Meta:
        model = RequesterAccount
        fields = ["user", "is_public"]


class LedgerInline(admin.TabularInline):
    model = LedgerEntry
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "kind", "amount", "reference"]
    ordering = ["-created_at"]
    max_num = 0


@admin.register(RequesterAccount)
class RequesterAccountAdmin(admin.ModelAdmin):
    form = RequesterAccountForm
    list_display = ["user", "balance", "is_public", "created_at"]
    readonly_fields = ["balance"]
    inlines = [LedgerInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        amount = form.cleaned_data.get("top_up")
        if amount:
            services.account_top_up(account=obj, amount=amount, reference=f"admin:{request.user.get_username()}")
            obj.refresh_from_db()
            messages.success(request, f"Added ${amount}; the balance is now ${obj.balance}.")


class RequesterKeyForm(forms.ModelForm):
    class Meta:
        model = RequesterKey
        fields = ["account"]


@admin.register(RequesterKey)
class RequesterKeyAdmin(admin.ModelAdmin):
    list_display = ["access_key_id", "account", "is_active", "created_at", "revoked_at"]
    list_filter = ["is_active"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = RequesterKeyForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return ["account", "access_key_id", "is_active", "created_at", "revoked_at", "last_used_at"] if obj else []

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) if obj else ["account"]

    def save_model(self, request, obj, form, change):
        if change:
            return
        key, secret = services.requester_key_create(user=obj.account.user)
        obj.pk = key.pk
        obj.access_key_id = key.access_key_id
        messages.warning(request, f"AWS_ACCESS_KEY_ID={key.access_key_id}  AWS_SECRET_ACCESS_KEY={secret}  "
                                  "(copy the secret now: it is stored encrypted and never shown again)")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.requester_key_revoke(key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(WorkerProfile)
class WorkerProfileAdmin(admin.ModelAdmin):
    list_display = ["worker_id", "user", "country", "created_at"]
    search_fields = ["worker_id", "user__username"]
    filter_horizontal = ["requesters"]


@admin.register(WorkerInvite)
class WorkerInviteAdmin(admin.ModelAdmin):
    list_display = ["code", "account", "uses_left", "created_at"]
    readonly_fields = ["code"]


@admin.register(HITType)
class HITTypeAdmin(admin.ModelAdmin):
    list_display = ["hit_type_id", "title", "account", "reward", "assignment_duration"]
    search_fields = ["hit_type_id", "title"]


@admin.register(HIT)
class HITAdmin(admin.ModelAdmin):
    list_display = ["hit_id", "hit_type", "account", "max_assignments", "num_pending", "num_submitted",
                    "num_completed", "expiration", "disposed"]
    list_select_related = ["hit_type", "account__user"]
    search_fields = ["hit_id"]
    readonly_fields = [f.name for f in HIT._meta.fields]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["assignment_id", "hit", "worker", "status", "accept_time", "submit_time"]
    list_filter = ["status"]
    list_select_related = ["hit", "worker"]
    search_fields = ["assignment_id", "worker__worker_id"]
    readonly_fields = [f.name for f in Assignment._meta.fields]


@admin.register(QualificationType)
class QualificationTypeAdmin(admin.ModelAdmin):
    list_display = ["qualification_type_id", "name", "account", "status", "auto_granted"]


@admin.register(WorkerBlock)
class WorkerBlockAdmin(admin.ModelAdmin):
    list_display = ["account", "worker", "reason", "created_at"]
