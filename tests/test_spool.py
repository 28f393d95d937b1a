"""The webhook port's spool (flowrun.state.spool): an acknowledgement that waits for nobody
holding the state database, and a move into the inbox that neither loses nor repeats a row when
the port dies between the two files."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from flowrun.inspect import inbox_problems, replay_inbox
from flowrun.serve.ingest import InboxWriter, SetAside
from flowrun.state.database import make_engine, reading
from flowrun.state.inbox import insert_rows
from flowrun.state.migrations import migrate
from flowrun.state.schema import inbox
from flowrun.state.spool import Spool, drain, spool_path
from flowrun.state.spool_admin import waiting
from tests.conftest import ROOT
from tests.servekit import config

ORDER = (ROOT / "examples/events/shopify/orders/create.json").read_bytes()


def _row(delivery: str, topic: str = "orders/create") -> dict[str, Any]:
    return {
        "source": "shopify",
        "topic": topic,
        "body": ORDER,
        "delivery_id": delivery,
        "received_at": datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        "triggered_at": None,
    }


def _state(tmp_path: Path, lock: Any = None) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}", lock)
    migrate(engine)
    return engine


def _inbox(engine: Engine) -> dict[str, str]:
    with reading(engine) as conn:
        return {d: s for d, s in conn.execute(select(inbox.c.delivery_id, inbox.c.status))}


def _spooled_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM spool").fetchone()[0])


def _store(writer: InboxWriter, *rows: dict[str, Any]) -> list[bool]:
    async def turn() -> list[bool]:
        return list(await asyncio.wait_for(asyncio.gather(*(writer.store(r) for r in rows)), timeout=10))

    return asyncio.run(turn())


def _move(spool: Spool, engine: Engine) -> int:
    """Everything spooled into the inbox, two rows a transaction."""
    moved, more = 0, True
    while more:
        done, more = drain(spool, lambda conn, rows: insert_rows(conn, rows) and None, 2)
        moved += done
    return moved


def test_a_webhook_is_acknowledged_while_another_process_holds_the_state_databases_write_lock(
    tmp_path: Path,
) -> None:
    lock = threading.Lock()  # serve's processes share one: the engine, the dispatcher, the prune
    engine = _state(tmp_path, lock)
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    writer = InboxWriter(engine, spool=spool)
    with lock:  # a prune batch, say, that does not end while the webhooks are answered
        assert _store(writer, _row("d-1"), _row("d-2")) == [True, True]
        assert _store(writer, _row("d-1")) == [False]  # a replay, recognised in the spool
        assert waiting(tmp_path / "state.db", engine) == 2
        assert _inbox(engine) == {}
    writer.start()
    writer.stop()  # the thread moves what is spooled before it ends
    assert _inbox(engine) == {"d-1": "pending", "d-2": "pending"}
    assert waiting(tmp_path / "state.db", engine) == 0
    assert _store(writer, _row("d-2")) == [False]  # a replay, recognised in the inbox
    spool.close()
    engine.dispose()


def test_rows_moved_before_a_crash_are_not_moved_again_and_the_next_put_deletes_them(tmp_path: Path) -> None:
    engine = _state(tmp_path)
    path = spool_path(tmp_path / "state.db")
    spool = Spool(path, engine)
    assert spool.put([_row("a"), _row("b"), _row("c")]) == [True, True, True]
    assert _move(spool, engine) == 3
    spool.close()  # the port dies here: the inbox has the rows, the spool still holds them
    assert _spooled_rows(path) == 3
    again = Spool(path, engine)  # the next start
    assert again.id == spool.id
    assert _move(again, engine) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(inbox)).scalar() == 3
    assert again.put([_row("a"), _row("d")]) == [False, True]
    assert _spooled_rows(path) == 1  # a, b and c are in the inbox: gone from the spool
    assert _move(again, engine) == 1
    assert sorted(_inbox(engine)) == ["a", "b", "c", "d"]
    again.close()
    engine.dispose()


def test_a_crash_between_the_inbox_insert_and_its_mark_moves_the_rows_once(tmp_path: Path) -> None:
    engine = _state(tmp_path)
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    spool.put([_row("a"), _row("b")])

    def dies_before_commit(conn: Any, rows: list[dict[str, Any]]) -> None:
        insert_rows(conn, rows)
        raise RuntimeError("killed before the commit")

    with contextlib.suppress(RuntimeError):
        drain(spool, dies_before_commit, 10)
    assert _inbox(engine) == {}  # the inbox rows and the mark: one transaction, neither committed
    assert _move(spool, engine) == 2
    assert _inbox(engine) == {"a": "pending", "b": "pending"}
    spool.close()
    engine.dispose()


def test_a_new_spool_file_has_a_new_id_so_an_old_mark_hides_none_of_its_rows(tmp_path: Path) -> None:
    engine = _state(tmp_path)
    path = spool_path(tmp_path / "state.db")
    first = Spool(path, engine)
    first.put([_row("a"), _row("b"), _row("c")])
    assert _move(first, engine) == 3
    first.close()
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        name.unlink(missing_ok=True)
    second = Spool(path, engine)
    assert second.id != first.id
    assert second.put([_row("x")]) == [True]  # seq 1 again, below the first spool's mark of 3
    assert _move(second, engine) == 1
    assert sorted(_inbox(engine)) == ["a", "b", "c", "x"]
    second.close()
    engine.dispose()


def test_what_a_dead_port_left_in_the_spool_is_listed_then_moved_and_set_aside_at_the_next_start(
    tmp_path: Path,
) -> None:
    engine = _state(tmp_path)
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", ROOT / "flows")
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    dead = InboxWriter(engine, spool=spool)  # its thread never runs: the port is killed
    assert _store(dead, _row("o-1"), _row("c-1", "customers/create")) == [True, True]
    spool.close()
    listed = inbox_problems(cfg)
    assert listed[-1].startswith("2 accepted deliveries wait in ") and "state.spool.db" in listed[-1]

    woken = threading.Event()
    unread = SetAside(frozenset({("shopify", "orders/create")}))  # what the flows of the new start read
    restarted = InboxWriter(
        engine, on_commit=woken.set, aside=unread, spool=Spool(spool_path(tmp_path / "state.db"), engine)
    )
    restarted.start()
    assert woken.wait(timeout=10)  # moved without a new webhook, and the engine told
    restarted.stop()
    assert _inbox(engine) == {"o-1": "ignored", "c-1": "pending"}  # stamped when it reached the inbox
    assert not any("accepted deliver" in line for line in inbox_problems(cfg))
    engine.dispose()


def test_when_the_spool_cannot_be_written_the_webhooks_are_not_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not written to the inbox instead: it would overtake, and miss the duplicates of, what
    the spool still holds."""
    engine = _state(tmp_path)
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    spool.close()  # every write to it now fails, like a spool on a broken disk
    writer = InboxWriter(engine, spool=spool)
    writer.start()
    with pytest.raises(RuntimeError, match="did not accept"):  # the port answers 503
        _store(writer, _row("d-1"))
    assert "the spool refused 1 webhooks; answered 503" in caplog.text
    assert writer.heartbeat.failure is not None  # this one, or the drain's (it cannot read the spool either)
    writer.stop()
    assert _inbox(engine) == {}
    engine.dispose()


def test_a_spool_restored_from_an_older_copy_numbers_new_rows_above_the_mark(tmp_path: Path) -> None:
    engine = _state(tmp_path)
    path = spool_path(tmp_path / "state.db")
    spool = Spool(path, engine)
    spool.close()
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)  # the spool as it was, empty
    spool = Spool(path, engine)
    spool.put([_row("a"), _row("b"), _row("c")])
    assert _move(spool, engine) == 3
    spool.close()
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copy(copy, path)  # same id, its sequence back at 0, the mark at 3
    restored = Spool(path, engine)
    assert restored.put([_row("x")]) == [True]
    assert waiting(tmp_path / "state.db", engine) == 1
    assert _move(restored, engine) == 1
    assert sorted(_inbox(engine)) == ["a", "b", "c", "x"]
    restored.close()
    engine.dispose()


def test_a_long_backlog_moves_one_batch_a_turn_and_reports_progress_each(tmp_path: Path, monkeypatch: Any) -> None:
    from flowrun.serve import ingest

    monkeypatch.setattr(ingest, "MAX_BATCH", 2)
    engine = _state(tmp_path)
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    spool.put([_row(f"d-{n}") for n in range(5)])
    wakes: list[int] = []
    writer = InboxWriter(engine, on_commit=lambda: wakes.append(1), spool=spool)
    writer.start()
    writer.stop()  # a stopping writer still moves everything spooled
    assert len(_inbox(engine)) == 5
    assert (writer.batches, writer.rows, len(wakes)) == (3, 5, 3)  # the engine told after each transaction
    spool.close()
    engine.dispose()


def test_a_row_the_inbox_refuses_is_kept_aside_listed_and_does_not_hold_back_the_rows_after_it(
    tmp_path: Path,
) -> None:
    engine = _state(tmp_path)
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", ROOT / "flows")
    with engine.begin() as conn:  # the database itself refuses one row, for good
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON inbox WHEN NEW.delivery_id = 'd-1'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    assert spool.put([_row("d-0"), _row("d-1"), _row("d-2")]) == [True, True, True]
    assert _move(spool, engine) == 3
    assert _inbox(engine) == {"d-0": "pending", "d-2": "pending"}
    assert waiting(tmp_path / "state.db", engine) == 0
    spool.put([_row("d-3")])  # deletes what was moved: the refused row stays kept
    listed = inbox_problems(cfg)
    assert "refused  shopify/orders/create d-1" in listed[0]
    assert "refused by the test" in listed[1] and "state.spool.db" in listed[1]

    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")  # the fix
    assert replay_inbox(cfg, None) == 1
    assert _move(spool, engine) == 2
    assert _inbox(engine) == {f"d-{n}": "pending" for n in range(4)}
    assert inbox_problems(cfg) == []
    spool.close()
    engine.dispose()


def test_a_move_holds_a_bounded_number_of_body_bytes(tmp_path: Path) -> None:
    engine = _state(tmp_path)
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    spool.put([{**_row(f"d-{n}"), "body": b"x" * 1000} for n in range(5)])
    assert [seq for seq, _ in spool.take(0, 10, max_bytes=2500)[0]] == [1, 2, 3]  # the row crossing it, then stop
    assert [seq for seq, _ in spool.take(0, 10, max_bytes=10)[0]] == [1]  # one row, however large
    assert [seq for seq, _ in spool.take(3, 10)[0]] == [4, 5]
    spool.close()
    engine.dispose()


def test_refused_rows_replayed_before_any_new_webhook_reach_the_inbox(tmp_path: Path) -> None:
    """The stop, fix, replay case: the refused row's original is still in the spool, at or below
    the mark, when it is spooled again."""
    engine = _state(tmp_path)
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", ROOT / "flows")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON inbox WHEN NEW.delivery_id = 'd-1'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    spool.put([_row("d-0"), _row("d-1")])
    assert _move(spool, engine) == 2
    spool.close()  # serve stops
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
    assert replay_inbox(cfg, None) == 1
    assert replay_inbox(cfg, None) == 0  # nothing refused is left to replay
    restarted = Spool(spool_path(tmp_path / "state.db"), engine)
    assert _move(restarted, engine) == 1
    assert _inbox(engine) == {"d-0": "pending", "d-1": "pending"}
    restarted.put([_row("d-2")])  # the next put deletes what was moved: d-1 is in the inbox, not lost
    assert _move(restarted, engine) == 1 and len(_inbox(engine)) == 3
    restarted.close()
    engine.dispose()


def test_a_database_error_that_is_not_about_the_row_refuses_nothing(tmp_path: Path) -> None:
    engine = _state(tmp_path)
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    spool.put([_row("d-0"), _row("d-1")])

    def broken(conn: Any, rows: list[dict[str, Any]]) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    with pytest.raises(sqlite3.DatabaseError):
        drain(spool, broken, 10)
    assert waiting(tmp_path / "state.db", engine) == 2  # still spooled, to be moved again
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT count(*) FROM refused").fetchone()[0] == 0
    spool.close()
    engine.dispose()


def test_a_move_stopped_by_its_byte_budget_says_more_is_waiting(tmp_path: Path, monkeypatch: Any) -> None:
    from flowrun.state import spool as spool_module

    monkeypatch.setattr(spool_module, "BATCH_BYTES", 2500)
    engine = _state(tmp_path)
    spool = Spool(spool_path(tmp_path / "state.db"), engine)
    spool.put([{**_row(f"d-{n}"), "body": b"x" * 1000} for n in range(5)])

    def write(conn: Any, rows: list[dict[str, Any]]) -> None:
        insert_rows(conn, rows)

    assert drain(spool, write, 100) == (3, True)
    assert drain(spool, write, 100) == (2, False)
    spool.close()
    engine.dispose()
