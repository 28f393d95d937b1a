"""Above the engine: which runs an event starts or moves, over a store of runs."""
