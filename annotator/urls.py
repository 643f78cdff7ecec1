"""Root URLs. Each app owns its own urls module; this file only mounts them."""
from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve as serve_static
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotator import health, views
from annotator.ratelimit import login_limited

admin.site.site_header = "Annotator"
admin.site.site_title = "Annotator admin"
admin.site.index_title = "Requester console"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # The admin's sign-in form, rate limited (annotator.ratelimit); the rest of the admin as is.
    path("admin/login/", login_limited(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("datasets.api.urls")),
    path("", include("crowd.marketplace.urls")),
    path("tasks/", include("frontend.urls")),
]

urlpatterns += [path("bench/", include("annotator.benchviews"))] if settings.BENCHMARK_VIEWS else []  # benchmarks/load.py

if settings.SERVE_MEDIA:
    media_prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [
        re_path(
            rf"^{media_prefix}(?P<path>.*)$",
            serve_static,
            {"document_root": settings.MEDIA_ROOT},
            name="media",
        )
    ]
