"""Join history pages: `/joins/`, `/joins/<id>/` and the exports (CONTRACT 5a)."""

from django.urls import path

from joins import views

app_name = "joins"

urlpatterns = [
    path("", views.attempt_list, name="list"),
    path("export.csv", views.export_csv, name="export-csv"),
    path("export.jsonl", views.export_jsonl, name="export-jsonl"),
    path("<int:pk>/", views.attempt_detail, name="attempt-detail"),
]
