"""Settings for Annotator, all read from the environment through one ``env`` object.

Every value has an embedded default that runs with nothing installed: SQLite (WAL mode) in
``var/``, media files in ``var/media``, a Celery broker on kombu's filesystem transport in
``var/celery``. Production switches to PostgreSQL, Redis and S3 by setting variables, never by
editing files. ``docs/operations.md`` lists every variable.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# An optional .env file beside manage.py, for operators who prefer a file to exported variables.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("ANNOTATOR_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)


def _secret_key() -> str:
    """SECRET_KEY from the environment; in DEBUG, a per-installation key kept in var/."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (DEBUG is off), for example "
            "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

PORT = env.int("PORT", default=8000)
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

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
    "annotator.apps.AnnotatorConfig",
    "datasets.apps.DatasetsConfig",
    "crowd.apps.CrowdConfig",
    "crowd.marketplace.apps.MarketplaceConfig",
    "frontend.apps.FrontendConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A database, cache or broker connection error answers 503 + Retry-After (docs/reliability.md).
    "annotator.middleware.ServiceUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "annotator.urls"
WSGI_APPLICATION = "annotator.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "annotator" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # WAL lets readers work while one writer writes; IMMEDIATE takes the write lock at
            # BEGIN so concurrent writers queue on the busy timeout instead of failing.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # Tests share the database with real worker processes, so it must be a file, not memory.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("TEST_SQLITE_NAME", default=str(VAR_DIR / "test-db.sqlite3")),
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
# The task flow's hot statements (annotator/prepared.py) have their values bound by PostgreSQL and
# are prepared once per connection; off for a pooler that cannot keep prepared statements.
PREPARED_STATEMENTS = env.bool("PREPARED_STATEMENTS", default=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's ModelBackend, reading a worker's profile with the user (crowd/marketplace/auth.py);
# ModelBackend itself stays listed so that sessions signed in with it remain valid.
AUTHENTICATION_BACKENDS = [
    "crowd.marketplace.auth.WorkerModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Cache -----------------------------------------------------------------------------------
# Per-process memory by default; rate limits and throttles are shared between processes and
# machines once CACHE_URL points at Redis (redis://host:6379/1).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# Django's Redis cache, reusing one client per connection pool (annotator/cache.py).
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    CACHES["default"]["BACKEND"] = "annotator.cache.RedisCache"
    # Sessions read from Redis first, kept in PostgreSQL, and read from PostgreSQL alone while
    # Redis is out of reach (annotator/sessions.py); a copy stays in Redis at most this long.
    SESSION_ENGINE = "annotator.sessions"
    SESSION_CACHE_SECONDS = env.int("SESSION_CACHE_SECONDS", default=300)

# --- Files ----------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = env.str("MEDIA_URL", default="/media/")
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="us-east-1")

if AWS_STORAGE_BUCKET_NAME:
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": AWS_S3_ENDPOINT_URL,
            "region_name": AWS_S3_REGION_NAME,
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
    # S3 keys of their own, when AWS_ACCESS_KEY_ID belongs to the MTurk account.
    if env.str("AWS_S3_ACCESS_KEY_ID", default=""):
        _media_storage["OPTIONS"]["access_key"] = env.str("AWS_S3_ACCESS_KEY_ID")
        _media_storage["OPTIONS"]["secret_key"] = env.str("AWS_S3_SECRET_ACCESS_KEY", default="")
else:
    _media_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    }
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Serve media through Django when files are local (make run); S3 serves its own.
SERVE_MEDIA = env.bool("SERVE_MEDIA", default=not AWS_STORAGE_BUCKET_NAME)

# Uploads stream to disk past 2.5 MB instead of being held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("DATA_UPLOAD_MAX_NUMBER_FILES", default=1000)

# --- Ingestion limits (datasets.services.ingest) ----------------------------------------------
INGEST_MAX_IMAGE_PIXELS = env.int("INGEST_MAX_IMAGE_PIXELS", default=100_000_000)
INGEST_MAX_FILE_BYTES = env.int("INGEST_MAX_FILE_BYTES", default=50 * 1024 * 1024)
INGEST_MAX_ARCHIVE_MEMBERS = env.int("INGEST_MAX_ARCHIVE_MEMBERS", default=100_000)
INGEST_MAX_ARCHIVE_BYTES = env.int("INGEST_MAX_ARCHIVE_BYTES", default=20 * 1024**3)
# An archive member that unpacks to more than this many times its packed size is a zip bomb.
INGEST_MAX_COMPRESSION_RATIO = env.int("INGEST_MAX_COMPRESSION_RATIO", default=100)
INGEST_URL_TIMEOUT = env.float("INGEST_URL_TIMEOUT", default=20.0)
INGEST_ALLOW_PRIVATE_URLS = env.bool("INGEST_ALLOW_PRIVATE_URLS", default=False)

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    _control_dir = VAR_DIR / "celery" / "control"
    for _d in (_queue_dir, _processed_dir, _control_dir):
        _d.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        "control_folder": str(_control_dir),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_DEFAULT_QUEUE = "annotator"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE: dict = {}
# Task modules outside an app's tasks.py, which autodiscovery does not find.
CELERY_IMPORTS = ["datasets.exports.tasks"]

# --- Exports (datasets.exports) ---------------------------------------------------------------
EXPORT_SHARD_SIZE = env.int("EXPORT_SHARD_SIZE", default=512 * 1024 * 1024)
EXPORT_MIN_SHARDS = env.int("EXPORT_MIN_SHARDS", default=8)
EXPORT_TMP_DIR = Path(env.str("EXPORT_TMP_DIR", default=str(VAR_DIR / "export-tmp")))
EXPORT_PROGRESS_SECONDS = env.float("EXPORT_PROGRESS_SECONDS", default=0.5)
# Processes writing an export's shards: 0 = one per CPU (at most one per shard), 1 = in the build's own.
EXPORT_PROCESSES = env.int("EXPORT_PROCESSES", default=0)
# ... and at most one per this many samples of the export: a small export is written in one.
EXPORT_SAMPLES_PER_PROCESS = env.int("EXPORT_SAMPLES_PER_PROCESS", default=1000)

# --- Reliability: faults and recovery (docs/reliability.md, "Faults") ------------------------
# A running export renews its lease at each progress report; one whose lease ran out lost its
# worker (SIGKILL, out of memory, a lost machine) and beat builds it again, at most
# EXPORT_MAX_ATTEMPTS times in all.
EXPORT_LEASE_SECONDS = env.float("EXPORT_LEASE_SECONDS", default=300.0)
EXPORT_MAX_ATTEMPTS = env.int("EXPORT_MAX_ATTEMPTS", default=3)
CELERY_BEAT_SCHEDULE["exports-recover"] = {
    "task": "datasets.exports_recover",
    "schedule": env.float("EXPORT_RECOVER_SECONDS", default=60.0),
}
# Seconds a client is told to wait (Retry-After) when the database, Redis or the broker is out of
# reach (annotator.middleware).
SERVICE_UNAVAILABLE_RETRY_AFTER = env.int("SERVICE_UNAVAILABLE_RETRY_AFTER", default=5)
# --- End of reliability settings --------------------------------------------------------------

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "datasets.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "datasets.api.throttling.AnonThrottle",
        "datasets.api.throttling.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/min"),
        "user": env.str("API_THROTTLE_USER", default="1200/min"),
    },
    "EXCEPTION_HANDLER": "datasets.api.errors.exception_handler",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Annotator API",
    "DESCRIPTION": "Projects, images, annotations and versioned exports of crowd-made datasets.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Security -------------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    if env.bool("BEHIND_TLS_PROXY", default=True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Health probes come over plain HTTP from inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- Rate limits and headers (annotator.ratelimit, annotator.headers; docs/reliability.md) ---
# Fixed-window limits counted in the cache above (shared once CACHE_URL is Redis); "" switches
# one off. Over a limit: 429 with Retry-After. Sign-in: POSTs to /admin/login/ and
# /market/login/, per client IP and per user name tried. Submissions: the tools' answer endpoint
# and /mturk/externalSubmit, per client IP and per worker id.
RATELIMIT_LOGIN_IP = env.str("RATELIMIT_LOGIN_IP", default="30/m")
RATELIMIT_LOGIN_USER = env.str("RATELIMIT_LOGIN_USER", default="10/m")
RATELIMIT_SUBMIT_IP = env.str("RATELIMIT_SUBMIT_IP", default="600/m")
RATELIMIT_SUBMIT_WORKER = env.str("RATELIMIT_SUBMIT_WORKER", default="60/m")
# The client address: REMOTE_ADDR, or with N reverse proxies in front (each appending to
# X-Forwarded-For) the N-th address from the right, the one our outermost proxy saw.
RATELIMIT_PROXY_COUNT = env.int("RATELIMIT_PROXY_COUNT", default=0)
RATELIMIT_IP_META_KEY = "annotator.ratelimit.client_ip"
RATELIMIT_FAIL_OPEN = True  # a cache outage lets requests through rather than refusing them all
# django-ratelimit's checks want memcached or django-redis: local memory is per process (fine for
# one process; production sets CACHE_URL to Redis), and Django's own Redis cache increments
# atomically as they require.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]
INSTALLED_APPS += ["django_ratelimit"]
# Permissions-Policy (django-permissions-policy): no page uses these browser features.
PERMISSIONS_POLICY = {
    feature: [] for feature in (
        "accelerometer", "autoplay", "camera", "display-capture", "geolocation", "gyroscope",
        "magnetometer", "microphone", "midi", "payment", "usb", "xr-spatial-tracking",
    )
}
MIDDLEWARE.insert(1, "django_permissions_policy.PermissionsPolicyMiddleware")
MIDDLEWARE.insert(1, "annotator.headers.DefaultContentSecurityPolicyMiddleware")
# --- end of rate limits and headers ----------------------------------------------------------

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Labeling tools (frontend) ------------------------------------------------------------------
# Who may frame the task pages (CSP frame-ancestors): ourselves, our public origin (the
# marketplace), plus any marketplace origins an operator adds (e.g. https://worker.mturk.com).
from urllib.parse import urlsplit as _urlsplit  # noqa: E402 - kept beside its one use

_public = _urlsplit(PUBLIC_BASE_URL)
TOOLS_FRAME_ANCESTORS = ["'self'", f"{_public.scheme}://{_public.netloc}"] + env.list("TOOLS_FRAME_ANCESTORS", default=[])
TOOLS_CATEGORY_BATCH = env.int("TOOLS_CATEGORY_BATCH", default=5)  # images per labeling task
TOOLS_SPOTTING_CROWD_THRESHOLD = env.int("TOOLS_SPOTTING_CROWD_THRESHOLD", default=10)
TOOLS_SPOTTING_MAX_POINTS = env.int("TOOLS_SPOTTING_MAX_POINTS", default=500)
TOOLS_MAX_VERTICES_PER_PART = env.int("TOOLS_MAX_VERTICES_PER_PART", default=5000)
TOOLS_TRAINING_IOU = env.float("TOOLS_TRAINING_IOU", default=0.75)
TOOLS_TRAINING_RETRY_MINUTES = env.float("TOOLS_TRAINING_RETRY_MINUTES", default=10)

# --- Crowd (providers, HITs, sync) -----------------------------------------------------------
# The MTurk-compatible endpoint boto3 talks to: our marketplace by default; for Amazon set
# https://mturk-requester.us-east-1.amazonaws.com (or the sandbox) and add the worker site's
# origin to TOOLS_FRAME_ANCESTORS (https://worker.mturk.com, https://workersandbox.mturk.com).
MTURK_ENDPOINT_URL = env.str("MTURK_ENDPOINT_URL", default=PUBLIC_BASE_URL + "/mturk-api/")
MTURK_REGION_NAME = env.str("MTURK_REGION_NAME", default="us-east-1")
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
MTURK_RETRY_MODE = env.str("MTURK_RETRY_MODE", default="standard")  # standard | adaptive
MTURK_MAX_ATTEMPTS = env.int("MTURK_MAX_ATTEMPTS", default=5)  # botocore: retries after the first
MTURK_CONNECT_TIMEOUT = env.float("MTURK_CONNECT_TIMEOUT", default=5.0)
MTURK_READ_TIMEOUT = env.float("MTURK_READ_TIMEOUT", default=30.0)
# Task pages over plain http are refused unless the host is loopback and this is on.
CROWD_ALLOW_HTTP_LOOPBACK = env.bool("CROWD_ALLOW_HTTP_LOOPBACK", default=DEBUG)
CROWD_SECRET_KEYS = env.list("CROWD_SECRET_KEYS", default=[])  # Fernet key material, newest first
CROWD_SYNC_SECONDS = env.float("CROWD_SYNC_SECONDS", default=60.0)
CROWD_CONFIRM_GIVE_UP = env.int("CROWD_CONFIRM_GIVE_UP", default=20)  # GetAssignment tries
# Block a worker once at least this many gold answers put even the upper bound of their accuracy
# below CROWD_BLOCK_BELOW (crowd.aggregation.quality.decide).
CROWD_BLOCK_MIN_GOLD = env.int("CROWD_BLOCK_MIN_GOLD", default=5)
CROWD_BLOCK_BELOW = env.float("CROWD_BLOCK_BELOW", default=0.5)
CELERY_BEAT_SCHEDULE.update(
    {
        "crowd-sync": {"task": "crowd.sync_all", "schedule": CROWD_SYNC_SECONDS},
        "crowd-collect-answers": {"task": "crowd.answers_collect", "schedule": CROWD_SYNC_SECONDS},
        "crowd-training-grants": {"task": "crowd.training_grants", "schedule": 5 * CROWD_SYNC_SECONDS},
        "crowd-pipeline-catch-up": {"task": "crowd.pipeline_catch_up", "schedule": CROWD_SYNC_SECONDS},
    }
)
# The pipeline (crowd.pipeline; docs/pipeline.md). The tools queue these tasks, by name, with the
# task item's id whenever they store an answer, so the pipeline moves on without waiting for beat.
TOOLS_ANSWER_TASKS = env.list("TOOLS_ANSWER_TASKS", default=["crowd.pipeline_answer"])
# With Redis as the cache, the answers of each ANNOUNCE_DELAY_SECONDS share one Celery message
# (annotator/announce.py); a pending drain's flag expires after ANNOUNCE_FLAG_SECONDS should
# its message be lost.
ANNOUNCE_COALESCE = env.bool("ANNOUNCE_COALESCE", default=True)
ANNOUNCE_DELAY_SECONDS = env.float("ANNOUNCE_DELAY_SECONDS", default=1.0)
ANNOUNCE_FLAG_SECONDS = env.int("ANNOUNCE_FLAG_SECONDS", default=30)
PIPELINE_SKILL_SECONDS = env.int("PIPELINE_SKILL_SECONDS", default=30)  # worker estimates kept this long
PIPELINE_ADVANCE_BATCH = env.int("PIPELINE_ADVANCE_BATCH", default=2000)  # items decided per task run

# --- Marketplace (crowd.marketplace; docs/marketplace.md) ------------------------------------
# Key for encrypting requester secrets at rest; derived from SECRET_KEY when empty.
MARKETPLACE_SECRET_KEY = env.str("MARKETPLACE_SECRET_KEY", default="")
# Token bucket per requester key: sustained requests per second, and the burst allowed.
MARKETPLACE_API_RATE = env.float("MARKETPLACE_API_RATE", default=20.0)
MARKETPLACE_API_BURST = env.float("MARKETPLACE_API_BURST", default=100.0)
# Task ExternalURLs must be HTTPS; plain http to loopback hosts is allowed with this (or DEBUG).
MARKETPLACE_ALLOW_HTTP_LOOPBACK = env.bool("MARKETPLACE_ALLOW_HTTP_LOOPBACK", default=DEBUG)
# Anyone may sign up as a worker (otherwise an invitation link from a requester is needed).
MARKETPLACE_OPEN_SIGNUP = env.bool("MARKETPLACE_OPEN_SIGNUP", default=False)
# Check every API response against botocore's MTurk model (a ServiceFault if one breaks it).
MARKETPLACE_VALIDATE_RESPONSES = env.bool("MARKETPLACE_VALIDATE_RESPONSES", default=True)
# The turkSubmitTo given to task iframes; empty means the host the worker's browser used.
MARKETPLACE_SUBMIT_BASE_URL = env.str("MARKETPLACE_SUBMIT_BASE_URL", default="")
CELERY_BEAT_SCHEDULE.update({
    "marketplace-catch-up": {"task": "marketplace.catch_up", "schedule": 60.0},
})

# --- Benchmarks (benchmarks/load.py) -----------------------------------------------------------
# Mounts annotator/benchviews.py under /bench/ (a bare one-row view, the load benchmark's baseline).
BENCHMARK_VIEWS = env.bool("BENCHMARK_VIEWS", default=False)
