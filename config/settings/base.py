"""Settings shared by every environment. Everything that varies comes from the environment.

Local defaults need no server (SQLite, a filesystem Celery broker, console email);
``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis.
"""

from pathlib import Path

import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# Runtime data of the embedded default (SQLite file, filesystem broker); never committed.
DATA_DIR = Path(env("FUNIL_DATA_DIR", default=str(BASE_DIR / ".data")))

DEBUG = False
SECRET_KEY = env("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "corsheaders",
    "leads",
    "scoring",
    "nurturing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'funil.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL lets readers run beside one writer,
    # IMMEDIATE transactions take the write lock up front instead of failing mid-way.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The form endpoint's few statements are prepared once per connection (config/db.py):
# PostgreSQL then skips parsing and planning them on every submission. Turn off behind a
# pooler in transaction mode (PgBouncer's pool_mode = transaction), where a connection's
# next transaction may run on another server session that never saw the PREPARE.
FUNIL_DB_PREPARED_STATEMENTS = env.bool("FUNIL_DB_PREPARED_STATEMENTS", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, Celery -------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    for _folder in (_broker_dir, _broker_dir / "processed", _broker_dir / "control"):
        _folder.mkdir(parents=True, exist_ok=True)
    # The filesystem transport has no fanout exchange for remote control.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = False  # tasks are nudges; the database sweeps make lost ones harmless
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = env("TIME_ZONE", default="America/Sao_Paulo")
# The code below seeds the database; after that, admin edits win (see nurturing/schedulers.py).
CELERY_BEAT_SCHEDULER = "nurturing.schedulers:EditableDatabaseScheduler"

# Every periodic job, in one place. Each is also a management command. Crontabs are
# read in CELERY_TIMEZONE (America/Sao_Paulo unless TIME_ZONE says otherwise).
from celery.schedules import crontab  # noqa: E402 - kept beside the schedule it serves

CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {
        "task": "nurturing.tasks.record_heartbeat",
        "schedule": 60.0,
    },
    "replay-submissions": {
        "task": "leads.tasks.replay_submissions",
        "schedule": 300.0,
    },
    # manage.py requalify
    "requalify": {
        "task": "scoring.tasks.requalify",
        "schedule": crontab(minute="0", hour="6"),
    },
    # The daily run, late, when its message was lost (broker down at 06:00).
    "requalify-catch-up": {
        "task": "scoring.tasks.requalify_catch_up",
        "schedule": 600.0,
    },
    # CSV imports from admin left pending or abandoned by a dead worker.
    "sweep-import-jobs": {
        "task": "leads.tasks.sweep_import_jobs",
        "schedule": 60.0,
    },
    # Nurturing: enroll segment entrants; send due emails; stale claims back to pending.
    "nurture-enroll": {
        "task": "nurturing.tasks.enroll_entrants",
        "schedule": 300.0,
    },
    "nurture-dispatch": {
        "task": "nurturing.tasks.dispatch_due",
        "schedule": 60.0,
    },
    "nurture-sweep-claims": {
        "task": "nurturing.tasks.sweep_stale_claims",
        "schedule": 300.0,
    },
    # Rescoring jobs left pending or abandoned by a dead worker.
    "sweep-rescore-jobs": {
        "task": "scoring.tasks.sweep_rescore_jobs",
        "schedule": 60.0,
    },
    # Outbound webhooks whose retry is due or whose message was lost.
    "sweep-webhooks": {
        "task": "leads.tasks.sweep_webhooks",
        "schedule": 60.0,
    },
    # manage.py refresh_rule_matches: the dashboard's rule effectiveness.
    "refresh-rule-matches": {
        "task": "leads.tasks.refresh_rule_matches",
        "schedule": 600.0,
    },
    # manage.py purge_stale --older-than 730 --apply. Off until a person decides the
    # retention period: enable it (and set its days) in admin, Periodic tasks.
    "purge-stale-leads": {
        "task": "leads.tasks.purge_stale",
        "schedule": crontab(minute="30", hour="3"),
        "kwargs": {"older_than_days": 730},
        "enabled": False,  # read by django-celery-beat when it creates the entry
    },
}

# --- Email ------------------------------------------------------------------
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
if EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend":  # noqa: F821 - set by the line above
    # The same backend with one connection per batch, pipelined when the server can (nurturing/mail.py).
    EMAIL_BACKEND = "nurturing.mail.EmailBackend"
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Funil <funil@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The sender's identity and postal address printed in every marketing email's footer.
FUNIL_SENDER_NAME = env("FUNIL_SENDER_NAME", default="Funil")
FUNIL_SENDER_ADDRESS = env("FUNIL_SENDER_ADDRESS", default="")
FUNIL_BASE_URL = env("FUNIL_BASE_URL", default="http://127.0.0.1:8000")
# Nurture dispatcher: commit without waiting for the WAL flush (PostgreSQL). ~10x fewer
# waits per message; a database-server crash may then cause a resend (docs/architecture.md).
FUNIL_NURTURE_ASYNC_COMMIT = env.bool("FUNIL_NURTURE_ASYNC_COMMIT", default=False)
# Nurture dispatcher: messages marked 'sending' per commit. A worker killed mid-send leaves
# at most this many 'uncertain' deliveries for a person to resolve (docs/architecture.md).
FUNIL_NURTURE_SENDING_GROUP = env.int("FUNIL_NURTURE_SENDING_GROUP", default=20)
# The mailbox of List-Unsubscribe's mailto (default: unsubscribe@ the sender's domain),
# read through the provider's inbound webhook (/anymail/<provider>/inbound/).
FUNIL_UNSUBSCRIBE_MAILTO = env("FUNIL_UNSUBSCRIBE_MAILTO", default="")
# Provider webhooks (/anymail/<provider>/tracking/ and /inbound/): the basic-auth "user:password" the
# provider is configured with; provider signing keys go in ANYMAIL_<PROVIDER>_... too.
ANYMAIL = {key: value for key, value in {
    "WEBHOOK_SECRET": env("ANYMAIL_WEBHOOK_SECRET", default=""),
}.items() if value}

# --- Auth ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "leads:inbox"
LOGOUT_REDIRECT_URL = "login"

# --- Internationalisation -----------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("pt-br", _("Brazilian Portuguese"))]
LOCALE_PATHS = [BASE_DIR / "config" / "locale"]
TIME_ZONE = env("TIME_ZONE", default="America/Sao_Paulo")
USE_I18N = True
USE_TZ = True
# Connections a rescoring (and a ruleset's impact preview) works on at once (PostgreSQL).
# Each keeps one database core busy: where the database shares its cores with the web
# tier, 1 leaves the other core to requests (bench/load.py: submissions' p99 during a
# rescore of 1M leads 77 ms with 1, 121 ms with 2, on 2 cores). A dedicated database host
# can take more.
FUNIL_RESCORE_WORKERS = env.int("FUNIL_RESCORE_WORKERS", default=1)
# Phone numbers without a country code are read as numbers of this region.
FUNIL_DEFAULT_PHONE_REGION = env("FUNIL_DEFAULT_PHONE_REGION", default="BR")
FUNIL_DEFAULT_CURRENCY = env("FUNIL_DEFAULT_CURRENCY", default="BRL")
# How long the inbox remembers a person's total for one set of filters (0: count every
# page). Counting is the dearest part of a filtered page over a million leads.
FUNIL_INBOX_TOTAL_SECONDS = env.int("FUNIL_INBOX_TOTAL_SECONDS", default=30)

# --- Static files -------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "templates" / "static"]

# --- REST framework -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # How many proxies in front of the app may append to X-Forwarded-For. 0: use the
    # connecting address and ignore the header, so a forged one changes nothing.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

# --- Capture (the public form endpoint) ---------------------------------------
FUNIL_CAPTURE_RATE_PER_IP = env("FUNIL_CAPTURE_RATE_PER_IP", default="30/min")
FUNIL_CAPTURE_RATE_PER_FORM = env("FUNIL_CAPTURE_RATE_PER_FORM", default="6000/min")
FUNIL_CAPTURE_MAX_BODY_BYTES = env.int("FUNIL_CAPTURE_MAX_BODY_BYTES", default=64 * 1024)
# CORS applies to the public endpoint only; each form lists the origins allowed to post.
CORS_URLS_REGEX = r"^/api/v1/forms/[^/]+/submissions/$"
CORS_ALLOW_METHODS = ["OPTIONS", "POST"]
CORS_ALLOW_HEADERS = ["accept", "content-type", "idempotency-key", "origin", "x-requested-with"]
CORS_PREFLIGHT_MAX_AGE = 3600
SPECTACULAR_SETTINGS = {
    "TITLE": "Funil API",
    "DESCRIPTION": "Lead capture, qualification and nurturing.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from the app itself, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.schema.add_error_responses"],
    "ENUM_NAME_OVERRIDES": {
        "LeadStatusEnum": "leads.models.LeadStatus",
        "TemperatureEnum": "leads.models.Temperature",
        "StatusSetByEnum": "leads.models.StatusSetBy",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
