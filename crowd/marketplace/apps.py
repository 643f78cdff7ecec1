from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    """The MTurk-compatible marketplace: a separate service that happens to share the process."""

    name = "crowd.marketplace"
    label = "marketplace"
    verbose_name = "Marketplace"
