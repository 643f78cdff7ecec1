"""The researchers' REST API under /api/v1/ (projects, images, annotations, exports, tokens)."""
from django.urls import path

from datasets.api import views

app_name = "api"

P = "projects/<int:project_id>/"
E = P + "exports/<int:number>/"

urlpatterns = [
    path("projects/", views.ProjectList.as_view(), name="project-list"),
    path(P, views.ProjectDetail.as_view(), name="project-detail"),
    path(P + "statistics/", views.ProjectStatistics.as_view(), name="project-statistics"),
    path(P + "categories/", views.CategoryList.as_view(), name="category-list"),
    path(P + "images/", views.ImageList.as_view(), name="image-list"),
    path(P + "images/<int:image_id>/", views.ImageDetail.as_view(), name="image-detail"),
    path(P + "images/<int:image_id>/file", views.ImageFile.as_view(), name="image-file"),
    path(P + "annotations/", views.AnnotationList.as_view(), name="annotation-list"),
    path(P + "exports/", views.ExportList.as_view(), name="export-list"),
    path(E, views.ExportDetail.as_view(), name="export-detail"),
    path(E + "cancel/", views.ExportCancel.as_view(), name="export-cancel"),
    path(E + "manifest/", views.ExportManifest.as_view(), name="export-manifest"),
    path(E + "files/<path:name>", views.ExportFile.as_view(), name="export-file"),
    path("tokens/", views.TokenList.as_view(), name="token-list"),
    path("tokens/<int:token_id>/", views.TokenRevoke.as_view(), name="token-revoke"),
]
