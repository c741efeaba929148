"""``manage.py linger ...``: every command of the ``linger-sched`` CLI (``run``, ``worker``,
``jobs``, ``status``, ``schedules``, ``db``, ``enqueue``, ``validate``) on the project's app
(:func:`~linger_sched.contrib.django.get_app`: its settings and its discovered tasks)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError

from linger_sched import cli
from linger_sched.contrib.django.integration import get_app


def run_cli(args: Sequence[str], prog_name: str = "manage.py") -> int:
    """Run ``linger-sched ARGS`` on the project's app; returns its exit status (0 ok, 1 runtime
    error, 2 usage or configuration error), its output on ``sys.stdout``/``sys.stderr``."""
    # click's usage lines read "manage.py linger jobs ..."; the app comes from Django's
    # settings (cli.APP_PROVIDER) unless --app names another
    parent = click.Context(click.Group(prog_name), info_name=prog_name)
    parent.meta[cli.APP_PROVIDER] = get_app
    try:
        cli.main.main(args=list(args), prog_name="linger", parent=parent)
    except SystemExit as exc:
        code = exc.code
    else:  # pragma: no cover - standalone mode always exits
        code = 0
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type information
    help = ("linger-sched on this project's settings: manage.py linger run | worker | jobs | status | schedules | "
            "db init | enqueue | validate ... (manage.py linger --help lists them)")
    # the commands check what they need themselves (the node: its tables)
    requires_system_checks: list[str] = []

    def run_from_argv(self, argv: list[str]) -> None:
        # manage.py linger ARGS: click parses ARGS (Django's argparse would refuse linger's own options)
        sys.exit(run_cli(argv[2:], prog_name=argv[0].rsplit("/", 1)[-1]))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER, help="a linger-sched command and its options")

    def handle(self, *args: str, **options: Any) -> None:
        # call_command("linger", "jobs", "--state", "failed", stdout=...): output to its streams
        with contextlib.ExitStack() as stack:
            if options.get("stdout") is not None:
                stack.enter_context(contextlib.redirect_stdout(options["stdout"]))
            if options.get("stderr") is not None:
                stack.enter_context(contextlib.redirect_stderr(options["stderr"]))
            code = run_cli(args)
        if code:
            raise CommandError(f"linger {' '.join(args)} exited with status {code}", returncode=code)
