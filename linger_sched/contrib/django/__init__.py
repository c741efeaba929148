"""linger-sched for Django: add ``"linger_sched.contrib.django"`` to ``INSTALLED_APPS``.

* settings in ``LINGER_SCHED = {...}`` (the job table's database is a ``DATABASES`` alias:
  ``"DATABASE": "default"``);
* tasks in each installed app's ``tasks.py``, registered on :data:`app`::

      from linger_sched.contrib.django import app

      @app.task
      def send_welcome(user_id: int) -> None: ...

* the tables installed by ``manage.py migrate``; every CLI command as ``manage.py linger ...``;
* ``send_welcome.enqueue(user.id)`` inside ``transaction.atomic()`` commits and rolls back
  with it (see :class:`DjangoLinger`).

Documented in docs/django.md. Importing this module reads no settings; :data:`app` (or
:func:`get_app`) builds the app from them on first use.
"""

from __future__ import annotations

from .integration import DjangoLinger, get_app

__all__ = ["DjangoLinger", "app", "get_app"]


def __getattr__(name: str) -> DjangoLinger:
    # ``from linger_sched.contrib.django import app``: the project's app, made on first use
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
