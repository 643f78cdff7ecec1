"""The marketplace's URLs: the MTurk-compatible requester API and the worker site."""
from django.contrib.auth import views as auth_views
from django.urls import path

from crowd.marketplace import views

app_name = "marketplace"

urlpatterns = [
    path("mturk-api/", views.mturk_api, name="api"),
    path("mturk/externalSubmit", views.external_submit, name="external-submit"),
    path("market/", views.home, name="home"),
    path("market/login/", views.LoginView.as_view(), name="login"),
    path("market/logout/", auth_views.LogoutView.as_view(next_page="/market/login/"), name="logout"),
    path("market/signup/", views.signup, name="signup"),
    path("market/join/<str:code>/", views.join, name="join"),
    path("market/become-worker/", views.become_worker, name="become-worker"),
    path("market/groups/<str:hit_type_id>/", views.group_preview, name="group-preview"),
    path("market/groups/<str:hit_type_id>/accept/", views.group_accept, name="group-accept"),
    path("market/hits/<str:hit_id>/preview/", views.hit_preview, name="hit-preview"),
    path("market/hits/<str:hit_id>/accept/", views.hit_accept, name="hit-accept"),
    path("market/hits/<str:hit_id>/question/", views.hit_question, name="hit-question"),
    path("market/work/<str:assignment_id>/", views.work, name="work"),
    path("market/work/<str:assignment_id>/return/", views.work_return, name="work-return"),
    path("market/dashboard/", views.dashboard, name="dashboard"),
    path("market/qualifications/", views.qualifications_page, name="qualifications"),
    path("market/qualifications/<str:qualification_type_id>/test/", views.qualification_test,
         name="qualification-test"),
    path("market/notifications/", views.notifications, name="notifications"),
]
