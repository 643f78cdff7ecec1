"""Views of the researchers' API: thin, each checks access, calls a selector or service, and
serializes. Everything under a project goes through ``permissions.project_for``."""
from __future__ import annotations

from django.db.models import Count, Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.api import permissions as perms
from datasets.api import serializers as s
from datasets.api.downloads import file_response
from datasets.api.errors import Conflict
from datasets.api.filters import AnnotationFilter, ImageFilter
from datasets.exports import service as exports
from datasets.models import ApiToken, Category, Export, Image, ImageLabel, InstancePoint, Polygon, Stage
from datasets.selectors import project_summaries
from datasets.services.tokens import api_token_create, api_token_revoke

ERRORS = {401: OpenApiResponse(description="Not signed in"), 404: OpenApiResponse(description="No such object")}


class ThrottleFirst:
    """Count a request against the rate limit before checking permissions, so that anonymous
    callers, refused with 401, are still throttled (DRF checks permissions first)."""

    def initial(self, request, *args, **kwargs):
        self.format_kwarg = self.get_format_suffix(**kwargs)
        neg = self.perform_content_negotiation(request)
        request.accepted_renderer, request.accepted_media_type = neg
        version, scheme = self.determine_version(request, *args, **kwargs)
        request.version, request.versioning_scheme = version, scheme
        self.perform_authentication(request)
        self.check_throttles(request)
        self.check_permissions(request)


class AnnotationCursor(CursorPagination):
    ordering = "id"
    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 5000


# --- Projects ------------------------------------------------------------------------------


class ProjectList(ThrottleFirst, generics.ListAPIView):
    """Projects you own or that are shared with you."""

    serializer_class = s.ProjectSerializer

    def get_queryset(self):
        return project_summaries(user=self.request.user).order_by("-created_at", "id")

    def get_serializer_context(self):
        ctx = super().get_serializer_context()
        user = self.request.user
        roles = {}
        if user.is_authenticated:
            roles = {pk: role for pk, role in user.memberships.values_list("project_id", "role")}
            roles.update({pk: "owner" for pk in user.owned_projects.values_list("id", flat=True)})
        ctx["roles"] = roles
        return ctx

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        if request.user.is_superuser:
            for item in response.data["results"]:
                item["role"] = item["role"] or "staff"
        return response


class ProjectDetail(ThrottleFirst, APIView):
    @extend_schema(responses={200: s.ProjectSerializer, **ERRORS})
    def get(self, request, project_id: int):
        project, role = perms.project_for(user=request.user, project_id=project_id)
        project = project_summaries(user=request.user).get(pk=project.pk) if not request.user.is_superuser else (
            type(project).objects.annotate(image_count=Count("images", distinct=True),
                                           category_count=Count("categories", distinct=True)).get(pk=project.pk))
        return Response(s.ProjectSerializer(project, context={"roles": {project.pk: role}}).data)


class ProjectStatistics(ThrottleFirst, APIView):
    @extend_schema(responses={200: s.StatisticsSerializer, **ERRORS})
    def get(self, request, project_id: int):
        project, _ = perms.project_for(user=request.user, project_id=project_id)
        by_status = dict(
            Polygon.objects.filter(image__project=project).values_list("status").annotate(n=Count("id")).order_by()
        )
        cats = project.categories.annotate(
            accepted=Count("polygons", filter=Q(polygons__status=Polygon.Status.ACCEPTED), distinct=True),
            present=Count("imagelabels", filter=Q(imagelabels__stage=Stage.AGGREGATE, imagelabels__present=True),
                          distinct=True),
        ).order_by("coco_id")
        data = {
            "images": project.images.count(),
            "categories": project.categories.count(),
            "polygons": {k: by_status.get(k, 0) for k in Polygon.Status.values},
            "image_labels": ImageLabel.objects.filter(image__project=project).count(),
            "instance_points": InstancePoint.objects.filter(image__project=project).count(),
            "exports": project.exports.count(),
            "per_category": [
                {"id": c.coco_id, "name": c.name, "accepted_polygons": c.accepted, "present_labels": c.present}
                for c in cats
            ],
        }
        return Response(s.StatisticsSerializer(data).data)


class CategoryList(ThrottleFirst, generics.ListAPIView):
    serializer_class = s.CategorySerializer
    pagination_class = None
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Category.objects.none()
        project, _ = perms.project_for(user=self.request.user, project_id=self.kwargs["project_id"])
        return project.categories.order_by("coco_id")


# --- Images --------------------------------------------------------------------------------


class ImageList(ThrottleFirst, generics.ListAPIView):
    """Images of a project. POST uploads files through the ingestion service."""

    serializer_class = s.ImageSerializer
    filterset_class = ImageFilter
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Image.objects.none()
        project, _ = perms.project_for(user=self.request.user, project_id=self.kwargs["project_id"])
        return Image.objects.filter(project=project).order_by("id")

    @extend_schema(request={"multipart/form-data": s.ImageUploadSerializer},
                   responses={201: s.ImportReportSerializer, 400: OpenApiResponse(description="Invalid"),
                              403: OpenApiResponse(description="Role may not upload"), **ERRORS})
    def post(self, request, project_id: int):
        from datasets.services.ingest import images_import
        from datasets.services.ingest_sources import source_uploads

        project, _ = perms.project_for(user=request.user, project_id=project_id, allowed=perms.MANAGE)
        data = {"files": request.FILES.getlist("files"), "license": request.data.get("license", ""),
                "attribution": request.data.get("attribution", "")}
        payload = s.ImageUploadSerializer(data=data)
        payload.is_valid(raise_exception=True)
        result = images_import(
            project=project, source=source_uploads(payload.validated_data["files"]), created_by=request.user,
            license=payload.validated_data["license"], attribution=payload.validated_data["attribution"],
        )
        body = {"id": result.pk, "status": result.status, "total": result.total, "imported": result.imported,
                "duplicates": result.duplicates, "failed": result.failed, "report": result.report,
                "error": result.error}
        return Response(s.ImportReportSerializer(body).data, status=status.HTTP_201_CREATED)


class ImageDetail(ThrottleFirst, generics.RetrieveAPIView):
    serializer_class = s.ImageSerializer

    def get_object(self):
        project, _ = perms.project_for(user=self.request.user, project_id=self.kwargs["project_id"])
        return get_object_or_404(Image, project=project, pk=self.kwargs["image_id"])


class ImageFile(ThrottleFirst, APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes, (206, "application/octet-stream"): bytes,
                              **ERRORS})
    def get(self, request, project_id: int, image_id: int):
        project, _ = perms.project_for(user=request.user, project_id=project_id)
        image = get_object_or_404(Image, project=project, pk=image_id)
        ext = image.file.name.rsplit(".", 1)[-1]
        return file_response(request, name=image.file.name, size=image.file_size, sha256=image.sha256,
                             filename=f"{image.pk}.{ext}", content_type=f"image/{'jpeg' if ext == 'jpg' else ext}")


# --- Annotations ---------------------------------------------------------------------------


class AnnotationList(ThrottleFirst, generics.ListAPIView):
    """Polygons of a project, filtered and cursor-paginated (stable under new writes)."""

    serializer_class = s.AnnotationSerializer
    filterset_class = AnnotationFilter
    pagination_class = AnnotationCursor

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Polygon.objects.none()
        project, _ = perms.project_for(user=self.request.user, project_id=self.kwargs["project_id"])
        return Polygon.objects.filter(image__project=project).select_related("category", "point")


# --- Exports -------------------------------------------------------------------------------


class ExportList(ThrottleFirst, generics.ListAPIView):
    """Export versions of a project, newest first. POST makes a new one and queues its build."""

    serializer_class = s.ExportSerializer
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Export.objects.none()
        project, _ = perms.project_for(user=self.request.user, project_id=self.kwargs["project_id"])
        return Export.objects.filter(project=project).select_related("created_by").order_by("-number")

    @extend_schema(request=s.ExportCreateSerializer,
                   responses={201: s.ExportSerializer, 400: OpenApiResponse(description="Invalid"),
                              403: OpenApiResponse(description="Role may not export"), **ERRORS})
    def post(self, request, project_id: int):
        project, _ = perms.project_for(user=request.user, project_id=project_id, allowed=perms.EXPORT)
        payload = s.ExportCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        data["filters"] = dict(data.get("filters") or {})
        data["split_ratios"] = dict(data.get("split_ratios") or {"train": 0.8, "val": 0.1, "test": 0.1})
        export = exports.export_create(project=project, user=request.user, **data)
        return Response(s.ExportSerializer(export).data, status=status.HTTP_201_CREATED)


def _export(request, project_id: int, number: int, allowed=perms.READ) -> Export:
    project, _ = perms.project_for(user=request.user, project_id=project_id, allowed=allowed)
    export = Export.objects.filter(project=project, number=number).select_related("created_by").first()
    if export is None:
        raise NotFound("No such export.")
    return export


def _done(export: Export) -> Export:
    if export.status != Export.Status.DONE:
        raise Conflict(f"Export {export.number} is {export.status}; its files exist once it is done.")
    return export


class ExportDetail(ThrottleFirst, APIView):
    @extend_schema(responses={200: s.ExportSerializer, **ERRORS})
    def get(self, request, project_id: int, number: int):
        return Response(s.ExportSerializer(_export(request, project_id, number)).data)


class ExportCancel(ThrottleFirst, APIView):
    @extend_schema(request=None, responses={200: s.ExportSerializer, 409: OpenApiResponse(description="Finished"),
                                            **ERRORS})
    def post(self, request, project_id: int, number: int):
        export = _export(request, project_id, number, allowed=perms.EXPORT)
        if export.is_finished:
            raise Conflict(f"Export {export.number} is already {export.status}.")
        export = exports.export_cancel(export=export)
        return Response(s.ExportSerializer(export).data)


class ExportManifest(ThrottleFirst, APIView):
    @extend_schema(responses={200: OpenApiResponse(description="The export's manifest.json"),
                              409: OpenApiResponse(description="Not done"), **ERRORS})
    def get(self, request, project_id: int, number: int):
        export = _done(_export(request, project_id, number))
        return Response(exports.export_manifest(export=export))


class ExportFile(ThrottleFirst, APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes, (206, "application/octet-stream"): bytes,
                              409: OpenApiResponse(description="Not done"), **ERRORS})
    def get(self, request, project_id: int, number: int, name: str):
        export = _done(_export(request, project_id, number))
        entry = export.file_entry(name)
        if entry is None:
            raise NotFound("The export has no such file.")
        ctype = "application/json" if name.endswith(".json") else (
            "application/x-tar" if name.endswith(".tar") else "text/x-python" if name.endswith(".py")
            else "application/octet-stream")
        return file_response(request, name=exports.export_storage_name(export=export, name=name), size=entry["size"],
                             sha256=entry["sha256"], filename=name.rsplit("/", 1)[-1], content_type=ctype)


# --- Tokens --------------------------------------------------------------------------------


class TokenList(ThrottleFirst, generics.ListAPIView):
    """Your API tokens (never the tokens themselves). POST makes one and shows it once."""

    serializer_class = s.ApiTokenSerializer
    filter_backends: list = []
    pagination_class = None

    def get_queryset(self):
        return ApiToken.objects.filter(user=self.request.user).order_by("-created_at", "-id")

    @extend_schema(request=s.ApiTokenCreateSerializer, responses={201: s.ApiTokenCreatedSerializer, **ERRORS})
    def post(self, request):
        payload = s.ApiTokenCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        token, raw = api_token_create(user=request.user, **payload.validated_data)
        data = s.ApiTokenSerializer(token).data
        data["token"] = raw
        return Response(data, status=status.HTTP_201_CREATED)


class TokenRevoke(ThrottleFirst, APIView):
    @extend_schema(request=None, responses={204: None, **ERRORS})
    def delete(self, request, token_id: int):
        token = ApiToken.objects.filter(user=request.user, pk=token_id).first()
        if token is None:
            raise NotFound("No such token.")
        api_token_revoke(token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)
