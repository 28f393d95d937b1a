from __future__ import annotations

import contextlib
import os
import signal
import warnings
from collections.abc import Iterator
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


@pytest.fixture(scope="module", autouse=True)
def no_serve_outlives_its_module() -> Iterator[None]:
    """A `flowrun serve` a test started and could not stop (its start timed out, an assertion
    came first) is killed when its module ends, so it cannot slow every test after it."""
    yield
    for pid in _serve_children(os.getpid()):
        warnings.warn(f"killing a flowrun serve (pid {pid}) left running by a test", stacklevel=1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _serve_children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent and b"serve" in command and any(part.endswith(b"flowrun") for part in command):
            found.append(int(entry.name))
    return found
