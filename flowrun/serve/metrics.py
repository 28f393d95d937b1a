"""Prometheus metrics: declared counters, label values from known sets, prometheus_client's
exposition.

Nobody outside can write a metric: every counter is declared below with its label names,
and a label value that is not in its label's set (the configured sources, the action
modules, run statuses, the port's rejection reasons...) is counted as `unknown`. A webhook
POSTed to `/webhooks/<anything>` therefore adds no series and no text to /metrics, and
prometheus_client escapes what it writes and keeps counters at full precision.

serve has several processes. Each keeps its own `Metrics`; the engine and the dispatcher send
their `snapshot()` to the webhook port's process, which calls `set_peer(name, snapshot)` and answers /metrics
with its own counters plus every peer's, summed, and gauges read from the database.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from flowrun.runtime.records import SendStatus
from flowrun.state.prune import FAMILIES as PRUNE_FAMILIES
from flowrun.state.storage import TABLES as STORAGE_TABLES

STORAGE_FAMILIES = tuple(STORAGE_TABLES)

Labels = tuple[tuple[str, str], ...]
UNKNOWN = "unknown"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]


COUNTERS: dict[str, Family] = {
    f.name: f
    for f in (
        Family("flowrun_events_accepted_total", "deliveries stored in the inbox (webhooks, polled rows)", ("source",)),
        Family("flowrun_events_duplicate_total", "deliveries already in the inbox, acknowledged again", ("source",)),
        Family("flowrun_events_rejected_total", "webhooks refused with a 4xx", ("source", "reason")),
        Family("flowrun_webhook_pings_total", "WooCommerce creation pings answered", ("source",)),
        Family("flowrun_events_unprocessable_total", "stored deliveries that could not be normalised", ("source",)),
        Family("flowrun_run_transitions_total", "run transitions committed, by the status reached", ("status",)),
        Family("flowrun_actions_sent_total", "actions a provider accepted", ("action",)),
        Family("flowrun_actions_skipped_total", "actions skipped by a guardrail", ("action",)),
        Family("flowrun_actions_failed_total", "failed attempts that will be retried", ("action",)),
        Family("flowrun_actions_failed_final_total", "actions failed for good (on_error: continue)", ("action",)),
        Family("flowrun_actions_parked_total", "actions parked for `flowrun retry`", ("action",)),
        Family("flowrun_action_attempts_total", "delivery attempts, by what came of them", ("action", "outcome")),
        Family(
            "flowrun_actions_outcome_unknown_total",
            "sends out when their dispatcher stopped, sent again (they may have gone out twice)",
            (),
        ),
        Family("flowrun_poll_errors_total", "polls that failed and will run again", ("poller",)),
        Family(
            "flowrun_engagement_events_total",
            "message.* events applied: matched to a send by message id, or unknown (kept, not attributed)",
            ("match",),
        ),
        Family("flowrun_connections_refused_total", "connections the webhook port closed", ("reason",)),
    )
}
RUN_STATUSES = (
    "queued",
    "running",
    "acting",
    "waiting",
    "awaiting_event",
    "completed",
    "converted",
    "failed",
    "skipped",
    "cancelled",
)
OUTBOX_STATUSES = tuple(s.value for s in SendStatus)
ATTEMPT_OUTCOMES = ("ok", "retry", "rate_limited", "parked", "failed", "deferred", "skipped", "cancelled", "unknown")


def label_values(sources: Iterable[str] | None = None) -> dict[str, frozenset[str]]:
    """The values each label may take; anything else is `unknown`."""
    from flowrun.actions import REGISTRY
    from flowrun.serve.connections import REFUSALS
    from flowrun.serve.pollers import POLLERS
    from flowrun.serve.webhooks import REASONS

    known_sources = set(sources) if sources is not None else {"shopify", "woocommerce", "custom"}
    return {
        "source": frozenset(known_sources | set(POLLERS)),
        "reason": frozenset(REASONS | REFUSALS),
        "action": frozenset(REGISTRY),
        "status": frozenset((*RUN_STATUSES, *OUTBOX_STATUSES)),
        "poller": frozenset(POLLERS),
        "outcome": frozenset(ATTEMPT_OUTCOMES),
        "family": frozenset((*STORAGE_FAMILIES, *PRUNE_FAMILIES, "pages")),
        "match": frozenset({"matched", "unknown"}),
    }


class Metrics:
    """Counters and timer lateness of one process, plus the latest snapshots of its peers."""

    def __init__(self, sources: Iterable[str] | None = None) -> None:
        self._allowed = label_values(sources)
        self._lock = threading.Lock()
        self._counts: dict[str, dict[Labels, float]] = {}
        self._lateness = (0.0, 0.0, 0)  # max, sum, count
        self._peers: dict[str, dict[str, Any]] = {}
        self.gauges: Callable[[], Awaitable[dict[str, dict[Labels, float]]]] | None = None

    def _labels(self, family: Family, given: Mapping[str, str]) -> Labels:
        if set(given) != set(family.labels):
            raise ValueError(f"{family.name} takes labels {family.labels}, not {tuple(sorted(given))}")
        return tuple((name, self._value(name, given[name])) for name in sorted(family.labels))

    def _value(self, label: str, value: object) -> str:
        text = str(value)
        return text if text in self._allowed.get(label, frozenset()) else UNKNOWN

    def count(self, name: str, value: float = 1, **labels: str) -> None:
        family = COUNTERS.get(name)
        if family is None:
            raise ValueError(f"no counter {name!r} is declared in flowrun.serve.metrics.COUNTERS")
        key = self._labels(family, labels)
        with self._lock:
            series = self._counts.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def value(self, name: str, **labels: str) -> float:
        """This process's count for one series (0 when never counted)."""
        key = self._labels(COUNTERS[name], labels)
        with self._lock:
            return self._counts.get(name, {}).get(key, 0.0)

    def total(self, name: str) -> float:
        with self._lock:
            return sum(self._counts.get(name, {}).values())

    def observe_lateness(self, seconds: float) -> None:
        with self._lock:
            most, total, count = self._lateness
            self._lateness = (max(most, seconds), total + seconds, count + 1)

    @property
    def lateness_max(self) -> float:
        return self._lateness[0]

    def snapshot(self) -> dict[str, Any]:
        """Plain data (it crosses a pipe): {"counters": {name: {labels: value}}, "lateness": (max, sum, count)}."""
        with self._lock:
            return self._snapshot()

    def set_peer(self, name: str, snapshot: Mapping[str, Any]) -> None:
        """The latest snapshot of another process (the engine, later the dispatcher)."""
        with self._lock:
            self._peers[name] = dict(snapshot)

    async def render(self) -> str:
        gauges = await self.gauges() if self.gauges is not None else {}
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(list(self._families(gauges))))
        return generate_latest(registry).decode()

    def _families(self, gauges: Mapping[str, Mapping[Labels, float]]) -> Iterator[Metric]:
        with self._lock:
            snapshots = [self._snapshot(), *self._peers.values()]
        counts: dict[str, dict[Labels, float]] = {}
        most, total, seen = 0.0, 0.0, 0
        for snapshot in snapshots:
            for name, series in (snapshot.get("counters") or {}).items():
                family = COUNTERS.get(name)
                if family is None:
                    continue
                merged = counts.setdefault(name, {})
                for labels, amount in series.items():
                    key = self._labels(family, dict(labels))
                    merged[key] = merged.get(key, 0.0) + float(amount)
            peer_max, peer_sum, peer_count = snapshot.get("lateness") or (0.0, 0.0, 0)
            most, total, seen = max(most, float(peer_max)), total + float(peer_sum), seen + int(peer_count)
        for name in sorted(counts):
            family = COUNTERS[name]
            counter = CounterMetricFamily(name, family.help, labels=sorted(family.labels))
            for labels, amount in sorted(counts[name].items()):
                counter.add_metric([v for _, v in labels], amount)
            yield counter
        for name in sorted(gauges):
            series = gauges[name]
            names = sorted({k for labels in series for k, _ in labels})
            gauge = GaugeMetricFamily(name, _GAUGE_HELP.get(name, name), labels=names)
            cleaned: dict[tuple[str, ...], float] = {}
            for labels, amount in series.items():
                values = dict(labels)
                row = tuple(self._value(label, values.get(label, "")) for label in names)
                cleaned[row] = cleaned.get(row, 0.0) + amount
            for row, amount in sorted(cleaned.items()):
                gauge.add_metric(list(row), amount)
            yield gauge
        lateness = SummaryMetricFamily(
            "flowrun_timer_lateness_seconds", "how late timers fired", count_value=seen, sum_value=total
        )
        yield lateness
        yield GaugeMetricFamily("flowrun_timer_lateness_seconds_max", "the latest timer's lateness, at most", most)

    def _snapshot(self) -> dict[str, Any]:
        return {"counters": {n: dict(s) for n, s in self._counts.items()}, "lateness": self._lateness}


_GAUGE_HELP = {
    "flowrun_runs": "runs in the database, by status",
    "flowrun_actions": "outbox rows, by status",
    "flowrun_inbox_backlog": "inbox deliveries not yet read by the engine",
    "flowrun_inbox_spooled": "accepted deliveries in the port's spool, not in the inbox yet (SQLite)",
    "flowrun_inbox_refused": "accepted deliveries the inbox refused, kept in the spool (flowrun inbox lists them)",
    "flowrun_database_bytes": "the state database's size (SQLite: file and WAL; PostgreSQL: pg_database_size)",
    "flowrun_table_rows": "rows per table family",
    "flowrun_pruned_rows": "rows retention removed (every recorded prune), per family",
    "flowrun_last_prune_timestamp_seconds": "when retention last ran (Unix time)",
    "flowrun_last_prune_duration_seconds": "how long the last prune took",
    "flowrun_last_prune_rows": "rows the last prune removed, per family (pages: SQLite pages given back)",
}


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
