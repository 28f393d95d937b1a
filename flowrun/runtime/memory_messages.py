"""The in-memory Messages port (dry-run and `flowrun test`), beside flowrun.runtime.memory."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime

from flowrun.attribution.records import Attributed, Engagement, FigureKey, Message


class MemoryMessages:
    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        self.engagements: dict[str, Engagement] = {}
        self.attributions: dict[str, Attributed] = {}
        self._by_run: dict[str, set[str]] = defaultdict(set)
        self._by_customer: dict[str, set[str]] = defaultdict(set)
        self._unmatched: dict[str, set[str]] = defaultdict(set)
        self.figures: dict[FigureKey, Counter[str]] = defaultdict(Counter)

    def get(self, message_id: str) -> Message | None:
        return self.messages.get(message_id)

    def put(self, message: Message) -> None:
        self.messages[message.message_id] = message
        self._by_run[message.run_id].add(message.message_id)
        if message.customer_key:
            self._by_customer[message.customer_key].add(message.message_id)

    def for_run(self, run_id: str) -> list[Message]:
        return sorted((self.messages[i] for i in self._by_run.get(run_id, ())), key=lambda m: m.message_id)

    def touched_since(self, customer_key: str, since: datetime) -> list[Message]:
        found = (self.messages[i] for i in self._by_customer.get(customer_key, ()))
        return sorted((m for m in found if m.touched_at >= since), key=lambda m: m.message_id)

    def note(self, engagement: Engagement) -> None:
        self.engagements[engagement.event_id] = engagement
        if engagement.message_id:
            index = self._unmatched[engagement.message_id]
            (index.add if engagement.send_key is None else index.discard)(engagement.event_id)

    def unmatched(self, message_id: str) -> list[Engagement]:
        found = (self.engagements[i] for i in self._unmatched.get(message_id, ()))
        return sorted(found, key=lambda e: (e.occurred_at, e.event_id))

    def attribute(self, attributed: Attributed) -> bool:
        if attributed.order_key in self.attributions:
            return False
        self.attributions[attributed.order_key] = attributed
        return True

    def count(self, key: FigureKey, deltas: Mapping[str, int]) -> None:
        self.figures[key].update(deltas)
