"""Marketing guardrails as pure functions of `now`: suppression, quiet hours, frequency caps.

Serve (the dispatcher, inside the transaction that claims an action) and dry-run (the
simulator) ask the same `decide`, so a dry-run shows the deferral or the skip serve makes.
Only customer channels (email, sms, push) are guarded, and transactional messages (order
confirmation, shipping) pass every rule: they are what the customer asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowrun.durations import parse_duration


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    channels: frozenset[str] = frozenset({"sms", "push"})

    def until(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """If `now` falls inside the window in `zone`, when it ends (as an aware datetime)."""
        local = now.astimezone(zone)
        clock = local.time().replace(tzinfo=None)
        overnight = self.start > self.end
        inside = (clock >= self.start or clock < self.end) if overnight else (self.start <= clock < self.end)
        if not inside:
            return None
        day = local.date() if (not overnight or clock < self.end) else local.date() + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=zone)


@dataclass(frozen=True)
class Cap:
    channel: str
    limit: int
    per: timedelta


@dataclass(frozen=True)
class Guardrails:
    timezone: str = "UTC"  # the shop's, for recipients without one
    quiet: QuietHours | None = None
    caps: tuple[Cap, ...] = ()
    suppressed: frozenset[str] = field(default_factory=frozenset)  # the local list: customer keys

    @property
    def longest_cap(self) -> timedelta:
        return max((c.per for c in self.caps), default=timedelta(0))

    def overridden(self, override: FlowGuardrails | None) -> Guardrails:
        """The project's rules with one flow's changes: its quiet hours, its caps per channel.
        Suppression is never overridable, and sends still count across every flow."""
        if override is None:
            return self
        caps = {c.channel: c for c in self.caps}
        for channel, cap in override.caps.items():
            if cap is None:
                caps.pop(channel, None)
            else:
                caps[channel] = cap
        quiet = override.quiet if override.quiet_set else self.quiet
        return Guardrails(self.timezone, quiet, tuple(caps.values()), self.suppressed)


@dataclass(frozen=True)
class FlowGuardrails:
    """A flow's `guardrails:`: `quiet_hours` (or false: none for this flow), and `caps` per
    channel (a cap replaces the project's for that channel; false removes it)."""

    quiet: QuietHours | None = None
    quiet_set: bool = False
    caps: Mapping[str, Cap | None] = field(default_factory=dict)


CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
CHANNELS = ["email", "sms", "push"]


def guardrail_schemas(duration: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema fragments of `quiet_hours` and of one channel's cap (project file and flows)."""
    quiet = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "start": {"type": "string", "pattern": CLOCK},
            "end": {"type": "string", "pattern": CLOCK},
            "channels": {"type": "array", "items": {"enum": CHANNELS}},
        },
        "required": ["start", "end"],
        "description": "marketing sends inside this window (recipient's time zone) wait for its end",
    }
    cap = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"max": {"type": "integer", "minimum": 1}, "per": dict(duration)},
        "required": ["max", "per"],
    }
    return quiet, cap


@dataclass(frozen=True)
class Decision:
    kind: str  # send | skip | defer
    reason: str = ""
    at: datetime | None = None


SEND = Decision("send")


def zone_of(customer: Mapping[str, Any], fallback: str) -> ZoneInfo:
    for name in (customer.get("timezone"), fallback, "UTC"):
        if name:
            try:
                return ZoneInfo(str(name))
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def decide(
    rules: Guardrails,
    now: datetime,
    channel: str | None,
    category: str,
    customer: Mapping[str, Any],
    customer_key: str | None,
    recent: Sequence[datetime],
    unsubscribed: bool,
) -> Decision:
    """`recent`: this customer's marketing sends on this channel within the longest cap."""
    if channel is None or category == "transactional":
        return SEND
    if unsubscribed or (customer_key is not None and customer_key in rules.suppressed):
        return Decision("skip", "suppressed: the customer unsubscribed from marketing")
    if customer.get("accepts_marketing") is False:
        return Decision("skip", "suppressed: the customer has not accepted marketing")
    if rules.quiet is not None and channel in rules.quiet.channels:
        zone = zone_of(customer, rules.timezone)
        until = rules.quiet.until(now, zone)
        if until is not None:
            window = f"{rules.quiet.start:%H:%M}-{rules.quiet.end:%H:%M} {zone.key}"
            return Decision("defer", f"quiet hours {window}: deferred to {until.isoformat()}", until)
    for cap in rules.caps:
        if cap.channel != channel:
            continue
        inside = [t for t in recent if now - t < cap.per]
        if len(inside) >= cap.limit:
            return Decision(
                "skip",
                f"frequency cap: at most {cap.limit} marketing {channel} per {_span(cap.per)}"
                f" (last sent {max(inside).isoformat()})",
            )
    return SEND


CONSENT_TYPES = frozenset({"custom.unsubscribe", "customer.updated"})  # what subscription_change reads


def subscription_change(event_type: str, data: Mapping[str, Any]) -> bool | None:
    """What an event says about marketing consent: False (unsubscribed), True (subscribed again),
    None (nothing). Store customer updates carry accepts_marketing; `custom.unsubscribe` is the
    generic webhook's way to report an unsubscribe link click."""
    if event_type == "custom.unsubscribe":
        return False
    if event_type == "customer.updated":
        accepts = (data.get("customer") or {}).get("accepts_marketing")
        return accepts if isinstance(accepts, bool) else None
    return None


def load_guardrails(data: Mapping[str, Any], timezone: str, suppressed: frozenset[str]) -> Guardrails:
    caps = data.get("caps") or {}
    return Guardrails(
        timezone=timezone,
        quiet=_quiet(data.get("quiet_hours")),
        caps=tuple(_cap(channel, rule) for channel, rule in caps.items()),
        suppressed=suppressed,
    )


def load_flow_guardrails(data: Mapping[str, Any]) -> FlowGuardrails:
    """A flow's `guardrails:` (already schema-checked)."""
    caps = {channel: (_cap(channel, rule) if rule else None) for channel, rule in (data.get("caps") or {}).items()}
    return FlowGuardrails(_quiet(data.get("quiet_hours")), "quiet_hours" in data, caps)


def _quiet(data: Mapping[str, Any] | bool | None) -> QuietHours | None:
    if not isinstance(data, Mapping):
        return None
    start, end = time.fromisoformat(data["start"]), time.fromisoformat(data["end"])
    return QuietHours(start, end, frozenset(data.get("channels", ["sms", "push"])))


def _cap(channel: str, rule: Mapping[str, Any]) -> Cap:
    return Cap(channel, int(rule["max"]), parse_duration(rule["per"]))


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours < 48 else f"{hours / 24:g} days"
