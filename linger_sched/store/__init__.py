"""Persistence: the row types, the table definitions, the Store contract, and the one module
that knows the dialects.

Modules, each importing only those listed before it: ``rows`` (dataclasses and pure helpers),
``dialect`` (everything that differs between SQLite, PostgreSQL and MySQL/MariaDB), ``tables``
(the table definitions), ``schema`` (install and upgrade steps), ``store`` (:class:`Store`).
"""

from .rows import Claimed, Job, Lease, NodeRow, Occurrence, Plan, ScheduleRow, decode_args, encode_args
from .store import Store
from .tables import ACTIVE_STATES, JOB_STATES, SCHEMA_VERSION

__all__ = [
    "ACTIVE_STATES", "JOB_STATES", "SCHEMA_VERSION", "Claimed", "Job", "Lease", "NodeRow", "Occurrence",
    "Plan", "ScheduleRow", "Store", "decode_args", "encode_args",
]
