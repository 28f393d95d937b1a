"""Prometheus text metrics: counters kept in memory, gauges read from the database.

serve's engine process sends its `snapshot()` to the webhook port's process every half
second; the port answers /metrics with its own counters plus the latest snapshot."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: Callable[[], Awaitable[dict[str, dict[Labels, float]]]] | None = None
        self.lateness_max = 0.0
        self.lateness_sum = 0.0
        self.lateness_count = 0
        self.peers: dict[str, dict[str, Any]] = {}  # other processes' latest snapshot(), by part

    def count(self, name: str, value: float = 1, **labels: str) -> None:
        self.counters[name][tuple(sorted(labels.items()))] += value

    def observe_lateness(self, seconds: float) -> None:
        self.lateness_max = max(self.lateness_max, seconds)
        self.lateness_sum += seconds
        self.lateness_count += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "counters": {name: dict(values) for name, values in self.counters.items()},
            "lateness": (self.lateness_max, self.lateness_sum, self.lateness_count),
        }

    async def render(self) -> str:
        lines: list[str] = []
        series: dict[str, dict[Labels, float]] = {k: dict(v) for k, v in self.counters.items()}
        peer_max, peer_sum, peer_count = 0.0, 0.0, 0
        for peer in self.peers.values():
            for name, values in peer.get("counters", {}).items():
                for labels, value in values.items():
                    series.setdefault(name, {})
                    series[name][labels] = series[name].get(labels, 0.0) + value
            late_max, late_sum, late_count = peer.get("lateness", (0.0, 0.0, 0))
            peer_max, peer_sum, peer_count = max(peer_max, late_max), peer_sum + late_sum, peer_count + late_count
        if self.gauges is not None:
            series.update(await self.gauges())
        series["flowrun_timer_lateness_seconds_max"] = {(): max(self.lateness_max, peer_max)}
        series["flowrun_timer_lateness_seconds_sum"] = {(): self.lateness_sum + peer_sum}
        series["flowrun_timer_lateness_seconds_count"] = {(): float(self.lateness_count + peer_count)}
        for name in sorted(series):
            kind = "counter" if name.endswith("_total") else "gauge"
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in sorted(series[name].items()):
                rendered = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")
        return "\n".join(lines) + "\n"
