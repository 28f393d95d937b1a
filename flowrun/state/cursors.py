"""Named cursors outside the runtime: a schedule's next tick, a poller's high-water mark."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from flowrun.state import codec
from flowrun.state.database import upsert_many
from flowrun.state.schema import cursors


def get_cursor(conn: Connection, name: str) -> Any:
    value = conn.execute(select(cursors.c.value).where(cursors.c.name == name)).scalar()
    return codec.loads(value) if value is not None else None


def set_cursor(conn: Connection, name: str, value: Any) -> None:
    upsert_many(conn, cursors, [{"name": name, "value": codec.dumps(value), "due_at": None, "part": 0}])
