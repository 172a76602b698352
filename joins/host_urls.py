"""Registered host pages: `/hosts/` and `/hosts/<host_id>/` (CONTRACT 5a)."""

from django.urls import path

from joins import views

app_name = "hosts"

urlpatterns = [
    path("", views.host_list, name="list"),
    path("<str:host_id>/", views.host_detail, name="detail"),
    path("<str:host_id>/forget/", views.host_forget, name="forget"),
]
