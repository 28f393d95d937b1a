"""What each of serve's processes sets up the same way: journald-friendly logging with
secrets redacted, the clock, the event loop, and dying with the parent process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flowrun.config import Config


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            for secret in self.secrets:
                message = message.replace(secret, "****")
            record.msg, record.args = message, ()
        return True


def setup_logging(config: Config) -> None:
    # journald adds its own timestamps; keep lines short: level, logger, message.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "<%(levelno)s>%(levelname)s %(name)s: %(message)s"
            if os.environ.get("JOURNAL_STREAM")
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    )
    handler.addFilter(RedactingFilter(config.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every sweep at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)  # and httpx every request


def clock_from_env() -> Callable[[], datetime]:
    """The wall clock; or, for process-level tests, the time written in $FLOWRUN_TEST_CLOCK_FILE
    (so a test moves time forward instead of sleeping through a wait)."""
    path = os.environ.get("FLOWRUN_TEST_CLOCK_FILE")
    if not path:
        return lambda: datetime.now(UTC)
    clock_file = Path(path)

    last = [datetime.now(UTC)]

    def read() -> datetime:
        with contextlib.suppress(ValueError):  # caught mid-write: keep the last time read
            last[0] = datetime.fromisoformat(clock_file.read_text().strip())
        return last[0]

    return read


def die_with_parent(parent: int, name: str) -> None:
    """Linux: the kernel kills this process when its parent dies, so a `kill -9` of serve's
    main process never leaves a webhook port answering for an engine that is gone. The process
    is also named (`ps`, `top`, /proc/<pid>/comm show `flowrun-port`, …)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig, pr_set_name = 1, 15
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        libc.prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def test_clock_poll() -> float | None:
    """With a test clock (a file the test moves), how often a sleeping part looks at it again."""
    return 0.02 if os.environ.get("FLOWRUN_TEST_CLOCK_FILE") else None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it is a dependency on Linux): the webhook port's request
    handling is about a third cheaper on it; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
