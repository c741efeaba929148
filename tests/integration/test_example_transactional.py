"""examples/transactional/shop.py, the code of docs/transactional-enqueue.md, on every database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from examples.transactional import shop
from linger_sched import Linger


@pytest.fixture
def shop_app(db_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Linger]:
    monkeypatch.setenv("LINGER_DATABASE_URL", db_url)
    monkeypatch.setenv("LINGER_TABLE_PREFIX", prefix)
    app = shop.linger
    app.configure(database_url=db_url, table_prefix=prefix)
    app.install_schema()
    md = sa.MetaData()
    orders = shop.orders.to_metadata(md, name=f"shop_orders_{secrets.token_hex(3)}")
    monkeypatch.setattr(shop, "orders", orders)
    engine = sa.create_engine(db_url)
    md.create_all(engine)
    yield app
    md.drop_all(engine)
    engine.dispose()
    app.store.drop_schema()
    app.store.dispose()


def test_a_placed_order_sends_its_receipt_and_a_failed_one_does_not(shop_app: Linger, db_url: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    engine = sa.create_engine(db_url)
    job_id = shop.place_order(engine, 1, total=30)
    with pytest.raises(ValueError, match="must cost something"):
        shop.place_order(engine, 2, total=0)
    with Session(engine) as session:
        orm_job = shop.place_order_orm(session, 3, total=12)
    with engine.connect() as conn:
        assert [r.id for r in conn.execute(sa.select(shop.orders.c.id).order_by(shop.orders.c.id))] == [1, 3]
    shop_app.work(burst=True, concurrency=1)
    assert shop_app.get_job(job_id).state == "succeeded"
    assert shop_app.get_job(orm_job).state == "succeeded"
    assert shop_app.store.count_by_state() == {"succeeded": 2}
    out = capsys.readouterr().out
    assert "receipt for order 1 sent" in out and "receipt for order 3 sent" in out and "order 2" not in out
    engine.dispose()
