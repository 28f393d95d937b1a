"""The command line's app and what its commands share: errors are formatted here and nowhere
else; imports are lazy so `flowrun --help` starts fast."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from flowrun.errors import Problem

app = typer.Typer(
    name="flowrun",
    help="Store automation flows as YAML in git: validate them, dry-run them, serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: importing rich for it costs ~0.1 s of cold start
)
STATE: dict[str, bool] = {"debug": False}
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what `yes | head` reports, so `set -o pipefail` sees the same


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"


class RunFormat(StrEnum):
    text = "text"
    json = "json"


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
) -> None:
    STATE["debug"] = debug


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1 itself: leave it to _guard, as for print()
            raise BrokenPipeError

    return _Console(stderr=stderr, highlight=False, soft_wrap=True)


def _problem_line(p: Problem, level: str = "") -> str:
    from flowrun.errors import format_path

    hint = f"\n    fix: {p.hint}" if p.hint else ""
    return f"{p.file}:{p.line}:{p.column}: {level}{p.message} [at {format_path(p.path)}]{hint}"


def _fail(error: BaseException) -> NoReturn:
    from flowrun.errors import SourceError, UsageError

    if isinstance(error, SourceError):
        for problem in error.problems:
            print(_problem_line(problem), file=sys.stderr)
        raise typer.Exit(EXIT_PROBLEMS)
    print(f"error: {error}", file=sys.stderr)
    raise typer.Exit(EXIT_USAGE if isinstance(error, UsageError) else EXIT_PROBLEMS)


def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from flowrun.errors import FlowrunError

    try:
        try:
            return fn(*args, **kwargs)
        finally:
            sys.stdout.flush()  # a reader that left shows here, not in click's own handler
    except FlowrunError as exc:
        _fail(exc)
    except BrokenPipeError:
        _reader_left()
    except typer.Exit:
        raise
    except Exception as exc:  # the last line of defence: no traceback unless asked
        if STATE["debug"]:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        raise typer.Exit(EXIT_PROBLEMS) from None


def _reader_left() -> NoReturn:
    """The reader of our output went away (`flowrun dry-run ... | head`): stop quietly.

    Later writes, and the interpreter's last flush, go to /dev/null instead of raising again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(EXIT_PIPE_CLOSED)


def _existing(paths: list[Path]) -> list[Path]:
    from flowrun.errors import UsageError

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    return paths


# -- validate ----------------------------------------------------------------------------


# -- serve and inspection -------------------------------------------------------------

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project file (default: ./flowrun.yaml if present).")
]


def _config(path: Path | None, *, secrets: bool = False) -> Any:
    from flowrun.config import load_config

    if path is None and Path("flowrun.yaml").is_file():
        path = Path("flowrun.yaml")
    return load_config(_existing([path])[0] if path is not None else None, secrets=secrets)


def run() -> None:
    app()
