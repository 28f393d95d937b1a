"""dry-run throughput: simulated runs per second of a three-step flow with two template renders.

Target (issue 2): at least 5,000 runs/s on the 2-core machine.
Baseline in the same run: the same two renders done directly with Jinja2, no engine.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

from common import best_of, report

from flowrun.dryrun.simulator import Simulator
from flowrun.events.envelope import from_envelope
from flowrun.flow.loader import load_flow
from flowrun.templating import TEXT_ENV
from tests.helpers import T0

FLOW = """
flow: bench
on: order.created
steps:
  - wait: 1h
  - log: {message: "thanks {{ customer.first_name }} for order {{ order.number }}"}
  - email: {to: "{{ customer.email }}", subject: "Order {{ order.number }}", text: plain}
"""
RUNS = 20_000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(FLOW)
        flow = load_flow(path)
    events = [
        from_envelope(
            {
                "type": "order.created",
                "id": f"o{i}",
                "occurred_at": T0.isoformat(),
                "data": {"customer": {"email": f"c{i}@example.com", "first_name": "Ada"}, "order": {"number": str(i)}},
            }
        )
        for i in range(RUNS)
    ]

    def simulate() -> None:
        sim = Simulator([flow], T0)
        for i, event in enumerate(events):
            sim.add_event(T0 + timedelta(seconds=i), event)
        result = sim.run()
        assert len(result.actions) == 2 * RUNS

    message = TEXT_ENV.from_string("thanks {{ customer.first_name }} for order {{ order.number }}")
    subject = TEXT_ENV.from_string("Order {{ order.number }}")

    def renders_only() -> None:
        for event in events:
            ctx = event.context()
            message.render(ctx)
            subject.render(ctx)

    engine_s = best_of(simulate)
    render_s = best_of(renders_only)
    report("dry-run: runs per second (3 steps, 2 renders)", RUNS / engine_s, "runs/s", "target >= 5,000")
    report("baseline: the two renders alone, per second", RUNS / render_s, "runs/s")
    report("ratio dry-run / renders-only", render_s / engine_s, "x")


if __name__ == "__main__":
    main()
