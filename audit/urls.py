"""Admin action log under `/audit/` (CONTRACT 5a: `/audit/actions/`)."""

from django.urls import path
from django.views.generic import RedirectView

from audit import views

app_name = "audit"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="audit:actions", permanent=False), name="index"),
    path("actions/", views.action_list, name="actions"),
]
