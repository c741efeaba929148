"""Transactional enqueue: an order and the job that mails its receipt are written in one
transaction, so a rolled-back order never sends a receipt (docs/transactional-enqueue.md)."""

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linger_sched import Linger

linger = Linger()  # LINGER_DATABASE_URL, else sqlite:///linger.db
metadata = sa.MetaData()
orders = sa.Table("shop_orders", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("total", sa.Integer))


@linger.task
def send_receipt(order_id: int) -> None:
    print(f"receipt for order {order_id} sent")


def place_order(engine: sa.Engine, order_id: int, total: int) -> int:
    with engine.begin() as conn:  # commits at the end of the block, rolls back on an exception
        conn.execute(orders.insert().values(id=order_id, total=total))
        if total <= 0:
            raise ValueError("an order must cost something")  # rolls back: no order, no receipt
        return send_receipt.enqueue(order_id, connection=conn)


def place_order_orm(session: Session, order_id: int, total: int) -> int:
    session.execute(orders.insert().values(id=order_id, total=total))
    job_id = send_receipt.enqueue(order_id, session=session)
    session.commit()
    return job_id
