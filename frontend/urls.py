"""The labeling tools' pages, mounted under /tasks/."""
urlpatterns: list = []
