"""What serve's processes tell each other, typed, each kind on its own pipe.

Nudges (new inbox rows, sends ready, outcomes written) and status reports (heartbeats and
counters for /healthz and /metrics) are lossy by design: a full pipe already holds news of the
same kind, and the receiver reads the database anyway. Control messages (the topics to set
aside after a reload) are delivered: the sender waits for room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("flowrun.serve")


@dataclass(frozen=True)
class InboxCommitted:
    """port → engine: deliveries the engine reads were committed."""


@dataclass(frozen=True)
class SendsReady:
    """engine → dispatcher: outbox rows became ready."""

    count: int = 0


@dataclass(frozen=True)
class OutcomesWritten:
    """dispatcher → engine: providers' answers were committed."""

    count: int = 0


@dataclass(frozen=True)
class Status:
    """engine or dispatcher → port: heartbeats (flowrun.serve.health snapshots) and counters."""

    part: str
    beats: dict[str, Any] = field(default_factory=dict)
    metrics: Any = None


class Outlet:
    """The sending end of one pipe."""

    def __init__(self, end: Connection, *, lossy: bool) -> None:
        self.end, self.lossy = end, lossy
        self._lock = threading.Lock()
        if lossy:
            os.set_blocking(end.fileno(), False)  # messages are smaller than PIPE_BUF: all or nothing

    def send(self, message: object) -> None:
        """Lossy: dropped when the pipe is full. Either way, dropped when the receiver is gone."""
        with self._lock, contextlib.suppress(OSError):  # BlockingIOError (full), BrokenPipeError (gone)
            self.end.send(message)


def listen(
    end: Connection, handle: Callable[[Any], object], name: str, on_close: Callable[[], None] | None = None
) -> None:
    """Read messages on a daemon thread, handing each to `handle`; `on_close` when the sender is gone."""

    def read() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                handle(end.recv())
        if on_close is not None:
            on_close()

    threading.Thread(target=read, name=name, daemon=True).start()
