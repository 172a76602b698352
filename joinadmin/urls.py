"""URL map: the console pages, the API under /api/v1, OpenAPI, health probes, metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from joinadmin import health, metrics, security, views
from joins import api as joins_api
from joins import crl_views, noop
from tokens import api as tokens_api

# The Django admin's sign-in shares the console's throttle (joinadmin/security.py).
admin.site.login_form = security.ThrottledAdminAuthenticationForm

api_patterns = [
    path("join", joins_api.JoinView.as_view(), name="join"),
    path("join/challenge", joins_api.JoinChallengeView.as_view(), name="join-challenge"),
    path("noop", noop.NoopView.as_view(), name="noop"),  # 404 unless JOINADMIN_BENCH_NOOP
    path("tokens", tokens_api.TokenListView.as_view(), name="token-list"),
    path("tokens/<str:name>", tokens_api.TokenDetailView.as_view(), name="token-detail"),
    path("join-attempts", joins_api.JoinAttemptListView.as_view(), name="attempt-list"),
    path(
        "join-attempts/<int:pk>", joins_api.JoinAttemptDetailView.as_view(), name="attempt-detail"
    ),
    path("hosts", joins_api.HostListView.as_view(), name="host-list"),
    path("hosts/<str:host_id>", joins_api.HostDetailView.as_view(), name="host-detail"),
    path("ca", joins_api.CAView.as_view(), name="ca"),
    path("ca/crl", crl_views.crl_der, name="ca-crl"),
    path("ca/crl.pem", crl_views.crl_pem_view, name="ca-crl-pem"),
    path("ca/ssh-krl", crl_views.ssh_krl, name="ca-ssh-krl"),
]

# Unknown addresses under /api/ answer in the API's error shape (joinadmin/api.py).
handler404 = "joinadmin.api.page_not_found"

urlpatterns = [
    path("api/v1/", include((api_patterns, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("django-admin/", admin.site.urls),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("tokens/", include("tokens.urls")),
    path("joins/", include("joins.urls")),
    path("hosts/", include("joins.host_urls")),
    path("audit/", include("audit.urls")),
    path("tools/", include("joins.tool_urls")),
]
