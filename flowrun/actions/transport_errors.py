"""What went wrong on the way to a provider, said as it happened.

httpx's aiohttp transport reports every aiohttp connection error that is not a timeout as
`httpx.ConnectTimeout`, so a connection refused in 20 ms read "timed out after 30 s". The
aiohttp error it came from (`__cause__`) tells which it was.
"""

from __future__ import annotations

import os
import socket

import httpx


def describe(exc: httpx.HTTPError, timeout_s: float) -> str:
    cause = exc.__cause__
    if isinstance(cause, TimeoutError) or (cause is None and isinstance(exc, httpx.TimeoutException)):
        return f"timed out after {timeout_s:g} s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError) or _connect_failure(cause):
        reason = getattr(cause, "os_error", None) or cause or exc
        where = f" to {cause.host}:{cause.port}" if _connect_failure(cause) else ""  # type: ignore[union-attr]
        return f"could not connect{where}: {_text(reason)}"
    return f"{type(exc).__name__}: {_text(cause or exc) or 'connection closed by the peer'}"


def describe_aiohttp(exc: Exception, timeout_s: float) -> str:
    """The same, for an error of aiohttp itself (the http action sends on aiohttp directly)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g} s ({type(exc).__name__})"
    if _connect_failure(exc):
        reason = getattr(exc, "os_error", None) or exc
        return f"could not connect to {exc.host}:{exc.port}: {_text(reason)}"  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {_text(exc) or 'connection closed by the peer'}"


def _connect_failure(cause: BaseException | None) -> bool:
    import aiohttp

    return isinstance(cause, aiohttp.ClientConnectorError)


def _text(error: object) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host: {error.strerror or error}"
    if isinstance(error, OSError) and error.errno and error.errno > 0:
        return os.strerror(error.errno)  # "Connection refused", "Name or service not known"...
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)
