"""The pure engine: `advance(flow, run, input, now) -> Transition`. No I/O, no wall clock."""
