"""Connection keeping: the connections the store holds between calls, and handing them back.

A call takes a kept connection when there is one (the SQLite writer's own, or the most recently
used idle one) and puts it back when it ends cleanly. A kept connection idle for longer than
``KEEP_IDLE_SECONDS`` goes back to the pool instead, so the pool's own checks apply to it again.
Handing back is shielded and bounded: a cancelled call still returns its connection, and a
connection whose driver died cannot hang its caller.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from durable.stores.sqlalchemy._calls import Database

_CLEANUP_SECONDS = 15
"""How long a cancelled call may spend ending its transaction and returning its connection."""
KEEP_IDLE_SECONDS = 10.0
"""A kept connection unused for longer goes back to the pool instead of serving a call."""


class KeptConnections:
    """The connections a store keeps checked out between calls (base of the store's calls)."""

    _db: Database | None

    def __init__(self, keep_connections: int) -> None:
        self._keep = keep_connections
        self._writer: AsyncConnection | None = None
        self._idle: list[tuple[AsyncConnection, float]] = []
        self._closed = False

    async def _return_kept(self) -> None:
        """Stop keeping connections; hand back the writer's and the idle ones."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            await close_connection(writer)
        await self._drop_idle()

    async def _take(self, writer: bool) -> AsyncConnection | None:
        if writer:
            conn, self._writer = self._writer, None
            return conn
        while self._idle:
            conn, since = self._idle.pop()
            if anyio.current_time() - since >= KEEP_IDLE_SECONDS:
                await close_connection(conn)
                await self._drop_idle()  # the most recently used is stale: so are the others
            elif self._db is not None and not self._db.x.usable(conn):
                await close_connection(conn, invalidate=True)
            else:
                return conn
        return None

    async def _put(self, conn: AsyncConnection, writer: bool) -> None:
        if self._closed:
            await close_connection(conn)
        elif writer:
            self._writer = conn
        elif len(self._idle) < self._keep:
            self._idle.append((conn, anyio.current_time()))
        else:
            await close_connection(conn)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await close_connection(conn)


async def close_connection(conn: AsyncConnection, *, invalidate: bool = False) -> None:
    """Hand the connection back to the pool (discarding it first when ``invalidate``).

    Shielded: a cancelled call still hands its connection back. Bounded: a connection whose
    driver died cannot hang its caller.
    """
    with anyio.move_on_after(_CLEANUP_SECONDS, shield=True):
        if invalidate:
            with contextlib.suppress(Exception):  # a dead connection may fail to say so
                await conn.invalidate()
        await conn.close()


async def end_transaction(conn: AsyncConnection, statement: str) -> None:
    """Run ``COMMIT`` or ``ROLLBACK``; invalidate the connection if that fails.

    Shielded: a cancelled caller must not hand a connection back mid-transaction. Bounded: a
    connection whose driver died cannot hang its caller forever.
    """
    with anyio.move_on_after(_CLEANUP_SECONDS, shield=True):
        try:
            await conn.exec_driver_sql(statement)
        except BaseException:
            await conn.invalidate()
            raise
