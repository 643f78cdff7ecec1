"""The requester console: projects, their people and categories, images, and image imports.

Views here only validate a form and call a service (``datasets.services``); the slow imports
(archives, URL lists) are staged and handed to a Celery worker after the transaction commits.
All user text goes through ``format_html`` / the template engine, never into raw HTML.
"""
from __future__ import annotations

import io
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.db.models import Count
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_GET

from datasets.models import Category, Image, ImageImport, Membership, Project
from datasets.services.categories import categories_add, categories_add_coco
from datasets.services.ingest import image_import_stage, images_import
from datasets.services.ingest_sources import parse_url_list, source_uploads

THUMBNAIL_SIZE = 96
REPORT_ROWS_SHOWN = 500


# --- Forms -----------------------------------------------------------------------------------


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that takes several files (Django's documented pattern)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(d, initial) for d in data if d]
        return [single(data, initial)] if data else []


class ImageImportForm(forms.Form):
    images = MultipleFileField(required=False, label="Image files", help_text="JPEG, PNG or WebP; choose several at once.")
    archive = forms.FileField(
        required=False, label="Or one archive", help_text="A .zip or .tar (.tar.gz, .tgz...) of images; imported in the background.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,.tar,.tgz,.gz,.bz2,.xz"}),
    )
    urls = forms.CharField(
        required=False, label="Or a list of URLs", widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text="One http(s) URL a line; imported in the background.",
    )
    license = forms.CharField(required=False, max_length=200, label="Licence")
    attribution = forms.CharField(required=False, max_length=500)

    def clean(self):
        data = super().clean()
        given = [bool(data.get("images")), bool(data.get("archive")), bool((data.get("urls") or "").strip())]
        if sum(given) != 1:
            raise ValidationError("Give exactly one of: image files, one archive, or a list of URLs.")
        if given[2] and not parse_url_list(data["urls"]):
            raise ValidationError("The URL list has no URL in it.")
        return data


class CategoryImportForm(forms.Form):
    file = forms.FileField(label="COCO categories JSON", help_text="A COCO file (its 'categories') or a list of {id, name, supercategory}.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > 5 * 1024 * 1024:
            raise ValidationError("The file is over 5 MB; a categories file is much smaller.")
        try:
            return json.loads(upload.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationError(f"{upload.name}: not valid JSON ({exc}).") from None


# --- Project ---------------------------------------------------------------------------------


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "status", "category_count", "image_count", "budget_usd", "created_at", "import_link"]
    list_filter = ["status"]
    search_fields = ["name", "description", "owner__username"]
    inlines = [MembershipInline]
    actions = ["add_coco_categories"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["created_at", "updated_at"]

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("owner")
            .annotate(_categories=Count("categories", distinct=True), _images=Count("images", distinct=True))
        )

    @admin.display(description="categories", ordering="_categories")
    def category_count(self, obj):
        return obj._categories

    @admin.display(description="images", ordering="_images")
    def image_count(self, obj):
        return obj._images

    @admin.display(description="")
    def import_link(self, obj):
        return format_html(
            '<a href="{}">Import images</a> · <a href="{}">Import categories</a>',
            reverse("admin:datasets_project_import_images", args=[obj.pk]),
            reverse("admin:datasets_project_import_categories", args=[obj.pk]),
        )

    @admin.action(description="Add COCO's 80 categories")
    def add_coco_categories(self, request, queryset):
        for project in queryset:
            try:
                created, unchanged = categories_add_coco(project=project)
            except ValidationError as exc:
                self.message_user(request, format_html("{}: {}", project.name, " ".join(exc.messages)), messages.ERROR)
            else:
                self.message_user(request, f"{project.name}: {created} categories added, {unchanged} already there.")

    def get_urls(self):
        own = [
            path("<int:project_id>/import-images/", self.admin_site.admin_view(self.import_images_view),
                 name="datasets_project_import_images"),
            path("<int:project_id>/import-categories/", self.admin_site.admin_view(self.import_categories_view),
                 name="datasets_project_import_categories"),
        ]
        return own + super().get_urls()

    def _project_for_change(self, request, project_id: int) -> Project:
        project = get_object_or_404(Project, pk=project_id)
        if not self.has_change_permission(request, project) or not request.user.has_perm("datasets.add_image"):
            raise PermissionDenied
        return project

    def import_images_view(self, request, project_id: int):
        project = self._project_for_change(request, project_id)
        form = ImageImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            options = {"license": data["license"], "attribution": data["attribution"]}
            if data["images"]:
                # Uploaded files are already on this server: import them now, in the request.
                result = images_import(project=project, source=source_uploads(data["images"]), created_by=request.user, **options)
                self.message_user(
                    request,
                    f"Import #{result.pk}: {result.imported} imported, {result.duplicates} duplicate(s), {result.failed} failed.",
                    messages.SUCCESS if not result.failed else messages.WARNING,
                )
            else:
                from datasets.tasks import image_import_run

                with transaction.atomic():
                    result = image_import_stage(
                        project=project, created_by=request.user, archive=data["archive"] or None,
                        urls_text=data["urls"] if not data["archive"] else None, **options,
                    )
                    image_import_run.delay_on_commit(result.pk)
                self.message_user(request, f"Import #{result.pk} is queued; this page shows its report as it runs.")
            return HttpResponseRedirect(reverse("admin:datasets_imageimport_change", args=[result.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import images into {project.name}",
            "project": project,
            "form": form,
            "opts": self.model._meta,
            "recent": project.imports.all()[:10],
        }
        return TemplateResponse(request, "admin/datasets/project/import_images.html", context)

    def import_categories_view(self, request, project_id: int):
        project = self._project_for_change(request, project_id)
        form = CategoryImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                created, unchanged = categories_add(project=project, entries=form.cleaned_data["file"])
            except ValidationError as exc:
                form.add_error("file", exc)
            else:
                self.message_user(request, f"{created} categories added, {unchanged} already there.")
                return HttpResponseRedirect(
                    reverse("admin:datasets_category_changelist") + f"?project__id__exact={project.pk}"
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import categories into {project.name}",
            "project": project,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/datasets/project/import_categories.html", context)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "project__name"]
    list_select_related = ["user", "project"]
    autocomplete_fields = ["user", "project"]


# --- Category --------------------------------------------------------------------------------


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "coco_id", "supercategory", "project"]
    list_filter = ["project", "supercategory"]
    search_fields = ["name", "supercategory"]
    list_select_related = ["project"]
    ordering = ["project", "coco_id"]
    autocomplete_fields = ["project"]


# --- Image -----------------------------------------------------------------------------------


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "original_name", "project", "size", "format", "file_size", "license", "created_at"]
    list_display_links = ["thumbnail", "original_name"]
    list_filter = ["project", "format", "license"]
    search_fields = ["original_name", "sha256"]
    list_select_related = ["project"]
    list_per_page = 50
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = [
        "preview", "file", "width", "height", "exif_orientation", "format", "file_size", "sha256",
        "imported_by", "created_at",
    ]
    fields = [
        "project", "preview", "original_name", "license", "attribution", "source_url", "file", "width", "height",
        "exif_orientation", "format", "file_size", "sha256", "imported_by", "created_at",
    ]

    def has_add_permission(self, request):
        return False  # images come in through the import view, which checks them

    @admin.display(description="")
    def thumbnail(self, obj):
        return format_html(
            '<img src="{}" alt="" loading="lazy" style="max-width:{}px;max-height:{}px">',
            reverse("admin:datasets_image_thumbnail", args=[obj.pk]), THUMBNAIL_SIZE, THUMBNAIL_SIZE,
        )

    @admin.display(description="preview")
    def preview(self, obj):
        if not obj.pk:
            return "-"
        return format_html(
            '<a href="{}"><img src="{}" alt="" style="max-width:480px;max-height:480px"></a>',
            obj.file.url, obj.file.url,
        )

    @admin.display(description="size (displayed)")
    def size(self, obj):
        return f"{obj.width}×{obj.height}"

    def get_urls(self):
        return [
            path("<int:image_id>/thumbnail/", self.admin_site.admin_view(require_GET(self.thumbnail_view)),
                 name="datasets_image_thumbnail"),
        ] + super().get_urls()

    def thumbnail_view(self, request, image_id: int):
        """A small JPEG of the stored image, made once and kept in storage beside the images."""
        image = Image.objects.filter(pk=image_id).only("pk", "file", "sha256", "project_id").first()
        if image is None:
            raise Http404("No such image.")
        if not self.has_view_permission(request, image):
            raise PermissionDenied
        name = f"thumbnails/{image.project_id}/{image.sha256[:2]}/{image.sha256}-{THUMBNAIL_SIZE}.jpg"
        if request.headers.get("If-None-Match") == f'"{image.sha256}"':
            return HttpResponse(status=304)
        if default_storage.exists(name):
            with default_storage.open(name, "rb") as f:
                data = f.read()
        else:
            data = _make_thumbnail(image)
            if data is None:
                raise Http404("The stored file cannot be read.")
            try:
                default_storage.save(name, ContentFile(data))
            except OSError:
                pass
        response = HttpResponse(data, content_type="image/jpeg")
        response["Cache-Control"] = "private, max-age=86400"
        response["ETag"] = f'"{image.sha256}"'
        return response


def _make_thumbnail(image: Image) -> bytes | None:
    from PIL import Image as PILImage
    from PIL import ImageOps

    try:
        with image.file.open("rb") as f, PILImage.open(f) as im:
            im.draft("RGB", (THUMBNAIL_SIZE * 2, THUMBNAIL_SIZE * 2))
            im = ImageOps.exif_transpose(im)
            im.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            out = io.BytesIO()
            im.convert("RGB").save(out, "JPEG", quality=80)
            return out.getvalue()
    except (OSError, ValueError):
        return None


# --- ImageImport -----------------------------------------------------------------------------


@admin.register(ImageImport)
class ImageImportAdmin(admin.ModelAdmin):
    list_display = ["__str__", "source", "status", "total", "imported", "duplicates", "failed", "created_by", "created_at"]
    list_filter = ["status", "source", "project"]
    search_fields = ["source_detail", "project__name"]
    list_select_related = ["project", "created_by"]
    fields = [
        "project", "source", "source_detail", "status", "total", "imported", "duplicates", "failed", "error",
        "created_by", "created_at", "finished_at", "report_table",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="report")
    def report_table(self, obj):
        report = obj.report or []
        if not report:
            if obj.status in (ImageImport.Status.PENDING, ImageImport.Status.RUNNING):
                return "The import has not reported yet; reload this page in a moment."
            return "No files."
        # Failures first, every one of them; then the rest up to a bounded page size.
        failures = [e for e in report if e.get("status") == "failed"]
        others = [e for e in report if e.get("status") != "failed"]
        shown = failures + others[: max(0, REPORT_ROWS_SHOWN - len(failures))]
        rows = format_html_join(
            "\n", '<tr class="import-{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    e.get("status", ""),
                    e.get("name", ""),
                    e.get("status", ""),
                    e.get("reason", "") or "",
                    _image_link(e.get("image")),
                )
                for e in shown
            ),
        )
        more = len(report) - len(shown)
        tail = format_html("<p>{} more line(s) not shown.</p>", more) if more > 0 else ""
        return format_html(
            '<table class="import-report"><thead><tr><th>file</th><th>status</th><th>reason</th><th>image</th></tr>'
            "</thead><tbody>{}</tbody></table>{}",
            rows, tail,
        )


def _image_link(image_id) -> str:
    if not image_id:
        return ""
    return format_html('<a href="{}">#{}</a>', reverse("admin:datasets_image_change", args=[image_id]), image_id)

