"""The README example at length: a checkout workflow on embedded SQLite.

Run it with ``nox -s example`` (or ``python docs/examples/checkout.py`` in the workspace venv).
It starts a checkout, shows each step, suspends on the approval signal, delivers the signal,
and prints the outcome. The database file persists, so every run adds one more checkout.
"""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta
from pathlib import Path

import anyio
from pydantic import BaseModel

from durable.core import Engine, WorkflowCtx, durable_step, remote_step, step, workflow
from durable.stores.sqlalchemy import SqlAlchemyStateStore
from durable.transports.inprocess import InProcessTransport

DB = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("checkout.db")


class Order(BaseModel):
    id: str
    total_cents: int


class Approval(BaseModel):
    approved: bool
    by: str


class ChargeIn(BaseModel):
    order_id: str
    amount_cents: int


class ChargeOut(BaseModel):
    charge_id: str


class Outcome(BaseModel):
    status: str
    charge_id: str | None = None


@step(retries=3)
async def reserve_stock(order: Order) -> str:
    print(f"  step reserve_stock: reserved the items of {order.id}")
    return f"reservation-{order.id}"


charge_card = remote_step(
    "payments.charge-card", input=ChargeIn, output=ChargeOut, retries=3, timeout=30
)


@durable_step(charge_card)
async def charge(request: ChargeIn) -> ChargeOut:
    print(f"  remote step payments.charge-card: charged {request.amount_cents} cents")
    return ChargeOut(charge_id=f"ch-{request.order_id}")


@workflow(name="checkout", version="1")
async def checkout(ctx: WorkflowCtx, order: Order) -> Outcome:
    await ctx.step(reserve_stock, order)
    approval = await ctx.wait_for_signal(f"approve:{order.id}", Approval)
    if not approval.approved:
        return Outcome(status="rejected")
    receipt = await ctx.remote(
        charge_card, ChargeIn(order_id=order.id, amount_cents=order.total_cents)
    )
    await ctx.sleep(timedelta(milliseconds=200))  # durable: survives a restart
    return Outcome(status="shipped", charge_id=receipt.charge_id)


async def main() -> None:
    store = SqlAlchemyStateStore.from_url(f"sqlite+aiosqlite:///{DB}")
    engine = Engine(store, InProcessTransport(), workflows=[checkout], steps=[charge])
    async with engine:
        earlier = await engine.list_runs(workflow="checkout", status="completed", limit=1000)
        print(f"{DB.name}: {len(earlier.runs)} checkout(s) completed by earlier runs")

        order = Order(id=f"order-{uuid.uuid4().hex[:8]}", total_cents=4200)
        handle = await engine.start(checkout, order, run_id=f"checkout:{order.id}")
        print(f"started run {handle.run_id} ({handle.status})")
        again = await engine.start(checkout, order, run_id=f"checkout:{order.id}")
        print(f"starting it again is idempotent: created={again.created}")

        run = await engine.wait_for_run(handle.run_id, timeout=30)
        print(f"run is {run.status}: waiting for the signal approve:{order.id}")

        print("sending the approval signal")
        await engine.signal(f"approve:{order.id}", Approval(approved=True, by="alice"))

        run = await engine.wait_for_run(handle.run_id, timeout=30, until="terminal")
        print(f"outcome: {run.status}, {run.output!r}")
        if run.status != "completed":
            raise SystemExit(f"the checkout did not complete: {run.error}")
    await store.aclose()


if __name__ == "__main__":
    anyio.run(main)
