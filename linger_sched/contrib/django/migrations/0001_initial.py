"""The job tables (``<TABLE_PREFIX>jobs``, ``schedules``, ...) on the job table's database.

``manage.py migrate`` creates them (or upgrades an older install) through linger-sched's own
store when the database being migrated is ``LINGER_SCHED["DATABASE"]`` (``manage.py migrate
--database ALIAS`` when that is not ``default``); on any other database it does nothing.
Unapplying it (``manage.py migrate linger_sched zero``) DROPS the tables with every job,
schedule and node row, as unapplying any app's first migration drops its tables.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def install(apps: Any, schema_editor: Any) -> None:
    from linger_sched.contrib.django.integration import install_tables

    install_tables(schema_editor.connection.alias)


def drop(apps: Any, schema_editor: Any) -> None:
    from linger_sched.contrib.django.integration import drop_tables

    drop_tables(schema_editor.connection.alias)


class Migration(migrations.Migration):  # type: ignore[misc]  # Django ships no type information
    # the store writes on connections of its own, never in Django's migration transaction
    atomic = False
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(install, drop)]
