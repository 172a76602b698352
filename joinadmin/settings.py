"""Settings for joinadmin, driven entirely by the environment.

One module for every deployment: a laptop on SQLite and a fleet of gunicorn servers on
PostgreSQL and Redis read the same code and differ only in variables (see `.env.example`).
Defaults are the safe choice: DEBUG off, a secret key generated once with mode 0600, hosts
limited to loopback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from joinadmin.env import env_bool, env_list

BASE_DIR = Path(__file__).resolve().parent.parent

DATA_DIR = Path(os.environ.get("JOINADMIN_DATA_DIR") or "var").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _load_or_create_secret_key(data_dir: Path) -> str:
    """Return the secret key kept in the data dir, creating it once.

    O_EXCL makes the creation race-free when several gunicorn workers start together: exactly
    one writes the file, the others read what it wrote.
    """
    path = data_dir / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if key:
            return key
        raise RuntimeError(f"{path} is empty; delete it to generate a new secret key") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(64))
    return path.read_text().strip()


SECRET_KEY = os.environ.get("JOINADMIN_SECRET_KEY") or _load_or_create_secret_key(DATA_DIR)
DEBUG = env_bool("JOINADMIN_DEBUG", False)
ALLOWED_HOSTS = env_list("JOINADMIN_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("JOINADMIN_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "tokens",
    "joins",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "joinadmin.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "joinadmin.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "joinadmin.urls"
WSGI_APPLICATION = "joinadmin.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite runs in WAL mode with IMMEDIATE transactions so that concurrent joins queue on the
# write lock instead of failing with "database is locked" half-way through a transaction; the
# join's own writes go through one writer thread per process (joins/writer.py). Connections are
# kept per thread on both databases: opening a SQLite connection (Django registers its SQL
# functions, runs the PRAGMAs) cost a join as much as its token check (bench/RESULTS.md).
_default_db = f"sqlite:///{DATA_DIR / 'joinadmin.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or _default_db,
        conn_max_age=int(os.environ.get("JOINADMIN_DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Tests use a file too (not shared-cache memory), so that concurrent joins meet the same
    # locking as in production.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-joinadmin.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # A connection pool per process (psycopg_pool, through Django) instead of a connection per
    # thread: 128 threads per process would otherwise need 128 connections each, more than
    # PostgreSQL's default max_connections for one server. A join gives its connection back
    # while it waits for AWS and for the join writer (joinadmin/dbpool.py), so a small pool
    # serves every thread; a request that finds none free within the timeout answers 503.
    _db_pool_size = int(os.environ.get("JOINADMIN_DB_POOL_SIZE", "0"))
    if _db_pool_size > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them instead
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": min(2, _db_pool_size),
            "max_size": _db_pool_size,
            "timeout": float(os.environ.get("JOINADMIN_DB_POOL_TIMEOUT", "5")),
            "max_idle": 60,
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (rate limits, AWS lookups, shared across servers when Redis is set) ---------------
CACHE_URL = os.environ.get("JOINADMIN_CACHE_URL", "")
_SHARED_CACHE = CACHE_URL.startswith(("redis://", "rediss://", "unix://"))
if _SHARED_CACHE:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "joinadmin",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "joinadmin",
        }
    }

# --- Authentication -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Security -------------------------------------------------------------------------------
# Behind a TLS proxy set JOINADMIN_SECURE=true: cookies become Secure, HSTS is sent and the
# proxy's X-Forwarded-Proto is believed (only the proxy can reach gunicorn in that setup).
SECURE_DEPLOYMENT = env_bool("JOINADMIN_SECURE", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = SECURE_DEPLOYMENT
CSRF_COOKIE_SECURE = SECURE_DEPLOYMENT
SESSION_COOKIE_AGE = 8 * 3600
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if SECURE_DEPLOYMENT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("JOINADMIN_SSL_REDIRECT", True)
    # Probes and the metrics scrape talk to gunicorn directly over loopback, without the proxy.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = int(os.environ.get("JOINADMIN_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Preloading commits the whole registered domain to HTTPS in browsers, for months, beyond
    # this service: an operator's decision, off unless asked for. Declining it is deliberate,
    # so Django's reminder (security.W021) is silenced only while it is off.
    SECURE_HSTS_PRELOAD = env_bool("JOINADMIN_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # The secret key signs sessions and protects the CA private keys: refuse to serve with a
    # short one rather than warn (Django's own deploy check asks for 50 characters, 5 distinct).
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            "JOINADMIN_SECURE=true needs a secret key of at least 50 random characters; "
            "unset JOINADMIN_SECRET_KEY to use the generated one in the data dir, or set it to "
            'the output of: python3 -c "import secrets; print(secrets.token_urlsafe(64))"'
        )

TRUSTED_PROXIES = [
    ipaddress.ip_network(cidr, strict=False) for cidr in env_list("JOINADMIN_TRUSTED_PROXIES")
]

# --- Internationalisation and static files --------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- REST framework and OpenAPI -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "joinadmin.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "joinadmin API",
    "DESCRIPTION": "EC2 join tokens, the EC2 join endpoint, join history, hosts and the CA.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from our own static files: the console loads nothing from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- joinadmin ------------------------------------------------------------------------------
IID_CERTS_DIR = os.environ.get("JOINADMIN_IID_CERTS_DIR") or None
# Certificates added in the console live in the database; each process re-checks them at most
# this often, so a change reaches every server within this many seconds.
IID_CERTS_REFRESH_SECONDS = float(os.environ.get("JOINADMIN_IID_CERTS_REFRESH_SECONDS", "5"))
JOIN_RATE_LIMIT = os.environ.get("JOINADMIN_JOIN_RATE_LIMIT", "20/s")
JOIN_TOKEN_RATE_LIMIT = os.environ.get("JOINADMIN_JOIN_TOKEN_RATE_LIMIT", "off")
JOIN_MAX_BODY_BYTES = int(os.environ.get("JOINADMIN_JOIN_MAX_BODY_BYTES", str(64 * 1024)))
HOST_CERT_TTL_HOURS = int(os.environ.get("JOINADMIN_HOST_CERT_TTL_HOURS", "24"))
CLUSTER_NAME = os.environ.get("JOINADMIN_CLUSTER_NAME", "joinadmin")
# The address relying parties reach this server at (https://joinadmin.example.com): issued host
# certificates then name its CRL (/api/v1/ca/crl) as their CRL distribution point. Unset: none.
PUBLIC_URL = os.environ.get("JOINADMIN_PUBLIC_URL", "").strip().rstrip("/")
if PUBLIC_URL and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s?#]*)?", PUBLIC_URL):
    raise ImproperlyConfigured(
        f"JOINADMIN_PUBLIC_URL={PUBLIC_URL!r}: give the server's address as "
        "https://host[:port][/path], without query or fragment"
    )
AWS_TIME_BUDGET_SECONDS = float(os.environ.get("JOINADMIN_AWS_TIME_BUDGET_SECONDS", "8"))
# Concurrent joins share DescribeInstances calls (joins/coalesce.py): a batch of one region and
# role goes at 100 ids, or once no lookup joined it for the window and the process has a token
# for a partial call (a bucket of BURST, one back per INTERVAL), or 250 ms after the last lookup
# joined it even without a token. Off: one call per join.
AWS_COALESCE = env_bool("JOINADMIN_AWS_COALESCE", True)
# gunicorn workers set aside what they loaded before serving from garbage collection
# (joinadmin/worker.py).
GC_FREEZE = env_bool("JOINADMIN_GC_FREEZE", True)
AWS_COALESCE_WINDOW_MS = float(os.environ.get("JOINADMIN_AWS_COALESCE_WINDOW_MS", "50"))
AWS_COALESCE_INTERVAL_MS = float(os.environ.get("JOINADMIN_AWS_COALESCE_INTERVAL_MS", "2000"))
AWS_COALESCE_BURST = int(os.environ.get("JOINADMIN_AWS_COALESCE_BURST", "2"))
# A batch held back by the pacing above still goes once no lookup has joined it for this long.
AWS_COALESCE_STALL_MS = float(os.environ.get("JOINADMIN_AWS_COALESCE_STALL_MS", "250"))
AWS_MAX_CALLS_IN_FLIGHT = int(os.environ.get("JOINADMIN_AWS_MAX_CALLS_IN_FLIGHT", "8"))
# How long a `running` answer is kept in the cache shared through JOINADMIN_CACHE_URL, so that
# other servers do not ask again; 0: never. Without a shared cache the default is 0: a process's
# own memory would only save a lookup that its concurrent joins already share, at a cache read
# per join (bench/RESULTS.md, throughput).
AWS_STATE_CACHE_SECONDS = int(
    os.environ.get("JOINADMIN_AWS_STATE_CACHE_SECONDS", "5" if _SHARED_CACHE else "0")
)
# Sign-in throttling (joinadmin/security.py): failures per account name and per source address
# within the lockout period that lock that name or address for the lockout period.
LOGIN_MAX_FAILURES = int(os.environ.get("JOINADMIN_LOGIN_MAX_FAILURES", "5"))
LOGIN_MAX_FAILURES_PER_ADDRESS = int(
    os.environ.get("JOINADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS", "20")
)
LOGIN_LOCKOUT_SECONDS = int(os.environ.get("JOINADMIN_LOGIN_LOCKOUT_SECONDS", "900"))
# Who may read /metrics without signing in: source addresses (after JOINADMIN_TRUSTED_PROXIES).
METRICS_ALLOW = [
    ipaddress.ip_network(cidr, strict=False)
    for cidr in env_list("JOINADMIN_METRICS_ALLOW", "127.0.0.1/32,::1/128")
]
# Serves POST /api/v1/noop, an empty DRF endpoint the throughput benchmark compares joins with.
BENCH_NOOP = env_bool("JOINADMIN_BENCH_NOOP", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("JOINADMIN_LOG_LEVEL", "INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "boto3": {"level": "WARNING"}},
}
