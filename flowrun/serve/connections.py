"""Slow and idle clients cannot shut the webhook port: a connection limit that evicts the
connection waiting longest for its request, a deadline for each request, a cap on header
bytes.

uvicorn alone (measured with 0.54 and httptools) holds a connection that never sends a
byte, or sends its headers one byte at a time, for as long as the client likes: its
keep-alive timeout starts only after a response, and any byte cancels it. Its
`limit_concurrency` counts those idle connections and answers every new request 503 once
they fill it, so a few hundred idle sockets shut out every webhook; without a limit, the
process runs out of file descriptors (systemd's default soft limit is 1,024) and the kernel
resets every new connection. httptools sets no limit on header size (4 MB of headers were
answered 200).

Here a connection is *waiting* from its first byte's chance (connection made, or previous
response sent) until its request has fully arrived. Waiting connections are kept oldest
first. When `max_connections` are open, a new one evicts the oldest waiting connection, so
idle and slow clients can delay a webhook's connection by at most one eviction; only when
every open connection is busy with a request is the new one answered 503. A waiting
connection is closed once `request_timeout` has passed (a slowloris client's headers never
complete), and one whose headers pass `max_header_bytes` is answered 431. Every refusal is
counted in `flowrun_connections_refused_total`, and logged (the first, then every 100th).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from flowrun.serve.metrics import Metrics

log = logging.getLogger("flowrun.port")
REFUSALS = frozenset({"evicted_waiting", "full", "request_timeout", "headers_too_large"})
LOG_EVERY = 100


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    request_timeout: float = 10.0  # seconds from the chance to send a request until it has all arrived
    max_header_bytes: int = 64 * 1024


class ConnectionGuard:
    """Shared by every connection of one server (one event loop)."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics) -> None:
        self.limits, self.metrics = limits, metrics
        self.open: set[GuardedProtocol] = set()
        self.waiting: OrderedDict[GuardedProtocol, asyncio.TimerHandle] = OrderedDict()
        self.refused: Counter[str] = Counter()

    def opened(self, connection: GuardedProtocol) -> bool:
        """False when the connection must be refused (every open one is busy)."""
        self.open.add(connection)
        if len(self.open) > self.limits.max_connections:
            if not self.waiting:
                self.refuse("full")
                return False
            oldest, _ = next(iter(self.waiting.items()))
            self.refuse("evicted_waiting")
            oldest.drop()
        self.start_waiting(connection)
        return True

    def start_waiting(self, connection: GuardedProtocol) -> None:
        self.stop_waiting(connection)
        loop = asyncio.get_running_loop()
        self.waiting[connection] = loop.call_later(self.limits.request_timeout, self._timed_out, connection)

    def stop_waiting(self, connection: GuardedProtocol) -> None:
        timer = self.waiting.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def closed(self, connection: GuardedProtocol) -> None:
        self.stop_waiting(connection)
        self.open.discard(connection)

    def _timed_out(self, connection: GuardedProtocol) -> None:
        self.waiting.pop(connection, None)
        self.refuse("request_timeout")
        connection.drop()

    def refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        self.metrics.count("flowrun_connections_refused_total", reason=reason)
        total = sum(self.refused.values())
        if total == 1 or total % LOG_EVERY == 0:
            log.warning(
                "webhook port: closed a connection (%s); %d so far (%s); limits: %d connections, %g s a request",
                reason,
                total,
                ", ".join(f"{k} {n}" for k, n in sorted(self.refused.items())),
                self.limits.max_connections,
                self.limits.request_timeout,
            )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, reporting to a ConnectionGuard (`guard` is set per server)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._in_headers = True
        if not self.guard.opened(self):
            self._refuse(b"503 Service Unavailable", b"too many connections")

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # refused or evicted: nothing more is read
            return
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.guard.limits.max_header_bytes:
                self.guard.stop_waiting(self)
                self.guard.refuse("headers_too_large")
                self._refuse(b"431 Request Header Fields Too Large", b"request headers too large")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.guard.stop_waiting(self)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._header_bytes, self._in_headers = 0, True
            self.guard.start_waiting(self)

    def drop(self) -> None:
        """Close now; a request being read sees a disconnect."""
        self.guard.stop_waiting(self)
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: bytes, text: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
        )
        self.drop()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class for uvicorn.Config(http=...), bound to this guard."""
    return type("BoundGuardedProtocol", (GuardedProtocol,), {"guard": guard})


def raise_file_limit() -> tuple[int, int]:
    """The soft limit on open files raised to the hard one (systemd's default soft limit is
    1,024 whatever the hard limit); returns (soft, hard) after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


def fitting_limit(wanted: int, file_limit: int, reserve: int = 64) -> int:
    """Connections that fit in the file limit beside the database, pipes and logs."""
    fitting = max(1, file_limit - reserve)
    if wanted > fitting:
        log.warning(
            "limits.max_connections %d is above what the open-file limit %d allows; using %d "
            "(raise LimitNOFILE in the unit)",
            wanted,
            file_limit,
            fitting,
        )
        return fitting
    return wanted
