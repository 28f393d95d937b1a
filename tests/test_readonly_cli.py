"""Read-only commands never change the database: no migration under a running serve of
another version, no database created, and a clear refusal of a version that is not theirs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, inspect, select

from flowrun.state.database import make_engine
from flowrun.state.migrations import NEWEST, migrate
from flowrun.state.schema import schema_version
from tests.liveserve import FLOWRUN
from tests.servekit import database_params, database_url

COMMANDS = (["runs"], ["show", "r_missing"], ["loyalty"], ["retry"], ["retry", "--all"])


def project(tmp_path: Path, url: str) -> Path:
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "flowrun.yaml").write_text(f"database: {url}\nflows: flows\n")
    return tmp_path / "flowrun.yaml"


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLOWRUN, *args, "-c", str(config)], capture_output=True, text=True, timeout=60)


def version_of(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", database_params())
def test_an_older_schema_is_refused_and_left_as_it_is(tmp_path: Path, database: str) -> None:
    url = database_url(database, tmp_path)
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:  # stamped as a serve two versions older left it
        conn.execute(delete(schema_version).where(schema_version.c.version > NEWEST - 2))
    columns = {c["name"] for c in inspect(engine).get_columns("runs")}
    engine.dispose()
    config = project(tmp_path, url)
    for command in COMMANDS:
        result = run(config, *command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"is at schema v{NEWEST - 2}; this flowrun reads v{NEWEST}" in result.stderr
        assert "never migrate" in result.stderr and "Traceback" not in result.stderr
    assert version_of(url) == NEWEST - 2
    engine = make_engine(url)
    assert {c["name"] for c in inspect(engine).get_columns("runs")} == columns
    engine.dispose()


@pytest.mark.parametrize("database", database_params())
def test_a_newer_schema_is_refused(tmp_path: Path, database: str) -> None:
    url = database_url(database, tmp_path)
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:  # a newer flowrun's serve migrated it further
        conn.execute(insert(schema_version).values(version=NEWEST + 1))
    engine.dispose()
    result = run(project(tmp_path, url), "runs")
    assert result.returncode == 1
    assert f"newer than this flowrun's v{NEWEST}" in result.stderr
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(schema_version).where(schema_version.c.version > NEWEST))
    engine.dispose()


def test_no_database_is_created_by_a_read_only_command(tmp_path: Path) -> None:
    db = tmp_path / "state" / "flowrun.db"
    config = project(tmp_path, f"sqlite:///{db}")
    for command in COMMANDS:
        result = run(config, *command)
        assert result.returncode == 1 and "no state database at" in result.stderr, result.stderr
    assert not db.exists() and not db.parent.exists()


def test_the_current_schema_is_read_and_its_file_is_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    config = project(tmp_path, f"sqlite:///{db}")
    listed = run(config, "runs")
    assert listed.returncode == 0 and listed.stdout.startswith("RUN"), listed.stderr
    assert run(config, "retry").stdout.strip() == "no parked actions"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
