"""The Django app ``linger_sched.contrib.django`` (put it in ``INSTALLED_APPS``)."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class LingerSchedConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    name = "linger_sched.contrib.django"
    label = "linger_sched"
    verbose_name = "linger-sched"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .integration import get_app

        get_app()  # LINGER_SCHED and the job table's DATABASES entry are checked at start-up
        # each installed app's tasks.py registers its tasks on that app (@app.task)
        autodiscover_modules("tasks")
