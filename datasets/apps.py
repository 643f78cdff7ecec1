from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "datasets"
    verbose_name = "Datasets"

    def ready(self) -> None:
        # Admin pages of exports and API tokens live apart from datasets/admin.py.
        from datasets import admin_exports  # noqa: F401
