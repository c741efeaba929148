"""Job options apart from a task's own arguments, and many jobs in one statement (docs/tasks.md)."""

from __future__ import annotations

from linger_sched import task

sent: list[tuple[int, str]] = []


@task
def notify(user_id: int, queue: str = "push") -> None:  # a parameter named like a job option
    sent.append((user_id, queue))


def notify_by_sms(user_id: int) -> int:
    # notify.enqueue(user_id, queue="sms") is ambiguous: it raises JobOptionError
    return notify.options(queue="email").enqueue(user_id, queue="sms")  # the job's queue is "email"


def notify_many() -> list[int]:
    return notify.enqueue_many([
        (1,),  # positional arguments
        {"user_id": 2},  # keyword arguments
        ([3], {"queue": "sms"}),  # both
    ])
