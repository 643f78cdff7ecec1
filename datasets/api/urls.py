"""The researchers' REST API under /api/v1/ (projects, images, annotations, exports)."""
urlpatterns: list = []
