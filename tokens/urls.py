"""Token pages under `/tokens/` (CONTRACT 5a).

`new/` and `upload/` come before `<name>/`, so they win over tokens of those names; such a token
is still reachable through its edit, delete and download addresses.
"""

from django.urls import path

from tokens import views

app_name = "tokens"

urlpatterns = [
    path("", views.token_list, name="list"),
    path("new/", views.token_create, name="create"),
    path("upload/", views.token_upload, name="upload"),
    path("<str:name>/", views.token_detail, name="detail"),
    path("<str:name>/edit/", views.token_edit, name="edit"),
    path("<str:name>/delete/", views.token_delete, name="delete"),
    path("<str:name>/download/<str:fmt>/", views.token_download, name="download"),
]
