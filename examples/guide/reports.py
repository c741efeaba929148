"""The tasks that examples/guide/schedules.yaml schedules (docs/schedules.md)."""

from __future__ import annotations

from linger_sched import task

sent: list[tuple[str, str]] = []


@task
def send_digest(to: str) -> None:
    sent.append(("digest", to))


@task
def weekly_report(region: str, fmt: str = "pdf") -> None:
    sent.append((region, fmt))


@task(queue="ledger")
def sync_ledger() -> None:
    sent.append(("ledger", "synced"))
