"""Console tools: the policy tester and the trusted AWS certificates (`/tools/...`)."""

from django.urls import path
from django.views.generic import RedirectView

from joins import policy_views, trusted_cert_views

app_name = "tools"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="tools:policy-tester"), name="index"),
    path("policy-tester/", policy_views.policy_tester, name="policy-tester"),
    path(
        "trusted-certificates/",
        trusted_cert_views.certificate_list,
        name="trusted-certificates",
    ),
    path(
        "trusted-certificates/add/",
        trusted_cert_views.certificate_add,
        name="trusted-certificate-add",
    ),
    path(
        "trusted-certificates/<str:region>/",
        trusted_cert_views.certificate_detail,
        name="trusted-certificate",
    ),
    path(
        "trusted-certificates/<str:region>/<str:source>.pem",
        trusted_cert_views.certificate_pem,
        name="trusted-certificate-pem",
    ),
    path(
        "trusted-certificates/<str:region>/remove/",
        trusted_cert_views.certificate_remove,
        name="trusted-certificate-remove",
    ),
]
