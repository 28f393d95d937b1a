from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowrun.cli import app

ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


class Cli:
    """Runs the real CLI in-process; every result has exit_code, stdout and stderr."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> object:
        return self.runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(ROOT)
    return Cli()


@pytest.fixture
def fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"the shared store fixtures are not beside the project ({SHARED_FIXTURES})")
    return SHARED_FIXTURES
