"""The labeling tools' pages, mounted under /tasks/."""
from django.urls import path

from frontend import views

app_name = "frontend"
urlpatterns = [
    path("<slug:kind>/<str:token>/", views.task_page, name="task"),
    path("<slug:kind>/<str:token>/answer", views.task_answer, name="answer"),
]
