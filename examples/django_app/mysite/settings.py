"""Settings of the example project: a shop whose orders mail a receipt (docs/django.md)."""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "mysite.urls"
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]  # an API without forms: no CSRF middleware

INSTALLED_APPS = [
    "linger_sched.contrib.django",  # manage.py migrate makes the job tables, manage.py linger runs nodes
    "shop",  # shop/tasks.py is found and registered at start-up
]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "shop.db"}}

# the job table lives in DATABASES["default"]: no second URL to keep in sync
LINGER_SCHED = {
    "DATABASE": "default",
    "CONCURRENCY": 4,
    "POLL_INTERVAL": "1s",
    "SHUTDOWN_GRACE": "10s",
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if "EXAMPLE_DATABASES" in os.environ:  # tests/acceptance/test_django_app.py: PostgreSQL and MariaDB too
    import pymysql

    pymysql.install_as_MySQLdb()  # Django's MySQL backend on PyMySQL, where mysqlclient is not installed
    DATABASES = json.loads(os.environ["EXAMPLE_DATABASES"])
