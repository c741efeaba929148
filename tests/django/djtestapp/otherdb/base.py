"""A Django database backend of a vendor linger-sched does not support (its errors are tested)."""

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    vendor = "cockroachdb"
