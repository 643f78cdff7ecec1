"""The marketplace's URLs: the MTurk-compatible requester API and the worker site."""
urlpatterns: list = []
