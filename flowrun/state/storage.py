"""How much the state database holds: its size, rows per table family, the last prune, and the
free space on the disk under a SQLite file (for /metrics and `serve --check`)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from flowrun.state import codec
from flowrun.state.cursors import get_cursor
from flowrun.state.database import sqlite_path
from flowrun.state.prune import LAST
from flowrun.state.schema import (
    attempts,
    entries,
    inbox,
    loyalty_ledger,
    outbox,
    prunes,
    runs,
    sends,
)

TABLES = {
    "runs": runs,
    "outbox": outbox,
    "attempts": attempts,
    "inbox": inbox,
    "sends": sends,
    "entries": entries,
    "loyalty_ledger": loyalty_ledger,
}
LOW_FREE_FRACTION = 0.10
LOW_FREE_BYTES = 1 << 30


def database_bytes(conn: Connection, url: str) -> int:
    """The database's size: a SQLite file with its WAL, or pg_database_size."""
    if conn.dialect.name == "postgresql":
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() or 0)
    path = sqlite_path(url)
    if path is None:
        return 0
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def rows(conn: Connection) -> dict[str, int]:
    return {name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0) for name, t in TABLES.items()}


def last_prune(conn: Connection) -> tuple[datetime, dict[str, int], float] | None:
    """When the last prune ran, what it removed per family, and how long it took (seconds)."""
    found: Any = get_cursor(conn, LAST)
    if not found:
        return None
    return codec._aware(found["at"]), {k: int(v) for k, v in found["rows"].items()}, float(found.get("seconds", 0))


def pruned_total(conn: Connection) -> dict[str, int]:
    """Rows every recorded prune removed, per family."""
    query = select(prunes.c.kind, func.sum(prunes.c.rows)).group_by(prunes.c.kind)
    return {kind: int(n or 0) for kind, n in conn.execute(query)}


def disk_warning(url: str) -> str | None:
    """A warning when the disk holding a SQLite database has under 10 % or 1 GB free."""
    path = sqlite_path(url)
    if path is None:
        return None
    where = path if path.exists() else _existing_parent(path)
    usage = shutil.disk_usage(where)
    if usage.free >= LOW_FREE_BYTES and usage.free >= usage.total * LOW_FREE_FRACTION:
        return None
    return (
        f"warning: the disk holding {path} has {_gb(usage.free)} free of {_gb(usage.total)}"
        f" ({usage.free / usage.total:.1%}; flowrun wants 10 % and 1 GB): free space, or shorten `retention:`"
    )


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def _gb(n: int) -> str:
    return f"{n / (1 << 30):.2f} GB"
