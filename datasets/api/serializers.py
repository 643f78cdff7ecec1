"""Input and output shapes of the API (one serializer per direction, as the styleguide has it)."""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasets.models import ApiToken, Category, Export, Image, Polygon, Project


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()
    image_count = serializers.IntegerField(read_only=True)
    category_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "status", "role", "image_count", "category_count",
                  "created_at", "updated_at"]

    def get_role(self, obj) -> str:
        return self.context.get("roles", {}).get(obj.pk, "")


class CategoryCountSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    accepted_polygons = serializers.IntegerField()
    present_labels = serializers.IntegerField()


class StatisticsSerializer(serializers.Serializer):
    images = serializers.IntegerField()
    categories = serializers.IntegerField()
    polygons = serializers.DictField(child=serializers.IntegerField())
    image_labels = serializers.IntegerField()
    instance_points = serializers.IntegerField()
    exports = serializers.IntegerField()
    per_category = CategoryCountSerializer(many=True)


class CategorySerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="coco_id", read_only=True)

    class Meta:
        model = Category
        fields = ["id", "name", "supercategory"]


class ImageSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = ["id", "width", "height", "exif_orientation", "format", "file_size", "sha256", "original_name",
                  "source_url", "license", "attribution", "created_at", "download_url"]

    def get_download_url(self, obj) -> str:
        return reverse("api:image-file", kwargs={"project_id": obj.project_id, "image_id": obj.pk})


class ImageUploadSerializer(serializers.Serializer):
    files = serializers.ListField(child=serializers.FileField(), allow_empty=False)
    license = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    attribution = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class ImportReportSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    total = serializers.IntegerField()
    imported = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    failed = serializers.IntegerField()
    report = serializers.ListField(child=serializers.DictField())
    error = serializers.CharField()


class AnnotationSerializer(serializers.ModelSerializer):
    image = serializers.IntegerField(source="image_id", read_only=True)
    category = serializers.IntegerField(source="category.coco_id", read_only=True)
    point = serializers.SerializerMethodField()

    class Meta:
        model = Polygon
        fields = ["id", "image", "category", "stage", "status", "parts", "bbox", "area", "is_crowd",
                  "confidence", "point", "created_at"]

    @extend_schema_field(serializers.ListField(child=serializers.FloatField(), allow_null=True))
    def get_point(self, obj):
        return [obj.point.x, obj.point.y] if obj.point_id else None


class SplitRatiosSerializer(serializers.Serializer):
    train = serializers.FloatField(min_value=0, max_value=1, default=0.8)
    val = serializers.FloatField(min_value=0, max_value=1, default=0.1)
    test = serializers.FloatField(min_value=0, max_value=1, default=0.1)


class ExportFiltersSerializer(serializers.Serializer):
    complete_stages = serializers.ListField(
        child=serializers.ChoiceField(choices=["categories", "spotting", "segmentation"]), required=False, default=list,
        help_text="Only images whose stages are all finished.",
    )
    min_confidence = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True, default=None)
    categories = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**31 - 1),
                                       required=False, default=list, help_text="Category ids; empty for all.")


class ExportCreateSerializer(serializers.Serializer):
    formats = serializers.ListField(
        child=serializers.ChoiceField(choices=["coco", "shards", "imagefolder"]), required=False,
        default=lambda: ["coco", "shards"], allow_empty=False,
    )
    filters = ExportFiltersSerializer(required=False, default=dict)
    split_ratios = SplitRatiosSerializer(required=False, default=dict)
    seed = serializers.IntegerField(min_value=0, max_value=2**63 - 1, required=False, default=0)
    shard_size = serializers.IntegerField(min_value=1024 * 1024, max_value=64 * 1024**3, required=False,
                                          allow_null=True, default=None)
    min_shards = serializers.IntegerField(min_value=1, max_value=4096, required=False, allow_null=True, default=None)


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.FloatField()
    eta_seconds = serializers.FloatField(allow_null=True)


class ExportFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    url = serializers.CharField()


class ExportSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    files = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    manifest_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = ["number", "status", "formats", "filters", "split_ratios", "seed", "shard_size", "min_shards",
                  "progress", "counts", "files", "manifest_url", "error", "created_by", "created_at",
                  "started_at", "finished_at"]

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, obj):
        return {"done": obj.progress_done, "total": obj.progress_total, "percent": obj.percent,
                "eta_seconds": obj.eta_seconds}

    @extend_schema_field(ExportFileSerializer(many=True))
    def get_files(self, obj):
        if obj.status != Export.Status.DONE:
            return []
        return [
            {**f, "url": reverse("api:export-file", kwargs={"project_id": obj.project_id, "number": obj.number,
                                                              "name": f["name"]})}
            for f in obj.files
        ]

    def get_manifest_url(self, obj) -> str | None:
        if obj.status != Export.Status.DONE:
            return None
        return reverse("api:export-manifest", kwargs={"project_id": obj.project_id, "number": obj.number})


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="Shown once: keep it now, it cannot be read again.")

    class Meta(ApiTokenSerializer.Meta):
        fields = ApiTokenSerializer.Meta.fields + ["token"]
