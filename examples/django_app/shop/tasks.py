"""The shop's tasks, found by linger_sched.contrib.django at start-up (each app's tasks.py)."""

import logging

from linger_sched.contrib.django import app

from .models import Order

log = logging.getLogger(__name__)


@app.task(max_attempts=5)
def send_receipt(order_id: int) -> None:
    order = Order.objects.get(pk=order_id)  # the order is committed: the job was written with it
    log.warning("receipt for order %s to %s: %s EUR", order.id, order.email, order.total)  # a real shop mails it
    Order.objects.filter(pk=order.id).update(receipt_sent=True)


@app.task(cron="0 3 * * *", tz="Europe/Berlin")
def forget_old_orders() -> None:
    Order.objects.filter(receipt_sent=True, total=0).delete()
