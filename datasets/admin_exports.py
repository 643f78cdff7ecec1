"""Admin pages for exports and API tokens (imported from ``DatasetsConfig.ready``)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from datasets.exports.service import export_cancel
from datasets.models import ApiToken, Export
from datasets.services.tokens import api_token_create, api_token_revoke


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "percent", "formats", "seed", "created_by", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["project__name"]
    readonly_fields = [f.name for f in Export._meta.fields] + ["percent", "eta_seconds"]
    actions = ["cancel"]

    def has_add_permission(self, request) -> bool:
        return False  # made through the API or the service, which number and queue them

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # an export is an immutable snapshot

    @admin.action(description="Cancel the selected exports")
    def cancel(self, request, queryset):
        for export in queryset:
            try:
                export_cancel(export=export)
            except ValidationError as exc:
                self.message_user(request, exc.messages[0], messages.WARNING)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    fields = ["user", "name", "expires_at", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = api_token_create(user=obj.user, name=obj.name, expires_at=obj.expires_at)
        obj.pk = token.pk
        obj.refresh_from_db()
        self.message_user(request, f"The token is {raw} — copy it now, it is not shown again.", messages.SUCCESS)

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            api_token_revoke(token=token)
