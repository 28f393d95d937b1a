"""The schema check of commands that read the state database (`flowrun runs`, `show`,
`loyalty`, `retry`, `inbox`): they never create, migrate or otherwise change its schema.

Only `flowrun serve` migrates, at start. A newer flowrun's `runs` used to migrate the
database under a running older serve; now a database at another version than this
flowrun's is refused with what to do.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from flowrun.errors import StateError
from flowrun.state.database import make_engine, reading
from flowrun.state.migrations import NEWEST, version_of


def open_current(url: str) -> Engine:
    """An engine on an existing database at this flowrun's schema version, or StateError."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path != ":memory:" and not Path(path).is_file():
            raise StateError(f"no state database at {path} (`flowrun serve` creates it on its first start)")
    engine = make_engine(url)
    try:
        require_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def require_current(engine: Engine) -> int:
    """The database's schema version, when it is the one this flowrun knows."""
    where = engine.url.render_as_string(hide_password=True)
    with reading(engine) as conn:
        found = version_of(conn)
    if found == 0:
        raise StateError(f"{where} is not a flowrun state database yet (`flowrun serve` sets it up)")
    ours = NEWEST
    if found > ours:
        raise StateError(
            f"{where} is at schema v{found}, newer than this flowrun's v{ours}: use the flowrun version that serves "
            "it (read-only commands never change the database)"
        )
    if found < ours:
        raise StateError(
            f"{where} is at schema v{found}; this flowrun reads v{ours} and read-only commands never migrate: "
            f"use the flowrun version that serves it, or start this version's `flowrun serve` (it migrates at start)"
        )
    return found
