"""What /healthz reports: named heartbeats, each with a staleness rule, and probes.

A heartbeat belongs to a part that takes work (the inbox writer now; the engine and the
dispatcher can register theirs the same way). The part says when work starts waiting for
it (`busy`), when it got some done (`progressed`), and when it failed (`failed`). It is
unhealthy when work has waited longer than `stale_after` without progress, when its last
attempt failed, or when its thread is gone. An idle part is healthy: nothing waits for it,
so it needs no beat on a timer. Time comes from the caller's clock.

A part in another process sends `Heartbeat.snapshot()`s; `Health.set_peer` keeps the latest
with the time it came, and a peer whose news is older than its `stale_after` is unhealthy.

A probe is a check run on demand (can the database take a write?): one at a time, and a
probe that has not answered within its `timeout` counts as failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class PartState:
    name: str
    ok: bool
    detail: str = "ok"


@dataclass(frozen=True)
class Report:
    parts: tuple[PartState, ...]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parts)

    def as_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unhealthy", "parts": {p.name: p.detail for p in self.parts}}


@dataclass
class Heartbeat:
    name: str
    stale_after: timedelta
    alive: Callable[[], bool] = lambda: True
    busy_since: datetime | None = None
    failure: str | None = None

    def busy(self, now: datetime) -> None:
        """Work is waiting for this part (kept at the earliest time until progress)."""
        if self.busy_since is None:
            self.busy_since = now

    def progressed(self, now: datetime, more: bool) -> None:
        """Some work is done; `more` says whether more is waiting (busy again from now)."""
        self.failure = None
        self.busy_since = now if more else None

    def failed(self, why: str) -> None:
        self.failure = why

    def snapshot(self) -> dict[str, Any]:
        return {
            "stale_after": self.stale_after.total_seconds(),
            "busy_since": self.busy_since,
            "failure": self.failure,
            "alive": self.alive(),
        }

    def state(self, now: datetime) -> PartState:
        return judge(self.name, self.snapshot(), now)


def judge(name: str, beat: Mapping[str, Any], now: datetime) -> PartState:
    if not beat.get("alive", True):
        return PartState(name, False, "stopped")
    if beat.get("failure"):
        return PartState(name, False, f"failing: {beat['failure']}")
    since = beat.get("busy_since")
    stale_after = timedelta(seconds=float(beat["stale_after"]))
    if since is not None and now - since > stale_after:
        return PartState(name, False, f"no progress since {since.isoformat()} (work waiting)")
    return PartState(name, True, "busy" if since is not None else "idle")


@dataclass
class Probe:
    name: str
    check: Callable[[], None]  # raises when the part is not healthy; run in a thread
    timeout: timedelta
    _running: asyncio.Future[None] | None = field(default=None, repr=False)

    async def state(self) -> PartState:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self.check))
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self.timeout.total_seconds())
        except TimeoutError:
            return PartState(self.name, False, f"no answer within {self.timeout.total_seconds():g} s")
        except Exception as exc:
            return PartState(self.name, False, f"{type(exc).__name__}: {str(exc)[:200]}")
        return PartState(self.name, True)


class Health:
    """`clock` judges work waiting (the flows' clock, which tests move); whether a peer process is
    still sending news is judged on the monotonic clock, as a process's life is real time."""

    def __init__(self, clock: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.monotonic = clock, monotonic
        self.beats: dict[str, Heartbeat] = {}
        self.probes: dict[str, Probe] = {}
        self._peers: dict[str, tuple[float, dict[str, Mapping[str, Any]]]] = {}
        self._expected: set[str] = set()

    def heartbeat(self, name: str, stale_after: timedelta, alive: Callable[[], bool] = lambda: True) -> Heartbeat:
        beat = self.beats[name] = Heartbeat(name, stale_after, alive)
        return beat

    def probe(self, name: str, check: Callable[[], None], timeout: timedelta) -> Probe:
        probe = self.probes[name] = Probe(name, check, timeout)
        return probe

    def expect(self, peer: str) -> None:
        """A peer that must have reported before the whole is healthy (a part still starting)."""
        self._expected.add(peer)

    def set_peer(self, peer: str, beats: Mapping[str, Mapping[str, Any]]) -> None:
        """Heartbeat snapshots from another process, by part name."""
        self._peers[peer] = (self.monotonic(), dict(beats))

    async def report(self) -> Report:
        now = self.clock()
        parts = [beat.state(now) for beat in self.beats.values()]
        parts += [PartState(peer, False, "starting: no news yet") for peer in sorted(self._expected - set(self._peers))]
        for peer, (received, beats) in self._peers.items():
            for name, beat in beats.items():
                silent = self.monotonic() - received
                label = name if name == peer else f"{peer}.{name}"
                if silent > float(beat["stale_after"]):
                    parts.append(PartState(label, False, f"no news for {silent:.0f} s"))
                else:
                    parts.append(judge(label, beat, now))
        parts += [await probe.state() for probe in self.probes.values()]
        return Report(tuple(parts))
