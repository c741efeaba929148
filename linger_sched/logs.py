"""Log formats: every record linger-sched emits carries a machine-readable ``action`` (and,
about a job, ``job_id``, ``task`` and ``attempt``) as attributes of the record. These
formatters show them.

- :class:`JsonFormatter`: one JSON object per line, for log shippers (``linger-sched run
  --log-format json``, or ``LINGER_LOG_FORMAT=json``). Usable in any ``logging`` setup, e.g. a
  Flask or Django ``LOGGING`` dict: ``{"()": "linger_sched.logs.JsonFormatter"}``.
- :class:`TextFormatter` (``text``, the default): :data:`TEXT_FORMAT`, one line per record for a
  human.

Standard library only; low in the layers so that any front end can use it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")

# the attributes every LogRecord has: anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# the keys a JSON line always has, in this order (None when the record has no such value)
_FIRST = ("time", "level", "logger", "message", "action", "job_id", "task", "attempt")


def _plain(value: Any) -> Any:
    """``value`` as a JSON value: containers walked, datetimes as ISO 8601, the rest as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC, milliseconds),
    ``level``, ``logger``, ``message``, ``action``, ``job_id``, ``task``, ``attempt`` (null
    when the record has none), then every other ``extra`` key of the record, and
    ``exc_info`` (the traceback as text) when there is one. A value that is not JSON is
    written as its ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        attrs = record.__dict__
        for key in _FIRST[4:]:
            out[key] = _plain(attrs.get(key))
        for key, value in attrs.items():
            if key not in _STANDARD and key not in out:
                out[key] = _plain(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT` lines, as ``logging.Formatter`` writes them, with the date and time
    part of ``asctime`` formatted once per second rather than once per record (a busy worker
    logs a line per job)."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or self.default_msec_format is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return self.default_msec_format % (cached[1], record.msecs)


def formatter(name: str) -> logging.Formatter:
    """The formatter of a format name (:data:`FORMATS`); ``ValueError`` naming the choices."""
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {name!r}: use one of {', '.join(FORMATS)}")


def configure(level: int, fmt: str = "text", stream: Any = None) -> None:
    """Log to ``stream`` (stderr) at ``level`` in format ``fmt``, as the CLI does: the root
    logger gets one handler, unless the program configured logging already (as
    ``logging.basicConfig``), and its level is set either way."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger().setLevel(level)
