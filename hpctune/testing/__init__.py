"""Stand-ins for benchmarks: the simulated trainer (registered by name in hpctune.engine.trainers)."""
