"""A class job: its dataclass fields are its JSON arguments (docs/tasks.md)."""

from __future__ import annotations

from dataclasses import dataclass

from linger_sched import default_app, task

sent: list[int] = []


@task
@dataclass
class SendInvoice:
    invoice_id: int

    def perform(self) -> None:
        sent.append(self.invoice_id)


def queue_invoices() -> list[int]:
    app = default_app()  # the app @task registers on
    return [
        app.enqueue(SendInvoice(42)),  # an instance: its fields are the job's arguments
        SendInvoice.enqueue(43),  # the same, from the constructor's arguments
        *app.enqueue_many([SendInvoice(1), SendInvoice(2)]),  # many instances, one statement
    ]
