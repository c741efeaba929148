"""JSON log lines in your own logging setup (a Flask or Django app, a script): the formatter of
``linger-sched --log-format json``, in a ``logging.config.dictConfig`` dict (in Django, this is
the ``LOGGING`` setting). Run by tests/unit/test_logs.py."""

import logging.config

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "linger_sched.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
    "loggers": {"linger_sched": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}


def setup() -> None:
    logging.config.dictConfig(LOGGING)
