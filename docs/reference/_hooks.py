"""MkDocs hooks (mkdocs.yml ``hooks:``) that keep the reference pages from drifting.

* ``<!-- linger: settings -->`` becomes the table of every field of
  :class:`linger_sched.config.Settings`, its environment variable, ``schedules.yaml`` key, CLI flag and
  default, read from the code. A field without a description below fails the build.
* ``<!-- linger: events -->`` and ``<!-- linger: metrics -->`` become the tables of
  ``linger_sched.events.EVENTS`` and ``linger_sched.metrics.METRICS``.
* A link to a file outside ``docs/`` (``../examples/jobs.py``, ``../README.md#cli``) points into the
  repository (``repo_url`` in mkdocs.yml) or, without one, is shown as its path; a link to a path that
  does not exist fails the build.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.linger")

ROOT = Path(__file__).resolve().parents[2]

# Settings field -> what it means. Defaults, environment variables and YAML keys come from the code.
DESCRIPTIONS: dict[str, str] = {
    "database_url": "The database (SQLAlchemy URL): `sqlite:///linger.db`, `postgresql://...`, `mysql+pymysql://...`.",
    "table_prefix": "Prefix of the table names (ASCII letters, digits and `_`, not starting with a digit, at most 32 "
                    "characters).",
    "concurrency": "Jobs a worker runs at once (threads), 1 to 10,000.",
    "queues": "The queues this worker claims (`a,b`).",
    "poll_interval": "Idle re-check of the table. A job enqueued in the same process wakes the worker at once; from "
                     "another process within milliseconds on PostgreSQL (LISTEN/NOTIFY) and within 50 ms on SQLite.",
    "tick_interval": "The scheduler's tick (it also wakes at the next fire time).",
    "lease_ttl": "How long the leader lease is valid without renewal.",
    "renew_interval": "How often the leader renews its lease (shorter than `lease_ttl`).",
    "job_lease_ttl": "A running job's lock; the job is rescued this long after its node died.",
    "rescue_interval": "How often a worker looks for expired job locks.",
    "shutdown_grace": "How long a stopping node waits for its running jobs.",
    "misfire_threshold": "Lateness that counts as a misfire ([misfire and overlap](../schedules.md)).",
    "keep_finished": "Succeeded and cancelled rows are pruned after this (failed and skipped rows are kept); "
                     "`None` keeps them.",
    "clock_offset": "Seconds added to this node's clock: simulates a node whose clock is off (tests, demos).",
    "auto_install": "Create missing tables when the app first uses the database. A server database otherwise "
                    "needs `linger-sched db init` (a missing table raises `SchemaError`).",
    "result_max_bytes": "A task's result (as JSON) larger than this is not kept (a WARNING says so; the job "
                        "succeeds).",
    "node_lost_after": "A node without a heartbeat this long is *lost* (`status`, `health`); also how long past its "
                       "lock a running job is *stuck*.",
    "health_window": "`health`'s failure rate is over the jobs finished this long back.",
    "health_max_failure_rate": "`health` is degraded when a larger share of those jobs failed (`0.25` or `25%`).",
    "health_max_queue_age": "`health` is degraded when a due job waited longer than this.",
}
# what a default of None means
NONE_DEFAULTS: dict[str, str] = {
    "queues": "all queues",
    "misfire_threshold": "`lease_ttl` + 2 × `tick_interval`",
    "keep_finished": "keep",
    "auto_install": "on SQLite only",
}
YAML_KEYS = {"database_url": "database", "table_prefix": "table_prefix", "concurrency": "concurrency",
             "queues": "queues"}  # the settings linger_sched.config.resolve() reads from schedules.yaml


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit} ({value:g} s)"
    return f"{value:g}s"


def _cli_flags() -> dict[str, str]:
    """Setting -> the ``linger-sched`` option that sets it (an option named like the setting)."""
    import click

    from linger_sched.cli import main

    flags: dict[str, set[str]] = {}

    def walk(cmd: click.Command) -> None:
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name is not None:
                name = "database_url" if p.name == "database" else p.name
                flags.setdefault(name, set()).update(o for o in p.opts if o.startswith("--"))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(main)
    return {k: ", ".join(f"`{o}`" for o in sorted(v)) for k, v in flags.items()}


def settings_table() -> str:
    from linger_sched.config import ENV_VARS, Settings

    names = [f.name for f in dataclasses.fields(Settings)]
    missing = [n for n in names if n not in DESCRIPTIONS]
    stale = [n for n in DESCRIPTIONS if n not in names]
    if missing or stale:
        raise PluginError(f"docs/reference/_hooks.py DESCRIPTIONS: no description for {missing}; not a setting: {stale}")
    env = {field: var for var, (field, _kind) in ENV_VARS.items()}
    kinds = {field: kind for _var, (field, kind) in ENV_VARS.items()}
    flags = _cli_flags()
    defaults = Settings()
    rows = ["| setting | environment | `schedules.yaml` | CLI | default | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for name in names:
        value = getattr(defaults, name)
        if value is None:
            if name not in NONE_DEFAULTS:
                raise PluginError(f"docs/reference/_hooks.py NONE_DEFAULTS: say what {name}=None means")
            shown = NONE_DEFAULTS[name]
        elif kinds.get(name) == "duration":
            shown = _seconds(float(value))
        else:
            shown = f"`{value}`"
        cells = [f"`{name}`", f"`{env[name]}`" if name in env else "-", f"`{YAML_KEYS[name]}`" if name in YAML_KEYS else "-",
                 flags.get(name, "-"), shown, DESCRIPTIONS[name]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def events_table() -> str:
    from linger_sched.events import EVENTS

    rows = ["| event | emitted when |", "| --- | --- |"]
    rows += [f"| `{name}` | {when} |" for name, when in EVENTS.items()]
    return "\n".join(rows)


def metrics_table() -> str:
    from linger_sched.metrics import METRICS

    rows = ["| metric | type | labels | source | meaning |", "| --- | --- | --- | --- | --- |"]
    for m in METRICS.values():
        labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
        rows.append(f"| `{m.name}` | {m.kind} | {labels} | {m.source} | {m.help} |")
    return "\n".join(rows)


GENERATED = {"settings": settings_table, "events": events_table, "metrics": metrics_table}
MARKER = re.compile(r"<!-- linger: (\w+) -->")
# an inline link or image target: ](target) or ](target "title")
LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _generate(match: re.Match[str]) -> str:
    fn = GENERATED.get(match.group(1))
    if fn is None:
        raise PluginError(f"unknown generated table {match.group(0)!r} (known: {', '.join(GENERATED)})")
    return fn()


def _outside_links(markdown: str, page: Any, config: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    here = (docs_dir / page.file.src_uri).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def fix(match: re.Match[str]) -> str:
        target = match.group("target")
        if "://" in target or target.startswith(("#", "/", "mailto:")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        full = Path(posixpath.normpath((here / path).as_posix()))
        try:
            full.relative_to(docs_dir)
            return match.group(0)  # a page or file of the site: mkdocs checks it
        except ValueError:
            pass
        try:
            rel = full.relative_to(ROOT).as_posix()
        except ValueError:
            log.warning("%s: link %r leaves the repository", page.file.src_uri, target)
            return match.group(0)
        if not full.exists():
            log.warning("%s: link %r: no such file in the repository", page.file.src_uri, target)
            return match.group(0)
        if repo_url:
            kind = "tree" if full.is_dir() else "blob"
            return f"[{match.group('text')}]({repo_url}/{kind}/HEAD/{rel}{'#' + anchor if anchor else ''})"
        return match.group("text")  # without a repo_url: its text, which names the path

    # leave code blocks alone
    out, last = [], 0
    for fence in FENCE.finditer(markdown):
        out.append(LINK.sub(fix, markdown[last:fence.start()]))
        out.append(fence.group(0))
        last = fence.end()
    out.append(LINK.sub(fix, markdown[last:]))
    return "".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = MARKER.sub(_generate, markdown)
    return _outside_links(markdown, page, config)


# Docstrings use Sphinx roles (:class:`Linger`); mkdocstrings shows them as written. Drop the role,
# keep the name in code (``~a.b.C`` shows as ``C``, as Sphinx does).
ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj|const):(<code>)(~(?:\w+\.)*)?")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub(r"\1", html)
