"""Persistence: tables, the Store contract, and the one module that knows the dialects."""

from .coordination import NodeRow, Occurrence, Plan, ScheduleRow, Store
from .store import Claimed, Job, Lease, decode_args, encode_args
from .tables import ACTIVE_STATES, JOB_STATES, SCHEMA_VERSION

__all__ = [
    "ACTIVE_STATES", "JOB_STATES", "SCHEMA_VERSION", "Claimed", "Job", "Lease", "NodeRow", "Occurrence",
    "Plan", "ScheduleRow", "Store", "decode_args", "encode_args",
]
